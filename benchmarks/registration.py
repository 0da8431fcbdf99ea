"""Preprocessing benchmark: scans moved off the template come back to the same answer.

For each held-out 1 mm synthetic subject (aligned to MNI, as generated), a "raw"
scan is made: the brain is moved by a random rigid + scale transform (rotations
up to 15 degrees about each axis, translations up to 20 mm, isotropic scale up
to 10 %), and stored on a grid with random voxel sizes (0.8-1.5 mm), a random
axis permutation and random flips in the header. The moved scan goes through
the plugin's preprocessing (registration to the template) and the model; the
benchmark reports

* |predicted age (moved) - predicted age (aligned)|, in years, against the aligned
  scan used as it is (no registration: the default for scans on the MNI grid) and
  against the aligned scan registered like the moved one (the pipeline's own
  consistency: what is left when the model sees registered inputs both times);
* the correlation, inside the brain, of the importance map mapped back onto the
  moved scan's grid with the aligned scan's map carried onto that grid by the
  known (true) transform;
* predicted minus true brain age (the generator's) for the aligned and the moved
  scans: how accurate the model is on 1 mm scans, which it was not trained on;
* the same for the moved scan made "as acquired" (each voxel the mean of the
  tissue inside it, ``acquired``) instead of sampled at voxel centres, and the
  correlation of the residual with the moved scan's voxel size and scale (what
  the residual follows);
* seconds of preprocessing (registration + resampling) per scan;
* the QC correlation with the template, and whether QC flagged the scan.

A non-brain volume (smooth noise in a box) is also run, to show the QC warning.

Usage: python benchmarks/registration.py --cohort DIR [--limit N] [--seed 0]
(DIR from `napari-brainage synth DIR --n 30 --seed 8888 --res 1`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_brainage.inference import (  # noqa: E402
    collect_inputs,
    importance_map,
    load_model,
    predict_age,
    prepare_input,
)
from napari_brainage.io import Volume, load_volume  # noqa: E402
from napari_brainage.quality import QualityError  # noqa: E402
from napari_brainage.space.grid import resample  # noqa: E402
from napari_brainage.variants import _block_mean  # noqa: E402


@dataclass
class Row:
    """One subject's figures (ages in years; ``signed``: moved minus the aligned scan registered)."""

    subject: str
    error: float  # |moved - aligned used as it is|
    map_r: float  # importance map correlation on the moved scan's grid
    seconds: float  # preprocessing of the moved scan
    qc_r: float
    registered: bool
    qc: str
    consistency: float  # |moved - aligned registered too|
    bias_aligned: float  # aligned (as it is) - true brain age
    bias_moved: float  # moved - true brain age
    age_aligned: float
    signed: float
    voxel_edge: float  # the moved scan's mean voxel edge, mm
    scale: float  # the move's isotropic scale
    box_asis: float  # voxels as acquired: moved - aligned as it is
    box_registered: float  # voxels as acquired: moved - aligned registered


def rotation(angles_deg) -> np.ndarray:
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_move(volume: Volume, rng: np.random.Generator, fov_mm: float = 240.0):
    """(moved scan, world_map): the scan's tissue at world point w sits, in the
    aligned scan, at ``world_map @ w``."""
    centre = np.array([0.0, -18.0, 18.0])  # middle of the MNI brain
    scale = rng.uniform(0.9, 1.1)
    move = np.eye(4)  # aligned world -> moved world: rotate/scale about the brain centre, then shift
    move[:3, :3] = rotation(rng.uniform(-15, 15, 3)) * scale
    move[:3, 3] = centre + rng.uniform(-20, 20, 3) - move[:3, :3] @ centre
    world_map = np.linalg.inv(move)

    zooms = rng.uniform(0.8, 1.5, 3)
    axes = np.zeros((3, 3))
    for column, (row, sign) in enumerate(zip(rng.permutation(3), rng.choice([-1, 1], 3))):
        axes[row, column] = sign * zooms[column]
    shape = tuple(int(np.ceil(fov_mm / z)) for z in zooms)
    affine = np.eye(4)
    affine[:3, :3] = axes
    moved_centre = (move @ [*centre, 1])[:3]
    affine[:3, 3] = moved_centre - axes @ (np.array(shape) - 1) / 2
    data = resample(volume.data, volume.affine, shape, world_map @ affine)
    return Volume(data.astype(np.float32), affine), world_map


