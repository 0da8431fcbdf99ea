"""Rendering a synthetic subject in other contrasts and at other resolutions.

Real scans come T2-weighted, PD-weighted or FLAIR, and with slices 1-6 mm
thick. Like SynthSeg and SynthBA (Billot et al. 2023, Med Image Anal 86:102789;
Puglisi et al. 2024, arXiv:2406.00365), a subject is rendered from its anatomy:
the template's tissue probabilities (grey matter, white matter, CSF), aged as
its T1 is and mixed voxel by voxel with one intensity per tissue (partial
volume), then warped exactly as the T1 (``AgeingModel.synthesize(contrast=...)``;
trilinear resampling is linear, so mixing before the warp is mixing after it)
and given the same bias field, gamma, gain and Rician noise as the T1 scans. The ageing and the
ground truth do not change with the rendering.

Named contrasts give each tissue the intensity ordering of its sequence at
1.5-3 T (relative to the brightest tissue; e.g. Wansapura et al. 1999, J Magn
Reson Imaging 9:531 for relaxation times): T1 WM > GM > CSF; T2 CSF > GM > WM;
PD CSF >= GM > WM with little contrast; FLAIR GM > WM > CSF (fluid nulled).
``random_contrast`` draws each tissue's intensity uniformly, any ordering.

Thick slices (``thick_slices``) average the 1 mm rendering into slabs along one
axis (a boxcar slice profile) and store them as such: a file with, e.g.,
1 x 1 x 5 mm voxels, which ``preprocess.prepare`` must register and resample,
as it does a clinical scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Contrast:
    """One intensity per tissue, relative to the brightest (0-1)."""

    name: str
    csf: float
    gm: float
    wm: float

    def __post_init__(self):
        levels = (self.csf, self.gm, self.wm)
        if not all(0 <= v <= 1 for v in levels) or max(levels) <= 0:
            raise InputError(f"contrast {self.name!r}: tissue intensities must lie in 0-1, got {levels}")


#: The named contrasts (see the module docstring).
CONTRASTS = {
    "t1": Contrast("t1", csf=0.25, gm=0.70, wm=1.00),
    "t2": Contrast("t2", csf=1.00, gm=0.55, wm=0.40),
    "pd": Contrast("pd", csf=0.95, gm=0.85, wm=0.70),
    "flair": Contrast("flair", csf=0.10, gm=0.85, wm=0.60),
}


def random_contrast(rng: np.random.Generator) -> Contrast:
    """Each tissue's intensity uniform in [0.05, 1], any ordering (domain randomisation)."""
    csf, gm, wm = (float(v) for v in rng.uniform(0.05, 1.0, 3))
    return Contrast("random", csf=csf, gm=gm, wm=wm)


def contrast_named(name: str) -> Contrast:
    """A named contrast; ``InputError`` naming the choices for any other name."""
    try:
        return CONTRASTS[name]
    except KeyError:
        raise InputError(f"unknown contrast {name!r}; choose from {', '.join(CONTRASTS)} or random") from None


def render(tissues: np.ndarray, contrast: Contrast, scale: float) -> np.ndarray:
    """Partial-volume image of ``tissues`` (3, X, Y, Z: GM, WM, CSF fractions, 0-1):
    sum of fraction x the tissue's intensity x ``scale`` (float32)."""
    gm, wm, csf = tissues
    return (scale * (contrast.gm * gm + contrast.wm * wm + contrast.csf * csf)).astype(np.float32)


def thick_slices(data: np.ndarray, affine: np.ndarray, axis: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """``data`` averaged into slabs of ``factor`` voxels along ``axis`` (a boxcar slice
    profile), with the affine of the thick voxels (their centres at the slabs' centres).

    Returns (data of shape ceil(n / factor) along ``axis``, affine). A last,
    partial slab averages the voxels it has.
    """
    if factor < 1 or axis not in (0, 1, 2):
        raise InputError(f"thick slices need factor >= 1 and axis 0-2, got {factor} and {axis}")
    if factor == 1:
        return data, affine
    n = data.shape[axis]
    starts = np.arange(0, n, factor)
    sums = np.add.reduceat(data.astype(np.float64), starts, axis=axis)
    counts = np.minimum(starts + factor, n) - starts
    shape = [1, 1, 1]
    shape[axis] = len(starts)
    slabs = (sums / counts.reshape(shape)).astype(np.float32)
    # Slab k spans voxels k*f .. k*f + f - 1: its centre is voxel k*f + (f - 1) / 2.
    scale = np.eye(4)
    scale[axis, axis] = factor
    scale[axis, 3] = (factor - 1) / 2.0
    return slabs, affine @ scale
