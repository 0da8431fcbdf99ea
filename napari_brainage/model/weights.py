"""Weights on disk: plain ``state_dict`` tensors, loaded with ``torch.load(...,
weights_only=True)`` only after their SHA-256 matches the card, so a model
folder can never run code on load, and a corrupted or tampered file is refused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_path
from .card import ModelCard, ModelError


def sha256(path: Path) -> str:
    """The file's SHA-256, hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
