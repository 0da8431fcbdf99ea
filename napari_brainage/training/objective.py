"""The U-Noise objective (Koker et al. 2021; for regression, Bintsi et al. 2021):
noise of a per-voxel sd set by the mask B is added to the scan, and the loss
asks the frozen predictor's output to stay put while rewarding noise.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..model.card import (
    NoiseSpec,
)


def local_contrast(x: torch.Tensor) -> torch.Tensor:
    """Standard deviation of x over each voxel's 3x3x3 neighbourhood, divided by
    its mean over the non-zero voxels of each scan (so about 1 on average)."""
    mean = F.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)
    square = F.avg_pool3d(x * x, 3, stride=1, padding=1, count_include_pad=False)
    contrast = (square - mean * mean).clamp_min(0).sqrt()
    inside = (x != 0).float()
    scale = (contrast * inside).sum(dim=(1, 2, 3, 4), keepdim=True) / inside.sum(
        dim=(1, 2, 3, 4), keepdim=True).clamp_min(1)
    return contrast / scale.clamp_min(1e-6)


def spend_budget(mask: torch.Tensor, x: torch.Tensor, budget: float) -> torch.Tensor:
    """``mask`` (N, 1, X, Y, Z) rescaled per scan to mean ``budget`` over the brain
    (non-zero voxels of ``x``), capped at 1; unchanged when ``budget`` is 0."""
    if budget <= 0:
        return mask
    scale = budget / brain_mean(mask, x).clamp_min(1e-6)
    return (mask * scale.view(-1, 1, 1, 1, 1)).clamp(max=1.0)


def noisy_input(x: torch.Tensor, mask: torch.Tensor, spec: NoiseSpec, generator=None) -> torch.Tensor:
    """The scan perturbed as the mask B says (``spec.perturbation``).

    "noise": x + eps sd(B), eps ~ N(0, 1) per voxel (U-Noise).
    "intensity": x (1 + s u sd(B)), with one sign s (+-1) and one strength
    u ~ U(0, 1) per scan: a coherent relative change of intensity, brighter or
    darker, over wherever B is high.
    """
    mask = spend_budget(mask, x, spec.budget)
    sd = spec.min_sd + mask * (spec.max_sd - spec.min_sd)
    if spec.relative_to_contrast:
        sd = sd * local_contrast(x)
    if spec.brain_only:
        sd = sd * (x != 0)
    if spec.perturbation == "intensity":
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        u = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
        sign = torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        return x * (1 + sign * u * sd)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + eps * sd


def brain_mean(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over each scan's brain (non-zero voxels of ``x``), per scan."""
    inside = (x != 0).to(values.dtype)
    return (values * inside).sum(dim=(1, 2, 3, 4)) / inside.sum(dim=(1, 2, 3, 4)).clamp_min(1)


def noise_reward(mask: torch.Tensor, x: torch.Tensor, spec: NoiseSpec) -> torch.Tensor:
    """mean(log B) per scan: over the whole input, or over the brain with ``brain_only``."""
    log_mask = torch.log(mask.clamp_min(1e-6))
    return brain_mean(log_mask, x) if spec.brain_only else log_mask.mean(dim=(1, 2, 3, 4))


def clean_target(predictor, x: torch.Tensor, spec: NoiseSpec) -> torch.Tensor:
    """What the noisy scan must reproduce when it is computed from the scan itself:
    the predictor's output, or its last-layer contributions (``spec.target``)."""
    with torch.no_grad():
        return predictor.contributions(x) if spec.target == "contributions" else predictor(x)


def noise_terms(predictor, noise_model, x: torch.Tensor, target: torch.Tensor, spec: NoiseSpec,
                years_per_unit: float, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per scan: (|f(x + noise) - target| in years - lambda * mean(log B), the mask B).

    With ``spec.target == "contributions"`` the error is the sum over the
    predictor's last-layer units of |change of the unit's contribution|, an upper
    bound on the change of the age. The error is converted to years so that
    lambda means "years of error traded per unit of log-noise", independent of
    the cohort's age spread.
    """
    mask = noise_model(x)
    noisy = noisy_input(x, mask, spec, generator)
    if spec.target == "contributions":
        error = (predictor.contributions(noisy) - target).abs().sum(1)
    else:
        error = (predictor(noisy) - target).abs()
    return years_per_unit * error - spec.lam * noise_reward(mask, x, spec), mask


def noise_loss(predictor, noise_model, x: torch.Tensor, target: torch.Tensor, spec: NoiseSpec,
               years_per_unit: float) -> torch.Tensor:
    """The batch's mean of ``noise_terms`` (the training loss)."""
    return noise_terms(predictor, noise_model, x, target, spec, years_per_unit)[0].mean()
