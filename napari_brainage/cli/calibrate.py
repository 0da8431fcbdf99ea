"""``napari-brainage calibrate``: prediction intervals for a model, from held-out subjects."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ._common import (
    INPUT_HELP,
    add_device,
    add_inputs,
    add_preprocessing,
    add_workers,
    check_device,
    check_weights,
    progress,
    refuse_existing,
    refuse_folder_as_file,
    say,
)

NAME = "calibrate"
HELP = "calibrate a model's prediction intervals and gap centiles on held-out subjects"
DESCRIPTION = (HELP + ". Predicts the ages of the INPUT subjects (they need an 'age' column and must not have "
               "been used in training), then writes their ages and predicted ages into the model card: every "
               "later run gives each age a split-conformal prediction interval and each corrected gap its "
               "centile among these subjects. Subjects that fail QC are left out." + INPUT_HELP)


def add_arguments(parser) -> None:
    add_inputs(parser)
    parser.add_argument("--model", required=True, metavar="DIR", help="model folder whose card is calibrated")
    parser.add_argument("--out", metavar="CSV", help="also keep the calibration subjects' results here")
    parser.add_argument("--source", default="", metavar="TEXT",
                        help="what the subjects are, for the card (e.g. the command that made them)")
    parser.add_argument("--overwrite", action="store_true", help="replace the card's existing calibration")
    parser.add_argument("--skip-training-check", action="store_true",
                        help="calibrate even when the model card's training tables (or the scans they list) "
                             "cannot be found, so the subjects cannot be checked against the scans the model "
                             "was trained on (only when you know none of them was)")
    add_preprocessing(parser)
    add_device(parser)
    add_workers(parser)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..cohort import predict_cohort
    from ..errors import InputError
    from ..inference import collect_inputs
    from ..model.card import read_card, write_card
    from ..options import RunOptions
    from ..uncertainty import MIN_CALIBRATION_SUBJECTS, Calibration

    check_device(args.device)  # with the other options, before anything is read or written
    card = read_card(args.model)  # a wrong folder fails before the long part
    check_weights(card, args.model)  # and a tampered one, before --out is started
    if card.calibration is not None and not args.overwrite:
        raise FileExistsError(f"{args.model}: the model card is already calibrated "
                              f"({card.calibration.n} subjects); pass --overwrite to replace it")
    if args.out:
        refuse_folder_as_file(Path(args.out))
        refuse_existing(Path(args.out), args.overwrite)  # before the long part, not after
    inputs = collect_inputs(args.inputs)  # one file named twice is one scan: one person each
    missing = [item.subject for item in inputs if item.age is None]
    if missing:
        raise InputError(f"calibration needs every subject's age (a participants CSV with an 'age' column); "
                         f"none for {', '.join(missing[:5])}")
    if len(inputs) < MIN_CALIBRATION_SUBJECTS:  # said now, not after predicting them all
        raise InputError(f"calibration needs at least {MIN_CALIBRATION_SUBJECTS} subjects with an age; "
                         f"got {len(inputs)}")
    seen_in_training = _training_overlap(inputs, card, args.skip_training_check)
    if seen_in_training:
        raise InputError(f"{len(seen_in_training)} calibration subject(s) are scans the model was trained on "
                         f"({', '.join(seen_in_training[:5])}): split-conformal intervals need subjects the "
                         "model never saw, or they come out too narrow; leave them out")
    options = RunOptions(model_dir=args.model, device=args.device, preprocessing=args.preprocess)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out) if args.out else Path(scratch) / "calibration.csv"
        results = predict_cohort(inputs, out, options, workers=args.workers, scheduler=args.scheduler,
                                 progress=progress("calibrate"))
    kept = [r for r in results if r.predicted_age is not None]
    for result in results:
        if result.predicted_age is None:
            say(f"calibrate {result.subject}: left out: {result.error}")
    source = args.source or f"{len(kept)} subjects of {', '.join(args.inputs)}"
    card = read_card(args.model)  # re-read: keep whatever changed meanwhile but the calibration
    card.calibration = Calibration(ages=tuple(r.age for r in kept), predicted=tuple(r.predicted_age for r in kept),
                                   source=source)
    path = write_card(card, args.model)
    if args.out:  # its rows had the intervals and centiles of the calibration replaced now (--overwrite), or none
        _rewrite_with_calibration(Path(args.out), results, card, options.interval_level)
    widths = ", ".join(f"{level * 100:g} % +-{card.calibration.half_width(level):.1f} y"
                       for level in (0.8, 0.9, 0.95))
    print(f"napari-brainage calibrate: {len(kept)} of {len(results)} subjects -> {path}; intervals: {widths}")
    return 1 if len(kept) < len(results) else 0


def _rewrite_with_calibration(table: Path, results: list, card, level: float) -> None:
    """``table`` (``--out``) rewritten with each subject's interval and gap centile from
    ``card``'s calibration, the one just made (``inference.apply_calibration``): they
    were predicted with the card as it was, so a recalibration's table showed the old
    calibration's intervals and centiles (+-4.81 y among 300 subjects where the new
    one gave +-5.0 among 52)."""
    import csv

    from ..inference import AgeResult, apply_calibration
    from ..io import atomic_path

    for result in results:
        apply_calibration(result, card, level)
    with atomic_path(table) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(AgeResult.FIELDS)
        writer.writerows(result.row() for result in results)


def _training_overlap(inputs, card, skip_check: bool = False) -> list[str]:
    """The calibration subjects whose scan is one the card's predictor was trained on:
    the same file, or a byte-identical copy (compared by size, then SHA-256). The
    training tables are read where the card says they were (absolute paths since
    cards record ``tables``; earlier cards' ``data`` may be relative to the folder
    training ran in).

    Raises
    ------
    InputError
        when the check cannot be done (a table or a scan it lists is not found, or
        the card names no table) and ``skip_check`` is off: intervals calibrated on
        training scans come out too narrow, and nothing would say so.
    """
    import hashlib

    from ..errors import InputError
    from ..participants import read_participants

    trained_on = card.training.get("predictor", {})
    tables = [Path(t) for t in trained_on.get("tables")
              or str(trained_on.get("data", "")).split(" + ") if str(t)]
    found = [t for t in tables if t.is_file()]
    trained = {Path(row["path"]).resolve() for table in found for row in read_participants(table)}
    gone = [str(p) for p in sorted(trained) if not p.is_file()]
    if not tables:
        problem = "the model card names no training tables"
    elif len(found) < len(tables):
        problem = f"{', '.join(str(t) for t in tables if t not in found)} not found"
    elif gone:
        problem = f"{len(gone)} scan(s) of the training tables not found ({', '.join(gone[:3])})"
    else:
        problem = ""
    if problem:
        if not skip_check:
            raise InputError(f"cannot check for training scans among the calibration subjects: {problem}; "
                             "put the training tables and scans back where the card says, or pass "
                             "--skip-training-check if you know none of these subjects was trained on")
        say(f"calibrate: note: not checked for training scans among the subjects (--skip-training-check): "
            f"{problem}")
    by_size: dict[int, list[Path]] = {}
    for path in trained:
        if path.is_file():
            by_size.setdefault(path.stat().st_size, []).append(path)

    digests: dict[Path, str] = {}  # each file read and hashed once, however many files share its size

    def digest(path: Path) -> str:
        if path not in digests:
            digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        return digests[path]

    overlap = []
    for item in inputs:
        path = Path(item.path).resolve()
        same_size = by_size.get(path.stat().st_size, []) if path.is_file() else []
        if path in trained or any(digest(path) == digest(other) for other in same_size):
            overlap.append(item.subject)
    return overlap
