"""The ``napari-brainage`` command: thin argument parsing over the core.

One module per command (``predict``, ``explain``, ...), each with ``NAME``,
``HELP`` (one line for ``--help``), ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args, parser) -> exit status``. Each turns its
arguments into one core call (with an ``options.RunOptions`` where it analyses
scans) and prints the result.

Exit status: 0 done; 1 done, but some scans failed (named on stderr and in the
outputs); 2 a problem the user can fix (a bad file, an existing output, a bad
option: ``errors.BrainAgeError`` and file-system errors), printed on one line.
Any other exception is a bug and keeps its traceback.

Starting the command imports no torch: ``--help`` and ``--version`` answer at
once, and each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from ..cli import calibrate, demo, explain, info, population, predict, preprocess, report, synth, train
from ..errors import BrainAgeError
from ..options import PREPROCESSING_HELP, Preprocessing
from ._common import refuse_resume_with_overwrite

#: In ``napari-brainage --help`` order.
COMMANDS = {module.NAME: module for module in (demo, synth, train, calibrate, predict, explain, report, population,
                                               preprocess, info)}
#: The preprocessing choices and their help (``options.Preprocessing``), kept here for scripts.
PREPROCESSING_MODES = Preprocessing.values()
__all__ = ["COMMANDS", "PREPROCESSING_HELP", "PREPROCESSING_MODES", "build_parser", "main"]

#: Errors a user can fix: one line, exit status 2.
USER_ERRORS = (BrainAgeError, FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
               PermissionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-brainage",
        description="Interpretable brain-age estimation: predicted age and voxel importance maps.",
    )
    parser.add_argument("--version", action="version", version=f"napari-brainage {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for module in COMMANDS.values():
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(sub)
        sub.set_defaults(command_parser=sub)  # errors found after parsing show this command's usage
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning to a user is a sentence about their files, not a source location."""
    return f"napari-brainage: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _one_line_warning
    command_parser = args.command_parser
    if getattr(args, "workers", 1) < 1:
        command_parser.error(f"--workers must be at least 1, got {args.workers}")
    try:
        refuse_resume_with_overwrite(args)  # every command that has both
        return COMMANDS[args.command].run(args, command_parser)
    except USER_ERRORS as err:
        print(f"napari-brainage {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a user's choice, not a bug; no traceback
        again = " (run it again with --resume to go on)" if hasattr(args, "resume") else ""
        print(f"\nnapari-brainage {args.command}: interrupted; finished work is kept{again}", file=sys.stderr)
        return 130  # the shell's code for a run stopped by SIGINT


if __name__ == "__main__":
    sys.exit(main())
