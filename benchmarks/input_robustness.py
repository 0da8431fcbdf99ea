"""Input robustness benchmark: real-world kinds of files give the clean scan's age, or are flagged.

For each held-out 1 mm synthetic subject, the clean scan's age with the default
preprocessing (``predict_age(..., preprocessing="auto")``) is the reference. Every
variant of ``napari_brainage.variants`` (other fields of view, axis orders and
headers, moved heads, storage types, intensity scalings, a head with scalp and
neck, thick slices, T2/FLAIR-like contrasts, statistical maps and label images,
partial fields of view) is written to one folder for all subjects, with a copy
of each clean scan, and the whole folder goes through ONE cohort run, the public
path a user takes (``predict_cohort`` over the folder's files, ``preprocessing="auto"``).
That run must complete with one row per file.

Per kind it reports n, the mean and max |age - reference| over the scans that got
an age, the share flagged (QC ``qc_status`` warn/fail; while that column does not
exist, ``qc`` other than "ok"; a scan refused with an error counts as flagged),
the share with no age, and silent errors (|age - reference| > 2 y with QC ok),
with a verdict against the targets:

* geometry, storage, intensity and head variants expected to keep the age:
  within 1 y on average and 2 y at most of the reference, every scan aged (a QC
  warning on such a scan is noted beside the verdict, not failed; ``zscore_brain``,
  "same age or flag": each scan within 2 y or flagged);
* resolution variants: each scan within 2 y of the reference, or flagged;
* contrast, not-anatomical and the top-cut partial field of view: flagged in 100 %,
  and no age written where QC failed (``qc_status`` fail); the bottom cut: within
  2 y or flagged;
* no silent error > 2 y anywhere.

For scale the table also has the null (predicting the subjects' mean reference
age for every scan) and the reference's own error against the generator's true
brain age, and each kind's mean |age - true brain age|: the verdicts compare with
the clean scan, which cannot tell a wrong variant from a wrong clean path (an
average-pooling predictor read its moved copies closer to the truth than the
clean scans, docs/benchmarks.md).

Usage: python benchmarks/input_robustness.py --cohort DIR [--limit 20] [--kinds KIND|GROUP ...] [--model DIR]
       [--out results.csv] [--workers 2] [--seed 0] [--work DIR]
(DIR from ``napari-brainage synth DIR --n 24 --seed 7777 --res 1``, a seed no training used.)
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_brainage.cohort import predict_cohort  # noqa: E402
from napari_brainage.inference import collect_inputs, load_model, predict_age  # noqa: E402
from napari_brainage.io import load_volume, strip_suffix  # noqa: E402
from napari_brainage.options import RunOptions  # noqa: E402
from napari_brainage.variants import KINDS, select_kinds, write_variants  # noqa: E402

#: Separates the subject from the kind in a variant's file name: ``sub-0001__axes_psl.nii.gz``.
SEPARATOR = "__"
CLEAN = "clean"
SILENT_ERROR_Y = 2.0
#: Targets: mean and max |age - reference| (years) for variants that should keep the age.
MEAN_TARGET_Y, MAX_TARGET_Y = 1.0, 2.0
ROW_FIELDS = ("subject", "kind", "group", "expected", "file", "reference_age", "true_brain_age", "predicted_age",
              "abs_diff", "qc_status", "qc", "error", "flagged", "no_age", "silent_error")


def make_subject_variants(job: tuple[str, str, int, list[str] | None, str]) -> list[dict]:
    """Write one subject's variants (and a copy of its clean scan) into the shared folder."""
    subject, path, seed, kinds, folder = job
    volume = load_volume(path)
    prefix = f"{subject}{SEPARATOR}"
    written = write_variants(volume, folder, seed=seed, kinds=kinds, prefix=prefix)
    clean_copy = Path(folder) / f"{prefix}{CLEAN}{''.join(Path(path).suffixes)}"
    shutil.copyfile(path, clean_copy)
    rows = [{"subject": subject, "kind": CLEAN, "group": "reference", "expected": "same age", "file": clean_copy.name}]
    rows += [{"subject": subject, "kind": v.name, "group": v.group, "expected": v.expected, "file": v.path.name}
             for v in written]
    return rows


