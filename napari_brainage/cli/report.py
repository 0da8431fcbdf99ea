"""``napari-brainage report``: one page per scan (PDF) and a cohort summary page."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    INPUT_HELP,
    add_analysis_arguments,
    progress,
    refuse_file_as_folder,
    resuming,
    run_options,
    say,
)

NAME = "report"
HELP = "write a one-page report per scan (PDF) and a cohort summary page"
DESCRIPTION = (HELP + ": the predicted age with its prediction interval, the gap and its centile on a normative "
               "chart, the QC verdict with a registration check, three slices through the importance map's peak "
               "with a colour bar, the top regions against the population's, and the model. Pages go to "
               "--out DIR as <subject>_report.pdf, the numbers to DIR/report.csv, the cohort page to "
               "DIR/summary.pdf." + INPUT_HELP)


def add_arguments(parser) -> None:
    add_analysis_arguments(parser, out="DIR", method=True, workers=False)
    parser.add_argument("--png", action="store_true", help="also write each page as a PNG")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..cohort import REPORT_CSV, SUMMARY_PAGE, report_cohort
    from ..report_page import PAGE_SUFFIX
    from ..inference import collect_inputs

    options = run_options(args)  # first: nothing is written for a bad option
    out = Path(args.out)
    refuse_file_as_folder(out)
    written = out.is_dir() and ((out / REPORT_CSV).exists() or any(out.glob(f"*{PAGE_SUFFIX}.pdf"))
                                or (out / SUMMARY_PAGE).exists())
    if written and not (args.resume or args.overwrite):
        raise FileExistsError(f"{out} already holds reports; pass --resume to continue them or --overwrite "
                              "to replace them")
    inputs = collect_inputs(args.inputs)
    results = report_cohort(inputs, out, options, resume=args.resume, png=args.png, progress=progress("report"),
                            on_resume=lambda kept, redone: say(resuming("report", kept, len(inputs), redone)),
                            say=lambda message: say(f"report: {message}"))
    for result in results:
        if result.error:
            say(f"report {result.subject}: {result.verdict()}")
    failed = sum(bool(r.error) for r in results)
    why = " (no age: QC or unreadable)" if failed else ""  # "0 failed (no age: ...)" explained nothing
    print(f"napari-brainage report: {len(results)} scans this run -> {out}; {failed} failed{why}; "
          f"summary: {out / SUMMARY_PAGE}")
    return 1 if failed else 0
