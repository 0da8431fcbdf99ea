"""``napari-brainage demo``: napari with a bundled sample and the plugin's widgets."""

from __future__ import annotations

import argparse

NAME = "demo"


HELP = "open napari with a bundled sample scan and the plugin's widgets"
DESCRIPTION = ("Open napari with a bundled sample scan and the plugin's widgets docked. Without a display (or "
               "with --screenshot) the same view is rendered off-screen (under xvfb-run when needed) to a PNG "
               "whose path is printed (without --screenshot: a new file in a fresh temporary folder).")


def add_arguments(demo) -> None:
    demo.add_argument("--sample", default="synthetic_age50_accelerated",
                      help="bundled sample to open (default: %(default)s)")
    demo.add_argument("--screenshot", metavar="PNG", help="render the view to this PNG instead of opening a window")
    demo.add_argument("--overwrite", action="store_true", help="replace the --screenshot file if it exists")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.screenshot and not args.screenshot.lower().endswith(".png"):
        parser.error(f"--screenshot {args.screenshot}: the screenshot must be a .png file")
    if args.overwrite and not args.screenshot:  # a window, or a new file each run: nothing to replace
        parser.error("--overwrite replaces the --screenshot file; without --screenshot there is none "
                     "(without a display each run writes a new file)")
    from .._napari.demo import run_demo  # imports napari: only when needed

    return run_demo(sample=args.sample, screenshot=args.screenshot, overwrite=args.overwrite)
