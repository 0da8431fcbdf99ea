"""Prediction-interval benchmark: do the intervals hold the share of ages they promise?

A model calibrated with ``napari-brainage calibrate`` (split conformal prediction
on held-out subjects; ``napari_brainage.uncertainty``) gives each predicted age an
interval. On subjects drawn like the calibration cohort but never seen, the
share whose chronological age falls inside the interval (coverage) should be the
nominal level (80, 90, 95 %), within sampling error; the narrower the intervals
at that coverage, the more the scan says.

In the same table, per level:

* **null: no scan** -- the calibration cohort's mean age +- the conformal
  quantile of |age - that mean|: an interval that ignores the scan. It covers
  too (conformal prediction is valid for any predictor); what it shows is the
  width a scan-free guess needs.
* **Gaussian**: predicted age +- z x the sd of the calibration residuals, the
  parametric interval conformal prediction replaces (it assumes normal errors).
* **coverage by age third** of the held-out cohort: the guarantee is marginal,
  not for every age band; regression to the mean makes the ends of the age range
  the weak spot.
* **outside cases** (``--outside NAME=CSV``): scans unlike the calibration
  cohort (1 mm scans registered to the template; thick 5 mm slices). The
  guarantee does not reach them; the table shows how far their coverage falls.

Usage::

    napari-brainage synth CALIB --n 300 --seed 2121        # calibration subjects
    napari-brainage synth COVER --n 500 --seed 6262        # held-out test subjects
    napari-brainage calibrate CALIB/participants.csv --model MODEL
    python benchmarks/conformal.py --model MODEL --cohort COVER/participants.csv \\
        --outside "1 mm registered=HELDOUT1MM/participants.csv" --work WORK

Predictions are kept in WORK (one CSV per cohort) and reused when the command is
run again.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_brainage.cohort import predict_cohort  # noqa: E402
from napari_brainage.inference import collect_inputs  # noqa: E402
from napari_brainage.model.card import read_card  # noqa: E402
from napari_brainage.options import RunOptions  # noqa: E402
from napari_brainage.uncertainty import coverage  # noqa: E402

LEVELS = (0.8, 0.9, 0.95)
#: The issue's target: coverage within 3 percentage points of the level.
TOLERANCE = 0.03


def predictions(name: str, table: str, model: str, work: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(ages, predicted ages) of the table's subjects that passed QC, and how many failed."""
    out = work / f"{name.replace(' ', '_').replace('/', '_')}.csv"
    inputs = collect_inputs([table])
    predict_cohort(inputs, out, RunOptions(model_dir=model), resume=out.exists())
    rows = list(csv.DictReader(open(out)))
    kept = [r for r in rows if r["predicted_age"]]
    ages = np.array([float(r["age"]) for r in kept])
    predicted = np.array([float(r["predicted_age"]) for r in kept])
    return ages, predicted, len(rows) - len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a calibrated model folder")
    parser.add_argument("--cohort", required=True, help="held-out participants CSV drawn like the calibration one")
    parser.add_argument("--outside", action="append", default=[], metavar="NAME=CSV",
                        help="a cohort outside the calibration's kind (repeatable)")
    parser.add_argument("--work", required=True, help="folder for the predictions")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    card = read_card(args.model)
    calibration = card.calibration
    if calibration is None:
        sys.exit(f"{args.model}: not calibrated; run `napari-brainage calibrate` first")
    cal_ages, cal_predicted = np.asarray(calibration.ages), np.asarray(calibration.predicted)
    print(f"calibration: {calibration.n} subjects ({calibration.source}); "
          f"MAE {np.abs(cal_predicted - cal_ages).mean():.2f} y")

    ages, predicted, failed = predictions("held-out", args.cohort, args.model, work)
    print(f"held-out: {len(ages)} subjects ({failed} failed QC); MAE {np.abs(predicted - ages).mean():.2f} y\n")

    # The null's centre and spread come from the calibration subjects alone.
    null_centre = cal_ages.mean()
    null_residuals = np.sort(np.abs(cal_ages - null_centre))
    sd = float(np.std(cal_ages - cal_predicted, ddof=1))
    thirds = np.quantile(ages, [1 / 3, 2 / 3])
    band = np.digitize(ages, thirds)

    print("| interval | level | coverage | within 3 points | mean width (y) | width / null width |")
    print("|---|---|---|---|---|---|")
    for level in LEVELS:
        q = calibration.half_width(level)
        rank = math.ceil((calibration.n + 1) * level)
        q_null = float(null_residuals[rank - 1])
        z = float(np.sqrt(2) * _erfinv(level))
        rows = [("split conformal (the plugin's)", predicted - q, predicted + q, 2 * q),
                ("Gaussian (+- z sd)", predicted - z * sd, predicted + z * sd, 2 * z * sd),
                ("null: no scan (mean age +- q)", np.full_like(ages, null_centre - q_null),
                 np.full_like(ages, null_centre + q_null), 2 * q_null)]
        for name, low, high, width in rows:
            covered = coverage(ages, low, high)
            ok = "yes" if abs(covered - level) <= TOLERANCE else "**no**"
            print(f"| {name} | {level:.0%} | {covered:.1%} | {ok} | {width:.2f} | {width / (2 * q_null):.2f} |")
    print()

    print("| held-out age third | ages (y) | n | 90 % coverage (split conformal) |")
    print("|---|---|---|---|")
    q90 = calibration.half_width(0.9)
    edges = [ages.min(), *thirds, ages.max()]
    for i in range(3):
        inside = band == i
        covered = coverage(ages[inside], predicted[inside] - q90, predicted[inside] + q90)
        print(f"| {('youngest', 'middle', 'oldest')[i]} | {edges[i]:.0f}-{edges[i + 1]:.0f} | {inside.sum()} "
              f"| {covered:.1%} |")
    print()

    if args.outside:
        print("| outside case | n (failed QC) | MAE (y) | coverage at 80 / 90 / 95 % |")
        print("|---|---|---|---|")
        for item in args.outside:
            name, table = item.split("=", 1)
            o_ages, o_predicted, o_failed = predictions(name, table, args.model, work)
            if not len(o_ages):
                print(f"| {name} | 0 ({o_failed}) | all refused by QC | - |")
                continue
            covered = [coverage(o_ages, o_predicted - calibration.half_width(level),
                                o_predicted + calibration.half_width(level)) for level in LEVELS]
            print(f"| {name} | {len(o_ages)} ({o_failed}) | {np.abs(o_predicted - o_ages).mean():.2f} | "
                  + " / ".join(f"{c:.0%}" for c in covered) + " |")


def _erfinv(level: float) -> float:
    """erf^-1(level), for the Gaussian interval's z (scipy is a dependency already)."""
    from scipy.special import erfinv

    return float(erfinv(level))


if __name__ == "__main__":
    main()
