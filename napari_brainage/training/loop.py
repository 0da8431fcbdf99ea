"""What both training loops share: seeded epochs and batches, resumable checkpoints,
and the model folder they write into.

Checkpoints (``checkpoints/<part>_last.pt``: weights, optimiser, epoch, best
score, RNG state; tensors and numbers only, so they load with
``weights_only=True``) are written atomically after every epoch; ``resume``
continues from there. The weights kept are those of the epoch with the best
validation score.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io import atomic_path, nearest_existing
from ..model.card import (
    NOISE_MODEL_FILE,
    PREDICTOR_FILE,
    ModelCard,
    ModelError,
    read_card,
)
from ..model.weights import sha256
from .config import TrainConfig

Progress = Callable[[str], None]


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """Each epoch's randomness depends only on (seed, epoch): resuming repeats it exactly."""
    torch.manual_seed(seed * 100_003 + epoch)
    return np.random.default_rng([seed, epoch])


class TrainingDiverged(InputError):
    """The loss (or the validation score) is no longer a finite number."""


def refuse_non_finite(value: float, what: str, epoch: int) -> None:
    """``TrainingDiverged`` when ``value`` is NaN or infinite: said at once, in
    words, rather than after every epoch has trained on NaN (which ended in "the
    model card lists no checksum for predictor.pt")."""
    if not np.isfinite(value):
        raise TrainingDiverged(f"the {what} became {'NaN' if np.isnan(value) else 'infinite'} in epoch "
                               f"{epoch + 1}: lower --lr, check the ages (training stopped; the epochs before "
                               "it are kept)")


def train_epoch(model, optimiser, scans: np.ndarray, targets: np.ndarray, indices: np.ndarray,
                 config: TrainConfig, epoch: int, device: torch.device, loss_of, augment=None) -> float:
    """One pass over ``indices`` in shuffled batches; returns the mean batch loss.

    Raises
    ------
    TrainingDiverged
        as soon as a batch's loss is NaN or infinite, before it changes the weights.
    """
    rng = epoch_rng(config.seed, epoch)
    model.train()
    losses = []
    for batch in batches(indices, config.batch_size, rng):
        x = as_tensor(scans[batch], device)
        if augment is not None:
            x = augment(x, rng)
        loss = loss_of(x, torch.from_numpy(targets[batch]).float().to(device))
        refuse_non_finite(loss.item(), "loss", epoch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def timed_epochs(start: int, config: TrainConfig, progress: Progress, part: str) -> Iterator[int]:
    """Epochs ``start`` .. ``config.epochs - 1``, stopping early once ``config.max_minutes``
    have passed since the first began (checked after each epoch, so an epoch is never cut)."""
    tic = time.monotonic()
    for epoch in range(start, config.epochs):
        yield epoch
        late = config.max_minutes is not None and time.monotonic() - tic > 60 * config.max_minutes
        if late and epoch + 1 < config.epochs:
            progress(f"{part}: stopped after epoch {epoch + 1} of {config.epochs}: "
                     f"the {config.max_minutes:g}-minute limit has passed")
            return


@torch.no_grad()
def recalibrate_batch_norm(model: torch.nn.Module, scans: np.ndarray, indices: np.ndarray, batch_size: int,
                           device: torch.device) -> None:
    """Recompute every batch-norm layer's running statistics on ``scans[indices]`` as they
    are (no augmentation): the cumulative average of the per-batch mean and variance,
    batches in index order. The weights do not change.

    Why: the running averages (momentum 0.1) trail weights that are still moving, and
    augmented batches update them too, so evaluation normalises with statistics of
    earlier weights or of noisy scans. Measured: a predictor trained from scratch on
    the cortical cohort read 17.3 y off in evaluation mode where its training batches
    read 8.1 y (recalibrated: 8.4 y); one fine-tuned with ``--noise-augment 1.0`` read
    held-out scans 6.9 y off (recalibrated: 2.5 y). docs/benchmarks.md, "Issue 18,
    fifth and sixth sessions".
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch counts alike
    was_training = model.training
    model.train()
    try:
        for batch in batches(indices, batch_size, None):
            model(as_tensor(scans[batch], device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)


def batches(indices: np.ndarray, size: int, rng: np.random.Generator | None):
    """``indices`` in batches of ``size``, shuffled by ``rng`` (in order without one)."""
    order = rng.permutation(indices) if rng is not None else indices
    for start in range(0, len(order), size):
        yield order[start:start + size]


def as_tensor(scans: np.ndarray, device: torch.device) -> torch.Tensor:
    """Model inputs (N, X, Y, Z) as a (N, 1, X, Y, Z) tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(scans))[:, None].to(device)


