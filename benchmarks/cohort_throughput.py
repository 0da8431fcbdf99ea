"""Cohort runs: throughput against the bare model, and memory against cohort size.

Throughput: ``predict`` (CSV out) and ``population`` (maps out) end to end over
N synthetic 2 mm subjects (NIfTI in), in process (1 worker, 2 torch threads) and
on a 2-worker LocalCluster (1 thread each; started once, as with
``--scheduler``; its start-up is reported apart), against the bare network
forward passes (predictor + noise model on tensors already in memory, measured
before and after in the same run; the faster is the baseline).

Memory: peak resident memory of ``population`` over 100 and 1,000 subjects, each
in a fresh process (``--memory``).

Usage:
  python benchmarks/cohort_throughput.py --cohort HELDOUT [--n 200]
  python benchmarks/cohort_throughput.py --cohort C1000 --memory
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bare_seconds(inputs) -> float:
    """Forward passes only: predictor and noise model (with its mirror pass, as the
    plugin maps), inputs prepared beforehand."""
    import torch

    from napari_brainage.explain import noise_importance
    from napari_brainage.inference import load_model
    from napari_brainage.io import load_volume
    from napari_brainage.space.grid import to_model_input

    model, _ = load_model(None, "cpu", need_noise_model=True)
    tensors = [torch.from_numpy(to_model_input(load_volume(item.path), model.card.input))[None, None]
               for item in inputs]
    with torch.no_grad():
        model.predictor(tensors[0]), noise_importance(tensors[0], model.noise_model)  # warm-up
        tic = time.perf_counter()
        for x in tensors:
            model.predictor(x)
            noise_importance(x, model.noise_model)
        return time.perf_counter() - tic


def end_to_end_seconds(inputs, workers: int) -> tuple[float, float]:
    """(seconds for predict + population, seconds to start the cluster). With 2
    workers one LocalCluster serves both commands, as ``--scheduler`` would."""
    from napari_brainage.cohort import population_stats, predict_cohort
    from napari_brainage.options import RunOptions

    cluster, startup, scheduler = None, 0.0, None
    if workers > 1:
        from napari_brainage.parallel import local_cluster

        tic = time.perf_counter()
        cluster = local_cluster(workers)
        startup, scheduler = time.perf_counter() - tic, cluster.scheduler_address
    try:
        with tempfile.TemporaryDirectory() as folder:
            tic = time.perf_counter()
            options = RunOptions(device="cpu")
            predict_cohort(inputs, Path(folder) / "results.csv", options, scheduler=scheduler)
            population_stats(inputs, options, Path(folder) / "checkpoint.npz", scheduler=scheduler)
            return time.perf_counter() - tic, startup
    finally:
        if cluster is not None:
            cluster.close()


def peak_memory_mb(cohort: Path, n: int) -> float:
    """Peak RSS (MB) of a fresh process running population over the first n subjects."""
    code = (
        "import resource, sys; sys.path.insert(0, %r)\n"
        "from napari_brainage.cohort import population_stats\n"
        "from napari_brainage.inference import collect_inputs\n"
        "from napari_brainage.options import RunOptions\n"
        "inputs = collect_inputs([%r])[:%d]\n"
        "population_stats(inputs, RunOptions(device='cpu'), %r)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        script = code % (str(ROOT), str(cohort / "participants.csv"), n, str(Path(folder) / "c.npz"))
        output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(output.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True, type=Path)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--memory", action="store_true", help="peak memory for 100 and 1,000 subjects")
    args = parser.parse_args()

    if args.memory:
        small, large = peak_memory_mb(args.cohort, 100), peak_memory_mb(args.cohort, 1000)
        print("| figure | value | target |")
        print("|---|---|---|")
        print(f"| peak memory, population over 100 subjects | {small:.0f} MB | |")
        print(f"| peak memory, population over 1,000 subjects | {large:.0f} MB | |")
        print(f"| ratio 1,000 / 100 | {large / small:.3f} | within 10 % (0.9-1.1) |")
        return

    import torch

    from napari_brainage.inference import collect_inputs

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    inputs = collect_inputs([args.cohort / "participants.csv"])[: args.n]
    bare = bare_seconds(inputs)
    print(f"{len(inputs)} subjects; bare forward (predictor + noise model): {bare:.1f} s "
          f"({len(inputs) / bare:.2f} subjects/s)", flush=True)
    rows = []
    for workers in (1, 2):
        seconds, startup = end_to_end_seconds(inputs, workers)
        rows.append((workers, seconds))
        print(f"workers {workers}: {seconds:.1f} s end to end"
              + (f" (+ {startup:.1f} s to start the LocalCluster, once)" if workers > 1 else ""), flush=True)
    bare = min(bare, bare_seconds(inputs))  # measured before and after: the faster is the baseline
    print(f"bare forward again: baseline {bare:.1f} s", flush=True)
    print()
    print("| workers | end to end, s | subjects/s | end to end / bare forward |")
    print("|---|---|---|---|")
    for workers, seconds in rows:
        print(f"| {workers} | {seconds:.1f} | {len(inputs) / seconds:.2f} | {seconds / bare:.2f}x |")
    print(f"| bare forward | {bare:.1f} | {len(inputs) / bare:.2f} | 1.00x |")
    print(f"\nPeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
