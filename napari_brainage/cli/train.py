"""``napari-brainage train predictor|noise-model``: train on a cohort."""

from __future__ import annotations

import argparse
import dataclasses
import re
import warnings
from pathlib import Path

from ._common import add_device, add_preprocessing, check_device

NAME = "train"
#: Configuration fields whose flag is not their name with dashes.
FLAGS = {"learning_rate": "lr", "relative_to_contrast": "relative-noise", "budget": "noise-budget"}


HELP = "train the predictor or the noise model on a cohort"
DESCRIPTION = HELP[0].upper() + HELP[1:] + " (PART: predictor or noise-model)."


def add_arguments(train) -> None:
    from ..model.card import NOISE_PERTURBATIONS, NOISE_TARGETS, POOLS, NoiseSpec
    from ..training.config import NOISE_MODEL_DEFAULTS, PREDICTOR_DEFAULTS

    parts = train.add_subparsers(dest="part", metavar="PART")
    parts.required = True
    for part, text, defaults in [
            ("predictor", "train the brain-age predictor (SFCN-style 3D CNN)", PREDICTOR_DEFAULTS),
            ("noise-model", "train the noise model (U-Noise) against a trained predictor", NOISE_MODEL_DEFAULTS)]:
        sub = parts.add_parser(part, help=text, description=text + ". Resumable; keeps the weights "
                               "of the best validation epoch; uses CUDA when present.")
        sub.add_argument("--data", required=True, nargs="+", metavar="CSV",
                         help="participants CSV(s) (subject, path, age); several are trained on together")
        sub.add_argument("--out", required=True, metavar="DIR", help="model folder to write")
        if part == "noise-model":
            sub.add_argument("--predictor", required=True, metavar="DIR", help="model folder with predictor.pt")
            sub.add_argument("--lam", type=float, default=NoiseSpec.lam,
                             help=f"noise reward lambda (default: {NoiseSpec.lam:g}, the bundled model's)")
            sub.add_argument("--max-sd", type=float, default=0.3,
                             help="noise sd at B = 1, intensities normalised to mean 1 (default: 0.3)")
            sub.add_argument("--min-sd", type=float, default=0.0, help="noise sd at B = 0 (default: 0)")
            sub.add_argument("--target", choices=NOISE_TARGETS, default="prediction",
                             help="what the noisy scan's output must match: the clean prediction (default), "
                                  "the age, or the clean prediction's last-layer contributions, summed as "
                                  "absolute changes (noise cannot offset noise)")
            sub.add_argument("--relative-noise", action="store_true",
                             help="scale the noise sd by the scan's local contrast (3x3x3 standard deviation)")
            sub.add_argument("--brain-only", action=argparse.BooleanOptionalAction, default=NoiseSpec.brain_only,
                             help="add and reward noise only inside the brain (non-zero voxels); "
                                  "--no-brain-only: over the whole scan, as before 2026-12 (default: on)")
            sub.add_argument("--perturbation", choices=NOISE_PERTURBATIONS, default="noise",
                             help="what B does to the scan: voxel-wise Gaussian noise (U-Noise; default) or "
                                  "one coherent relative change of intensity per scan, up to --max-sd (what "
                                  "atrophy does to a voxel; finds diffuse signals that noise averages out)")
            sub.add_argument("--noise-budget", type=float, default=0.0, metavar="B",
                             help="fix the mask's mean over the brain at B (0-1) so it only chooses where "
                                  "noise goes; use with --lam 0 (default: 0, off)")
            sub.add_argument("--lr-schedule", choices=("constant", "cosine"), default=defaults.lr_schedule,
                             help="learning rate kept, or annealed to 0 over the epochs "
                                  f"(default: {defaults.lr_schedule})")
            sub.add_argument("--full-resolution-head", action="store_true",
                             help="refine the 4 mm mask at 2 mm with a light convolution (2x slower to train)")
            sub.add_argument("--flip", action="store_true",
                             help="flip half the batches left-right, as the predictor's training does")
        if part == "predictor":
            sub.add_argument("--noise-augment", type=float, default=0.0, metavar="SD",
                             help="train with random patchy noise of up to this sd (default: 0, off)")
            sub.add_argument("--pool", choices=POOLS, default=None,
                             help="down-sampling between the predictor's blocks: max (SFCN's) or avg (less moved "
                                  "by noise and blur); default: the --init predictor's, else max")
            sub.add_argument("--blur-augment", type=float, default=0.0, metavar="VOXELS",
                             help="train with random Gaussian blur of sd up to this many voxels, so that "
                                  "resampled (registered) scans are read like aligned ones (default: 0, off)")
        sub.add_argument("--randomise-domain", action="store_true",
                         help="re-render half the scans with random tissue contrast (T2-, PD-, FLAIR-like), "
                              "thick slices, bias, gamma and noise (domain randomisation, as SynthBA): a "
                              "predictor that reads brain shape, a noise model that maps any contrast")
        sub.add_argument("--init", metavar="DIR",
                         help=f"fine-tune the {part.replace('-', ' ')} of this model folder instead of starting "
                              "from scratch")
        sub.add_argument("--epochs", type=int, default=defaults.epochs,
                         help=f"passes over the training scans (default: {defaults.epochs})")
        sub.add_argument("--max-minutes", type=float, metavar="MIN",
                         help="stop after the epoch during which MIN minutes of training have passed, keeping "
                              "the best epoch so far (a queue's or shared GPU's time limit; default: none)")
        sub.add_argument("--batch-size", type=int, default=defaults.batch_size,
                         help=f"scans per step (default: {defaults.batch_size})")
        sub.add_argument("--lr", type=float, default=defaults.learning_rate,
                         help=f"learning rate (default: {defaults.learning_rate:g})")
        sub.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                         help="share of the subjects held out to pick the best epoch, split by subject "
                              f"(default: {defaults.val_fraction:g})")
        sub.add_argument("--seed", type=int, default=defaults.seed,
                         help=f"seed of the split, the initial weights and the augmentation (default: {defaults.seed})")
        sub.add_argument("--limit", type=int, help="use only the first N participants")
        add_device(sub)
        sub.add_argument("--resume", action="store_true", help="continue from DIR/checkpoints")
        add_preprocessing(sub, "bring scans to the model's space as inference does: ")
        sub.add_argument("--workers", type=int, default=1,
                         help="processes preparing the scans (registration takes seconds a scan; default: 1)")
        sub.set_defaults(command_parser=sub)  # errors found after parsing show this part's usage, not train's


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..cohort import keep_record
    from ..errors import BrainAgeError, OptionError
    from ..model.card import NOISE_MODEL_FILE, PREDICTOR_FILE
    from ..training.config import TrainConfig
    from ..training.data import load_cohort, training_inputs
    from ..training.noise_model import check_noise_model_training, train_noise_model
    from ..training.predictor import check_predictor_training, train_predictor

    # Every option is checked before any scan is loaded (loading may register each one).
    try:
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                             val_fraction=args.val_fraction, seed=args.seed, device=args.device,
                             resume=args.resume, noise_augment=getattr(args, "noise_augment", 0.0),
                             blur_augment=getattr(args, "blur_augment", 0.0), init_from=args.init,
                             randomise_domain=args.randomise_domain,
                             flip=getattr(args, "flip", False),
                             lr_schedule=getattr(args, "lr_schedule", "cosine"),
                             pool=getattr(args, "pool", None), max_minutes=args.max_minutes)
        spec = _noise_spec(args) if args.part == "noise-model" else None
    except OptionError as err:
        parser.error(f"{_flag(err.option)} {_flags_in(err.problem)}")
    if args.limit is not None and args.limit < 1:  # -1 dropped the last subject, 0 said "none of the 0 scans"
        parser.error(f"--limit must be at least 1, got {args.limit}")
    check_device(args.device)
    out = Path(args.out)
    # --out (writable, not holding these weights or another predictor), --init and
    # --predictor (holding the networks needed): said before every scan is loaded,
    # and nothing written.
    if args.part == "predictor":
        check_predictor_training(out, config)
    else:
        check_noise_model_training(args.predictor, out, config, args.full_resolution_head)
    # The tables' ages and duplicates, before their record and any scan. Their warnings
    # (one file under two ids) are load_cohort's to give, which reads the tables again:
    # given here too, each was printed twice.
    with warnings.catch_warnings(record=True):
        training_inputs(args.data)
    record = _run_record(args)
    if args.resume:  # before loading (registering) every scan: the epochs to come must see what the others saw
        _check_record(out / _record_name(args.part), record)
    try:
        cohort = load_cohort(args.data, limit=args.limit, progress=print, preprocessing=args.preprocess,
                             workers=args.workers)
    except BrainAgeError:
        raise  # a bad table or file: one line, as in every command
    except ValueError as err:
        parser.error(str(err))
    weights = out / (PREDICTOR_FILE if args.part == "predictor" else NOISE_MODEL_FILE)
    if args.resume or not weights.exists():  # else training refuses the folder: its record stays
        out.mkdir(parents=True, exist_ok=True)
        keep_record(out / _record_name(args.part), record, False, out)
    if args.part == "predictor":
        train_predictor(cohort, args.out, config)
    else:
        train_noise_model(cohort, args.predictor, args.out, config, spec,
                          full_resolution_head=args.full_resolution_head)
    print(f"napari-brainage train {args.part}: trained on {len(cohort.subjects)} of "
          f"{len(cohort.subjects) + len(cohort.failed)} scans -> {args.out}; {len(cohort.failed)} failed"
          + (" and were left out (listed above)" if cohort.failed else ""))
    return 1 if cohort.failed else 0


