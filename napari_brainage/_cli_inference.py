"""The predict / explain / population commands (thin: core calls and progress lines)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .inference import collect_inputs, importance_map, load_model, predict_many, write_results
from .io import load_volume, save_volume
from .population import population_map, subject_maps, rank_regions, template_volume, write_region_table
from .template import mni_grid


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def predict(args) -> int:
    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    inputs = collect_inputs(args.inputs)
    model, device = load_model(args.model, args.device)
    results = []
    for i, result in enumerate(predict_many(inputs, model, device, args.preprocess), 1):
        results.append(result)
        status = f"error: {result.error}" if result.error else f"{result.predicted_age:.1f} y"
        if result.qc and result.qc != "ok":
            status += f" (QC: {result.qc})"
        _say(f"predict {i}/{len(inputs)} {result.subject}: {status}")
    write_results(results, out)
    failed = sum(bool(r.error) for r in results)
    print(f"napari-brainage predict: {len(results) - failed} of {len(results)} scans -> {out}")
    return 1 if failed else 0


def explain(args) -> int:
    out = Path(args.out)
    inputs = collect_inputs(args.inputs)
    targets = [out / f"{item.subject}_importance.nii.gz" for item in inputs]
    for target in targets:
        _refuse_existing(target, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    model, device = load_model(args.model, args.device, need_noise_model=True)
    failed = 0
    for i, (item, target) in enumerate(zip(inputs, targets), 1):
        tic = time.monotonic()
        try:
            save_volume(importance_map(load_volume(item.path), model, device, args.preprocess), target,
                        overwrite=args.overwrite)
            _say(f"explain {i}/{len(inputs)} {item.subject}: {target} ({time.monotonic() - tic:.2f} s)")
        except (ValueError, OSError) as err:
            failed += 1
            _say(f"explain {i}/{len(inputs)} {item.subject}: error: {err}")
    print(f"napari-brainage explain: {len(inputs) - failed} of {len(inputs)} maps in {out}")
    return 1 if failed else 0


def population(args) -> int:
    out = Path(args.out)
    regions = Path(args.regions) if args.regions else out.with_name(
        out.name.replace(".nii.gz", "").replace(".nii", "") + "_regions.csv")
    for path in (out, regions):
        _refuse_existing(path, args.overwrite)
    inputs = collect_inputs(args.inputs)
    model, device = load_model(args.model, args.device, need_noise_model=True)
    spec = model.card.input
    skipped = []

    def skip(subject: str, err: Exception) -> None:
        skipped.append(subject)
        _say(f"population: skipping {subject}: {err}")

    maps = subject_maps(inputs, model, device, skip, args.preprocess)
    mean, count = population_map(maps, mni_grid(spec.resolution_mm)[0],
                                 progress=lambda n: _say(f"population {n}/{len(inputs)}"))
    save_volume(template_volume(mean, spec.resolution_mm), out, overwrite=args.overwrite)
    scores = rank_regions(mean)
    write_region_table(scores, regions)
    top = ", ".join(f"{s.region} {s.mean_importance:.3f}" for s in scores[:3])
    print(f"napari-brainage population: mean of {count} maps -> {out}; regions -> {regions} (top: {top})")
    return 1 if skipped else 0
