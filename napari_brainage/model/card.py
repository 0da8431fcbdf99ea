"""The model card: what a model folder holds, how its input is made, how its noise
model was trained, and its age standardisation and bias correction.

Torch-free: the CLI and readers of model folders need it without the networks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OptionError
from ..io import atomic_path
from ..uncertainty import Calibration

CARD_FILE = "model_card.json"
PREDICTOR_FILE = "predictor.pt"
NOISE_MODEL_FILE = "noise_model.pt"
CARD_FORMAT = 1


class ModelError(InputError):
    """A model folder is missing, incomplete, corrupt or tampered with."""


@dataclass
class InputSpec:
    """What the networks expect, and how a 2 mm MNI scan is made into it."""

    grid: str = "FSL MNI152 2 mm (91x109x91, LAS, origin (90, -126, -72) mm)"
    resolution_mm: int = 2
    crop_start: tuple[int, int, int] = (5, 7, 0)
    crop_shape: tuple[int, int, int] = (80, 96, 80)
    normalisation: str = "divide by the mean of the non-zero voxels (SFCN); zeros stay zero"


@dataclass
class NoiseSpec:
    """How the noise model's mask B becomes noise: sd = min_sd + B (max_sd - min_sd)."""

    min_sd: float = 0.0
    max_sd: float = 0.3
    #: The reward for noise (U-Noise's lambda). 0.5 with ``brain_only`` is the
    #: bundled model's recipe, the best-localising one measured (docs/benchmarks.md,
    #: "Issue 18, fifth session"); cards written before it default to 0.05.
    lam: float = 0.5
    #: What must not move: "prediction" (the predictor's clean output), "age", or
    #: "contributions" (``SFCNRegressor.contributions``: each last-layer unit's
    #: share of the clean output, summed as absolute changes, so that noise cannot
    #: be offset by other noise through the network's non-linearity).
    target: str = "prediction"
    #: Scale the sd by the scan's local contrast (3x3x3 standard deviation,
    #: mean 1 over the brain): noise in flat white matter then costs nothing,
    #: noise on an edge costs what moving that edge would.
    relative_to_contrast: bool = False
    #: Add noise, and reward it, only inside the brain (non-zero input voxels).
    #: The background is empty in every training scan, so noise there says
    #: nothing about anatomy; maps are shown inside the brain only anyway.
    brain_only: bool = True
    #: A fixed noise budget (0: off): B is rescaled so that its mean over the
    #: brain is ``budget`` before it sets the noise, so the mask chooses only
    #: *where* the noise goes, not how much (issue 18: noise anywhere moves the
    #: age, so a rewarded mask stays near 0 everywhere and its ranking carries
    #: little of the predictor's local sensitivity). Use with ``lam`` 0.
    budget: float = 0.0
    #: How B perturbs the scan: "noise" (U-Noise: voxel-wise Gaussian noise of sd
    #: set by B) or "intensity" (one coherent relative change of intensity per scan,
    #: x (1 + s u sd(B)) with a random sign s and strength u ~ U(0, 1): what
    #: atrophy does to a partial-volumed voxel, darkening, and what zero-mean noise
    #: cannot probe, because a predictor that pools a diffuse signal averages noise
    #: out; docs/benchmarks.md, "Issue 18, seventh session").
    perturbation: str = "noise"

    def __post_init__(self) -> None:
        if not self.max_sd > 0:  # named first: with max 0, every min read as "--min-sd" being wrong
            raise OptionError("max_sd", f"must be positive, got {self.max_sd:g}")
        if not 0 <= self.min_sd < self.max_sd:
            raise OptionError("min_sd", f"must be at least 0 and below max_sd ({self.max_sd:g}), "
                                        f"got {self.min_sd:g}")
        if self.lam < 0:
            raise OptionError("lam", f"must not be negative, got {self.lam:g}")
        if not 0 <= self.budget < 1:
            raise OptionError("budget", f"must be at least 0 (off) and below 1, got {self.budget:g}")
        if self.target not in NOISE_TARGETS:
            raise OptionError("target", f"must be {' or '.join(NOISE_TARGETS)}, not {self.target!r}")
        if self.perturbation not in NOISE_PERTURBATIONS:
            raise OptionError("perturbation", f"must be {' or '.join(NOISE_PERTURBATIONS)}, "
                                              f"not {self.perturbation!r}")


#: The noise settings of cards written before lambda 0.5 and noise only in the
#: brain became the defaults (``ModelCard.from_dict`` reads them for fields a card lacks).
LEGACY_NOISE = {"lam": 0.05, "brain_only": False}

#: Down-sampling between the predictor's blocks: SFCN's max-pooling, or average
#: pooling (``networks.SFCNRegressor``). Here, torch-free, so options are checked
#: before torch is imported.
POOLS = ("max", "avg")

#: What the noisy scan's output must match: the predictor's clean output, the age,
#: or the clean output's last-layer contributions (``NoiseSpec.target``).
NOISE_TARGETS = ("prediction", "age", "contributions")
#: How the noise model's mask perturbs a scan (``NoiseSpec.perturbation``).
NOISE_PERTURBATIONS = ("noise", "intensity")


