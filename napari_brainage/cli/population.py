"""``napari-brainage population``: a cohort's mean importance map and region ranking."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import INPUT_HELP, add_analysis_arguments, progress, refuse_existing, refuse_unwritable, run_options, say

NAME = "population"
HELP = "average importance maps in template space and rank atlas regions"


DESCRIPTION = HELP + "." + INPUT_HELP


def add_arguments(parser) -> None:
    add_analysis_arguments(parser, out="NIFTI", method=True, workers=True, interval=False)
    parser.add_argument("--group-by", metavar="COLUMN",
                     help="participants CSV column: a mean map per group; with two groups also "
                          "their difference and effect size (Cohen's d)")
    parser.add_argument("--regions", metavar="CSV",
                     help="region ranking CSV (default: OUT with _regions.csv)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..cohort import output_lock, population_stats
    from ..errors import InputError
    from ..inference import collect_inputs
    from ..population import TOP_PERCENT, PopulationOutputs

    options = run_options(args)  # first: no scan is read, no checkpoint written, for a bad option
    out = Path(args.out)
    refuse_unwritable(out.parent)
    inputs = collect_inputs(args.inputs, group_by=args.group_by)
    if args.group_by:  # a blank cell is a missing value, not a group named ""
        ungrouped = [item.subject for item in inputs if not item.group]
        if ungrouped:
            say(f"population: left out {len(ungrouped)} subject(s) with no {args.group_by!r}: "
                f"{', '.join(ungrouped[:5])}{' ...' if len(ungrouped) > 5 else ''}")
            inputs = [item for item in inputs if item.group]
        if not inputs:
            raise InputError(f"no subject has a value in column {args.group_by!r}")
    group_names = sorted({item.group for item in inputs}) if args.group_by else []
    outputs = PopulationOutputs.beside(out, args.regions, group_names)
    for path in outputs.all():
        refuse_existing(path, args.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)  # as explain makes its --out folder
    stem = out.name.replace(".nii.gz", "").replace(".nii", "")
    checkpoint = out.with_name(f".{stem}.checkpoint.npz")
    with output_lock(out):  # a second run would rewrite the same checkpoint and maps
        result = population_stats(inputs, options, checkpoint, resume=args.resume, workers=args.workers,
                                  scheduler=args.scheduler, progress=progress("population"))
        for subject, error in result.failed:
            say(f"population: skipped {subject}: {error}")
        scores = result.save(outputs, overwrite=args.overwrite, say=lambda message: say(f"population: {message}"))
        checkpoint.unlink(missing_ok=True)
    top = ", ".join(f"{s.region} {s.top_share:.0%} in the top {TOP_PERCENT:g} %" for s in scores[:3])
    counts = result.counts(group_names)
    groups = f"; groups {', '.join(f'{g} (n={n})' for g, n in counts.items())}" if group_names else ""
    print(f"napari-brainage population: mean of {result.total.count} maps -> {out}; regions -> {outputs.regions} "
          f"(top: {top}){groups}; {len(result.failed)} failed")
    return 1 if result.failed else 0
