"""The ``napari-brainage`` command: thin argument parsing over the core.

Each sub-command turns arguments into one core call and prints the result;
errors a user can fix (a bad file, an existing output) print one line naming
the problem and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from .explain import METHODS
from .io import VolumeError, load_volume
from .models import ModelError
from .synthetic import DEFAULT_REGIONS, REGION_PRESETS

#: ``preprocess.PREPROCESSING_MODES``, spelt out so that starting the command does
#: not load SimpleITK (a test keeps the two equal).
PREPROCESSING_MODES = ("auto", "register", "none")
PREPROCESSING_HELP = ("auto (default): use a scan on the 1 or 2 mm MNI grid, or on its voxel lattice with another "
                      "field of view or axis order, as it is when it matches the template there, and register "
                      "every other scan; register: always; none: resample through the affine. Every route "
                      "ends with the same intensity clean-up, brain mask and quality control")


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
    demo.add_argument("--sample", default="synthetic_age50_accelerated",
                      help="bundled sample to open (default: %(default)s)")
    demo.add_argument("--screenshot", metavar="PNG", help="render the view to this PNG instead of opening a window")
    demo.add_argument("--overwrite", action="store_true", help="replace the --screenshot file if it exists")

    synth = commands.add_parser(
        "synth",
        help="generate a synthetic brain-ageing cohort with ground-truth ageing regions",
        description="Write N synthetic T1 scans on the MNI grid, participants.csv "
        "(subject, path, age, brain_age, gap, region volumes) and ground_truth/ masks. "
        "Deterministic for a given seed.",
    )
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
    synth.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                       help="parallel processes (default: %(default)s)")
    synth.add_argument("--overwrite", action="store_true", help="replace a cohort already in OUT")

    train = commands.add_parser("train", help="train the predictor or the noise model on a cohort")
    parts = train.add_subparsers(dest="part", metavar="PART")
    parts.required = True
    for part, text in [("predictor", "train the brain-age predictor (SFCN-style 3D CNN)"),
                       ("noise-model", "train the noise model (U-Noise) against a trained predictor")]:
        sub = parts.add_parser(part, help=text, description=text + ". Resumable; keeps the weights "
                               "of the best validation epoch; uses CUDA when present.")
        sub.add_argument("--data", required=True, nargs="+", metavar="CSV",
                         help="participants CSV(s) (subject, path, age); several are trained on together")
        sub.add_argument("--out", required=True, metavar="DIR", help="model folder to write")
        if part == "noise-model":
            sub.add_argument("--predictor", required=True, metavar="DIR", help="model folder with predictor.pt")
            sub.add_argument("--lam", type=float, default=0.05, help="noise reward lambda (default: 0.05)")
            sub.add_argument("--max-sd", type=float, default=0.3,
                             help="noise sd at B = 1, intensities normalised to mean 1 (default: 0.3)")
            sub.add_argument("--min-sd", type=float, default=0.0, help="noise sd at B = 0 (default: 0)")
            sub.add_argument("--target", choices=("prediction", "age"), default="prediction",
                             help="what the noisy prediction must match (default: prediction)")
            sub.add_argument("--relative-noise", action="store_true",
                             help="scale the noise sd by the scan's local contrast (3x3x3 standard deviation)")
            sub.add_argument("--brain-only", action="store_true",
                             help="add and reward noise only inside the brain (non-zero voxels)")
            sub.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                             help="learning rate kept, or annealed to 0 over the epochs (default: constant)")
            sub.add_argument("--full-resolution-head", action="store_true",
                             help="refine the 4 mm mask at 2 mm with a light convolution (2x slower to train)")
            sub.add_argument("--flip", action="store_true",
                             help="flip half the batches left-right, as the predictor's training does")
        if part == "predictor":
            sub.add_argument("--noise-augment", type=float, default=0.0, metavar="SD",
                             help="train with random patchy noise of up to this sd (default: 0, off)")
            sub.add_argument("--blur-augment", type=float, default=0.0, metavar="VOXELS",
                             help="train with random Gaussian blur of sd up to this many voxels, so that "
                                  "resampled (registered) scans are read like aligned ones (default: 0, off)")
        sub.add_argument("--init", metavar="DIR",
                         help=f"fine-tune the {part.replace('-', ' ')} of this model folder instead of starting "
                              "from scratch")
        sub.add_argument("--epochs", type=int, default=12 if part == "predictor" else 6)
        # The noise model needs many small steps: batch 2 at lr 3e-3 localised far better
        # than batch 8 at 1e-3 for the same compute (README, "Noise-model settings").
        batch, lr = (8, 1e-3) if part == "predictor" else (2, 3e-3)
        sub.add_argument("--batch-size", type=int, default=batch, help=f"scans per step (default: {batch})")
        sub.add_argument("--lr", type=float, default=lr, help=f"learning rate (default: {lr:g})")
        sub.add_argument("--val-fraction", type=float, default=0.15)
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--limit", type=int, help="use only the first N participants")
        sub.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
        sub.add_argument("--resume", action="store_true", help="continue from DIR/checkpoints")
        sub.add_argument("--preprocess", default="auto", choices=PREPROCESSING_MODES,
                         help="bring scans to the model's space as inference does: " + PREPROCESSING_HELP)
        sub.add_argument("--workers", type=int, default=1,
                         help="processes preparing the scans (registration takes seconds a scan; default: 1)")

    for name, text in [("predict", "predict brain age (and gaps, when ages are given) for scans"),
                       ("explain", "write voxel importance maps (1 - noise mask) on each scan's grid"),
                       ("population", "average importance maps in template space and rank atlas regions")]:
        sub = commands.add_parser(name, help=text, description=text + ". INPUT: scan files, folders "
                                  "of scans, or participants CSVs (subject, path[, age]).")
        sub.add_argument("inputs", nargs="+", metavar="INPUT")
        sub.add_argument("--out", required=True, metavar={"predict": "CSV", "explain": "DIR",
                                                          "population": "NIFTI"}[name])
        sub.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
        sub.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
        sub.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        sub.add_argument("--preprocess", default="auto", choices=PREPROCESSING_MODES,
                         help=PREPROCESSING_HELP)
        sub.add_argument("--resume", action="store_true",
                         help="continue an interrupted run: finished subjects are not redone")
        if name in ("explain", "population"):
            sub.add_argument("--method", default="noise", choices=METHODS,
                             help="importance method: noise (the noise model, default) or a Captum baseline")
        if name in ("predict", "population"):
            sub.add_argument("--workers", type=int, default=1,
                             help="parallel worker processes (more than 1: an embedded Dask LocalCluster)")
            sub.add_argument("--scheduler", metavar="ADDRESS",
                             help="run on an existing dask.distributed cluster (e.g. tcp://host:8786)")
        if name == "population":
            sub.add_argument("--group-by", metavar="COLUMN",
                             help="participants CSV column: a mean map per group; with two groups also "
                                  "their difference and effect size (Cohen's d)")
            sub.add_argument("--regions", metavar="CSV",
                             help="region ranking CSV (default: OUT with _regions.csv)")

    text = "bring scans onto the model's 2 mm MNI grid (registered unless already in MNI space), with QC"
    prep = commands.add_parser("preprocess", help=text, description=text + ". Writes OUT/SUBJECT.nii.gz and "
                               "OUT/participants.csv (subject, path, age, QC): inspect the registrations, or "
                               "train on the result. INPUT: scan files, folders of scans, or participants CSVs.")
    prep.add_argument("inputs", nargs="+", metavar="INPUT")
    prep.add_argument("--out", required=True, metavar="DIR")
    prep.add_argument("--preprocess", default="auto", choices=PREPROCESSING_MODES,
                      help=PREPROCESSING_HELP)
    prep.add_argument("--workers", type=int, default=1, help="processes (registration takes seconds a scan)")
    prep.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    prep.add_argument("--resume", action="store_true", help="continue an interrupted run")

    info = commands.add_parser(
        "info",
        help="describe scans' geometry and intensities",
        description="Print each scan's shape, voxel size, orientation, field of view and intensity range.",
    )
    info.add_argument("scans", nargs="+", metavar="SCAN",
                      help="NIfTI (.nii, .nii.gz), MGZ or ANALYZE (.hdr/.img) file")
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
        if args.command == "synth":
            return _synth(parser, args)
        if args.command == "train":
            return _train(parser, args)
        if args.command in ("predict", "explain", "population", "preprocess"):
            if getattr(args, "workers", 1) < 1:
                parser.error("--workers must be at least 1")
            from . import _cli_inference

            return getattr(_cli_inference, args.command)(args)
    # Errors a user can fix (bad files, bad CSV columns, an existing output, a resume
    # that does not match) print one line; ValueError covers the core's input checks.
    except (ValueError, ModelError, FileExistsError, FileNotFoundError, KeyError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"napari-brainage {args.command}: error: {message}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


def _synth(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .synthetic import CohortConfig, generate_cohort, parse_region, timed_progress

    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if not 0 <= args.cortical_thinning <= 5:
        parser.error(f"--cortical-thinning must be between 0 and 5 %/year, got {args.cortical_thinning}")
    try:
        config = CohortConfig(
            regions=tuple(parse_region(spec) for spec in args.regions),
            resolution_mm=args.res, age_range=tuple(args.age_range), gap_sd=args.gap_sd,
            cortical_thinning=args.cortical_thinning, region_age_sd=args.region_age_sd,
        )
    except ValueError as err:
        parser.error(str(err))
    table = generate_cohort(args.out, args.n, args.seed, config, workers=args.workers,
                            overwrite=args.overwrite, progress=timed_progress())
    print(f"napari-brainage synth: {args.n} subjects in {table.parent} (table: {table})")
    return 0


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .models import NoiseSpec
    from .training import TrainConfig, load_cohort, train_noise_model, train_predictor

    for flag in ("epochs", "batch_size", "workers"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if not 0 < args.val_fraction < 1:
        parser.error("--val-fraction must be between 0 and 1")
    for flag in ("noise_augment", "blur_augment"):
        if getattr(args, flag, 0.0) < 0:
            parser.error(f"--{flag.replace('_', '-')} must not be negative")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                         val_fraction=args.val_fraction, seed=args.seed, device=args.device,
                         resume=args.resume, noise_augment=getattr(args, "noise_augment", 0.0),
                         blur_augment=getattr(args, "blur_augment", 0.0), init_from=args.init,
                         flip=getattr(args, "flip", False),
                         lr_schedule=getattr(args, "lr_schedule", "cosine"))
    try:
        cohort = load_cohort(args.data, limit=args.limit, progress=print, preprocessing=args.preprocess,
                             workers=args.workers)
    except ValueError as err:
        parser.error(str(err))
    if args.part == "predictor":
        train_predictor(cohort, args.out, config)
    else:
        if args.max_sd <= args.min_sd or args.min_sd < 0:
            parser.error("noise sds must satisfy 0 <= --min-sd < --max-sd")
        spec = NoiseSpec(min_sd=args.min_sd, max_sd=args.max_sd, lam=args.lam, target=args.target,
                         relative_to_contrast=args.relative_noise, brain_only=args.brain_only)
        train_noise_model(cohort, args.predictor, args.out, config, spec,
                          full_resolution_head=args.full_resolution_head)
    print(f"napari-brainage train {args.part}: trained on {len(cohort.subjects)} of "
          f"{len(cohort.subjects) + len(cohort.failed)} scans -> {args.out}; {len(cohort.failed)} failed"
          + (" and were left out (listed above)" if cohort.failed else ""))
    return 1 if cohort.failed else 0


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
