"""Training loops for the predictor and the noise model: seeded, resumable, best-on-validation.

Both commands write into a model folder (``model_card.json`` + weights). Giving
the noise model the predictor's folder as ``out`` adds ``noise_model.pt`` to it;
another folder gets a copy of the predictor, so each folder is self-contained.

Checkpoints (``checkpoints/<part>_last.pt``: weights, optimiser, epoch, best
score, RNG state; tensors and numbers only, so they load with
``weights_only=True``) are written atomically after every epoch; ``resume``
continues from there. The weights kept are those of the epoch with the best
validation score. The split is by subject, deterministic for a seed.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .errors import InputError
from .io import atomic_path, load_volume
from .models import (
    NOISE_MODEL_FILE,
    PREDICTOR_FILE,
    InputSpec,
    ModelCard,
    ModelError,
    NoiseSpec,
    NoiseUNet,
    SFCNRegressor,
    load_weights,
    mirror,
    pick_device,
    read_card,
    save_weights,
    sha256,
    write_card,
)
from .parallel import ordered_map
from .training_options import NOISE_MODEL_DEFAULTS, PREDICTOR_DEFAULTS, TrainConfig

Progress = Callable[[str], None]




@dataclass
class Cohort:
    """A training cohort in memory: each subject's model input and age."""

    subjects: list[str]
    scans: np.ndarray        #: (N, X, Y, Z) float32, cropped and normalised model input
    ages: np.ndarray         #: chronological ages
    source: str
    #: (subject, why) of the participants whose scan could not be loaded; left out of the arrays
    failed: list[tuple[str, str]] = field(default_factory=list)


