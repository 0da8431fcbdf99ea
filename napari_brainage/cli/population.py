"""``napari-brainage population``: a cohort's mean importance map and region ranking."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ._common import (
    INPUT_HELP,
    add_analysis_arguments,
    progress,
    refuse_existing,
    refuse_unwritable,
    resuming,
    run_options,
    say,
)

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
    from ..errors import InputError, describe_error
    from ..inference import collect_inputs
    from ..population import TOP_PERCENT, PopulationOutputs, group_values, output_stem, safe_name

    options = run_options(args)  # first: no scan is read, no checkpoint written, for a bad option
    out = Path(args.out)
    refuse_unwritable(out.parent, out)
    checkpoint = out.with_name(f".{output_stem(out)}.checkpoint.npz")
    if checkpoint.exists() and not (args.resume or args.overwrite):  # it was replaced, unsaid
        raise FileExistsError(f"{checkpoint} holds the maps of an earlier run of {out} that did not finish; pass "
                              "--resume to continue it or --overwrite to start again")
    inputs = collect_inputs(args.inputs, group_by=args.group_by)
    if args.group_by:  # a blank cell is a missing value, not a group named ""
        ungrouped = [item.subject for item in inputs if not item.group]
        if ungrouped:
            say(f"population: left out {len(ungrouped)} subject(s) with no {args.group_by!r}: "
                f"{', '.join(ungrouped[:5])}{' ...' if len(ungrouped) > 5 else ''}")
            inputs = [item for item in inputs if item.group]
        if not inputs:
            raise InputError(f"no subject has a value in column {args.group_by!r}")
        # "3" and "3.0" of a numeric column are one group; a measurement (age) is refused here.
        groups = group_values((item.group for item in inputs), repr(args.group_by))
        inputs = [replace(item, group=groups[item.group]) for item in inputs]
    group_names = sorted({item.group for item in inputs}) if args.group_by else []
    # Every output's name is settled before any map is made: a clash or an unwritable
    # name found at the end cost the whole run (and left it unfinishable).
    outputs = PopulationOutputs.beside(out, args.regions, group_names)
    for group, path in outputs.groups.items():
        if path.name.removesuffix(".nii.gz") != f"{output_stem(out)}_{safe_name(group)}":
            say(f"population: group {group!r} -> {path.name} (its name is too long for a file name, or alike "
                f"another group's or output's when case is ignored, as macOS and Windows do; the map's "
                f"description names the group)")
    if len(group_names) > 2 and len(group_names) == len(inputs):  # e.g. --group-by path: not categories
        say(f"population: warning: every one of the {len(group_names)} groups of {args.group_by!r} holds one "
            f"subject: each group map is one subject's map; group by a column of categories to compare groups")
    # A resumed run replaces what its interrupted run wrote: a run that failed while
    # writing its outputs is finished with --resume, without computing its maps again.
    finishing = args.resume and checkpoint.exists()
    if not finishing:
        for path in outputs.all():
            refuse_existing(path, args.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)  # as explain makes its --out folder
    with output_lock(out):  # a second run would rewrite the same checkpoint and maps
        report, already = progress("population"), [0]

        def resumed(kept: int) -> None:
            already[0] = kept
            say(resuming("population", kept, len(inputs), 0))

        # As predict's, the progress counts this run's subjects.
        result = population_stats(inputs, options, checkpoint, resume=args.resume, workers=args.workers,
                                  scheduler=args.scheduler, on_resume=resumed,
                                  progress=lambda done, total: report(done - already[0], total - already[0]))
        for subject, error in result.failed:
            say(f"population: skipped {subject}: {error}")
        try:
            scores = result.save(outputs, overwrite=args.overwrite or finishing,
                                 say=lambda message: say(f"population: {message}"))
        except OSError as err:  # the maps are made: say how to write them without making them again
            raise InputError(f"{describe_error(err)}; the {result.total.count} maps are kept in {checkpoint}: "
                             "fix this and run the same command with --resume to write the outputs") from err
        checkpoint.unlink(missing_ok=True)
    top = ", ".join(f"{s.region} {s.top_share:.0%} in the top {TOP_PERCENT:g} %" for s in scores[:3])
    counts = result.counts(group_names)
    groups = f"; groups {', '.join(f'{g} (n={n})' for g, n in counts.items())}" if group_names else ""
    print(f"napari-brainage population: mean of {result.total.count} maps -> {out}; regions -> {outputs.regions} "
          f"(top: {top}){groups}; {len(result.failed)} failed")
    return 1 if result.failed else 0
