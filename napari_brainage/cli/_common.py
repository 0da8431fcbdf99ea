"""What every command shares: refusing to overwrite, progress lines, the run options."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from ..errors import InputError
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


def resuming(command: str, kept: int, total: int, redone: int,
             why: str = "their scan, path or age changed since") -> str:
    """The line a resumed run starts with: what it keeps, and what it redoes although
    finished, and ``why`` (its progress then counts only this run's scans)."""
    again = f"; {redone} redone ({why})" if redone else ""
    return f"{command}: resuming, {kept} of {total} scans already done{again}"


#: How the analysis commands describe their INPUT.
INPUT_HELP = (" INPUT: scan files, folders of scans, BIDS datasets (sub-*/anat/*_T1w), or participants tables "
              "(CSV or TSV: subject, path[, age]).")


def add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="scan files, folders of scans, BIDS datasets or participants tables (see above)")


#: What --out names, by its metavar.
OUT_HELP = {"CSV": "results table to write (.csv)", "DIR": "folder to write (made if missing)",
            "NIFTI": "population map to write (.nii.gz); its regions table goes beside it"}


def add_analysis_arguments(parser: argparse.ArgumentParser, out: str, method: bool, workers: bool,
                           interval: bool = True) -> None:
    """INPUT..., --out, the ``RunOptions`` flags (and --workers/--scheduler): what
    predict, explain and population share; ``interval``: the command reports ages."""
    add_inputs(parser)
    parser.add_argument("--out", required=True, metavar=out, help=OUT_HELP[out])
    add_run_options(parser, method=method, interval=interval)
    if workers:
        add_workers(parser)


def add_preprocessing(parser: argparse.ArgumentParser, help_prefix: str = "") -> None:
    parser.add_argument("--preprocess", default=Preprocessing.AUTO.value, choices=Preprocessing.values(),
                        help=help_prefix + PREPROCESSING_HELP)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=Device.AUTO.value, choices=Device.values(),
                        help="where the networks run: auto (a GPU when torch sees one), cpu or gpu")


def add_run_options(parser: argparse.ArgumentParser, method: bool, interval: bool = True) -> None:
    """--model, --device, --preprocess, --interval-level (for commands that report ages)
    and --method (for those that make maps): the fields of ``RunOptions``."""
    parser.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    add_device(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_preprocessing(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run: finished subjects are not redone")
    if interval:
        parser.add_argument("--interval-level", type=float, default=None, metavar="LEVEL",
                            help=f"prediction interval level, 0-1 (default {DEFAULT_LEVEL:g}), for a calibrated "
                                 "model")
    if method:
        parser.add_argument("--method", default=Method.NOISE.value, choices=Method.values(),
                            help="importance method: noise (the noise model, default) or a Captum baseline")


def add_workers(parser: argparse.ArgumentParser, scheduler: bool = True) -> None:
    # One or the other: a run on an existing cluster has that cluster's workers, and
    # --workers 4 with --scheduler was silently ignored.
    choice = parser.add_mutually_exclusive_group() if scheduler else parser
    choice.add_argument("--workers", type=int, default=1, metavar="N",
                        help="parallel worker processes (more than 1: an embedded Dask LocalCluster)")
    if scheduler:
        choice.add_argument("--scheduler", metavar="ADDRESS", type=scheduler_address,
                            help="run on an existing dask.distributed cluster (e.g. tcp://host:8786)")


#: A Dask scheduler's address: [PROTOCOL://]HOST:PORT, HOST a name, an IPv4 or a [bracketed] IPv6 address.
_SCHEDULER_ADDRESS = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:\[[0-9A-Fa-f:.]+\]|[^:/\s\[\]]+):(\d+)$")


def scheduler_address(text: str) -> str:
    """``text`` when it reads as a scheduler address (``tcp://host:8786``); an
    ``argparse.ArgumentTypeError`` (one line naming --scheduler) otherwise: Dask's
    "missing port number in address" came as a traceback, after the output table
    had been started."""
    match = _SCHEDULER_ADDRESS.match(text.strip())
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a scheduler address; give PROTOCOL://HOST:PORT, as "
                                         "`dask scheduler` prints it (e.g. tcp://192.168.1.5:8786)")
    return text.strip()


def run_options(args: argparse.Namespace) -> RunOptions:
    """The ``RunOptions`` the parsed arguments ask for; a GPU torch cannot see, a
    level the model's calibration cannot give, or ``--method noise`` of a model
    with no noise model is refused here, before any scan is read or output written
    (call it first), and a level asked of an uncalibrated model is said to be unused.

    Raises ``InputError`` (``ModelError`` for the model) for each of those refusals."""
    asked = getattr(args, "interval_level", None)  # explain and population report no ages
    level = DEFAULT_LEVEL if asked is None else asked
    check_device(args.device)
    from ..errors import OptionError
    from ..model.bundle import bundled_model_dir
    from ..model.card import read_card

    try:  # the flag named, as the user typed it ("interval level must lie ...")
        options = RunOptions(model_dir=args.model, device=args.device, preprocessing=args.preprocess,
                             method=getattr(args, "method", Method.NOISE), interval_level=level)
        folder = options.model_dir or bundled_model_dir()
        card = read_card(folder)
        if card.calibration is not None:
            card.calibration.check_level(level)
    except OptionError as err:
        if err.option != "interval level":
            raise
        raise OptionError("--interval-level", err.problem) from None
    if hasattr(args, "method"):  # the commands that make maps
        check_method(card, folder, options.method)
    check_weights(card, folder)
    if card.calibration is None and asked is not None:
        say(f"note: this model is not calibrated (napari-brainage calibrate): no intervals, "
            f"--interval-level {level:g} is not used")
    return options


