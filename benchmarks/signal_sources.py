"""Where the predictor's age comes from: the focal regions the truth marks, or the diffuse cortex it leaves out.

    .venv/bin/python benchmarks/signal_sources.py [--model napari_brainage/bundled_model] \
        [--regions lateral_ventricles hippocampus] [--cortical-thinning 0.35] [--ages 45 50 ... 80]

The synthetic generator ages a brain in two ways: the focal regions (the
cohort's ``--regions``; the importance maps' ground truth is where they change
the scan) and a diffuse cortical thinning (``CohortConfig.cortical_thinning``,
0.35 % of cortical thickness a year) that every cohort has and that the ground
truth leaves out. A predictor may read either. This benchmark renders the
template brain noise-free (no pose, no bias, no noise: ``synthesize(rng=None)``)
at each brain age with

* everything aged (what the cohort is made of);
* only the focal regions aged (cortical thinning off);
* only the cortex thinned (no focal region aged);
* each focal region alone;
* nothing aged (the null: every scan is the template brain, so the slope is 0);

and prints, for each, the slope of the predicted age on the brain age (years
per year; 1 would be a perfect reading) and the share of the full slope. If
the predictor reads much of its age from the cortex, a map faithful to it
must mark the cortex, and the ground truth (focal regions only) caps the
average precision such a map can reach. The outside case is the same
measurement with a predictor trained on the cortical cohort (``--model`` and
``--regions frontal_cortex temporal_cortex``).

With ``--probe-cohort DIR`` (a cohort made by ``synth``: its scans and its
``ground_truth/cortex.nii.gz``) it also asks why a noise mask can miss such a
signal: the mean change of the predicted age over the first ``--probe-n``
subjects when the normalised input gets Gaussian noise (sd 0.3, 3 draws) on
every cortical voxel, on as many random non-cortical brain voxels, or on as
many voxels deeper than the median, and when the cortex, or the rest of the
brain, is made 2 % darker at once (a coherent change, as thinning makes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_brainage.inference import load_model, predict_age  # noqa: E402
from napari_brainage.io import Volume  # noqa: E402
from napari_brainage.synthetic.config import REGION_PRESETS, CohortConfig  # noqa: E402
from napari_brainage.synthetic.model import ageing_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "napari_brainage" / "bundled_model")
    parser.add_argument("--regions", nargs="+", default=["lateral_ventricles", "hippocampus"])
    parser.add_argument("--ages", nargs="+", type=float, default=[45, 50, 55, 60, 65, 70, 75, 80])
    parser.add_argument("--cortical-thinning", type=float, default=0.35,
                        help="%% per year, as the cohort the predictor was trained on was made (synth's option)")
    parser.add_argument("--probe-cohort", type=Path, help="also run the noise / darkening probe on this cohort")
    parser.add_argument("--probe-n", type=int, default=6, help="subjects of the probe (default: 6)")
    args = parser.parse_args()

    torch.set_num_threads(2)
    model, device = load_model(args.model, "cpu")
    generator = ageing_model(CohortConfig(regions=tuple(REGION_PRESETS[r] for r in args.regions),
                                          cortical_thinning=args.cortical_thinning))
    conditions = {
        "everything (the cohort)": dict(),
        "focal regions only (no cortical thinning)": dict(cortical=False),
        "cortical thinning only (no focal region)": dict(only=[]),
        **{f"{r} alone": dict(only=[r], cortical=False) for r in args.regions},
        "null: nothing aged": dict(only=[], cortical=False),
    }
    ages = np.asarray(args.ages, dtype=float)
    start = time.perf_counter()
    slopes, predictions = {}, {}
    for name, kwargs in conditions.items():
        predicted = []
        for age in ages:
            scan = generator.synthesize(float(age), rng=None, **kwargs)
            volume = Volume(scan.data.astype(np.float32), scan.affine)
            predicted.append(predict_age(volume, model, device, preprocessing="none").predicted_age)
        predictions[name] = np.asarray(predicted)
        slopes[name] = float(np.polyfit(ages, predictions[name], 1)[0])

    full = slopes["everything (the cohort)"]
    print(f"predictor: {args.model}; regions: {', '.join(args.regions)}; cortical thinning "
          f"{args.cortical_thinning} %/y; "
          f"noise-free template brain aged {ages.min():.0f}-{ages.max():.0f} y; {time.perf_counter() - start:.0f} s\n")
    print("| what is aged | slope of predicted on brain age (y/y) | share of the full slope | "
          f"predicted at {ages[0]:.0f} / {ages[-1]:.0f} y |")
    print("|---|---|---|---|")
    for name, slope in slopes.items():
        p = predictions[name]
        share = f"{slope / full:.2f}" if abs(full) >= 0.1 else "-"  # a predictor that reads nothing has no shares
        print(f"| {name} | {slope:.3f} | {share} | {p[0]:.1f} / {p[-1]:.1f} |")
    parts = slopes["focal regions only (no cortical thinning)"] + slopes["cortical thinning only (no focal region)"]
    print(f"\nfocal + cortical slopes add to {parts:.3f} against {full:.3f} for both together "
          f"({parts / full:.2f}x; 1: the predictor adds the two up; otherwise they interact)")
    if args.probe_cohort:
        probe(model, args.probe_cohort, args.probe_n)


def probe(model, cohort: Path, n: int) -> None:
    """Noise against a coherent darkening, on the cortex and elsewhere (see the module's docstring)."""
    from scipy import ndimage

    from napari_brainage.inference import collect_inputs
    from napari_brainage.io import load_volume
    from napari_brainage.space.grid import crop, to_model_input

    spec = model.card.input
    cortex = crop(load_volume(cohort / "ground_truth" / "cortex.nii.gz").data.astype(bool), spec)
    rng = np.random.default_rng(0)

    def age(x: np.ndarray) -> float:
        with torch.no_grad():
            out = model.predictor(torch.from_numpy(x.astype(np.float32))[None, None])
        return float(out) * model.card.age_sd + model.card.age_mean

    def as_many(pool: np.ndarray, count: int) -> np.ndarray:
        chosen = np.zeros(pool.size, bool)
        chosen[rng.choice(np.flatnonzero(pool), min(count, int(pool.sum())), replace=False)] = True
        return chosen.reshape(pool.shape)

    rows: dict[str, list[float]] = {}
    for item in collect_inputs([cohort / "participants.csv"])[:n]:
        x = to_model_input(load_volume(item.path), spec).astype(np.float32)
        inside = x > 0
        on_cortex, rest = cortex & inside, inside & ~cortex
        depth = ndimage.distance_transform_edt(inside)
        deep = inside & (depth > np.median(depth[inside]))
        clean = age(x)
        noisy = {"Gaussian noise (sd 0.3) on every cortical voxel": on_cortex,
                 "the same noise on as many random non-cortical brain voxels": as_many(rest, int(on_cortex.sum())),
                 "the same noise on as many voxels deeper than the median": as_many(deep, int(on_cortex.sum()))}
        for name, where in noisy.items():
            changes = [abs(age(np.where(where, x + rng.normal(0, 0.3, x.shape), x)) - clean) for _ in range(3)]
            rows.setdefault(name, []).append(float(np.mean(changes)))
        for name, where in {"the cortex 2 % darker": on_cortex, "the rest of the brain 2 % darker": rest}.items():
            rows.setdefault(name, []).append(abs(age(np.where(where, 0.98 * x, x)) - clean))
    print(f"\nprobe: {n} subjects of {cohort.name}; cortex {int(on_cortex.sum())} of {int(inside.sum())} "
          "brain voxels (last subject)\n")
    print("| perturbation of the normalised input | mean change of the predicted age |")
    print("|---|---|")
    for name, changes in rows.items():
        print(f"| {name} | {np.mean(changes):.1f} y |")


if __name__ == "__main__":
    main()
