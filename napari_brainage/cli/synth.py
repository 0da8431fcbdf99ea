"""``napari-brainage synth``: a synthetic brain-ageing cohort with its ground truth."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import progress, refuse_unwritable

NAME = "synth"


HELP = "generate a synthetic brain-ageing cohort with ground-truth ageing regions"
DESCRIPTION = ("Write N synthetic T1 scans on the MNI grid, participants.csv (subject, path, age, brain_age, gap, "
               "region volumes) and ground_truth/ masks. Deterministic for a given seed. --contrast and "
               "--slice-mm render the same subjects in another contrast or with thick slices.")


def add_arguments(synth) -> None:
    from ..synthetic.config import DEFAULT_REGIONS, REGION_PRESETS
    from ..synthetic.render import CONTRASTS

    synth.add_argument("out", metavar="OUT", help="output folder")
    synth.add_argument("--n", type=int, required=True, help="number of subjects")
    synth.add_argument("--seed", type=int, required=True, help="random seed (same seed, same files)")
    synth.add_argument("--res", type=int, default=2, choices=(1, 2), help="voxel size in mm (default: 2)")
    synth.add_argument(
        "--regions", nargs="+", default=list(DEFAULT_REGIONS), metavar="REGION[=RATE]",
        help=f"ageing regions, from: {', '.join(REGION_PRESETS)}; "
        "RATE sets the %%/year volume change at 80 (default: %(default)s)",
    )
    synth.add_argument("--age-range", nargs=2, type=float, default=(45.0, 80.0), metavar=("MIN", "MAX"),
                       help="chronological ages, uniform (default: 45 80)")
    synth.add_argument("--gap-sd", type=float, default=3.0,
                       help="SD of brain_age - age in years (default: 3)")
    synth.add_argument("--cortical-thinning", type=float, default=0.35,
                       help="diffuse cortical thinning, %% per year (default: 0.35; 0 turns it off)")
    synth.add_argument("--region-age-sd", type=float, default=0.0,
                       help="heterogeneous ageing: each region aged by its own age, brain_age + N(0, SD) "
                            "years (default: 0, all regions at brain_age)")
    synth.add_argument("--contrast", choices=(*CONTRASTS, "random"),
                       help="render the scans from the subjects' tissue maps in this contrast (random: each "
                            "subject its own tissue intensities); the same subjects, ageing and truths as "
                            "without it (default: the template's T1)")
    synth.add_argument("--slice-mm", default="1", metavar="MM",
                       help="store thick slices: the scan averaged into slabs MM thick along --slice-axis "
                            "(default: 1, off); random: each subject its own thickness (whole voxels up to 6 mm) "
                            "and axis, listed in participants.csv")
    synth.add_argument("--slice-axis", choices=("x", "y", "z"),
                       help="axis of the thick slices of --slice-mm MM (z: axial; default: z)")
    synth.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                       help="parallel processes (default: %(default)s)")
    synth.add_argument("--overwrite", action="store_true", help="replace a cohort already in OUT")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..io import MAX_VOXEL_MM
    from ..synthetic.cohort import Rendering, generate_cohort
    from ..synthetic.config import CohortConfig, parse_region

    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if args.seed < 0:
        parser.error(f"--seed must be a whole number >= 0, got {args.seed}")
    if not 0 <= args.cortical_thinning <= 5:
        parser.error(f"--cortical-thinning must be between 0 and 5 %/year, got {args.cortical_thinning}")
    try:
        config = CohortConfig(
            regions=tuple(parse_region(spec) for spec in args.regions),
            resolution_mm=args.res, age_range=tuple(args.age_range), gap_sd=args.gap_sd,
            cortical_thinning=args.cortical_thinning, region_age_sd=args.region_age_sd,
        )
        random_slices = args.slice_mm == "random"
        if not random_slices and not args.slice_mm.isdigit():
            parser.error(f"--slice-mm must be a whole number of mm or 'random', got {args.slice_mm!r}")
        slice_mm = 1 if random_slices else int(args.slice_mm)
        if slice_mm < 1:
            parser.error(f"--slice-mm must be at least 1 mm (1: off), got {args.slice_mm}")
        if slice_mm > MAX_VOXEL_MM:  # the scans' writer refuses such voxels, after the ground truth is written
            parser.error(f"--slice-mm must be at most {MAX_VOXEL_MM:g} mm (thicker voxels are read as a broken "
                         f"header), got {args.slice_mm}")
        slice_mm = slice_mm if slice_mm > 1 else args.res  # 1 mm slices of a 2 mm grid: the grid
        if slice_mm % args.res:
            parser.error(f"--slice-mm {slice_mm} is not a whole number of {args.res} mm voxels")
        # An axis without slabs is recorded in participants.csv as if it had been used.
        if args.slice_axis and random_slices:
            parser.error(f"--slice-axis {args.slice_axis}: --slice-mm random draws each subject's axis; "
                         "leave --slice-axis out")
        if args.slice_axis and slice_mm == args.res:
            parser.error(f"--slice-axis {args.slice_axis}: no slabs are made without --slice-mm thicker than the "
                         f"{args.res} mm voxels; give --slice-mm MM or leave --slice-axis out")
        rendering = Rendering(args.contrast, slice_mm, "xyz".index(args.slice_axis or "z"), random_slices)
    except ValueError as err:
        parser.error(str(err))
    refuse_unwritable(Path(args.out))  # in words, before any subject is made
    table = generate_cohort(args.out, args.n, args.seed, config, workers=args.workers,
                            overwrite=args.overwrite, progress=progress("synth"), rendering=rendering)
    print(f"napari-brainage synth: {args.n} subjects in {table.parent} (table: {table})")
    return 0
