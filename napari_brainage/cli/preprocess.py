"""``napari-brainage preprocess``: scans onto the model's 2 mm MNI grid, with a QC
table that is also a participants CSV (train on it, or inspect the registrations)."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ._common import (
    INPUT_HELP,
    add_inputs,
    add_preprocessing,
    progress,
    refuse_existing,
    refuse_file_as_folder,
    resuming,
    say,
)

NAME = "preprocess"
HELP = "bring scans onto the model's 2 mm MNI grid (registered unless already in MNI space), with QC"


DESCRIPTION = (HELP + ". Writes OUT/SUBJECT.nii.gz and OUT/participants.csv (subject, path, age, QC): inspect "
               "the registrations, or train on the result." + INPUT_HELP)


def add_arguments(prep) -> None:
    add_inputs(prep)
    prep.add_argument("--out", required=True, metavar="DIR", help="folder to write (made if missing)")
    add_preprocessing(prep)
    prep.add_argument("--workers", type=int, default=1, help="processes (registration takes seconds a scan)")
    prep.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    prep.add_argument("--resume", action="store_true", help="continue an interrupted run")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..cohort import keep_record, output_lock, record_path
    from ..inference import collect_inputs

    out = Path(args.out)
    refuse_file_as_folder(out)
    table = out / "participants.csv"
    inputs = collect_inputs(args.inputs)
    targets = {item.subject: out / f"{item.subject}.nii.gz" for item in inputs}
    done: dict[str, dict] = {}
    if args.resume and table.exists():  # scans are written atomically: a listed, existing one is complete
        with open(table, newline="") as handle:
            done = {row["subject"]: row for row in csv.DictReader(handle)
                    if row["subject"] in targets and targets[row["subject"]].exists()}
        say(resuming("preprocess", len(done), len(inputs), 0))
    else:
        for path in (table, *targets.values()):
            refuse_existing(path, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):  # one run at a time writes the folder
        # A resumed table must hold one route's scans: the same --preprocess as before.
        keep_record(record_path(table), {"preprocess": args.preprocess}, args.resume, table)
        return _export_all(inputs, out, table, targets, done, args.preprocess, args.workers)


def _export_all(inputs, out: Path, table: Path, targets: dict[str, Path], done: dict[str, dict], mode: str,
                workers: int) -> int:
    """``run`` once it holds the folder's lock: the scans not ``done`` exported, the tables written."""
    from ..io import atomic_path
    from ..parallel import ordered_map
    from ..preprocess import EXPORT_FIELDS

    jobs = [(item.subject, str(item.path), item.age, str(targets[item.subject]), mode)
            for item in inputs if item.subject not in done]
    report, failed = progress("preprocess"), []
    # Rows are appended as scans finish, so an interrupted run can resume; the
    # table is rewritten in input order at the end.
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, EXPORT_FIELDS)
        writer.writeheader()
        writer.writerows(done.values())
        for i, row in enumerate(ordered_map(_export_or_error, jobs, workers), 1):
            if "error" in row:
                failed.append(row)
                say(f"preprocess {row['subject']}: error: {row['error']}")
            else:
                writer.writerow(row)
                handle.flush()
                done[row["subject"]] = row
                if row["qc"] != "ok":
                    say(f"preprocess {row['subject']}: QC: {row['qc']}")
                if row["contrast"] not in ("", "T1"):
                    say(f"preprocess {row['subject']}: {NOT_T1.format(row['contrast'])}")
            report(i, len(jobs))
    with atomic_path(table) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, EXPORT_FIELDS)
        writer.writeheader()
        writer.writerows(done[item.subject] for item in inputs if item.subject in done)
    # Failures go to their own table: participants.csv stays a training table.
    failures = out / "failed.csv"
    if failed:
        with atomic_path(failures) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, ("subject", "error"), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(failed)
    else:
        failures.unlink(missing_ok=True)  # from an earlier run of the same folder
    flagged = sum(row["qc"] != "ok" for row in done.values())
    other = sum(row["contrast"] not in ("", "T1") for row in done.values())
    print(f"napari-brainage preprocess: {len(done)} of {len(inputs)} scans on the 2 mm MNI grid in {out} "
          f"(table: {table}); {flagged} flagged by QC, {other} not T1-weighted (contrast column), "
          f"{len(failed)} failed"
          + (f" (reasons: {failures})" if failed else ""))
    return 1 if failed else 0


#: What is said of a scan QC reads as another contrast: kept here (training may want it),
#: refused by a T1 model when it predicts.
NOT_T1 = ("read as {}-weighted, not T1: written and listed, but a T1 model refuses it when it predicts, "
          "and `train predictor` would learn from it as it is (leave it out of a T1 model's training table)")


def _export_or_error(job) -> dict:
    from ..cohort import scan_error
    from ..preprocess import export_prepared

    try:
        return export_prepared(job)
    except Exception as err:  # runs in worker processes: the error comes back as this scan's row
        return {"subject": job[0], "error": scan_error(err, job[1])}  # whole, from the path, as predict's
