"""Training the brain-age predictor (SFCN-style 3D CNN, L1 on standardised age).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..model.bundle import pick_device
from ..model.card import (
    PREDICTOR_FILE,
    ModelCard,
    write_card,
)
from ..model.networks import SFCNRegressor, mirror
from ..model.weights import load_weights, save_weights
from ..quality import ANY_CONTRAST
from .augment import gaussian_blur, patchy_noise, randomise_domain
from .config import PREDICTOR_DEFAULTS, TrainConfig
from .data import Cohort, split_by_subject
from .loop import (
    Checkpoint,
    Progress,
    as_tensor,
    check_out,
    prepare_out,
    recalibrate_batch_norm,
    refuse_fewer_epochs,
    refuse_non_finite,
    require_network,
    resume,
    timed_epochs,
    train_epoch,
)


#: Fewer validation subjects than this fit no age-bias line (de Lange & Cole 2020's
#: regression of predicted on chronological age): two points give any slope.
MIN_BIAS_FIT_SUBJECTS = 10


def train_predictor(cohort: Cohort, out: str | Path, config: TrainConfig = PREDICTOR_DEFAULTS,
                    progress: Progress = print) -> ModelCard:
    """Train the brain-age predictor (``SFCNRegressor``) on ``cohort`` into the model folder ``out``.

    Loss: L1 on standardised age; left-right flips always, patchy noise and blur
    when ``config`` asks; AdamW with cosine annealing. The weights of the epoch
    with the lowest validation MAE are kept (``predictor.pt``), then the age-bias
    correction (predicted = slope x age + intercept, fitted on the validation
    subjects; applied as de Lange & Cole 2020 write it, ``inference.corrected_gap``)
    is written to the card.

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
    FileExistsError, NotADirectoryError, PermissionError
        when ``out`` already holds a predictor and ``config.resume`` is not set,
        or cannot be written (``loop.check_out``).
    InputError
        when a resumed run asks for fewer epochs than it has run.
    TrainingDiverged
        as soon as the loss or the validation MAE is not a finite number.
    """
    out = Path(out)
    start_card = check_predictor_training(out, config)  # before anything is written
    prepare_out(out, "predictor", config.resume)
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    train, val = split_by_subject(cohort.subjects, config.val_fraction, config.seed)
    if start_card is not None:
        # The network outputs standardised age: keep the scale it was trained on.
        card = ModelCard(input=start_card.input, predictor_channels=start_card.predictor_channels,
                         predictor_pool=config.pool or start_card.predictor_pool,
                         age_mean=start_card.age_mean, age_sd=start_card.age_sd, contrasts=start_card.contrasts)
        # Pooling has no weights: a max-pooling predictor's weights start an average-pooling one.
        model = load_weights(SFCNRegressor.for_card(card), config.init_from, PREDICTOR_FILE, start_card)
        progress(f"predictor: fine-tuning the predictor of {config.init_from}")
    else:
        card = ModelCard(age_mean=float(cohort.ages[train].mean()), age_sd=float(cohort.ages[train].std() or 1.0),
                         predictor_pool=config.pool or "max")
        model = SFCNRegressor.for_card(card)
    if config.randomise_domain:
        card.contrasts = ANY_CONTRAST
    model.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(config.epochs, 1))
    checkpoint = Checkpoint(out, "predictor")
    start, best = (resume(checkpoint, model, optimiser, scheduler, card, out / PREDICTOR_FILE)
                   if config.resume else (0, np.inf))
    if start:
        progress(f"resuming predictor training after epoch {start} (best validation MAE {best:.2f} y)")
    targets = (cohort.ages - card.age_mean) / card.age_sd
    progress(f"predictor: {len(train)} training / {len(val)} validation subjects on {device}")
    if len(val) < MIN_BIAS_FIT_SUBJECTS:
        progress(f"predictor: warning: {len(val)} validation subject(s) pick the best epoch; its MAE says little "
                 f"(a few hundred training subjects, {MIN_BIAS_FIT_SUBJECTS}+ for validation, make a usable model)")
    def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() < 0.5:  # ageing is symmetric: left-right flips are free data
            x = mirror(x)
        if config.randomise_domain:
            x = randomise_domain(x, rng)
        if config.noise_augment and rng.random() < 0.5:
            x = patchy_noise(x, config.noise_augment)
        if config.blur_augment and rng.random() < 0.5:
            x = gaussian_blur(x, float(rng.uniform(0.0, config.blur_augment)))
        return x

    epochs_run = start
    for epoch in timed_epochs(start, config, progress, "predictor"):
        epochs_run = epoch + 1
        tic = time.monotonic()
        train_mae = card.age_sd * train_epoch(
            model, optimiser, cohort.scans, targets, train, config, epoch, device,
            loss_of=lambda x, y: F.l1_loss(model(x), y), augment=augment)
        scheduler.step()
        # Batch norm's running averages lag behind moving weights (and take in augmented
        # batches): recompute them for this epoch's weights on the clean training scans
        # before validating and saving (loop.recalibrate_batch_norm).
        recalibrate_batch_norm(model, cohort.scans, train, config.batch_size, device)
        val_mae = float(np.abs(predict_ages(model, cohort.scans[val], card, device) - cohort.ages[val]).mean())
        refuse_non_finite(val_mae, "validation MAE", epoch)
        improved = val_mae < best
        if improved:
            best = val_mae
            save_weights(model, out, PREDICTOR_FILE, card)
        checkpoint.save(model, optimiser, epoch + 1, best, scheduler)
        progress(f"predictor epoch {epoch + 1}/{config.epochs}: train MAE {train_mae:.2f} y, "
                 f"validation MAE {val_mae:.2f} y{' (best)' if improved else ''}, {time.monotonic() - tic:.0f} s")

    # The age-bias fit uses the validation subjects: predictions on the
    # training subjects are over-fitted and would understate the bias.
    model = load_weights(SFCNRegressor.for_card(card), out, PREDICTOR_FILE, card)
    model.to(device)
    predicted = predict_ages(model, cohort.scans[val], card, device)
    if len(val) >= MIN_BIAS_FIT_SUBJECTS and np.ptp(cohort.ages[val]) > 0:
        card.bias_slope, card.bias_intercept = (float(v) for v in np.polyfit(cohort.ages[val], predicted, 1))
    else:  # a line through a handful of points is noise: no correction rather than a wrong one
        card.bias_slope, card.bias_intercept = 1.0, 0.0
        progress(f"predictor: {len(val)} validation subjects are too few to fit the age bias (at least "
                 f"{MIN_BIAS_FIT_SUBJECTS}); the corrected gap equals the gap for this model")
    card.training["predictor"] = {
        "data": cohort.source, "tables": list(cohort.tables),
        "subjects": len(cohort.subjects), "train": len(train), "validation": len(val),
        **asdict(config), "epochs_run": epochs_run, "best_validation_mae": best,
    }
    write_card(card, out)
    progress(f"predictor: best validation MAE {best:.2f} y; bias fit predicted = "
             f"{card.bias_slope:.3f} x age + {card.bias_intercept:.2f}; saved to {out}")
    return card


def check_predictor_training(out: str | Path, config: TrainConfig) -> ModelCard | None:
    """What can be checked of a predictor training before any scan is loaded: ``out``
    may be written (``loop.check_out``), ``config.init_from`` holds a predictor, a
    resumed run asks for at least the epochs it has run. Nothing is written.
    Returns the ``--init`` folder's card (None without one); raises what
    ``train_predictor`` raises for these."""
    out = Path(out)
    check_out(out, "predictor", config.resume)
    if config.resume:
        refuse_fewer_epochs(out, Checkpoint(out, "predictor").epochs_run(), config.epochs)
    return require_network(config.init_from, PREDICTOR_FILE, "--init") if config.init_from else None


@torch.no_grad()
def predict_ages(model: SFCNRegressor, scans: np.ndarray, card: ModelCard, device: torch.device,
                 batch_size: int = 8) -> np.ndarray:
    """Predicted ages (years, shape (N,)) of model inputs ``scans`` (N x 80 x 96 x 80),
    in batches, un-standardised with the card's age mean and sd."""
    model.eval()
    out = [model(as_tensor(scans[i:i + batch_size], device)).cpu().numpy()
           for i in range(0, len(scans), batch_size)]
    return np.concatenate(out) * card.age_sd + card.age_mean