#: The options a resumed training must repeat, by their destination in ``args``
#: (each network's recipe; --epochs may grow, --device, --workers and
#: --max-minutes change how, not what, is trained).
RECIPE = {
    "predictor": ("lr", "batch_size", "val_fraction", "seed", "limit", "randomise_domain", "noise_augment",
                  "blur_augment", "pool"),
    "noise-model": ("lr", "batch_size", "val_fraction", "seed", "limit", "randomise_domain", "lam", "max_sd",
                    "min_sd", "target", "relative_noise", "brain_only", "perturbation", "noise_budget",
                    "lr_schedule", "full_resolution_head", "flip"),
}


def _run_record(args: argparse.Namespace) -> dict[str, str]:
    """What a resumed ``train PART`` must repeat (``cohort.keep_record``, as ``predict``
    and ``population`` keep theirs): --preprocess; the tables (absolute paths) and
    a hash of their content; the --predictor's and --init's weights (SHA-256); the
    recipe (``RECIPE``). A resume that changed them trained on one objective, scored
    epochs on another and wrote a card describing neither."""
    from ..model.card import NOISE_MODEL_FILE, PREDICTOR_FILE
    from ..model.weights import sha256
    from ..training.data import table_names, tables_digest

    def text(value) -> str:
        if isinstance(value, bool) or value is None:
            return {True: "on", False: "off", None: "none"}[value]
        return f"{value:g}" if isinstance(value, float) else str(value)

    record = {"preprocess": args.preprocess,
              "data": f"{table_names(args.data)} (content sha256 {tables_digest(args.data)[:16]})"}
    if args.part == "noise-model":
        record["predictor"] = f"sha256 {sha256(Path(args.predictor) / PREDICTOR_FILE)[:16]}"
    network = PREDICTOR_FILE if args.part == "predictor" else NOISE_MODEL_FILE
    record["init"] = f"sha256 {sha256(Path(args.init) / network)[:16]}" if args.init else "none"
    record.update({name.replace("_", "-"): text(getattr(args, name)) for name in RECIPE[args.part]})
    return record