class Checkpoint:
    """Last-epoch state of one training run, for resuming."""

    def __init__(self, folder: Path, part: str):
        self.path = folder / "checkpoints" / f"{part}_last.pt"

    def epochs_run(self) -> int:
        """How many epochs the checkpoint has run; 0 without one."""
        if not self.path.is_file():
            return 0
        return int(torch.load(self.path, map_location="cpu", weights_only=True)["epoch"])

    def save(self, model, optimiser, epoch: int, best: float, scheduler=None) -> None:
        """Write the checkpoint atomically: weights, optimiser, scheduler, epoch, best score."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "epoch": epoch,
                 "best": best, "scheduler": scheduler.state_dict() if scheduler else {}}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def load(self, model, optimiser, scheduler=None) -> tuple[int, float] | None:
        """Restore the checkpoint into ``model``/``optimiser``/``scheduler``; (epoch, best) or None without one."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        return int(state["epoch"]), float(state["best"])


def resume(checkpoint: Checkpoint, model, optimiser, scheduler, card: ModelCard, weights: Path
           ) -> tuple[int, float]:
    """(first epoch, best score) of a resumed run: restored from ``checkpoint`` when there is
    one, the best weights so far (``weights``, written atomically by the run) recorded in
    ``card``; (0, inf) otherwise. A run asking for fewer epochs than the checkpoint
    ran is refused before this (``refuse_fewer_epochs``, from the trainers' checks)."""
    state = checkpoint.load(model, optimiser, scheduler)
    if state is None:
        return 0, np.inf
    if weights.is_file():
        card.weights[weights.name] = sha256(weights)
    return state


def require_network(folder: str | Path, filename: str, flag: str) -> ModelCard:
    """The card of model folder ``folder`` (given as ``flag``), which must hold the
    network ``filename``; read before any scan is loaded.

    Raises
    ------
    ModelError
        when ``folder`` is no model folder or lacks that network.
    """
    card = read_card(folder)
    if filename not in card.weights or not (Path(folder) / filename).is_file():
        what = "predictor" if filename == PREDICTOR_FILE else "noise model"
        fix = "" if flag == "--predictor" else ", or train from scratch (no --init)"
        raise ModelError(f"{flag} {folder}: this model folder has no {what} ({filename}); give one that has{fix}")
    return card


def refuse_fewer_epochs(folder: Path, done: int, epochs: int | None) -> None:
    """``InputError`` when a resumed run asks for fewer epochs than ``done`` already ran."""
    if epochs is not None and done > epochs:
        raise InputError(f"{folder}: the interrupted training has already run {done} epochs; resume with "
                         f"--epochs {done} or more, not {epochs}")


def check_out(out: Path, part: str, resume: bool) -> None:
    """Whether training ``part`` ("predictor" or "noise_model") may write into ``out``;
    nothing is written. Called before any scan is loaded (loading may take hours).

    Raises
    ------
    FileExistsError
        when ``out`` already holds this part's weights and ``resume`` is off.
    NotADirectoryError
        when ``out`` (or a folder above it) is a file.
    PermissionError
        when ``out`` cannot be made or written in.
    """
    target = out / (PREDICTOR_FILE if part == "predictor" else NOISE_MODEL_FILE)
    if target.exists() and not resume:
        raise FileExistsError(f"{target} already exists; choose another --out or pass --resume")
    existing = nearest_existing(out)  # the folder that would hold the new ones
    if not existing.is_dir():
        raise NotADirectoryError(f"{out}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{out}: cannot write in {existing} (permission denied); choose another --out")


def prepare_out(out: Path, part: str, resume: bool) -> None:
    """Make the model folder (``check_out``'s errors when it may not be written)."""
    check_out(out, part, resume)
    out.mkdir(parents=True, exist_ok=True)
