"""How a network is trained: :class:`TrainConfig` and each network's defaults.

Torch-free, so that the CLI can show the defaults in ``--help`` without loading
torch, and checked when made, so that a bad value fails before any scan is
loaded or any folder written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OptionError
from ..model.card import POOLS
from ..options import Device


@dataclass
class TrainConfig:
    """How a network is trained. The defaults are the predictor's
    (``PREDICTOR_DEFAULTS``); the noise model's are ``NOISE_MODEL_DEFAULTS``.

    Raises
    ------
    OptionError
        when made with a value no training could use (checked here, before any
        scan is loaded or any folder written).
    """

    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    #: Predictor only: add noise of up to this sd, in random smooth patches, to half
    #: the batches. A predictor that shrugs off noise where age is not written makes
    #: the noise model's maps specific (Bintsi et al.'s noise model assumes it).
    #: After each epoch the batch-norm statistics are recomputed on the clean
    #: training scans (``loop.recalibrate_batch_norm``): the noisy batches' would
    #: otherwise normalise clean scans at evaluation.
    noise_augment: float = 0.0
    #: Predictor only: blur half the batches with a Gaussian of sd drawn from
    #: [0, blur_augment] voxels, so resampled (registered) scans look like the
    #: training data. Measured: it narrows the registered-vs-aligned age gap only
    #: a little and costs accuracy (docs/benchmarks.md), so it is off by default.
    blur_augment: float = 0.0
    #: Re-render half the scans with random tissue contrast, thick slices, bias,
    #: gamma and noise (``augment.randomise_domain``: SynthBA-style domain
    #: randomisation): the predictor reads brain shape, not T1 intensity, and
    #: its card says it reads every contrast; the noise model maps any contrast.
    randomise_domain: bool = False
    #: Start from this model folder's predictor (fine-tuning, keeping its age
    #: standardisation) or, for the noise model, its noise model; None trains from scratch.
    init_from: str | None = None
    #: Noise model only: flip half the batches left-right, as the predictor's
    #: training does, so the mask does not favour one side (the predictor ages a
    #: scan and its mirror image alike). The predictor always flips.
    flip: bool = False
    #: "cosine" anneals the learning rate to 0 over the epochs (stepped once per
    #: epoch); "constant" keeps it. The predictor always anneals.
    lr_schedule: str = "cosine"
    #: Predictor only: "max" or "avg" down-sampling (``model.card.POOLS``); None keeps
    #: the --init predictor's, or SFCN's max-pooling from scratch.
    pool: str | None = None
    #: Stop after the epoch during which this many minutes of training have passed
    #: (a shared GPU's or a batch queue's time limit): the best epoch so far is kept
    #: and the card records how many epochs ran. None: run every epoch. A cosine
    #: schedule still anneals over ``epochs``, so a stopped run ends above its floor.
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            # 2.5 epochs was accepted and crashed the loop once the cohort had loaded.
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise OptionError(name, f"must be a whole number, got {value!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise OptionError(name, f"must be at least 1, got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise OptionError("val_fraction", f"must be between 0 and 1, got {self.val_fraction:g}")
        for name in ("learning_rate", "weight_decay", "noise_augment", "blur_augment"):
            if getattr(self, name) < 0:
                raise OptionError(name, f"must not be negative, got {getattr(self, name):g}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise OptionError("max_minutes", f"must be positive, got {self.max_minutes:g}")
        if self.pool is not None and self.pool not in POOLS:
            raise OptionError("pool", f"must be {' or '.join(POOLS)}, not {self.pool!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise OptionError("lr_schedule", f"must be {' or '.join(LR_SCHEDULES)}, not {self.lr_schedule!r}")
        self.device = Device.parse(self.device).value


#: Learning-rate schedules: annealed to 0 over the epochs, or kept.
LR_SCHEDULES = ("cosine", "constant")
#: The predictor's training defaults (the bundled model's: its card records the
#: values used).
PREDICTOR_DEFAULTS = TrainConfig()
#: The noise model's: it needs many small steps; batch 2 at lr 3e-3 localised far
#: better than batch 8 at 1e-3 for the same compute (README, "Noise-model settings").
NOISE_MODEL_DEFAULTS = TrainConfig(epochs=6, batch_size=2, learning_rate=3e-3, lr_schedule="constant")
