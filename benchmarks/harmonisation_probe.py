"""Can a contrast-harmonising front end stand in for a domain-randomised predictor? (issue 19, CPU probe)

Why: issue 19 asks for one age whatever the contrast (T1, T2, PD, FLAIR) and slice
thickness; SynthBA gets there by training from scratch on randomised renders, which
needs a GPU. SynthSR (Iglesias et al. 2023, Sci Adv 9:eadd3607) shows the other
road: turn any contrast into a T1, then use T1 tools. The cheapest version of it,
tried here, needs no network:

* each voxel of the scan (2 mm model grid, brain) is a partial-volume mix of grey
  matter, white matter, CSF and background, with one intensity per tissue; the
  tissues' intensities are the medians of the template's tissue cores
  (``quality.core_levels``), the background's is 0;
* the fractions are the linear-Gaussian posterior mean given the intensity (noise
  sd ``NOISE`` of the median), summing to 1, with a prior from the template's
  smoothed tissue maps (sd 1 voxel, 10 % uniform) and, for the background, the
  smoothed indicator of the voxels with no signal (without that class, the brain's
  edge reads as white matter in a T2);
* the T1 is re-rendered from the fractions at the T1 tissue levels of
  ``training.augment`` and renormalised.

``score`` ages the renders of ``contrast_resolution.py make`` (same 16 held-out
subjects in every rendering, seed 5959) with each model folder, harmonised or not,
and prints MAE, its ratio to the same model's T1 MAE, and mean / max |age - T1 age|;
null in the same table: the model's training mean age for everyone.
``finetune`` fine-tunes the bundled predictor (average pooling) on harmonised,
domain-randomised inputs (``training.augment.randomise_domain``, then harmonised).

    python benchmarks/harmonisation_probe.py score /tmp/renders --model napari_brainage/bundled_model [--raw]
    python benchmarks/harmonisation_probe.py finetune OUT --data TRAIN/participants.csv --epochs 10 --lr 5e-4

Not part of the product: figures and verdict in docs/benchmarks.md (issue 19, third session).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_brainage.quality import ANY_CONTRAST, CORE_PROBABILITY  # noqa: E402
from napari_brainage.space.template import load_template  # noqa: E402

#: T1 levels the fractions are rendered at: grey matter, white matter, CSF, background
#: (``training.augment.T1_TISSUE_LEVELS``, the template's cores at 2 mm).
T1_LEVELS = np.array([0.97, 1.30, 0.25, 0.0])
NOISE, PRIOR_SD, PRIOR_UNIFORM, PRIOR_SMOOTHING = 0.15, 0.3, 0.1, 1.0


class Priors:
    """The template's tissue fractions as a prior, and its tissue cores, on one grid."""

    def __init__(self, gm, wm, csf, brain):
        fractions = np.stack([ndimage.gaussian_filter(v.astype(np.float32), PRIOR_SMOOTHING) for v in (gm, wm, csf)])
        fractions = np.clip(fractions, 0, None) / np.maximum(fractions.sum(0), 1e-6)
        self.fractions = ((1 - PRIOR_UNIFORM) * fractions + PRIOR_UNIFORM / 3).astype(np.float32)
        inner = ndimage.binary_erosion(brain, iterations=2)
        self.cores = [inner & (p >= CORE_PROBABILITY) for p in (gm, wm, csf)]


def harmonise(x: np.ndarray, priors: Priors) -> np.ndarray:
    """``x`` (a brain-masked scan, any contrast) re-rendered as a T1, divided by its mean."""
    x = np.asarray(x, np.float32)
    inside = x > 0
    levels = [np.median(x[c & inside]) if np.count_nonzero(c & inside) > 50 else np.nan for c in priors.cores]
    if not np.all(np.isfinite(levels)):
        return x
    levels = np.array([*levels, 0.0])
    y = x[inside].astype(np.float64)
    scale = np.median(y)
    background = ndimage.gaussian_filter((~inside).astype(np.float32), 1.0)[inside].astype(np.float64)
    prior = np.concatenate([priors.fractions[:, inside] * (1 - background), background[None]])
    a = np.stack([levels / scale, np.ones(4)])  # intensity and sum-to-one constraints
    gain = PRIOR_SD**2 * a.T @ np.linalg.inv(PRIOR_SD**2 * a @ a.T + np.diag([NOISE**2, 1e-6]))
    fractions = prior + gain @ (np.stack([y / scale, np.ones_like(y)]) - a @ prior)
    fractions = np.clip(fractions, 0, None)  # onto the simplex, approximately: clipped, then
    fractions /= np.maximum(fractions.sum(0), 1e-6)  # rescaled to sum to 1
    out = np.zeros_like(x)
    out[inside] = T1_LEVELS @ fractions
    return out / out[inside].mean()


