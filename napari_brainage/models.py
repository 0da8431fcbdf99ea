"""Networks, the model card, and safe, checksummed loading of a model folder.

A *model folder* holds ``model_card.json`` plus the weight files it names:

* ``predictor.pt``: an SFCN-style 3D CNN regressing age (Peng et al. 2021:
  blocks of 3x3x3 conv -> batch norm -> max-pool(2) -> ReLU, then a 1x1x1
  conv, global average pooling, dropout and a linear age head). We regress age
  directly with an L1 loss instead of SFCN's 40-bin soft labels: simpler, and
  as accurate on cohorts this size.
* ``noise_model.pt``: a small 3D U-Net giving, per voxel, a noise level B in
  (0, 1) (U-Noise, Koker et al. 2021; for regression, Bintsi et al. 2021).
  Its U-Net works at half resolution: 8x fewer voxels to convolve. An
  optional full-resolution head (a light 3x3x3 convolution over the upsampled
  features and the scan itself) can sharpen the mask back to 2 mm; in our
  runs it trained 2x slower and localised no better, so it is off by default.

Weights are plain ``state_dict`` tensors, loaded with ``torch.load(...,
weights_only=True)`` only after their SHA-256 matches the card: a model folder
can never run code on load, and a corrupted or tampered file is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import InputError, OptionError
from .io import atomic_path

CARD_FILE = "model_card.json"
PREDICTOR_FILE = "predictor.pt"
NOISE_MODEL_FILE = "noise_model.pt"
CARD_FORMAT = 1


class ModelError(InputError):
    """A model folder is missing, incomplete, corrupt or tampered with."""


# ------------------------------------------------------------------ networks
class SFCNRegressor(nn.Module):
    """Simple Fully Convolutional Network (Peng et al. 2021), regression head."""

    def __init__(self, channels: tuple[int, ...] = (8, 16, 32, 64, 64), dropout: float = 0.3):
        super().__init__()
        blocks, previous = [], 1
        for width in channels:
            blocks += [nn.Conv3d(previous, width, 3, padding=1, bias=False), nn.BatchNorm3d(width),
                       nn.MaxPool3d(2), nn.ReLU(inplace=True)]
            previous = width
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Conv3d(previous, previous, 1, bias=False), nn.BatchNorm3d(previous), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(previous, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) normalised scans -> (B,) standardised age."""
        x = self.classifier(self.features(x))
        x = F.adaptive_avg_pool3d(x, 1).flatten(1)
        return self.head(self.dropout(x)).squeeze(1)


def _double_conv(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(a, b, 3, padding=1, bias=False), nn.InstanceNorm3d(b, affine=True), nn.LeakyReLU(0.1, True),
        nn.Conv3d(b, b, 3, padding=1, bias=False), nn.InstanceNorm3d(b, affine=True), nn.LeakyReLU(0.1, True),
    )