def subject_pool_map(function, jobs: list, workers: int):
    """``map(function, jobs)`` in order, one job at a time per process (``parallel.ordered_map``
    hands out chunks of 4, which leaves a worker idle for a few subjects)."""
    if workers <= 1 or len(jobs) < 2:
        yield from map(function, jobs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(function, jobs, chunksize=1)


def read_rows(path: Path) -> tuple[dict[str, dict], list[str]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return {row["subject"]: row for row in rows}, list(reader.fieldnames or [])


def is_flagged(row: dict) -> bool:
    """QC said not to trust it (qc_status warn/fail, or qc not "ok" while qc_status does not exist),
    or the scan was refused with an error."""
    if row.get("error"):
        return True
    status = (row.get("qc_status") or "").strip().lower()
    if status:
        return status in ("warn", "fail")
    qc = (row.get("qc") or "").strip()
    return bool(qc) and qc != "ok"


def verdict(kind: str, group: str, expected: str, scans: list[dict], has_status: bool) -> str:
    n = len(scans)
    aged = [s for s in scans if s["predicted_age"] is not None]
    diffs = np.array([s["abs_diff"] for s in aged])
    flagged = [s for s in scans if s["flagged"]]
    silent = [s for s in scans if s["silent_error"]]
    problems, notes = [], []
    if silent:
        problems.append(f"{len(silent)} silent error{'s' * (len(silent) > 1)} > {SILENT_ERROR_Y:g} y")
    if kind == CLEAN:
        if diffs.size and diffs.max() > 1e-3:
            problems.append("the cohort path differs from predict_age (did the code change during the run?)")
    elif expected == "flag":
        if len(flagged) < n:
            problems.append(f"{n - len(flagged)} of {n} not flagged")
        failed_with_age = [s for s in scans if s["qc_status"] == "fail" and s["predicted_age"] is not None]
        if failed_with_age:
            problems.append(f"{len(failed_with_age)} aged although QC failed")
        if not has_status:
            notes.append("no qc_status column: warn and fail cannot be told apart")
    elif expected == "same age" and group in ("geometry", "storage", "intensity", "head"):
        if len(aged) < n:
            problems.append(f"{n - len(aged)} of {n} no age")
        if flagged:  # a warning on a scan whose age held is noted, not failed: the targets are about ages
            notes.append(f"{len(flagged)} of {n} flagged although expected to keep the age")
        if diffs.size and diffs.mean() > MEAN_TARGET_Y:
            problems.append(f"mean {diffs.mean():.2f} > {MEAN_TARGET_Y:g} y")
        if diffs.size and diffs.max() > MAX_TARGET_Y:
            problems.append(f"max {diffs.max():.2f} > {MAX_TARGET_Y:g} y")
    else:  # "same age or flag" (and any "same age" outside the groups above): each within 2 y or flagged
        off = [s for s in scans if not s["flagged"] and (s["predicted_age"] is None or s["abs_diff"] > MAX_TARGET_Y)]
        if off:
            problems.append(f"{len(off)} of {n} neither within {MAX_TARGET_Y:g} y nor flagged")
        unflagged = np.array([s["abs_diff"] for s in aged if not s["flagged"]])
        if group in ("geometry", "storage", "intensity", "head") and unflagged.size and unflagged.mean() > 1:
            problems.append(f"unflagged mean {unflagged.mean():.2f} > {MEAN_TARGET_Y:g} y")
    text = "PASS" if not problems else "FAIL: " + "; ".join(problems)
    return text + "".join(f" (note: {note})" for note in notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True, type=Path, help="folder with participants.csv (1 mm synth)")
    parser.add_argument("--limit", type=int, default=20, help="first N subjects (default 20)")
    parser.add_argument("--kinds", nargs="+", default=None, metavar="KIND|GROUP",
                        help=f"variant kinds or groups (default all): {', '.join(KINDS)}")
    parser.add_argument("--out", type=Path, default=Path("input_robustness.csv"), help="per-scan rows (CSV)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes for variants and the cohort run (default 2 with dask.distributed, else 1)")
    parser.add_argument("--seed", type=int, default=0, help="variant seed (subject i uses seed * 10000 + i)")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the bundled model)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the variant files (default: a temporary folder, removed at the end)")
    args = parser.parse_args()
    kinds = [k.name for k in select_kinds(args.kinds)]  # unknown names fail here, before any work

    workers = args.workers
    if workers is None:
        try:
            import distributed  # noqa: F401

            workers = 2
        except ImportError:
            workers = 1

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    participants = args.cohort / "participants.csv"
    with open(participants, newline="") as handle:
        truth = {row["subject"]: row for row in csv.DictReader(handle)}
    subjects = collect_inputs([participants])[: args.limit]
    print(f"{len(subjects)} subjects from {args.cohort}, {len(kinds)} kinds, {workers} worker(s)", flush=True)

    work = args.work or Path(tempfile.mkdtemp(prefix="input_robustness_"))
    folder = work / "variants"
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} is not empty; give another --work folder")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        tic = time.perf_counter()
        jobs = [(item.subject, str(item.path), args.seed * 10_000 + i, kinds, str(folder))
                for i, item in enumerate(subjects)]
        files = [row for rows in subject_pool_map(make_subject_variants, jobs, workers) for row in rows]
        seconds_variants = time.perf_counter() - tic
        size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        print(f"wrote {len(files)} files ({size_mb:.0f} MB) in {seconds_variants:.0f} s", flush=True)

        # References just before the cohort run, so both use the same code (the clean copies' rows check it).
        tic = time.perf_counter()
        model, device = load_model(args.model, "cpu")
        reference: dict[str, float] = {}
        for item in subjects:
            result = predict_age(load_volume(item.path), model, device, preprocessing="auto")
            reference[item.subject] = result.predicted_age
            print(f"  {item.subject}: reference {result.predicted_age:.2f} y (true brain age "
                  f"{float(truth[item.subject]['brain_age']):.2f}), QC {result.qc}", flush=True)
        seconds_reference = time.perf_counter() - tic

        # One cohort run over the folder, as a user would: napari-brainage predict FOLDER.
        inputs = collect_inputs([folder])
        assert len(inputs) == len(files), (len(inputs), len(files))
        cohort_csv = work / "cohort_results.csv"
        tic = time.perf_counter()

        def progress(n: int, total: int) -> None:
            if n % 25 == 0 or n == total:
                print(f"  cohort run: {n} of {total} files, {time.perf_counter() - tic:.0f} s", flush=True)

        predict_cohort(inputs, cohort_csv, RunOptions(model_dir=args.model, preprocessing="auto"), workers=workers,
                       progress=progress)
        seconds_cohort = time.perf_counter() - tic
        results, columns = read_rows(cohort_csv)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    expected_ids = {strip_suffix(row["file"]) for row in files}
    one_row_per_file = set(results) == expected_ids and len(results) == len(files)
    print(f"cohort run over one folder: {len(files)} files, {len(results)} rows, one row per file: "
          f"{'yes' if one_row_per_file else 'NO'} ({seconds_cohort:.0f} s)", flush=True)
    assert one_row_per_file, sorted(expected_ids ^ set(results))[:10]
    has_status = "qc_status" in columns

    scans = []
    for row in files:
        result = results[strip_suffix(row["file"])]
        age = float(result["predicted_age"]) if result.get("predicted_age") else None
        ref = reference[row["subject"]]
        scan = {**row, "reference_age": ref, "true_brain_age": float(truth[row["subject"]]["brain_age"]),
                "predicted_age": age, "abs_diff": abs(age - ref) if age is not None else None,
                "qc_status": (result.get("qc_status") or "").strip().lower(), "qc": result.get("qc", ""),
                "error": result.get("error", "")}
        scan["flagged"] = is_flagged(result)
        scan["no_age"] = age is None
        scan["silent_error"] = age is not None and not scan["flagged"] and scan["abs_diff"] > SILENT_ERROR_Y
        scans.append(scan)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for scan in scans:
            writer.writerow({k: (f"{v:.3f}" if isinstance(v, float) else ("" if v is None else v))
                             for k, v in scan.items()})

    by_kind: dict[str, list[dict]] = defaultdict(list)
    for scan in scans:
        by_kind[scan["kind"]].append(scan)
    refs = np.array([reference[s.subject] for s in subjects])
    true_brain = np.array([float(truth[s.subject]["brain_age"]) for s in subjects])
    chronological = np.array([float(truth[s.subject]["age"]) for s in subjects])
    null = np.abs(refs.mean() - refs)

    print()
    print(f"{len(subjects)} held-out 1 mm subjects from {args.cohort.name}; variant seed {args.seed}; "
          f"model {args.model or 'bundled'}; "
          f"reference = the clean scan's age (predict_age, preprocessing auto); "
          f"QC column used: {'qc_status' if has_status else 'qc (no qc_status column)'}")
    print()
    # Two yardsticks: the clean scan's age (does the file's kind change the answer?) and
    # the true brain age (is the answer right?). When the clean scan's own path is the
    # one that is off, only the second says so.
    print("| kind | group | expected | n | mean \\|age - ref\\| (y) | max (y) | mean \\|age - true brain age\\| (y) "
          "| flagged | no age | silent > 2 y | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| null: the mean reference age for every scan | | | {len(refs)} | {null.mean():.2f} | {null.max():.2f} "
          f"| {np.abs(refs.mean() - true_brain).mean():.2f} | | | | |")
    print(f"| reference vs true brain age | | | {len(refs)} | {np.abs(refs - true_brain).mean():.2f} "
          f"| {np.abs(refs - true_brain).max():.2f} | {np.abs(refs - true_brain).mean():.2f} | | | | "
          f"(chronological age: MAE {np.abs(refs - chronological).mean():.2f} y) |")
    verdicts = {}
    for kind in [CLEAN, *kinds]:
        group_scans = by_kind[kind]
        n = len(group_scans)
        diffs = np.array([s["abs_diff"] for s in group_scans if s["abs_diff"] is not None])
        flagged = sum(s["flagged"] for s in group_scans)
        no_age = sum(s["no_age"] for s in group_scans)
        silent = sum(s["silent_error"] for s in group_scans)
        first = group_scans[0]
        verdicts[kind] = verdict(kind, first["group"], first["expected"], group_scans, has_status)
        name = "clean (copy, cohort path)" if kind == CLEAN else kind
        mean = f"{diffs.mean():.2f}" if diffs.size else "-"
        worst = f"{diffs.max():.2f}" if diffs.size else "-"
        aged = [s for s in group_scans if s["predicted_age"] is not None]
        right = (f"{np.mean([abs(s['predicted_age'] - s['true_brain_age']) for s in aged]):.2f}"
                 if aged else "-")
        print(f"| {name} | {first['group']} | {first['expected']} | {n} | {mean} | {worst} | {right} "
              f"| {100 * flagged / n:.0f} % | {100 * no_age / n:.0f} % | {silent} | {verdicts[kind]} |")

    silent_total = sum(s["silent_error"] for s in scans if s["kind"] != CLEAN)
    passed = sum(v.startswith("PASS") for k, v in verdicts.items() if k != CLEAN)
    print()
    print(f"kinds passing: {passed} of {len(kinds)}; silent errors > {SILENT_ERROR_Y:g} y anywhere: {silent_total} "
          f"(target 0)")
    print(f"time: references {seconds_reference:.0f} s, variants {seconds_variants:.0f} s, "
          f"cohort run {seconds_cohort:.0f} s ({len(files)} files, {workers} worker(s)); per-scan rows: {args.out}")


if __name__ == "__main__":
    main()