def score(args) -> None:
    import torch

    from napari_brainage.inference import load_model, predict_age, prepare_input
    from napari_brainage.io import load_volume

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    kit = load_template(2)
    priors = Priors(kit.gm, kit.wm, kit.csf, kit.brain)
    rows = list(csv.DictReader(open(args.folder / "t1" / "participants.csv")))[: args.limit]
    ages = np.array([float(r["age"]) for r in rows])
    print("| model | input | rendering | MAE (y) | / T1 MAE | mean / max abs(age - T1 age) (y) | mean signed (y) |")
    print("|---|---|---|---|---|---|---|")
    for model_dir in args.model:
        model, device = load_model(model_dir)
        how = "as it is" if args.raw else "harmonised"
        reference = None
        for name in args.renderings.split(","):
            predicted = []
            for row in rows:
                volume = load_volume(args.folder / name / f"{row['subject']}.nii.gz")
                prepared = prepare_input(volume, "auto", ANY_CONTRAST)
                if not args.raw:
                    prepared = replace(prepared, data=harmonise(prepared.data, priors))
                predicted.append(predict_age(volume, model, device, prepared=prepared).predicted_age)
            predicted = np.array(predicted)
            reference = predicted if reference is None else reference
            mae, shift = np.abs(predicted - ages).mean(), predicted - reference
            print(f"| {Path(model_dir).name} | {how} | {name} | {mae:.2f} | {mae / np.abs(reference - ages).mean():.2f}"
                  f" | {np.abs(shift).mean():.2f} / {np.abs(shift).max():.2f} | {shift.mean():+.2f} |", flush=True)
        null = np.abs(model.card.age_mean - ages).mean()
        print(f"| {Path(model_dir).name} | null | training mean age for everyone | {null:.2f} | | | |")


def finetune(args) -> None:
    import torch
    from torch.nn import functional as F

    from napari_brainage.model.card import PREDICTOR_FILE, ModelCard, read_card, write_card
    from napari_brainage.model.networks import SFCNRegressor, mirror
    from napari_brainage.model.weights import load_weights, save_weights
    from napari_brainage.space.grid import crop
    from napari_brainage.training.augment import randomise_domain
    from napari_brainage.training.config import TrainConfig
    from napari_brainage.training.data import load_cohort, split_by_subject
    from napari_brainage.training.loop import recalibrate_batch_norm, train_epoch
    from napari_brainage.training.predictor import predict_ages

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    start = read_card(args.init)
    card = ModelCard(input=start.input, predictor_channels=start.predictor_channels, predictor_pool="avg",
                     age_mean=start.age_mean, age_sd=start.age_sd, contrasts=ANY_CONTRAST)
    model = load_weights(SFCNRegressor.for_card(card), args.init, PREDICTOR_FILE, start)
    kit = load_template(2)
    priors = Priors(*(crop(v, card.input) for v in (kit.gm, kit.wm, kit.csf, kit.brain)))
    cohort = load_cohort(args.data, card.input)
    clean = np.stack([harmonise(scan, priors) for scan in cohort.scans])
    config = TrainConfig(epochs=args.epochs, learning_rate=args.lr, batch_size=8, seed=0)
    train, val = split_by_subject(cohort.subjects, config.val_fraction, config.seed)
    targets = (cohort.ages - card.age_mean) / card.age_sd

    def augment(x, rng):
        x = randomise_domain(x, rng)
        x = torch.from_numpy(np.stack([harmonise(scan[0], priors) for scan in x.numpy()]))[:, None]
        return mirror(x) if rng.random() < 0.5 else x

    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=args.epochs)
    args.out.mkdir(parents=True, exist_ok=False)
    best, device = np.inf, torch.device("cpu")
    for epoch in range(args.epochs):
        tic = time.monotonic()
        train_mae = card.age_sd * train_epoch(model, optimiser, cohort.scans, targets, train, config, epoch, device,
                                              loss_of=lambda x, y: F.l1_loss(model(x), y), augment=augment)
        scheduler.step()
        recalibrate_batch_norm(model, clean, train, 8, device)
        val_mae = float(np.abs(predict_ages(model, clean[val], card, device) - cohort.ages[val]).mean())
        if val_mae < best:
            best = val_mae
            save_weights(model, args.out, PREDICTOR_FILE, card)
            write_card(card, args.out)
        print(f"epoch {epoch + 1}: train MAE {train_mae:.2f} y, validation MAE {val_mae:.2f} y, "
              f"{time.monotonic() - tic:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    s = sub.add_parser("score")
    s.add_argument("folder", type=Path, help="renders of contrast_resolution.py make")
    s.add_argument("--model", action="append", required=True, type=Path)
    s.add_argument("--renderings", default="t1,t1_render,t2,pd,flair,t1_3mm,t1_5mm,t2_5mm")
    s.add_argument("--raw", action="store_true", help="the scans as they are (no harmonisation)")
    s.add_argument("--limit", type=int, default=16)
    f = sub.add_parser("finetune")
    f.add_argument("out", type=Path)
    f.add_argument("--data", required=True, type=Path)
    f.add_argument("--init", type=Path, default=ROOT / "napari_brainage" / "bundled_model")
    f.add_argument("--epochs", type=int, default=10)
    f.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()
    score(args) if args.step == "score" else finetune(args)


if __name__ == "__main__":
    main()