@dataclass
class ModelCard:
    """Everything needed to use, judge and reproduce a model folder."""

    input: InputSpec = field(default_factory=InputSpec)
    predictor_channels: tuple[int, ...] = (8, 16, 32, 64, 64)
    #: The predictor's down-sampling, "max" (SFCN's; cards written before this field) or "avg".
    predictor_pool: str = "max"
    noise_channels: tuple[int, ...] = (8, 16, 32)
    noise_full_resolution_head: bool = False
    age_mean: float = 62.5
    age_sd: float = 10.0
    #: Age-bias correction fitted on the training cohort: predicted = slope * age + intercept.
    bias_slope: float = 1.0
    bias_intercept: float = 0.0
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    #: The contrasts the predictor reads (``quality.CONTRASTS``); QC refuses the
    #: others. T1 only unless trained with domain randomisation.
    contrasts: tuple[str, ...] = ("T1",)
    #: Held-out subjects' ages and predicted ages, for prediction intervals and gap
    #: centiles (``uncertainty``; ``napari-brainage calibrate``); None: not calibrated.
    calibration: Calibration | None = None
    weights: dict[str, str] = field(default_factory=dict)       #: file -> sha256
    training: dict[str, Any] = field(default_factory=dict)      #: data, seeds, commands, epochs
    metrics: dict[str, Any] = field(default_factory=dict)       #: held-out results
    format: int = CARD_FORMAT

    def to_json(self) -> str:
        """The card as indented JSON (the content of ``model_card.json``)."""
        data = asdict(self)
        if self.calibration is not None:
            data["calibration"] = self.calibration.to_dict()
        return json.dumps(data, indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelCard":
        """A card from its JSON dictionary; :class:`ModelError` for another card format."""
        data = dict(data)
        if data.get("format") != CARD_FORMAT:
            raise ModelError(f"model card format {data.get('format')!r} is not {CARD_FORMAT}")
        if data.get("predictor_pool", "max") not in POOLS:
            raise ModelError(f"model card: predictor_pool {data['predictor_pool']!r} is not one of {', '.join(POOLS)}")
        data["input"] = InputSpec(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in data.get("input", {}).items()})
        # A field a card does not record takes the default of the day it was
        # written, not today's (lambda 0.5 and noise only in the brain became the
        # defaults on 2026-12-01, without a new card format).
        data["noise"] = NoiseSpec(**{**LEGACY_NOISE, **data.get("noise", {})})
        if data.get("calibration") is not None:
            data["calibration"] = Calibration.from_dict(data["calibration"])
        for key in ("predictor_channels", "noise_channels", "contrasts"):
            if key in data:  # cards written before contrasts were recorded read T1 only
                data[key] = tuple(data[key])
        return cls(**data)


def read_card(folder: str | Path) -> ModelCard:
    """The ``model_card.json`` of ``folder``; :class:`ModelError` when missing or unreadable."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        if (Path(folder) / "checkpoints" / "predictor_last.pt").is_file():
            # A predictor's training writes the card last: predictor.pt and its checkpoint
            # without a card are a training stopped (or still running), not a stranger's folder.
            raise ModelError(f"{folder}: no {CARD_FILE}: its predictor's training was interrupted (or is still "
                             f"running); finish it with `napari-brainage train predictor --out {folder} --resume` "
                             "and the options it started with")
        raise ModelError(f"{folder}: no {CARD_FILE}; not a napari-brainage model folder")
    try:
        return ModelCard.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError, InputError) as err:
        raise ModelError(f"{path}: unreadable model card ({err})") from err


def write_card(card: ModelCard, folder: str | Path) -> Path:
    """Write ``card`` as ``folder/model_card.json``, atomically; returns the path."""
    path = Path(folder) / CARD_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(card.to_json() + "\n")
    return path


def sha256(path: Path) -> str:
    """The file's SHA-256, hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_weights(folder: str | Path, filename: str, card: ModelCard) -> Path:
    """The path of the weight file ``filename`` in ``folder`` once its SHA-256 matches
    ``card``'s; ``ModelError`` when the card lists none, the file is missing or it does
    not match. Torch-free: loading (``weights.load_weights``) and the CLI's check
    before any output (``cli._common.check_weights``) share it."""
    path = Path(folder) / filename
    expected = card.weights.get(filename)
    if expected is None:
        raise ModelError(f"{folder}: the model card lists no checksum for {filename}")
    if not path.is_file():
        raise ModelError(f"{path}: weight file missing")
    actual = sha256(path)
    if actual != expected:
        raise ModelError(
            f"{path}: checksum mismatch (sha256 {actual[:12]}..., card says {expected[:12]}...); "
            "the file is corrupt or was modified: refusing to load it"
        )
    return path


def normalise(scans: np.ndarray) -> np.ndarray:
    """Divide each scan by the mean of its non-zero voxels (SFCN's normalisation)."""
    scans = np.asarray(scans, dtype=np.float32)
    flat = scans.reshape(scans.shape[0], -1) if scans.ndim == 4 else scans.reshape(1, -1)
    nonzero = flat != 0
    means = (flat * nonzero).sum(axis=1) / np.maximum(nonzero.sum(axis=1), 1)
    means = np.where(means > 0, means, 1.0)
    shape = (-1,) + (1,) * (scans.ndim - 1) if scans.ndim == 4 else ()
    return (scans / (means.reshape(shape) if shape else means[0])).astype(np.float32)