def check_method(card, folder, method: Method) -> None:
    """``ModelError`` when ``method`` is the noise model's and the model ``card`` (of
    ``folder``) has none. The Captum methods need only the predictor, so a model
    trained without a noise model still makes their maps."""
    from ..model.card import NOISE_MODEL_FILE, ModelError

    if method is Method.NOISE and NOISE_MODEL_FILE not in card.weights:
        first, *others = (m.value for m in Method if m is not Method.NOISE)
        raise ModelError(f"{folder}: no noise model, which --method noise (the default) needs; train one with "
                         f"`napari-brainage train noise-model`, or choose a method that needs only the "
                         f"predictor: --method {first} (or {', '.join(others)})")


def check_weights(card, folder) -> None:
    """``ModelError`` when a weight file of the model ``card`` (of ``folder``) is missing or
    does not match its checksum, as loading the model says it (``model.card.verified_weights``),
    but before any output is started: a tampered model left predict's table header-only
    (the next run: "already exists") and population's checkpoint, whose one line said
    "no scan could be mapped". Torch-free; the files are a few MB."""
    from ..model.card import PREDICTOR_FILE, verified_weights

    for name in dict.fromkeys([PREDICTOR_FILE, *card.weights]):  # the predictor first; it must be listed
        verified_weights(folder, name, card)


def check_device(device: str) -> None:
    """``InputError`` for --device gpu where torch sees no CUDA device: said with the other
    options (loading the model said it only after the outputs had been started)."""
    if Device.parse(device) is Device.GPU:
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device gpu: torch sees no CUDA device on this machine; use --device cpu "
                             "(or auto: the GPU when there is one)")


def refuse_resume_with_overwrite(args: argparse.Namespace) -> None:
    """``InputError`` for --resume with --overwrite: one keeps the outputs, the other replaces them."""
    if getattr(args, "resume", False) and getattr(args, "overwrite", False):
        raise InputError("--resume continues the outputs of an interrupted run and --overwrite replaces them; "
                         "choose one")


#: Endings of file names, not folder names: an output folder named so was a mistake.
FILE_ENDINGS = (".nii", ".nii.gz", ".mgz", ".mgh", ".gz", ".csv", ".tsv", ".txt", ".pdf", ".png", ".json")


def refuse_unwritable(folder: Path, output: Path | None = None) -> None:
    """``PermissionError`` ("cannot write in DIR: permission denied") when the output
    folder ``folder`` (or, while it does not exist, the nearest folder above it, where
    it would be made) cannot be written: said before any scan is read, in words,
    where the OS's "[Errno 13] Permission denied" named a hidden lock or temporary
    file the user never asked for, some only after every scan had been read.

    A folder whose permissions allow it may still take no file (/proc, /sys, a
    read-only mount; any folder for root): a nameless file is made there and
    dropped to find out, and the output (``output``, else ``folder``) is named
    with the OS's reason (it was "No such file or directory: '/proc/.x.csv.lock'")."""
    import tempfile

    from ..io import nearest_existing

    where = nearest_existing(folder)
    if not where.is_dir():
        return  # a file where a folder should be: said by the caller's own checks, or by making it
    if not os.access(where, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write in {where}: permission denied")
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as err:
        raise PermissionError(f"cannot write {output or folder}: no file can be made in {where} "
                              f"({(err.strerror or type(err).__name__).lower()})") from None


def refuse_file_as_folder(path: Path) -> None:
    """``NotADirectoryError`` when an output folder ``path`` is an existing file;
    ``InputError`` when it does not exist and is named like a file (``FILE_ENDINGS``);
    ``PermissionError`` when it cannot be written or made (``refuse_unwritable``)."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file; --out needs a folder")
    if not path.exists() and path.name.lower().endswith(FILE_ENDINGS):  # "map.nii.gz" became a folder
        ending = next(e for e in FILE_ENDINGS if path.name.lower().endswith(e))
        raise InputError(f"--out {path}: --out is a folder (one file per scan goes in it), not a file name; "
                         f"give a folder such as {path.with_name(path.name[:-len(ending)] or 'out')}")
    refuse_unwritable(path)


def refuse_folder_as_file(path: Path) -> None:
    """``IsADirectoryError`` when an output file ``path`` is an existing folder;
    ``PermissionError`` when its folder cannot be written or made (``refuse_unwritable``)."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; --out needs a file name (e.g. {path / 'results.csv'})")
    refuse_unwritable(path.parent, path)
