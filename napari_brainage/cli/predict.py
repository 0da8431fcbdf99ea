"""``napari-brainage predict``: brain ages (and gaps) of many scans into one CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    INPUT_HELP,
    add_analysis_arguments,
    progress,
    refuse_existing,
    refuse_folder_as_file,
    resuming,
    run_options,
    say,
)

NAME = "predict"
HELP = "predict brain age (and gaps, when ages are given) for scans"


DESCRIPTION = HELP + "." + INPUT_HELP


def add_arguments(parser) -> None:
    add_analysis_arguments(parser, out="CSV", method=False, workers=True)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..cohort import predict_cohort
    from ..errors import InputError
    from ..inference import collect_inputs

    options = run_options(args)  # first: nothing is written for a bad option
    out = Path(args.out)
    refuse_folder_as_file(out)
    if out.suffix.lower() not in (".csv", ".tsv", ".txt"):  # "res.nii.gz" got a CSV under an image's name
        raise InputError(f"--out {out}: predict writes a CSV table; give a name ending in .csv")
    if not args.resume:
        refuse_existing(out, args.overwrite)
    inputs = collect_inputs(args.inputs)
    out.parent.mkdir(parents=True, exist_ok=True)  # as explain makes its --out folder
    results = predict_cohort(inputs, out, options, resume=args.resume, workers=args.workers,
                             scheduler=args.scheduler, progress=progress("predict"),
                             on_resume=lambda kept, redone: say(resuming("predict", kept, len(inputs), redone)))
    for result in results:
        if result.error:
            say(f"predict {result.subject}: error: {result.error}")
        elif result.qc and result.qc != "ok":
            say(f"predict {result.subject}: QC: {result.qc}")
    failed = sum(bool(r.error) for r in results)
    print(f"napari-brainage predict: {len(results) - failed} of {len(results)} scans this run -> {out}; "
          f"{failed} failed")
    return 1 if failed else 0
