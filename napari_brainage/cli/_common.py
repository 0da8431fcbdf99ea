"""What every command shares: refusing to overwrite, progress lines, the run options."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..options import PREPROCESSING_HELP, Device, Method, Preprocessing, RunOptions
from ..uncertainty import DEFAULT_LEVEL


def refuse_existing(path: Path, overwrite: bool) -> None:
    """``FileExistsError`` when ``path`` exists and ``overwrite`` is not set."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")


def say(message: str) -> None:
    """A line on stderr (stdout keeps the one-line summary of each command)."""
    print(message, file=sys.stderr, flush=True)


def progress(name: str):
    """A ``(done, total)`` callback printing a progress line on stderr with rate and
    ETA, at most about once a second."""
    started, last = time.monotonic(), [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 1.0 and done < total:
            return
        last[0] = now
        rate = done / max(now - started, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("nan")
        say(f"{name} {done}/{total} ({rate:.2f}/s, ETA {eta:.0f} s)")

    return report


#: How the analysis commands describe their INPUT.
INPUT_HELP = " INPUT: scan files, folders of scans, or participants CSVs (subject, path[, age])."


def add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT")


def add_analysis_arguments(parser: argparse.ArgumentParser, out: str, method: bool, workers: bool) -> None:
    """INPUT..., --out, the ``RunOptions`` flags (and --workers/--scheduler): what
    predict, explain and population share."""
    add_inputs(parser)
    parser.add_argument("--out", required=True, metavar=out)
    add_run_options(parser, method=method)
    if workers:
        add_workers(parser)


def add_preprocessing(parser: argparse.ArgumentParser, help_prefix: str = "") -> None:
    parser.add_argument("--preprocess", default=Preprocessing.AUTO.value, choices=Preprocessing.values(),
                        help=help_prefix + PREPROCESSING_HELP)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=Device.AUTO.value, choices=Device.values())


def add_run_options(parser: argparse.ArgumentParser, method: bool) -> None:
    """--model, --device, --preprocess, --interval-level (and --method): the fields of ``RunOptions``."""
    parser.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    add_device(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_preprocessing(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run: finished subjects are not redone")
    parser.add_argument("--interval-level", type=float, default=DEFAULT_LEVEL, metavar="LEVEL",
                        help="prediction interval level, 0-1 (default 0.9), for a calibrated model")
    if method:
        parser.add_argument("--method", default=Method.NOISE.value, choices=Method.values(),
                            help="importance method: noise (the noise model, default) or a Captum baseline")


def add_workers(parser: argparse.ArgumentParser, scheduler: bool = True) -> None:
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel worker processes (more than 1: an embedded Dask LocalCluster)")
    if scheduler:
        parser.add_argument("--scheduler", metavar="ADDRESS",
                            help="run on an existing dask.distributed cluster (e.g. tcp://host:8786)")


def run_options(args: argparse.Namespace) -> RunOptions:
    """The ``RunOptions`` the parsed arguments ask for."""
    return RunOptions(model_dir=args.model, device=args.device, preprocessing=args.preprocess,
                      method=getattr(args, "method", Method.NOISE), interval_level=args.interval_level)
