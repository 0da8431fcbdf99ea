"""``napari-brainage demo``: napari with a bundled sample and the plugin's widgets."""

from __future__ import annotations

import argparse

NAME = "demo"


def add_parser(commands) -> None:
    demo = commands.add_parser(
        NAME,
        help="open napari with a bundled sample scan and the plugin's widgets",
        description="Open napari with a bundled sample scan and the plugin's widgets docked. "
        "Without a display (or with --screenshot) the same view is rendered off-screen "
        "(under xvfb-run when needed) to a PNG whose path is printed.",
    )
    demo.add_argument("--sample", default="synthetic_age50_accelerated",
                      help="bundled sample to open (default: %(default)s)")
    demo.add_argument("--screenshot", metavar="PNG", help="render the view to this PNG instead of opening a window")
    demo.add_argument("--overwrite", action="store_true", help="replace the --screenshot file if it exists")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.screenshot and not args.screenshot.lower().endswith(".png"):
        parser.error(f"--screenshot {args.screenshot}: the screenshot must be a .png file")
    from .._demo import run_demo  # imports napari: only when needed

    return run_demo(sample=args.sample, screenshot=args.screenshot, overwrite=args.overwrite)