def read_participants(path: str | Path) -> list[dict]:
    """Rows of a participants CSV (needs ``subject``, ``path``; ``age`` for training)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such participants file")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise InputError(f"{path}: no participants")
    missing = {"subject", "path"} - set(rows[0])
    if missing:
        raise InputError(f"{path}: missing column(s) {sorted(missing)}")
    for row in rows:
        row["path"] = str((path.parent / row["path"]).resolve())
    return rows


def load_cohort(csv_path: str | Path | Sequence[str | Path], spec: InputSpec = InputSpec(),
                limit: int | None = None, progress: Progress | None = None, preprocessing: str = "auto",
                workers: int = 1) -> Cohort:
    """Every participant's scan as model input, prepared exactly as inference prepares it.

    ``csv_path``: one participants CSV, or several (cohorts trained on together;
    the same subject id in two tables is one person, kept on one side of the split).

    ``preprocessing`` is inference's choice ("auto": scans already on an MNI grid are
    used as they are, others registered to the template; "register"; "none"), so a
    model trained on raw scans sees what it will be given. Registration takes a few
    seconds a scan: ``workers`` processes share the work. Scans that fail quality
    control are reported through ``progress`` (not dropped: the caller decides).
    A scan that cannot be loaded or prepared at all, whatever the error, is
    reported through ``progress``, listed in ``Cohort.failed`` and left out;
    only a cohort with no scan left is an error.
    """
    tables = [csv_path] if isinstance(csv_path, (str, Path)) else list(csv_path)
    rows = []
    for table in tables:
        table_rows = read_participants(table)
        if "age" not in table_rows[0]:
            raise InputError(f"{table}: training needs an 'age' column")
        rows += table_rows
    rows = rows[:limit]
    from .preprocess import check_preprocessing

    check_preprocessing(preprocessing)  # before any worker starts
    scans = np.empty((len(rows), *spec.crop_shape), dtype=np.float32)
    jobs = [(row["path"], spec, preprocessing) for row in rows]
    flagged, kept, failed = 0, [], []
    for i, (scan, warnings, error) in enumerate(ordered_map(_model_input, jobs, workers)):
        subject = rows[i]["subject"]
        if error:
            failed.append((subject, error))
            if progress:
                progress(f"{subject}: error: {error}")
        else:
            scans[len(kept)] = scan  # packed in input order: failed scans leave no gap
            kept.append(rows[i])
        if warnings:
            flagged += 1
            if progress:
                progress(f"{subject}: {'; '.join(warnings)}")
        if progress and ((i + 1) % 200 == 0 or i + 1 == len(rows)):
            progress(f"loaded {i + 1}/{len(rows)} scans")
    if flagged and progress:
        progress(f"quality control flagged {flagged} of {len(rows)} scans (listed above); they are kept")
    if not kept:
        raise InputError(f"none of the {len(rows)} scans could be loaded"
                         + (f" (first error: {failed[0][0]}: {failed[0][1]})" if failed else ""))
    if failed and progress:
        progress(f"{len(failed)} of {len(rows)} scans failed (listed above) and are left out: "
                 f"{', '.join(subject for subject, _ in failed)}")
    return Cohort([r["subject"] for r in kept], scans[:len(kept)], np.array([float(r["age"]) for r in kept]),
                  " + ".join(str(t) for t in tables), failed)


def _model_input(job) -> tuple[np.ndarray | None, list[str], str]:
    """(model input, QC warnings, "") of one scan, or (None, [], why it failed).

    Runs in worker processes: any failure of the scan comes back as words
    (``errors.describe_error``) instead of stopping the pool.
    """
    from .errors import describe_error
    from .preprocess import prepare

    path, spec, preprocessing = job
    try:
        prepared = prepare(load_volume(path), preprocessing)
        return prepared.model_input(spec), prepared.quality.warnings, ""
    except Exception as err:  # Ctrl-C (not an Exception) still stops the run
        return None, [], describe_error(err)


def split_by_subject(subjects: list[str], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split: a subject's side depends only on its id and the seed."""
    if not 0 < val_fraction < 1:
        raise InputError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    keys = [hashlib.sha256(f"{seed}:{s}".encode()).digest() for s in subjects]
    order = np.argsort(keys, kind="stable")
    n_val = max(1, int(round(val_fraction * len(subjects))))
    if n_val >= len(subjects):
        raise InputError(f"{len(subjects)} subjects are too few to split off a validation set")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def patchy_noise(x: torch.Tensor, max_sd: float) -> torch.Tensor:
    """x + N(0, sd) with sd a random smooth field in [0, max_sd] (about 16 mm patches)."""
    coarse = torch.rand(x.shape[0], 1, *(max(2, n // 8) for n in x.shape[2:]), device=x.device)
    sd = F.interpolate(coarse, size=x.shape[2:], mode="trilinear", align_corners=False) * max_sd
    return x + torch.randn_like(x) * sd


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable 3D Gaussian blur of (B, 1, X, Y, Z) with sd ``sigma`` voxels (edge voxels repeated)."""
    if sigma <= 0.05:
        return x
    radius = max(1, int(np.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        x = F.conv3d(F.pad(x, pad, mode="replicate"), kernel.view(shape))
    return x


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """Each epoch's randomness depends only on (seed, epoch): resuming repeats it exactly."""
    torch.manual_seed(seed * 100_003 + epoch)
    return np.random.default_rng([seed, epoch])


def _train_epoch(model, optimiser, scans: np.ndarray, targets: np.ndarray, indices: np.ndarray,
                 config: TrainConfig, epoch: int, device: torch.device, loss_of, augment=None) -> float:
    """One pass over ``indices`` in shuffled batches; returns the mean batch loss."""
    rng = _epoch_rng(config.seed, epoch)
    model.train()
    losses = []
    for batch in _batches(indices, config.batch_size, rng):
        x = _tensor(scans[batch], device)
        if augment is not None:
            x = augment(x, rng)
        loss = loss_of(x, torch.from_numpy(targets[batch]).float().to(device))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def _batches(indices: np.ndarray, size: int, rng: np.random.Generator | None):
    order = rng.permutation(indices) if rng is not None else indices
    for start in range(0, len(order), size):
        yield order[start:start + size]


def _tensor(scans: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(scans))[:, None].to(device)


class _Checkpoint:
    """Last-epoch state of one training run, for resuming."""

    def __init__(self, folder: Path, part: str):
        self.path = folder / "checkpoints" / f"{part}_last.pt"

    def save(self, model, optimiser, epoch: int, best: float, scheduler=None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "epoch": epoch,
                 "best": best, "scheduler": scheduler.state_dict() if scheduler else {}}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def load(self, model, optimiser, scheduler=None) -> tuple[int, float] | None:
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        return int(state["epoch"]), float(state["best"])


def _adopt_best_weights(out: Path, filename: str, card: ModelCard) -> None:
    """On resume, the best weights so far are the file this run wrote atomically."""
    if (out / filename).is_file():
        card.weights[filename] = sha256(out / filename)


def _prepare_out(out: Path, part: str, resume: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    target = out / (PREDICTOR_FILE if part == "predictor" else NOISE_MODEL_FILE)
    if target.exists() and not resume:
        raise FileExistsError(f"{target} already exists; choose another --out or pass --resume")


# ------------------------------------------------------------------ predictor
def train_predictor(cohort: Cohort, out: str | Path, config: TrainConfig = PREDICTOR_DEFAULTS,
                    progress: Progress = print) -> ModelCard:
    """Train the brain-age predictor (``SFCNRegressor``) on ``cohort`` into the model folder ``out``.

    Loss: L1 on standardised age; left-right flips always, patchy noise and blur
    when ``config`` asks; AdamW with cosine annealing. The weights of the epoch
    with the lowest validation MAE are kept (``predictor.pt``), then the age-bias
    correction of Smith et al. (2019) is fitted on the validation subjects
    (predicted = slope x age + intercept) and written to the card.

    Parameters
    ----------
    cohort
        Scans already on the model's input grid (``load_cohort``), N x 80 x 96 x 80.
    out
        Model folder; a checkpoint after every epoch lets ``config.resume`` continue.
    config
        ``TrainConfig`` (epochs, batch size, learning rate, ...; ``init_from``
        fine-tunes another folder's predictor, keeping its age standardisation).
    progress
        Receives one line per epoch.

    Returns
    -------
    ModelCard
        The card written to ``out``.

    Raises
    ------
    ModelError
        when ``config.init_from`` is not a usable model folder.
    FileExistsError
        when ``out`` already holds a predictor and ``config.resume`` is not set.
    """
    out = Path(out)
    # A wrong --init must fail before anything is written.
    start_card = read_card(config.init_from) if config.init_from else None
    _prepare_out(out, "predictor", config.resume)
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    train, val = split_by_subject(cohort.subjects, config.val_fraction, config.seed)
    if start_card is not None:
        # The network outputs standardised age: keep the scale it was trained on.
        card = ModelCard(input=start_card.input, predictor_channels=start_card.predictor_channels,
                         age_mean=start_card.age_mean, age_sd=start_card.age_sd)
        model = load_weights(SFCNRegressor(card.predictor_channels), config.init_from, PREDICTOR_FILE, start_card)
        progress(f"predictor: fine-tuning the predictor of {config.init_from}")
    else:
        card = ModelCard(age_mean=float(cohort.ages[train].mean()), age_sd=float(cohort.ages[train].std() or 1.0))
        model = SFCNRegressor(card.predictor_channels)
    model.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(config.epochs, 1))
    checkpoint = _Checkpoint(out, "predictor")
    start, best = 0, np.inf
    if config.resume and (state := checkpoint.load(model, optimiser, scheduler)):
        start, best = state
        _adopt_best_weights(out, PREDICTOR_FILE, card)
        progress(f"resuming predictor training after epoch {start} (best validation MAE {best:.2f} y)")
    targets = (cohort.ages - card.age_mean) / card.age_sd
    progress(f"predictor: {len(train)} training / {len(val)} validation subjects on {device}")
    def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() < 0.5:  # ageing is symmetric: left-right flips are free data
            x = mirror(x)
        if config.noise_augment and rng.random() < 0.5:
            x = patchy_noise(x, config.noise_augment)
        if config.blur_augment and rng.random() < 0.5:
            x = gaussian_blur(x, float(rng.uniform(0.0, config.blur_augment)))
        return x

    for epoch in range(start, config.epochs):
        tic = time.monotonic()
        train_mae = card.age_sd * _train_epoch(
            model, optimiser, cohort.scans, targets, train, config, epoch, device,
            loss_of=lambda x, y: F.l1_loss(model(x), y), augment=augment)
        scheduler.step()
        val_mae = float(np.abs(predict_ages(model, cohort.scans[val], card, device) - cohort.ages[val]).mean())
        improved = val_mae < best
        if improved:
            best = val_mae
            save_weights(model, out, PREDICTOR_FILE, card)
        checkpoint.save(model, optimiser, epoch + 1, best, scheduler)
        progress(f"predictor epoch {epoch + 1}/{config.epochs}: train MAE {train_mae:.2f} y, "
                 f"validation MAE {val_mae:.2f} y{' (best)' if improved else ''}, {time.monotonic() - tic:.0f} s")

    # The age-bias fit uses the validation subjects: predictions on the
    # training subjects are over-fitted and would understate the bias.
    model = load_weights(SFCNRegressor(card.predictor_channels), out, PREDICTOR_FILE, card)
    model.to(device)
    predicted = predict_ages(model, cohort.scans[val], card, device)
    card.bias_slope, card.bias_intercept = (float(v) for v in np.polyfit(cohort.ages[val], predicted, 1))
    card.training["predictor"] = {
        "data": cohort.source, "subjects": len(cohort.subjects), "train": len(train), "validation": len(val),
        **asdict(config), "best_validation_mae": best,
    }
    write_card(card, out)
    progress(f"predictor: best validation MAE {best:.2f} y; bias fit predicted = "
             f"{card.bias_slope:.3f} x age + {card.bias_intercept:.2f}; saved to {out}")
    return card


@torch.no_grad()
def predict_ages(model: SFCNRegressor, scans: np.ndarray, card: ModelCard, device: torch.device,
                 batch_size: int = 8) -> np.ndarray:
    """Predicted ages (years, shape (N,)) of model inputs ``scans`` (N x 80 x 96 x 80),
    in batches, un-standardised with the card's age mean and sd."""
    model.eval()
    out = [model(_tensor(scans[i:i + batch_size], device)).cpu().numpy()
           for i in range(0, len(scans), batch_size)]
    return np.concatenate(out) * card.age_sd + card.age_mean


# ------------------------------------------------------------------ noise model
def local_contrast(x: torch.Tensor) -> torch.Tensor:
    """Standard deviation of x over each voxel's 3x3x3 neighbourhood, divided by
    its mean over the non-zero voxels of each scan (so about 1 on average)."""
    mean = F.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)
    square = F.avg_pool3d(x * x, 3, stride=1, padding=1, count_include_pad=False)
    contrast = (square - mean * mean).clamp_min(0).sqrt()
    inside = (x != 0).float()
    scale = (contrast * inside).sum(dim=(1, 2, 3, 4), keepdim=True) / inside.sum(
        dim=(1, 2, 3, 4), keepdim=True).clamp_min(1)
    return contrast / scale.clamp_min(1e-6)


def noisy_input(x: torch.Tensor, mask: torch.Tensor, spec: NoiseSpec, generator=None) -> torch.Tensor:
    """x + eps * sd(B): the noise model's perturbation (U-Noise)."""
    sd = spec.min_sd + mask * (spec.max_sd - spec.min_sd)
    if spec.relative_to_contrast:
        sd = sd * local_contrast(x)
    if spec.brain_only:
        sd = sd * (x != 0)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + eps * sd


def brain_mean(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over each scan's brain (non-zero voxels of ``x``), per scan."""
    inside = (x != 0).to(values.dtype)
    return (values * inside).sum(dim=(1, 2, 3, 4)) / inside.sum(dim=(1, 2, 3, 4)).clamp_min(1)


def noise_reward(mask: torch.Tensor, x: torch.Tensor, spec: NoiseSpec) -> torch.Tensor:
    """mean(log B) per scan: over the whole input, or over the brain with ``brain_only``."""
    log_mask = torch.log(mask.clamp_min(1e-6))
    return brain_mean(log_mask, x) if spec.brain_only else log_mask.mean(dim=(1, 2, 3, 4))


def noise_loss(predictor, noise_model, x: torch.Tensor, target: torch.Tensor, spec: NoiseSpec,
               years_per_unit: float) -> torch.Tensor:
    """|f(x + noise) - target| in years - lambda * mean(log B).

    The predictor works in standardised age units; the error is converted to
    years so that lambda means "years of error traded per unit of log-noise",
    independent of the cohort's age spread.
    """
    mask = noise_model(x)
    prediction = predictor(noisy_input(x, mask, spec))
    return years_per_unit * F.l1_loss(prediction, target) - spec.lam * noise_reward(mask, x, spec).mean()


def _check_same_noise_architecture(start: ModelCard, folder: str, channels: tuple[int, ...],
                                   full_resolution_head: bool) -> None:
    """Say in words why a noise model cannot be the start of this one (instead of
    listing the state dict keys that do not match)."""
    if tuple(start.noise_channels) != tuple(channels):
        raise ModelError(f"--init {folder}: its noise model has channels {tuple(start.noise_channels)}, this "
                         f"predictor's card asks for {tuple(channels)}; start from scratch (no --init)")
    if start.noise_full_resolution_head != full_resolution_head:
        given, fix = ("with", "add") if start.noise_full_resolution_head else ("without", "drop")
        raise ModelError(f"--init {folder}: its noise model was trained {given} --full-resolution-head; "
                         f"{fix} --full-resolution-head to fine-tune it, or start from scratch (no --init)")


def train_noise_model(cohort: Cohort, predictor_dir: str | Path, out: str | Path,
                      config: TrainConfig = NOISE_MODEL_DEFAULTS,
                      spec: NoiseSpec = NoiseSpec(),
                      progress: Progress = print, full_resolution_head: bool = False) -> ModelCard:
    """Train the noise model (U-Noise, Koker et al. 2021, as adapted to regression by
    Bintsi et al. 2021) against the frozen predictor of ``predictor_dir``.

    The U-Net outputs a mask B in [0, 1] per voxel; Gaussian noise of sd
    ``spec.min_sd + B (spec.max_sd - spec.min_sd)`` (intensities normalised to
    mean 1) is added to the scan, and the loss is
    ``|age(noisy) - target| - spec.lam * mean(B)``, the target being the
    predictor's clean output (``spec.target = "prediction"``) or the true age.
    Importance is ``1 - B``.

    Parameters
    ----------
    cohort
        Scans on the model's input grid (``load_cohort``), N x 80 x 96 x 80.
    predictor_dir
        Model folder whose predictor (and card) the noise model is trained against.
    out
        Model folder to write (may be ``predictor_dir``); the predictor is copied
        into it when it is another folder.
    config, spec
        Training settings (``NOISE_MODEL_DEFAULTS``) and the noise's definition.
    full_resolution_head
        Refine the 4 mm mask at 2 mm (2x slower to train).

    Returns
    -------
    ModelCard
        The card written to ``out`` (with ``noise_model.pt`` and ``spec``).

    Raises
    ------
    ModelError
        when ``predictor_dir`` or ``config.init_from`` is not a usable model folder,
        or the starting noise model has another architecture.
    """
    predictor_dir, out = Path(predictor_dir), Path(out)
    card = read_card(predictor_dir)
    predictor = load_weights(SFCNRegressor(card.predictor_channels), predictor_dir, PREDICTOR_FILE, card)
    torch.manual_seed(config.seed)  # before the network's random initial weights
    model = NoiseUNet(card.noise_channels, full_resolution_head)
    if config.init_from:  # before anything is written: a wrong --init leaves no folder behind
        start_card = read_card(config.init_from)
        _check_same_noise_architecture(start_card, config.init_from, card.noise_channels, full_resolution_head)
        model = load_weights(model, config.init_from, NOISE_MODEL_FILE, start_card)
        card.training["noise_model_start"] = start_card.training.get("noise_model", {"data": "unknown"})
        progress(f"noise model: fine-tuning the noise model of {config.init_from}")
    else:  # the predictor's folder may describe an earlier noise model's start
        card.training.pop("noise_model_start", None)
    _prepare_out(out, "noise_model", config.resume)
    if out.resolve() != predictor_dir.resolve():
        shutil.copy2(predictor_dir / PREDICTOR_FILE, out / PREDICTOR_FILE)
    card.noise = spec
    card.noise_full_resolution_head = full_resolution_head
    device = pick_device(config.device)
    predictor.to(device).eval().requires_grad_(False)
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(config.epochs, 1))
                 if config.lr_schedule == "cosine" else None)
    checkpoint = _Checkpoint(out, "noise_model")
    start, best = 0, np.inf
    if config.resume and (state := checkpoint.load(model, optimiser, scheduler)):
        start, best = state
        _adopt_best_weights(out, NOISE_MODEL_FILE, card)
        progress(f"resuming noise-model training after epoch {start} (best validation loss {best:.4f})")
    train, val = split_by_subject(cohort.subjects, config.val_fraction, config.seed)
    clean = predict_ages(predictor, cohort.scans, card, device)
    source = clean if spec.target == "prediction" else cohort.ages
    targets = (source - card.age_mean) / card.age_sd
    progress(f"noise model: {len(train)} training / {len(val)} validation subjects on {device}, "
             f"lambda {spec.lam}, noise sd {spec.min_sd}-{spec.max_sd}, target {spec.target}")

    def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return mirror(x) if config.flip and rng.random() < 0.5 else x

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if config.flip and spec.target == "prediction":
            with torch.no_grad():  # the clean output of the scan as flipped, not of the original
                y = predictor(x)
        return noise_loss(predictor, model, x, y, spec, card.age_sd)

    for epoch in range(start, config.epochs):
        tic = time.monotonic()
        train_loss = _train_epoch(
            model, optimiser, cohort.scans, targets, train, config, epoch, device,
            loss_of=loss_of, augment=augment)
        if scheduler is not None:
            scheduler.step()
        val_loss, mean_mask = _validate_noise(predictor, model, cohort.scans[val], targets[val], spec,
                                              card.age_sd, device)
        improved = val_loss < best
        if improved:
            best = val_loss
            save_weights(model, out, NOISE_MODEL_FILE, card)
        checkpoint.save(model, optimiser, epoch + 1, best, scheduler)
        progress(f"noise model epoch {epoch + 1}/{config.epochs}: train loss {train_loss:.4f}, "
                 f"validation loss {val_loss:.4f}, mean B {mean_mask:.3f}"
                 f"{' (best)' if improved else ''}, {time.monotonic() - tic:.0f} s")
    if NOISE_MODEL_FILE not in card.weights:
        raise InputError("noise-model training ran no epoch; raise --epochs")
    card.training["noise_model"] = {"data": cohort.source, "predictor": str(predictor_dir), **asdict(config),
                                    **{f"noise_{k}": v for k, v in asdict(spec).items()},
                                    "best_validation_loss": best}
    write_card(card, out)
    progress(f"noise model: best validation loss {best:.4f}; saved to {out}")
    return card


@torch.no_grad()
def _validate_noise(predictor, model, scans, targets, spec, years_per_unit, device,
                    batch_size=8) -> tuple[float, float]:
    model.eval()
    generator = torch.Generator(device=device).manual_seed(0)  # same noise every epoch: comparable
    losses, masks = [], []
    for i in range(0, len(scans), batch_size):
        x = _tensor(scans[i:i + batch_size], device)
        mask = model(x)
        prediction = predictor(noisy_input(x, mask, spec, generator))
        y = torch.from_numpy(targets[i:i + batch_size]).float().to(device)
        reward = noise_reward(mask, x, spec).sum()
        loss = years_per_unit * F.l1_loss(prediction, y, reduction="sum") - spec.lam * reward
        losses.append(loss.item())
        masks.append(brain_mean(mask, x).sum().item())  # over the brain: the background is not mapped
    return sum(losses) / len(scans), sum(masks) / len(scans)
