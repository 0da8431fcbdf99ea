"""Training the noise model against a frozen predictor (see ``objective``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..model.bundle import pick_device
from ..model.card import (
    NOISE_MODEL_FILE,
    PREDICTOR_FILE,
    ModelCard,
    ModelError,
    NoiseSpec,
    write_card,
)
from ..model.networks import NoiseUNet, SFCNRegressor, mirror
from ..model.weights import load_weights, save_weights, sha256
from .augment import randomise_domain
from .config import NOISE_MODEL_DEFAULTS, TrainConfig
from .data import Cohort, split_by_subject
from .loop import (
    Checkpoint,
    Progress,
    as_tensor,
    check_out,
    prepare_out,
    refuse_fewer_epochs,
    refuse_non_finite,
    require_network,
    resume,
    timed_epochs,
    train_epoch,
)
from .objective import brain_mean, clean_target, noise_loss, noise_terms
from .predictor import predict_ages


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
    predictor's clean output (``spec.target = "prediction"``), the true age, or
    the clean output's last-layer contributions (``"contributions"``: the sum of
    their absolute changes replaces the age's, ``objective.noise_terms``).
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
    FileExistsError, NotADirectoryError, PermissionError
        when ``out`` holds a noise model (without ``config.resume``) or a predictor
        other than ``predictor_dir``'s, or cannot be written.
    InputError
        when a resumed run asks for fewer epochs than it has run.
    TrainingDiverged
        as soon as the loss or the validation loss is not a finite number.
    """
    predictor_dir, out = Path(predictor_dir), Path(out)
    # Before anything is written: a wrong --init or --out leaves no folder behind.
    card, start_card = check_noise_model_training(predictor_dir, out, config, full_resolution_head)
    predictor = load_weights(SFCNRegressor.for_card(card), predictor_dir, PREDICTOR_FILE, card)
    torch.manual_seed(config.seed)  # before the network's random initial weights
    model = NoiseUNet(card.noise_channels, full_resolution_head)
    if start_card is not None:
        model = load_weights(model, config.init_from, NOISE_MODEL_FILE, start_card)
        card.training["noise_model_start"] = start_card.training.get("noise_model", {"data": "unknown"})
        progress(f"noise model: fine-tuning the noise model of {config.init_from}")
    else:  # the predictor's folder may describe an earlier noise model's start
        card.training.pop("noise_model_start", None)
    prepare_out(out, "noise_model", config.resume)
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
    checkpoint = Checkpoint(out, "noise_model")
    start, best = (resume(checkpoint, model, optimiser, scheduler, card, out / NOISE_MODEL_FILE)
                   if config.resume else (0, np.inf))
    if start:
        progress(f"resuming noise-model training after epoch {start} (best validation loss {best:.4f})")
    train, val = split_by_subject(cohort.subjects, config.val_fraction, config.seed)
    clean = predict_ages(predictor, cohort.scans, card, device)
    source = clean if spec.target == "prediction" else cohort.ages
    targets = (source - card.age_mean) / card.age_sd
    progress(f"noise model: {len(train)} training / {len(val)} validation subjects on {device}, "
             f"lambda {spec.lam}, noise sd {spec.min_sd}-{spec.max_sd}, target {spec.target}")

    def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        x = mirror(x) if config.flip and rng.random() < 0.5 else x
        # The masks of a predictor that reads any contrast are made on any contrast.
        return randomise_domain(x, rng) if config.randomise_domain else x

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        augmented = (config.flip or config.randomise_domain) and spec.target == "prediction"
        if augmented or spec.target == "contributions":
            y = clean_target(predictor, x, spec)  # of the scan as augmented, not of the original
        return noise_loss(predictor, model, x, y, spec, card.age_sd)

    epochs_run = start
    for epoch in timed_epochs(start, config, progress, "noise model"):
        epochs_run = epoch + 1
        tic = time.monotonic()
        train_loss = train_epoch(
            model, optimiser, cohort.scans, targets, train, config, epoch, device,
            loss_of=loss_of, augment=augment)
        if scheduler is not None:
            scheduler.step()
        val_loss, mean_mask = _validate_noise(predictor, model, cohort.scans[val], targets[val], spec,
                                              card.age_sd, device)
        refuse_non_finite(val_loss, "validation loss", epoch)
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
    card.training["noise_model"] = {"data": cohort.source, "predictor": str(predictor_dir.resolve()), **asdict(config),
                                    **{f"noise_{k}": v for k, v in asdict(spec).items()},
                                    "epochs_run": epochs_run, "best_validation_loss": best}
    write_card(card, out)
    progress(f"noise model: best validation loss {best:.4f}; saved to {out}")
    return card


def check_noise_model_training(predictor_dir: str | Path, out: str | Path, config: TrainConfig,
                               full_resolution_head: bool = False) -> tuple[ModelCard, ModelCard | None]:
    """What can be checked of a noise-model training before any scan is loaded:
    ``predictor_dir`` holds a predictor; ``out`` may be written (``loop.check_out``)
    and holds no other predictor (training would replace it with ``predictor_dir``'s);
    ``config.init_from`` holds a noise model of this architecture; a resumed run asks
    for at least the epochs it has run. Nothing is written. Returns the cards of
    ``predictor_dir`` and of the ``--init`` folder (None without one); raises what
    ``train_noise_model`` raises for these."""
    predictor_dir, out = Path(predictor_dir), Path(out)
    card = require_network(predictor_dir, PREDICTOR_FILE, "--predictor")
    check_out(out, "noise_model", config.resume)
    refuse_another_predictor(predictor_dir, out)
    if config.resume:
        refuse_fewer_epochs(out, Checkpoint(out, "noise_model").epochs_run(), config.epochs)
    start_card = None
    if config.init_from:
        start_card = require_network(config.init_from, NOISE_MODEL_FILE, "--init")
        _check_same_noise_architecture(start_card, config.init_from, card.noise_channels, full_resolution_head)
    return card, start_card


def refuse_another_predictor(predictor_dir: Path, out: Path) -> None:
    """``FileExistsError`` when ``out`` already holds a predictor that is not
    ``predictor_dir``'s (by SHA-256): training a noise model there copied
    ``predictor_dir``'s over it, and the folder's own predictor was lost without a
    word. The same predictor (a copy, or the same folder) is fine."""
    there = out / PREDICTOR_FILE
    if not there.is_file() or out.resolve() == predictor_dir.resolve():
        return
    ours, theirs = sha256(predictor_dir / PREDICTOR_FILE), sha256(there)
    if ours != theirs:
        raise FileExistsError(f"{out} holds another predictor (sha256 {theirs[:12]}...) than --predictor "
                              f"{predictor_dir} ({ours[:12]}...); a noise model there would replace it: "
                              "choose another --out, or give that folder as --predictor")


@torch.no_grad()
def _validate_noise(predictor, model, scans, targets, spec, years_per_unit, device,
                    batch_size=8) -> tuple[float, float]:
    model.eval()
    generator = torch.Generator(device=device).manual_seed(0)  # same noise every epoch: comparable
    losses, masks = [], []
    for i in range(0, len(scans), batch_size):
        x = as_tensor(scans[i:i + batch_size], device)
        y = (clean_target(predictor, x, spec) if spec.target == "contributions"
             else torch.from_numpy(targets[i:i + batch_size]).float().to(device))
        loss, mask = noise_terms(predictor, model, x, y, spec, years_per_unit, generator)
        losses.append(loss.sum().item())
        masks.append(brain_mean(mask, x).sum().item())  # over the brain: the background is not mapped
    return sum(losses) / len(scans), sum(masks) / len(scans)
