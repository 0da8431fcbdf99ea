"""A loaded model folder (``BrainAgeModel``), the bundled one, and the device it runs on.
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from pathlib import Path

import torch

from .card import NOISE_MODEL_FILE, PREDICTOR_FILE, ModelCard, ModelError, read_card
from .networks import NoiseUNet, SFCNRegressor
from .weights import load_weights


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
        predictor = load_weights(SFCNRegressor.for_card(card), folder, PREDICTOR_FILE, card)
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
    return Path(__file__).resolve().parents[1] / "bundled_model"  # napari_brainage/bundled_model


def pick_device(requested: str = "auto") -> torch.device:
    """"auto": CUDA when present, else CPU; "cpu"/"cuda"/"gpu"/"cuda:N" as asked (checked)."""
    requested = requested.strip().lower()
    if requested in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested in ("gpu", "cuda") or re.fullmatch(r"cuda:\d+", requested):
        if not torch.cuda.is_available():
            raise ModelError("a GPU was requested but torch sees no CUDA device")
        if ":" in requested and int(requested.split(":")[1]) >= torch.cuda.device_count():
            raise ModelError(f"{requested} was requested but torch sees {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda" if requested == "gpu" else requested)
    if requested == "cpu":
        return torch.device("cpu")
    raise ModelError(f"unknown device {requested!r}; use auto, cpu or gpu")
