"""``napari-brainage info``: each scan's geometry and intensities."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "info"


HELP = "describe scans' geometry and intensities"
DESCRIPTION = "Print each scan's shape, voxel size, orientation, field of view and intensity range."


def add_arguments(info) -> None:
    info.add_argument("scans", nargs="+", metavar="SCAN",
                      help="NIfTI (.nii, .nii.gz), MGZ or ANALYZE (.hdr/.img) file")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..io import VolumeError, load_volume
    from ..summary import summarise

    failures = 0
    for path in args.scans:
        try:
            if Path(path).is_dir():  # load_volume would say "not a NIfTI ... file"
                raise VolumeError(f"{path}: a folder; info describes one scan file at a time (name the files, "
                                  f"e.g. {Path(path) / '*.nii.gz'}), while predict, explain and report take folders")
            volume = load_volume(path)
        except VolumeError as err:
            print(f"napari-brainage info: error: {err}", file=sys.stderr)
            failures += 1
            continue
        print(path)
        for line in summarise(volume).lines():
            print(f"  {line}")
    return 2 if failures else 0
