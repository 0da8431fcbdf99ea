"""Cohort runs: streamed statistics, group maps, interruption and resume, Dask."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_brainage.cohort import RunningStats, effect_size, population_stats
from napari_brainage.inference import collect_inputs, importance_in_model_space, load_model
from napari_brainage.io import load_volume
from napari_brainage.spaces import uncrop
from napari_brainage.template import mni_grid

SCRIPT = Path(sys.executable).with_name("napari-brainage")


def test_running_stats_match_numpy_and_merge_exactly():
    rng = np.random.default_rng(0)
    maps = rng.normal(3.0, 2.0, size=(9, 4, 5, 6))
    whole = RunningStats((4, 5, 6))
    for m in maps:
        whole.add(m)
    np.testing.assert_allclose(whole.mean, maps.mean(0), atol=1e-12)
    np.testing.assert_allclose(whole.variance, maps.var(0, ddof=1), atol=1e-12)
    a, b = RunningStats((4, 5, 6)), RunningStats((4, 5, 6))
    for m in maps[:4]:
        a.add(m)
    for m in maps[4:]:
        b.add(m)
    merged = RunningStats.from_state(a.state()).merge(b)
    np.testing.assert_allclose(merged.mean, whole.mean, atol=1e-12)
    np.testing.assert_allclose(merged.variance, whole.variance, atol=1e-12)
    assert merged.count == 9
    d = effect_size(a, b)
    pooled = np.sqrt((3 * maps[:4].var(0, ddof=1) + 4 * maps[4:].var(0, ddof=1)) / 7)
    np.testing.assert_allclose(d, (maps[4:].mean(0) - maps[:4].mean(0)) / pooled, atol=1e-10)
    with pytest.raises(ValueError, match="shape"):
        whole.add(np.zeros((2, 2, 2)))


def _run(*args, **kwargs):
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "napari_brainage.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, **kwargs)


def _start(*args):
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "napari_brainage.cli"]
    return subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {row["subject"]: row for row in csv.DictReader(handle)}


def _kill_when(process, condition, timeout=180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the run finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_predict_killed_midway_resumes_to_the_same_results(tiny_cohort, tiny_model, tmp_path):
    model = ["--model", str(tiny_model), "--device", "cpu"]
    reference = tmp_path / "reference.csv"
    assert _run("predict", str(tiny_cohort), "--out", str(reference), *model).returncode == 0

    out = tmp_path / "results.csv"
    process = _start("predict", str(tiny_cohort), "--out", str(out), *model)
    _kill_when(process, lambda: out.exists() and out.read_text().count("\n") >= 4)
    finished = _rows(out)
    assert 3 <= len(finished) < 12
    with open(out, "a") as handle:
        handle.write("sub-9999,/half/written")  # a row torn by the kill

    again = _run("predict", str(tiny_cohort), "--out", str(out), *model)
    assert again.returncode == 2 and "already exists" in again.stderr  # no silent overwrite
    resumed = _run("predict", str(tiny_cohort), "--out", str(out), "--resume", *model)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{12 - len(finished)} of {12 - len(finished)} scans this run" in resumed.stdout
    got, expected = _rows(out), _rows(reference)
    assert sorted(got) == sorted(expected)  # the torn row is gone, nobody is missing or doubled
    for subject, row in expected.items():
        assert float(got[subject]["predicted_age"]) == pytest.approx(float(row["predicted_age"]), abs=1e-3)
        assert got[subject]["qc"] == row["qc"]


def test_population_killed_midway_resumes_and_groups(tiny_cohort, tiny_model, tmp_path):
    # A CSV with a grouping column: younger and older than 62.
    grouped = tmp_path / "grouped.csv"
    with open(tiny_cohort, newline="") as source, open(grouped, "w", newline="") as target:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(target, fieldnames=[*reader.fieldnames, "band"])
        writer.writeheader()
        for row in reader:
            row["path"] = str((tiny_cohort.parent / row["path"]).resolve())
            writer.writerow({**row, "band": "old" if float(row["age"]) >= 62 else "young"})
    model = ["--model", str(tiny_model), "--device", "cpu"]

    out = tmp_path / "pop.nii.gz"
    checkpoint = tmp_path / ".pop.checkpoint.npz"
    process = _start("population", str(grouped), "--out", str(out), "--group-by", "band", *model)
    _kill_when(process, checkpoint.exists)
    assert not out.exists()
    resumed = _run("population", str(grouped), "--out", str(out), "--group-by", "band", "--resume", *model)
    assert resumed.returncode == 0, resumed.stderr
    assert not checkpoint.exists()

    loaded, device = load_model(tiny_model, "cpu", need_noise_model=True)
    inputs = collect_inputs([grouped], group_by="band")
    maps = {item.subject: uncrop(importance_in_model_space(load_volume(item.path), loaded, device),
                                 loaded.card.input) for item in inputs}
    by_group = {g: np.array([maps[i.subject] for i in inputs if i.group == g]) for g in ("old", "young")}
    np.testing.assert_allclose(load_volume(out).data, np.mean(list(maps.values()), axis=0), atol=1e-5)
    for group, stack in by_group.items():
        np.testing.assert_allclose(load_volume(tmp_path / f"pop_{group}.nii.gz").data, stack.mean(0), atol=1e-5)
    difference = load_volume(tmp_path / "pop_difference.nii.gz").data  # young - old (sorted names)
    np.testing.assert_allclose(difference, by_group["young"].mean(0) - by_group["old"].mean(0), atol=1e-5)
    d = load_volume(tmp_path / "pop_effect_size.nii.gz").data
    assert np.isfinite(d).all() and np.abs(d).max() > 0
    assert "groups old (n=" in resumed.stdout


def test_population_on_a_two_worker_local_cluster(tiny_cohort, tiny_model, tmp_path):
    pytest.importorskip("distributed")
    inputs = collect_inputs([tiny_cohort])
    shape = mni_grid(2)[0]
    local = population_stats(inputs, tmp_path / "a.npz", shape, str(tiny_model), "cpu", chunk=4)
    seen = []
    cluster = population_stats(inputs, tmp_path / "b.npz", shape, str(tiny_model), "cpu", chunk=4, workers=2,
                               progress=lambda done, total: seen.append((done, total)))
    assert cluster.groups[""].count == local.groups[""].count == 12
    np.testing.assert_allclose(cluster.groups[""].mean, local.groups[""].mean, atol=1e-6)
    np.testing.assert_allclose(cluster.groups[""].variance, local.groups[""].variance, atol=1e-6)
    assert seen[-1] == (12, 12) and len(seen) == 3


def test_local_cluster_workers_start_without_dasks_malloc_trim(monkeypatch):
    # Dask's default MALLOC_TRIM_THRESHOLD_=65536 made each worker's 3D
    # convolutions 1.6x slower (docs/benchmarks.md, cohort runs).
    pytest.importorskip("distributed")
    from dask.distributed import Client

    from napari_brainage.cohort import local_cluster

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with local_cluster(1) as cluster, Client(cluster) as client:
        (seen,) = client.run(lambda: (os.getpid(), dict(os.environ))).values()
    pid, environ = seen
    assert pid != os.getpid()  # read in the worker, not in this process
    assert "MALLOC_TRIM_THRESHOLD_" not in environ
    assert environ["OMP_NUM_THREADS"] == "1"


def test_an_existing_cluster_with_dasks_malloc_trim_gets_a_warning(tiny_cohort, tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from dask.distributed import LocalCluster

    # Absent at the start; monkeypatch removes it again afterwards (Dask's nanny
    # also sets it in the process that starts the cluster).
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    inputs = collect_inputs([tiny_cohort])[:2]
    # A cluster started with Dask's defaults, as a user's own would be.
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        # Only the worker may have it: the nanny also put it into this process.
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
        with pytest.warns(UserWarning, match="MALLOC_TRIM_THRESHOLD_=65536"):
            run = population_stats(inputs, tmp_path / "c.npz", mni_grid(2)[0], str(tiny_model), "cpu",
                                   scheduler=cluster.scheduler_address)
    assert run.groups[""].count == 2


def test_explain_resume_writes_only_the_missing_maps(tiny_cohort, tiny_model, tmp_path):
    model = ["--model", str(tiny_model), "--device", "cpu"]
    out = tmp_path / "maps"
    assert _run("explain", str(tiny_cohort), "--out", str(out), *model).returncode == 0
    maps = sorted(out.glob("*_importance.nii.gz"))
    assert len(maps) == 12
    for gone in maps[:2]:
        gone.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in maps[2:]}
    refused = _run("explain", str(tiny_cohort), "--out", str(out), *model)
    assert refused.returncode == 2 and "already exists" in refused.stderr
    resumed = _run("explain", str(tiny_cohort), "--out", str(out), "--resume", *model)
    assert resumed.returncode == 0, resumed.stderr
    assert "10 maps already done" in resumed.stderr and "2 of 2 maps" in resumed.stdout
    assert all(p.exists() for p in maps)
    assert {p: p.stat().st_mtime_ns for p in maps[2:]} == stamps


def test_batched_noise_maps_equal_one_at_a_time(tiny_cohort, tiny_model):
    """The GPU path's batching (run here on the CPU) gives the per-subject maps."""
    from napari_brainage.cohort import batched_noise_maps

    model, device = load_model(tiny_model, "cpu", need_noise_model=True)
    inputs = collect_inputs([tiny_cohort])[:5]
    failed = []
    batched = dict((item.subject, values) for item, values in
                   batched_noise_maps(inputs, model, device, "auto", failed, batch_size=3))
    assert not failed and len(batched) == 5
    for item in inputs:
        single = uncrop(importance_in_model_space(load_volume(item.path), model, device), model.card.input)
        np.testing.assert_allclose(batched[item.subject], single, atol=1e-5)


def test_cli_input_mistakes_print_one_line_not_a_traceback(tiny_cohort, tmp_path):
    result = _run("population", str(tiny_cohort), "--out", str(tmp_path / "p.nii.gz"), "--group-by", "nope")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{tiny_cohort}: no column 'nope' to group by" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written