def _flag(field: str) -> str:
    """The flag that sets the configuration field ``field``: "max_sd" -> "--max-sd"."""
    return f"--{FLAGS.get(field, field.replace('_', '-'))}"


def _flags_in(problem: str) -> str:
    """``problem`` with the fields it names as their flags ("below max_sd (0.3)" ->
    "below --max-sd (0.3)"): the user typed flags, not Python names."""
    from ..model.card import NoiseSpec
    from ..training.config import TrainConfig

    names = {f.name for spec in (NoiseSpec, TrainConfig) for f in dataclasses.fields(spec) if "_" in f.name}
    return re.sub(r"\b[a-z]+(?:_[a-z]+)+\b", lambda m: _flag(m[0]) if m[0] in names else m[0], problem)


def _record_name(part: str) -> str:
    """The file in the model folder keeping the options a ``train PART`` run started with."""
    return f".train-{part}.run.json"


def _check_record(path: Path, record: dict[str, str]) -> None:
    """``InputError`` when the interrupted training recorded in ``path`` used other options."""
    from ..cohort import read_record, refuse_other_options

    refuse_other_options(path.parent, read_record(path), record, "train into another --out")


def _noise_spec(args: argparse.Namespace):
    from ..model.card import NoiseSpec

    return NoiseSpec(min_sd=args.min_sd, max_sd=args.max_sd, lam=args.lam, target=args.target,
                     relative_to_contrast=args.relative_noise, brain_only=args.brain_only,
                     budget=args.noise_budget, perturbation=args.perturbation)
