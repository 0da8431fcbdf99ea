"""Subject-specific maps: on a cohort whose regions age at different rates, does a
subject's map minus the population map point at that subject's most-aged region?

    napari-brainage synth HET --n 60 --seed 7171 --region-age-sd 6   # a seed no training used
    python benchmarks/heterogeneous.py --cohort HET [--model DIR] [--methods noise saliency]

For each subject and method: the map (``inference.importance_in_model_space`` on
the template grid) minus the cohort's population map (the mean of the same
method's maps over the cohort), averaged inside each ageing region's
ground-truth mask (``ground_truth/<region>.nii.gz``); the region with the
highest mean difference is the map's answer (also with the difference divided
by the cohort's standard deviation at each voxel). The truth is the region whose own
age (``<region>_age`` in participants.csv) is highest: the region that looks
oldest in this subject.

Nulls in the same run: chance (1 / number of regions); always answering the
most common truth; and the population map as every subject's map (its
difference is 0 everywhere: no answer, scored as chance). A map that beats
neither shows nothing subject-specific.

Issue 18's target: the noise model's answer is right for >= 60 % of subjects.
The regions' masks are the template's: a subject's own regions are moved 1-2
voxels by its nuisance warp, which blurs the comparison alike for every method
and null.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_brainage.explain import LABELS, METHODS  # noqa: E402
from napari_brainage.inference import collect_inputs, importance_in_model_space, load_model  # noqa: E402
from napari_brainage.io import load_volume  # noqa: E402
from napari_brainage.space.grid import uncrop  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", required=True, type=Path, help="made by napari-brainage synth --region-age-sd")
    parser.add_argument("--model", type=Path, default=ROOT / "napari_brainage" / "bundled_model")
    parser.add_argument("--methods", nargs="+", default=["noise", "saliency"], choices=METHODS)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()

    torch.set_num_threads(2)
    rows = list(csv.DictReader(open(args.cohort / "participants.csv")))
    regions = [name[: -len("_age")] for name in rows[0] if name.endswith("_age") and name != "brain_age"]
    if len(regions) < 2:
        parser.error(f"{args.cohort}: no per-region ages; make the cohort with --region-age-sd and 2+ regions")
    truth_masks = {r: load_volume(args.cohort / "ground_truth" / f"{r}.nii.gz").data.astype(bool) for r in regions}
    oldest = {row["subject"]: max(regions, key=lambda r: float(row[f"{r}_age"])) for row in rows}
    model, device = load_model(args.model, "cpu", need_noise_model="noise" in args.methods)
    inputs = collect_inputs([args.cohort / "participants.csv"])[: args.limit]

    truths = [oldest[item.subject] for item in inputs]
    chance = 1.0 / len(regions)
    most_common, count = Counter(truths).most_common(1)[0]
    print(f"{len(inputs)} subjects of {args.cohort.name}; regions {', '.join(regions)}; "
          f"most-aged region: {dict(Counter(truths))}")
    print()
    print("| map | top region of subject minus population = the subject's most-aged region "
          "| the same, difference standardised by the cohort's sd |")
    print("|---|---|---|")
    for method in args.methods:
        maps = []
        for item in inputs:
            maps.append(uncrop(importance_in_model_space(load_volume(item.path), model, device, method=method),
                               model.card.input))
        population, spread = np.mean(maps, axis=0), np.std(maps, axis=0)
        hits = {"difference": 0, "standardised": 0}
        for values, truth in zip(maps, truths):
            difference = values - population
            # Standardised: the difference in units of the cohort's spread at each voxel, so a
            # region whose maps vary little across subjects is not outshouted by one that varies a lot.
            z = difference / (spread + 1e-6)
            for name, stat in (("difference", difference), ("standardised", z)):
                answer = max(regions, key=lambda r: float(stat[truth_masks[r]].mean()))
                hits[name] += answer == truth
        n = len(inputs)
        print(f"| {LABELS[method]} | {hits['difference'] / n:.0%} ({hits['difference']}/{n}) "
              f"| {hits['standardised'] / n:.0%} ({hits['standardised']}/{n}) |", flush=True)
    print(f"| null: the population map as every subject's map | {chance:.0%} (no difference: chance) | same |")
    print(f"| null: always the most common answer ({most_common}) | {count / len(inputs):.0%} | same |")
    print(f"| chance (1 / {len(regions)} regions) | {chance:.0%} | same |")


if __name__ == "__main__":
    main()
