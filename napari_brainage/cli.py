"""The ``napari-brainage`` command: thin argument parsing over the core.

Each sub-command turns arguments into one core call and prints the result;
errors a user can fix (a bad file, an existing output) print one line naming
the problem and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .io import VolumeError, load_volume


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-brainage",
        description="Interpretable brain-age estimation: predicted age and voxel importance maps.",
    )
    parser.add_argument("--version", action="version", version=f"napari-brainage {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="open napari with a bundled sample scan and the plugin's widgets",
        description="Open napari with a bundled sample scan and the plugin's widgets docked. "
        "Without a display (or with --screenshot) the same view is rendered off-screen "
        "(under xvfb-run when needed) to a PNG whose path is printed.",
    )
    demo.add_argument("--sample", default="icbm152_t1_2mm", help="bundled sample to open (default: %(default)s)")
    demo.add_argument("--screenshot", metavar="PNG", help="render the view to this PNG instead of opening a window")
    demo.add_argument("--overwrite", action="store_true", help="replace the --screenshot file if it exists")

    info = commands.add_parser(
        "info",
        help="describe scans' geometry and intensities",
        description="Print each scan's shape, voxel size, orientation, field of view and intensity range.",
    )
    info.add_argument("scans", nargs="+", metavar="SCAN", help="NIfTI (.nii, .nii.gz) or MGZ file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "screenshot", None) and not args.screenshot.lower().endswith(".png"):
        parser.error(f"--screenshot {args.screenshot}: the screenshot must be a .png file")
    try:
        if args.command == "demo":
            from ._demo import run_demo  # imports napari: only when needed

            return run_demo(sample=args.sample, screenshot=args.screenshot, overwrite=args.overwrite)
        if args.command == "info":
            return _info(args.scans)
    except (VolumeError, FileExistsError, FileNotFoundError, KeyError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"napari-brainage {args.command}: error: {message}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


def _info(paths: Sequence[str]) -> int:
    from .summary import summarise

    failures = 0
    for path in paths:
        try:
            volume = load_volume(path)
        except VolumeError as err:
            print(f"napari-brainage info: error: {err}", file=sys.stderr)
            failures += 1
            continue
        print(path)
        for line in summarise(volume).lines():
            print(f"  {line}")
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
