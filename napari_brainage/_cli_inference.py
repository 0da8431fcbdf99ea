"""The predict / explain / population commands (thin: core calls and progress lines)."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from .cohort import RunningStats, effect_size, population_stats, predict_cohort
from .errors import describe_error
from .inference import collect_inputs, importance_map, load_model, prepare_input
from .io import atomic_path, load_volume, save_volume
from .population import rank_regions, template_volume, write_region_table
from .template import mni_grid


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(name: str):
    """A progress line on stderr with rate and ETA, at most about once a second."""
    started, last = time.monotonic(), [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 1.0 and done < total:
            return
        last[0] = now
        rate = done / max(now - started, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("nan")
        _say(f"{name} {done}/{total} ({rate:.2f}/s, ETA {eta:.0f} s)")

    return report


def predict(args) -> int:
    out = Path(args.out)
    if not args.resume:
        _refuse_existing(out, args.overwrite)
    inputs = collect_inputs(args.inputs)
    results = predict_cohort(inputs, out, args.model, args.device, args.preprocess, resume=args.resume,
                             workers=args.workers, scheduler=args.scheduler, progress=_progress("predict"))
    for result in results:
        if result.error:
            _say(f"predict {result.subject}: error: {result.error}")
        elif result.qc and result.qc != "ok":
            _say(f"predict {result.subject}: QC: {result.qc}")
    failed = sum(bool(r.error) for r in results)
    print(f"napari-brainage predict: {len(results) - failed} of {len(results)} scans this run -> {out}; "
          f"{failed} failed")
    return 1 if failed else 0


def explain(args) -> int:
    out = Path(args.out)
    inputs = collect_inputs(args.inputs)
    targets = [out / f"{item.subject}_importance.nii.gz" for item in inputs]
    if args.resume:  # maps are written atomically: one that exists is complete
        kept = [(item, target) for item, target in zip(inputs, targets) if not target.exists()]
        _say(f"explain: resuming, {len(inputs) - len(kept)} maps already done")
        inputs, targets = [item for item, _ in kept], [target for _, target in kept]
    for target in targets:
        _refuse_existing(target, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    model, device = load_model(args.model, args.device, need_noise_model=True)
    failed = 0
    for i, (item, target) in enumerate(zip(inputs, targets), 1):
        tic = time.monotonic()
        try:
            volume = load_volume(item.path)
            prepared = prepare_input(volume, args.preprocess)
            quality = prepared.quality
            save_volume(importance_map(volume, model, device, prepared=prepared, method=args.method), target,
                        overwrite=args.overwrite,
                        description=f"napari-brainage importance ({args.method}); QC {quality.status}")
            _say(f"explain {i}/{len(inputs)} {item.subject}: {target} ({time.monotonic() - tic:.2f} s)")
            if quality.status != "pass":
                _say(f"explain {item.subject}: QC: {quality.summary()}")
        except Exception as err:  # this scan's failure is logged; the others go on (Ctrl-C still stops)
            failed += 1
            _say(f"explain {i}/{len(inputs)} {item.subject}: error: {describe_error(err)}")
    print(f"napari-brainage explain: {len(inputs) - failed} of {len(inputs)} maps in {out}; {failed} failed")
    return 1 if failed else 0


def population(args) -> int:
    out = Path(args.out)
    stem = out.name.replace(".nii.gz", "").replace(".nii", "")
    regions = Path(args.regions) if args.regions else out.with_name(stem + "_regions.csv")
    inputs = collect_inputs(args.inputs, group_by=args.group_by)
    group_names = sorted({item.group for item in inputs}) if args.group_by else []
    group_paths = {g: out.with_name(f"{stem}_{_safe(g)}.nii.gz") for g in group_names}
    extra = [out.with_name(f"{stem}_difference.nii.gz"), out.with_name(f"{stem}_effect_size.nii.gz")] \
        if len(group_names) == 2 else []
    for path in (out, regions, *group_paths.values(), *extra):
        _refuse_existing(path, args.overwrite)
    checkpoint = out.with_name(f".{stem}.checkpoint.npz")
    shape = mni_grid(2)[0]
    run = population_stats(inputs, checkpoint, shape, args.model, args.device, args.preprocess, method=args.method,
                           resume=args.resume, workers=args.workers, scheduler=args.scheduler,
                           progress=_progress("population"))
    for subject, error in run.failed:
        _say(f"population: skipped {subject}: {error}")
    total = RunningStats(shape)
    for stats in run.groups.values():
        total.merge(stats)
    save_volume(template_volume(total.mean), out, overwrite=args.overwrite)
    scores = rank_regions(total.mean)
    write_region_table(scores, regions)
    for group, path in group_paths.items():
        if group in run.groups:
            save_volume(template_volume(run.groups[group].mean), path, overwrite=args.overwrite)
        else:  # every scan of this group failed (listed above)
            _say(f"population: no map for group {group}: none of its scans could be mapped")
    counts = {g: run.groups[g].count if g in run.groups else 0 for g in group_names}
    if extra and min(counts.values()) >= 1:
        a, b = (run.groups[g] for g in group_names)
        save_volume(template_volume(b.mean - a.mean), extra[0], overwrite=args.overwrite,
                    description=f"importance difference: {group_names[1]} - {group_names[0]}")
    if extra and min(counts.values()) >= 2:
        save_volume(template_volume(effect_size(a, b)), extra[1], overwrite=args.overwrite,
                    description=f"Cohen's d: {group_names[1]} vs {group_names[0]}")
    elif extra:
        _say("population: no effect-size map: each group needs at least two mapped scans "
             f"({', '.join(f'{g}: {n}' for g, n in counts.items())})")
    checkpoint.unlink(missing_ok=True)
    top = ", ".join(f"{s.region} {s.mean_importance:.3f}" for s in scores[:3])
    groups = f"; groups {', '.join(f'{g} (n={n})' for g, n in counts.items())}" if group_names else ""
    print(f"napari-brainage population: mean of {total.count} maps -> {out}; regions -> {regions} "
          f"(top: {top}){groups}; {len(run.failed)} failed")
    return 1 if run.failed else 0


def _safe(name: str) -> str:
    """A group value usable in a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "empty"


