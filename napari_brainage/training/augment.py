"""Augmentations of model inputs (batch, 1, X, Y, Z) used while training the predictor.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..synthetic.render import random_contrast


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


# ---- domain randomisation (``TrainConfig.randomise_domain``)
#
# SynthSeg/SynthBA (Billot et al. 2023; Puglisi et al. 2024) train on images
# rendered from anatomy with random contrast and resolution, so the network reads
# shape, not one scanner's intensities. Our model inputs are T1 scans whose
# intensity is, voxel by voxel, a partial-volume mix of CSF, grey and white
# matter; re-mapping the three tissue levels piecewise-linearly is the same mix
# rendered with other tissue intensities (any ordering: T2-, PD-, FLAIR-like),
# which needs no tissue maps and costs milliseconds. Held-out scans are rendered
# the other way, from warped tissue probabilities (``synthetic.render``), so the
# benchmark is not the augmentation scored on itself.

#: Tissue levels of a T1 model input (divided by its mean non-zero voxel): CSF,
#: grey and white matter cores of the ICBM152 template at 2 mm (medians of voxels
#: with probability > 0.9: 0.20, 0.96, 1.30; CSF rounded up for the partial
#: volume of the cores a subject's warp moves).
T1_TISSUE_LEVELS = (0.25, 0.97, 1.30)


def remap_tissue_levels(x: torch.Tensor, levels: tuple[float, float, float]) -> torch.Tensor:
    """``x`` (B, 1, X, Y, Z), T1 model inputs, with CSF, GM and WM rendered at ``levels``.

    Piecewise linear through (0, 0), (T1 CSF, csf), (T1 GM, gm), (T1 WM, wm),
    continued past white matter in proportion; background (0) stays 0. The
    result is renormalised as ``model.card.normalise`` does.
    """
    knots = T1_TISSUE_LEVELS
    csf, gm, wm = levels
    out = torch.where(x < knots[0], x * (csf / knots[0]),
                      torch.where(x < knots[1], csf + (x - knots[0]) * ((gm - csf) / (knots[1] - knots[0])),
                                  torch.where(x < knots[2], gm + (x - knots[1]) * ((wm - gm) / (knots[2] - knots[1])),
                                              x * (wm / knots[2]))))
    return renormalise(torch.where(x > 0, out, torch.zeros_like(out)))


def thick_slices(x: torch.Tensor, axis: int, factor: float) -> torch.Tensor:
    """``x`` (B, 1, X, Y, Z) as if acquired with slices ``factor`` times thicker along
    spatial ``axis`` (0-2): averaged into thick slices (a boxcar slice profile) and
    interpolated back linearly, which is what registration does to a thick-slice scan."""
    if factor <= 1.0:
        return x
    size = list(x.shape[2:])
    size[axis] = max(2, int(round(size[axis] / factor)))
    low = F.adaptive_avg_pool3d(x, size)
    return F.interpolate(low, size=x.shape[2:], mode="trilinear", align_corners=False)


def bias_field(x: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` times exp of a smooth random field (4x4x4 control points, sd ``strength``)."""
    coarse = torch.randn(x.shape[0], 1, 4, 4, 4, generator=generator, device=x.device) * strength
    return x * torch.exp(F.interpolate(coarse, size=x.shape[2:], mode="trilinear", align_corners=True))


def renormalise(x: torch.Tensor) -> torch.Tensor:
    """Each scan of (B, 1, ...) divided by the mean of its non-zero voxels (SFCN), zeros kept."""
    flat = x.flatten(1)
    nonzero = flat != 0
    means = (flat * nonzero).sum(1) / nonzero.sum(1).clamp(min=1)
    means = torch.where(means > 0, means, torch.ones_like(means))
    return x / means.view(-1, *([1] * (x.ndim - 1)))


def randomise_domain(x: torch.Tensor, rng: np.random.Generator, probability: float = 0.5) -> torch.Tensor:
    """Each scan of ``x`` (B, 1, X, Y, Z) re-rendered, with ``probability`` each, with:
    random tissue intensities (uniform in [0.05, 1] for CSF, GM and WM, any order),
    thick slices (1-3 voxels, one random axis: 2-6 mm on the 2 mm grid), a bias
    field (sd 0-0.2), a gamma (0.7-1.4) and Gaussian noise (sd 0-5 % of the mean).
    The left-out half stays as it was, so T1 accuracy is kept."""
    out = []
    for scan in x.split(1):
        inside = scan > 0
        if rng.random() < probability:
            drawn = random_contrast(rng)  # the generator's own draw: one definition of "random"
            scan = remap_tissue_levels(scan, (drawn.csf, drawn.gm, drawn.wm))
        if rng.random() < probability:
            scan = thick_slices(scan, int(rng.integers(3)), float(rng.uniform(1.0, 3.0)))
        if rng.random() < probability:
            seed = int(rng.integers(2**31))
            generator = torch.Generator(device=scan.device).manual_seed(seed)
            scan = bias_field(scan, float(rng.uniform(0.0, 0.2)), generator)
            scan = scan.clamp(min=0) ** float(rng.uniform(0.7, 1.4))
            scan = scan + torch.randn(scan.shape, generator=generator, device=scan.device) * float(rng.uniform(0, 0.05))
        out.append(renormalise(torch.where(inside, scan.clamp(min=0), torch.zeros_like(scan))))
    return torch.cat(out)