class NoiseUNet(nn.Module):
    """3D U-Net returning a noise mask B in (0, 1), computed at half resolution
    and optionally refined at full resolution."""

    def __init__(self, channels: tuple[int, ...] = (8, 16, 32), full_resolution_head: bool = False):
        super().__init__()
        self.down = nn.ModuleList()
        previous = 1
        for width in channels:
            self.down.append(_double_conv(previous, width))
            previous = width
        self.up = nn.ModuleList()
        for width in reversed(channels[:-1]):
            self.up.append(_double_conv(previous + width, width))
            previous = width
        self.out = nn.Conv3d(previous, 1, 1)
        self.head = None
        if full_resolution_head:
            self.head = nn.Sequential(
                nn.Conv3d(previous + 1, 4, 3, padding=1, bias=False), nn.InstanceNorm3d(4, affine=True),
                nn.LeakyReLU(0.1, True), nn.Conv3d(4, 1, 1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) -> (B, 1, X, Y, Z) mask in (0, 1)."""
        full_size = x.shape[2:]
        h = F.avg_pool3d(x, 2)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                h = F.max_pool3d(h, 2)
            h = block(h)
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[2:], mode="trilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        logits = F.interpolate(self.out(h), size=full_size, mode="trilinear", align_corners=False)
        if self.head is not None:
            # A correction on top of the coarse logits: training starts from the half-resolution mask.
            features = F.interpolate(h, size=full_size, mode="trilinear", align_corners=False)
            logits = logits + self.head(torch.cat([features, x], dim=1))
        return torch.sigmoid(logits)


# ------------------------------------------------------------------ the card
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
    lam: float = 0.05
    target: str = "prediction"   #: "prediction" (the predictor's clean output) or "age"
    #: Scale the sd by the scan's local contrast (3x3x3 standard deviation,
    #: mean 1 over the brain): noise in flat white matter then costs nothing,
    #: noise on an edge costs what moving that edge would.
    relative_to_contrast: bool = False
    #: Add noise, and reward it, only inside the brain (non-zero input voxels).
    #: The background is empty in every training scan, so noise there says
    #: nothing about anatomy; maps are shown inside the brain only anyway.
    brain_only: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.min_sd < self.max_sd:
            raise OptionError("min_sd", f"must be at least 0 and below max_sd ({self.max_sd:g}), "
                                        f"got {self.min_sd:g}")
        if self.lam < 0:
            raise OptionError("lam", f"must not be negative, got {self.lam:g}")
        if self.target not in NOISE_TARGETS:
            raise OptionError("target", f"must be {' or '.join(NOISE_TARGETS)}, not {self.target!r}")


#: What the noisy prediction must match: the predictor's clean output, or the age.
NOISE_TARGETS = ("prediction", "age")


@dataclass
class ModelCard:
    """Everything needed to use, judge and reproduce a model folder."""

    input: InputSpec = field(default_factory=InputSpec)
    predictor_channels: tuple[int, ...] = (8, 16, 32, 64, 64)
    noise_channels: tuple[int, ...] = (8, 16, 32)
    noise_full_resolution_head: bool = False
    age_mean: float = 62.5
    age_sd: float = 10.0
    #: Age-bias correction fitted on the training cohort: predicted = slope * age + intercept.
    bias_slope: float = 1.0
    bias_intercept: float = 0.0
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    weights: dict[str, str] = field(default_factory=dict)       #: file -> sha256
    training: dict[str, Any] = field(default_factory=dict)      #: data, seeds, commands, epochs
    metrics: dict[str, Any] = field(default_factory=dict)       #: held-out results
    format: int = CARD_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelCard":
        data = dict(data)
        if data.get("format") != CARD_FORMAT:
            raise ModelError(f"model card format {data.get('format')!r} is not {CARD_FORMAT}")
        data["input"] = InputSpec(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in data.get("input", {}).items()})
        data["noise"] = NoiseSpec(**data.get("noise", {}))
        for key in ("predictor_channels", "noise_channels"):
            data[key] = tuple(data[key])
        return cls(**data)


def sha256(path: Path) -> str:
    """The file's SHA-256, hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(folder: str | Path) -> ModelCard:
    """The ``model_card.json`` of ``folder``; :class:`ModelError` when missing or unreadable."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise ModelError(f"{folder}: no {CARD_FILE}; not a napari-brainage model folder")
    try:
        return ModelCard.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as err:
        raise ModelError(f"{path}: unreadable model card ({err})") from err


def write_card(card: ModelCard, folder: str | Path) -> Path:
    """Write ``card`` as ``folder/model_card.json``, atomically; returns the path."""
    path = Path(folder) / CARD_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(card.to_json() + "\n")
    return path


def save_weights(module: nn.Module, folder: str | Path, filename: str, card: ModelCard) -> str:
    """Write a state_dict atomically and record its sha256 in ``card``."""
    path = Path(folder) / filename
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, tmp)
    card.weights[filename] = sha256(path)
    return card.weights[filename]


def load_weights(module: nn.Module, folder: str | Path, filename: str, card: ModelCard) -> nn.Module:
    """Verify ``filename``'s checksum against the card, then load it (tensors only)."""
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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as err:  # a checksum-valid but incompatible file
        raise ModelError(f"{path}: not loadable into {type(module).__name__} ({err})") from err
    return module.eval()


# ------------------------------------------------------------------ the bundle
@dataclass
class BrainAgeModel:
    """A loaded model folder: predictor, optional noise model and card."""

    card: ModelCard
    predictor: SFCNRegressor
    noise_model: NoiseUNet | None
    folder: Path

    @classmethod
    def load(cls, folder: str | Path, *, need_noise_model: bool = False) -> "BrainAgeModel":
        """The networks of the model folder ``folder``, on the CPU, frozen.

        Each weight file's sha256 is checked against the card before
        ``torch.load(..., weights_only=True)`` reads it.

        Raises
        ------
        ModelError
            when the folder, its card or a weight file is missing, unreadable or
            does not match its checksum, or (``need_noise_model``) has no noise model.
        """
        folder = Path(folder)
        card = read_card(folder)
        predictor = load_weights(SFCNRegressor(card.predictor_channels), folder, PREDICTOR_FILE, card)
        noise_model = None
        if NOISE_MODEL_FILE in card.weights:
            network = NoiseUNet(card.noise_channels, card.noise_full_resolution_head)
            noise_model = load_weights(network, folder, NOISE_MODEL_FILE, card)
        elif need_noise_model:
            raise ModelError(f"{folder}: no noise model; train one with `napari-brainage train noise-model`")
        for module in (predictor, noise_model):
            if module is not None:
                module.requires_grad_(False)
        return cls(card=card, predictor=predictor, noise_model=noise_model, folder=folder)

    def to(self, device: torch.device) -> "BrainAgeModel":
        """Both networks moved to ``device``; returns ``self``."""
        self.predictor.to(device)
        if self.noise_model is not None:
            self.noise_model.to(device)
        return self


def bundled_model_dir() -> Path:
    """The model folder shipped with the package."""
    return Path(__file__).resolve().parent / "bundled_model"


def pick_device(requested: str = "auto") -> torch.device:
    """"auto": CUDA when present, else CPU; "cpu"/"cuda"/"gpu" as asked (checked)."""
    requested = requested.lower()
    if requested in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ModelError("a GPU was requested but torch sees no CUDA device")
        return torch.device("cuda")
    if requested == "cpu":
        return torch.device("cpu")
    raise ModelError(f"unknown device {requested!r}; use auto, cpu or gpu")


#: The left-right axis of the networks' input (batch, channel, X, Y, Z): X on the LAS MNI grid.
LEFT_RIGHT = 2


def mirror(x: torch.Tensor) -> torch.Tensor:
    """Network input (or output) flipped left-right: the flip the predictor is trained with."""
    return torch.flip(x, dims=[LEFT_RIGHT])


def normalise(scans: np.ndarray) -> np.ndarray:
    """Divide each scan by the mean of its non-zero voxels (SFCN's normalisation)."""
    scans = np.asarray(scans, dtype=np.float32)
    flat = scans.reshape(scans.shape[0], -1) if scans.ndim == 4 else scans.reshape(1, -1)
    nonzero = flat != 0
    means = (flat * nonzero).sum(axis=1) / np.maximum(nonzero.sum(axis=1), 1)
    means = np.where(means > 0, means, 1.0)
    shape = (-1,) + (1,) * (scans.ndim - 1) if scans.ndim == 4 else ()
    return (scans / (means.reshape(shape) if shape else means[0])).astype(np.float32)
