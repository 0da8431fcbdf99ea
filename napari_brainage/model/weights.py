"""Weights on disk: plain ``state_dict`` tensors, loaded with ``torch.load(...,
weights_only=True)`` only after their SHA-256 matches the card, so a model
folder can never run code on load, and a corrupted or tampered file is refused.
(The checksum itself: ``card.verified_weights``, torch-free.)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..io import atomic_path
from .card import ModelCard, ModelError, sha256, verified_weights


def save_weights(module: nn.Module, folder: str | Path, filename: str, card: ModelCard) -> str:
    """Write a state_dict atomically and record its sha256 in ``card``."""
    path = Path(folder) / filename
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, tmp)
    card.weights[filename] = sha256(path)
    return card.weights[filename]


def load_weights(module: nn.Module, folder: str | Path, filename: str, card: ModelCard) -> nn.Module:
    """Verify ``filename``'s checksum against the card, then load it (tensors only)."""
    path = verified_weights(folder, filename, card)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as err:  # a checksum-valid but incompatible file
        raise ModelError(f"{path}: not loadable into {type(module).__name__} ({err})") from err
    return module.eval()