def acquired(volume: Volume, moved: Volume, world_map: np.ndarray, fine_mm: float = 0.6) -> Volume:
    """``moved``'s grid filled as a scanner would: each voxel the mean of the
    tissue inside it, not the value at its centre.

    ``random_move`` samples the 1 mm scan at the new voxel centres (trilinear),
    so a 1.5 mm voxel keeps 1 mm detail (aliased) and a 0.8 mm one is a blurred
    1 mm scan: their sharpness does not match their voxel size, which the
    pipeline's anti-aliasing assumes. Here each voxel is split into k^3 sub-voxels
    of at most ``fine_mm``, sampled the same way and averaged (a box the voxel's
    size: what a voxel integrates).
    """
    k = np.maximum(1, np.ceil(moved.voxel_sizes / fine_mm)).astype(int)
    fine = moved.affine.copy()
    fine[:3, :3] = moved.affine[:3, :3] / k
    fine[:3, 3] = moved.affine[:3, 3] - moved.affine[:3, :3] @ ((k - 1) / (2 * k))  # sub-voxels centred on voxels
    data = resample(volume.data, volume.affine, tuple(np.array(moved.shape) * k), world_map @ fine)
    return Volume(_block_mean(data, k), moved.affine)


def non_brain(rng: np.random.Generator) -> Volume:
    from scipy import ndimage

    data = ndimage.gaussian_filter(rng.random((120, 120, 120)), 6).astype(np.float32)
    data = (data - data.min()) / np.ptp(data) * 200
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    affine[:3, 3] = [-90, -108, -72]
    return Volume(data, affine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True, type=Path)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    model, device = load_model(args.model, "cpu", need_noise_model=True)
    inputs = collect_inputs([args.cohort / "participants.csv"])[: args.limit]
    import csv

    with open(args.cohort / "participants.csv", newline="") as handle:
        brain_age = {row["subject"]: float(row["brain_age"]) for row in csv.DictReader(handle)}
    rng = np.random.default_rng(args.seed)
    rows = []
    for item in inputs:
        aligned = load_volume(item.path)
        reference = prepare_input(aligned, "auto")
        age_aligned = predict_age(aligned, model, device, prepared=reference).predicted_age
        age_aligned_registered = predict_age(aligned, model, device, preprocessing="register").predicted_age
        map_aligned = importance_map(aligned, model, device, prepared=reference)

        moved, world_map = random_move(aligned, rng)
        tic = time.perf_counter()
        prepared = prepare_input(moved, "auto")
        seconds = time.perf_counter() - tic
        result = predict_age(moved, model, device, prepared=prepared)
        map_moved = importance_map(moved, model, device, prepared=prepared)
        truth_on_moved = resample(map_aligned.data, aligned.affine, moved.shape, world_map @ moved.affine)
        brain = moved.data > 0
        r = float(np.corrcoef(map_moved.data[brain], truth_on_moved[brain])[0, 1])
        box = acquired(aligned, moved, world_map)
        age_box = predict_age(box, model, device).predicted_age
        rows.append(Row(
            subject=item.subject, error=abs(result.predicted_age - age_aligned), map_r=r, seconds=seconds,
            qc_r=prepared.quality.template_correlation, registered=prepared.quality.registered, qc=result.qc,
            consistency=abs(result.predicted_age - age_aligned_registered),
            bias_aligned=age_aligned - brain_age[item.subject],
            bias_moved=result.predicted_age - brain_age[item.subject], age_aligned=age_aligned,
            signed=result.predicted_age - age_aligned_registered,
            voxel_edge=float(np.prod(moved.voxel_sizes)) ** (1 / 3),
            scale=float(np.linalg.det(np.linalg.inv(world_map)[:3, :3])) ** (1 / 3),
            box_asis=age_box - age_aligned, box_registered=age_box - age_aligned_registered))
        print(f"{item.subject}: aligned {age_aligned:.2f} y (registered {age_aligned_registered:.2f} y), "
              f"moved {result.predicted_age:.2f} y (voxels as acquired {age_box:.2f} y), "
              f"map r {r:.3f}, {seconds:.1f} s, QC r {prepared.quality.template_correlation:.2f} "
              f"({result.qc})", flush=True)

    junk = non_brain(rng)
    try:
        junk_qc = predict_age(junk, model, device).qc  # an age for it would be a bug: QC must at least flag it
    except QualityError as err:
        junk_qc = str(err)
    print(f"non-brain volume: QC says: {junk_qc}")

    column = lambda name: np.array([getattr(row, name) for row in rows])  # noqa: E731
    errors, rs, secs, consistency, bias_aligned, bias_moved = (
        column(name) for name in ("error", "map_r", "seconds", "consistency", "bias_aligned", "bias_moved"))
    flagged = sum(row.qc != "ok" for row in rows)
    print()
    print(f"{len(rows)} held-out 1 mm subjects from {args.cohort.name}, seed {args.seed}, "
          f"{os.environ['OMP_NUM_THREADS']} threads")
    print()
    print("| figure | value | target |")
    print("|---|---|---|")
    print(f"| mean (max) \\|age moved - age aligned, used as it is\\| | {errors.mean():.2f} ({errors.max():.2f}) y "
          "| <= 1 y on average |")
    print(f"| mean (max) \\|age moved - age aligned, registered too\\| | {consistency.mean():.2f} "
          f"({consistency.max():.2f}) y | |")
    print(f"| predicted - true brain age, aligned scan: mean (mean absolute) | {bias_aligned.mean():+.2f} "
          f"({np.abs(bias_aligned).mean():.2f}) y | |")
    print(f"| predicted - true brain age, moved scan: mean (mean absolute) | {bias_moved.mean():+.2f} "
          f"({np.abs(bias_moved).mean():.2f}) y | |")
    print(f"| importance map correlation, mean (min) | {rs.mean():.3f} ({rs.min():.3f}) | >= 0.8 |")
    print(f"| preprocessing seconds per scan, median (max) | {np.median(secs):.1f} ({secs.max():.1f}) | < 10 s |")
    print(f"| moved scans flagged by QC | {flagged} of {len(rows)} | 0 |")
    print(f"| non-brain volume flagged by QC | {'yes' if junk_qc != 'ok' else 'NO'} | yes |")
    aligned_ages = column("age_aligned")
    null = np.abs(aligned_ages - aligned_ages.mean())
    print(f"| null: the mean aligned age for every scan, mean (max) \\|difference\\| | {null.mean():.2f} "
          f"({null.max():.2f}) y | |")
    # What the residual follows: the moved scan's voxel size (its sharpness after
    # resampling) or the brain's rescaling, not the rotation (registration's job).
    signed, edge, scale = (column(name) for name in ("signed", "voxel_edge", "scale"))
    box_asis, box_registered = column("box_asis"), column("box_registered")
    print(f"| the moved scans' voxels as acquired (each the mean of the tissue inside it): mean (max) "
          f"\\|age moved - age aligned, used as it is\\| | {np.abs(box_asis).mean():.2f} "
          f"({np.abs(box_asis).max():.2f}) y | <= 1 y on average |")
    print(f"| the same, against the aligned scan registered too | {np.abs(box_registered).mean():.2f} "
          f"({np.abs(box_registered).max():.2f}) y | |")
    if len(rows) > 2:
        corr = lambda a, b: np.corrcoef(a, b)[0, 1]  # noqa: E731
        print(f"| correlation of (moved - aligned registered) with the moved scan's mean voxel edge / its scale: "
              f"sampled at voxel centres; voxels as acquired | {corr(signed, edge):.2f} / {corr(signed, scale):.2f}; "
              f"{corr(box_registered, edge):.2f} / {corr(box_registered, scale):.2f} | |")


if __name__ == "__main__":
    main()
