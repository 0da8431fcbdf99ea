"""Augmentations of model inputs (batch, 1, X, Y, Z) used while training the predictor.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


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
