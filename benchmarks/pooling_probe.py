"""How much do noise, blur and thick slices move a predictor's age? (max- vs average-pooling SFCN)

Why: the bundled predictor reads interpolation blur as youth (registered and
resampled scans read younger, issue 16) and noise anywhere as age (the noise
model gets no room, issue 18). SFCN down-samples with max-pooling, and a max over
noisy voxels grows with the noise's sd while blur lowers it; an average does
neither. This probe puts numbers on it for any number of model folders, on the
same held-out scans and the same perturbations:

* accuracy: MAE against chronological and true brain age; null: the training
  cohort's mean age (the card's ``age_mean``) for every subject;
* mean signed age change when Gaussian noise (sd 0.1, 0.3 of the mean intensity)
  is added inside the brain (2 draws), and when the input is blurred (Gaussian,
  sd 0.5 and 1 voxel of 2 mm; cut to the brain and renormalised, as the pipeline would);
* outside the training data's kind: the input averaged into 5 mm and 7.5 mm thick
  slices along the superior-inferior axis and interpolated back
  (``training.augment.thick_slices``, what registration does to a thick-slice scan).

Usage: python benchmarks/pooling_probe.py --cohort HELDOUT --model A --model B [--limit 60]
(HELDOUT from ``napari-brainage synth HELDOUT --n 200 --seed 9999``, a seed no training used).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from napari_brainage.inference import load_model, prepare_input  # noqa: E402
from napari_brainage.io import load_volume  # noqa: E402
from napari_brainage.training.augment import gaussian_blur, renormalise, thick_slices  # noqa: E402

SUPERIOR = 2  # the model grid's (X, Y, Z) axis running inferior -> superior


def ages(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = [model.predictor(x[i:i + 10]).numpy() for i in range(0, len(x), 10)]
    return np.concatenate(out) * model.card.age_sd + model.card.age_mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True, type=Path)
    parser.add_argument("--model", action="append", required=True, type=Path)
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    models = {str(folder): load_model(folder, "cpu")[0] for folder in args.model}
    spec = next(iter(models.values())).card.input
    with open(args.cohort / "participants.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[: args.limit]
    x = torch.from_numpy(np.stack([prepare_input(load_volume(args.cohort / r["path"])).model_input(spec)
                                   for r in rows]))[:, None]
    age = np.array([float(r["age"]) for r in rows])
    brain_age = np.array([float(r["brain_age"]) for r in rows])
    inside = (x > 0).float()

    print(f"{len(rows)} held-out subjects from {args.cohort}; mean signed change of the predicted age (years)")
    print()
    print("| model | pooling | MAE vs age | MAE vs brain age | noise sd 0.1 | noise sd 0.3 | blur 0.5 voxel "
          "| blur 1 voxel | 5 mm slices | 7.5 mm slices |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, model in models.items():
        clean = ages(model, x)
        generator = torch.Generator().manual_seed(0)
        cells = [np.abs(clean - age).mean(), np.abs(clean - brain_age).mean()]
        for sd in (0.1, 0.3):
            cells.append(np.mean([ages(model, x + torch.randn(x.shape, generator=generator) * sd * inside) - clean
                                  for _ in range(2)]))
        for sigma in (0.5, 1.0):
            cells.append((ages(model, renormalise(gaussian_blur(x, sigma) * inside)) - clean).mean())
        for factor in (2.5, 3.75):  # 2 mm voxels -> 5 and 7.5 mm slices
            cells.append((ages(model, renormalise(thick_slices(x, SUPERIOR, factor) * inside)) - clean).mean())
        print(f"| {name} | {model.card.predictor_pool} | " + " | ".join(f"{c:+.2f}" if i > 1 else f"{c:.2f}"
                                                                         for i, c in enumerate(cells)) + " |")
    card = next(iter(models.values())).card
    null = np.abs(card.age_mean - age).mean()
    print(f"| null: the training mean age ({card.age_mean:.1f} y) for every subject | | {null:.2f} | "
          f"{np.abs(card.age_mean - brain_age).mean():.2f} | 0 | 0 | 0 | 0 | 0 | 0 |")


if __name__ == "__main__":
    main()