def preprocess(args) -> int:
    """Scans onto the model's 2 mm MNI grid, with a QC table that is also a participants CSV."""
    from .parallel import ordered_map
    from .preprocess import EXPORT_FIELDS

    out = Path(args.out)
    table = out / "participants.csv"
    inputs = collect_inputs(args.inputs)
    targets = {item.subject: out / f"{item.subject}.nii.gz" for item in inputs}
    done: dict[str, dict] = {}
    if args.resume and table.exists():  # scans are written atomically: a listed, existing one is complete
        with open(table, newline="") as handle:
            done = {row["subject"]: row for row in csv.DictReader(handle)
                    if row["subject"] in targets and targets[row["subject"]].exists()}
        _say(f"preprocess: resuming; already done: {len(done)} of {len(inputs)} scans")
    else:
        for path in (table, *targets.values()):
            _refuse_existing(path, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(item.subject, str(item.path), item.age, str(targets[item.subject]), args.preprocess)
            for item in inputs if item.subject not in done]
    report, failed = _progress("preprocess"), []
    # Rows are appended as scans finish, so an interrupted run can resume; the
    # table is rewritten in input order at the end.
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, EXPORT_FIELDS)
        writer.writeheader()
        writer.writerows(done.values())
        for i, row in enumerate(ordered_map(_export_or_error, jobs, args.workers), 1):
            if "error" in row:
                failed.append(row)
                _say(f"preprocess {row['subject']}: error: {row['error']}")
            else:
                writer.writerow(row)
                handle.flush()
                done[row["subject"]] = row
                if row["qc"] != "ok":
                    _say(f"preprocess {row['subject']}: QC: {row['qc']}")
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
    print(f"napari-brainage preprocess: {len(done)} of {len(inputs)} scans on the 2 mm MNI grid in {out} "
          f"(table: {table}); {flagged} flagged by QC, {len(failed)} failed"
          + (f" (reasons: {failures})" if failed else ""))
    return 1 if failed else 0


def _export_or_error(job) -> dict:
    from .preprocess import export_prepared

    try:
        return export_prepared(job)
    except Exception as err:  # runs in worker processes: the error comes back as this scan's row
        return {"subject": job[0], "error": describe_error(err)}
