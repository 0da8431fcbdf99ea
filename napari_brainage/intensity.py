"""A scan's stored intensities into the form the model was trained on.

The predictor was trained on T1 scans whose background is exactly 0 and whose
tissue is positive; its input is divided by the mean of the non-zero voxels
(SFCN's normalisation, ``models.normalise``), so any global *scale* of the
intensities (uint16 0-4095, a float scan, ``scl_slope``) cancels out. A global
*offset* does not: a z-scored scan, an ``scl_inter`` or a constant added to
every voxel moves the background away from 0 and would change the age. So
before anything else:

1. non-finite voxels are counted; around the head (a NaN background, as some
   pipelines write outside the brain) they are background; inside it they are
   damage, filled from the nearest finite voxels with a QC warning when few, a
   QC failure when more than 1 % of the head;
2. the background level is found and moved back to 0: the most common value
   when it fills a sizeable, dark part of the image (a constant background:
   skull-stripped, z-scored or ``scl_inter``-shifted scans), else, when there
   are negative values, the 0.5th percentile (a noisy background);
3. what the model cannot read is refused in words: a label image (few distinct
   integer values) or a signed image around a zero background (a statistical
   map, or a scan z-scored inside a brain mask, whose offset cannot be told
   apart from anatomy); faint values of both signs around a zero background,
   a spline's ringing, are set to 0.

Returns the cleaned voxels and what was found (:class:`IntensityCheck`), for
``preprocess.prepare`` to turn into the quality report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .quality import MAX_LABEL_VALUES

#: A most-common value filling at least this share of the image is its background.
CONSTANT_BACKGROUND_SHARE = 0.05
#: Non-finite voxels inside the head above this share of it: too much is missing
#: (QC fails); fewer are filled, with a warning. 20 scattered NaN voxels leave the
#: age as it was; a NaN block of 4 % of a brain moved it 4 y (docs/benchmarks.md).
MAX_DAMAGED_SHARE = 0.01
#: Closing iterations that make the head one region across NaN gaps (slices, blocks).
HEAD_CLOSING = 1
#: Fewest finite sampled voxels to find the background level from.
MIN_FINITE_SAMPLE = 100
#: Negative voxels (after the background is moved to 0) above this share of the
#: non-zero voxels make the image a signed map, not anatomy, when they are strong...
MAX_NEGATIVE_SHARE = 0.05
#: ... and their 99th percentile is deeper than this share of the brightest tissue
#: (99th percentile of |value|): statistical maps and z-scored brains about 1; a
#: cubic spline's ringing around a skull-stripped brain about 0.03 (its first
#: undershoot is 10 % of the edge's intensity).
MIN_SIGNED_DEPTH = 0.25
#: Values under this share of the brightest tissue (99th percentile of |value|)
#: are faint: a spline's ringing when the image has weak negatives, set to 0
#: (see ``_remove_ringing``).
FAINT_SHARE = 0.02
#: Share of non-zero voxels equal to their neighbour above which whole-number
#: data are a label map (label maps: over 0.8; scans, even uint8 ones: under 0.3).
FLAT_LABEL_SHARE = 0.6
#: Every n-th voxel along each axis is enough to find levels and count values.
_SAMPLE_STEP = 2


@dataclass
class IntensityCheck:
    """What ``standardise`` made of the stored intensities, and what it found."""

    data: np.ndarray                     #: float32, finite, background 0, non-negative
    background: float = 0.0              #: the stored value taken as background (subtracted)
    nonfinite: int = 0                   #: NaN or infinite voxels found
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def standardise(stored: np.ndarray) -> IntensityCheck:
    """``stored`` voxels (any dtype, shape (X, Y, Z)) cleaned as the module says.

    The returned data are float32, finite and >= 0, with the background at 0;
    when ``failures`` is not empty, the data are not fit for the model.
    """
    data, rescaled = _in_float32_range(stored)  # a copy: the caller's scan is left as it is
    check = IntensityCheck(data=data)
    if rescaled:
        check.notes.append(rescaled)
    finite = np.isfinite(data)
    check.nonfinite = int(data.size - np.count_nonzero(finite))
    sample = data[::_SAMPLE_STEP, ::_SAMPLE_STEP, ::_SAMPLE_STEP]
    sample = sample[np.isfinite(sample)].ravel()
    if sample.size < MIN_FINITE_SAMPLE:  # NaN in every sampled voxel (every second slice NaN), or nearly all
        sample = data[finite][::_SAMPLE_STEP**3]
    if sample.size < MIN_FINITE_SAMPLE:
        check.failures.append(f"not an image to read: {check.nonfinite} of its {data.size} voxels are NaN or "
                              "infinite")
        return check
    values, counts = np.unique(sample, return_counts=True)
    check.background = _background(sample, values, counts)
    if check.nonfinite:
        _fill_nonfinite(check, finite, sample)
        if check.failures:
            return check
    if _looks_like_labels(data, values, check.background):
        check.failures.append(f"not an anatomical image: it holds only {len(values)} distinct whole-number values "
                              "in flat patches, like a label or segmentation image")
        return check
    if check.background != 0:
        check.notes.append(f"background at {check.background:.4g}, not 0 (offset intensities, e.g. z-scored or "
                           "scl_inter): moved to 0")
    data -= np.float32(check.background)
    data[~np.isfinite(data)] = 0.0  # a NaN background
    tissue = data[data != 0]
    brightest = float(np.percentile(np.abs(tissue), 99)) if tissue.size else 0.0
    depths = -tissue[tissue < 0]
    negative = depths.size / tissue.size if tissue.size else 0.0
    # A signed map's negative values are as strong as its positive ones; a spline's
    # ringing dips at most about 10 % of the brain's edge below zero.
    strong = depths.size > 0 and float(np.percentile(depths, 99)) > MIN_SIGNED_DEPTH * brightest
    if negative > MAX_NEGATIVE_SHARE and strong:
        check.failures.append(f"not an anatomical image: {100 * negative:.0f} % of its non-zero voxels are negative "
                              "around a zero background (a statistical map, or a scan z-scored inside a brain "
                              "mask?); give the scan with its original, non-negative intensities")
    elif depths.size:
        _remove_ringing(check, FAINT_SHARE * brightest)
    np.maximum(data, 0, out=data)
    return check


def _remove_ringing(check: IntensityCheck, faint: float) -> None:
    """Faint values of both signs around a zero background are a spline's ringing:
    a skull-stripped scan resampled with a cubic B-spline (FSL ``-interp spline``,
    ANTs ``BSpline``) leaves +-1e-6 to +-2 % values over the whole empty background.
    They are set to 0, or the model's normalisation (the mean of the non-zero
    voxels) would count them as brain, and they once failed such scans as signed
    maps (35 % of the non-zero voxels negative). Stronger undershoots next to the
    brain are clipped to 0 with every other negative value."""
    data = check.data
    ringing = (data != 0) & (np.abs(data) < faint)
    if not ringing.any():
        return
    data[ringing] = 0.0
    check.notes.append(f"{np.count_nonzero(ringing)} faint values around the zero background (under "
                       f"{100 * FAINT_SHARE:.0f} % of the brightest tissue, of both signs: interpolation ringing or "
                       "rounding) set to 0")


def _fill_nonfinite(check: IntensityCheck, finite: np.ndarray, sample: np.ndarray) -> None:
    """Non-finite voxels around the head are background (some pipelines write NaN
    outside the brain); inside it they are damage: filled from the nearest finite
    voxel with a warning when few, a failure when more than ``MAX_DAMAGED_SHARE``
    of the head. A share of the whole image decided it before, and a 21-voxel NaN
    cube in the brain (just over 1 % of a 2 mm image) was taken as background:
    QC "pass", 13.7 y older (a new user's API test)."""
    data = check.data
    level = float(np.percentile(sample, 90))
    tissue = finite & (data > check.background + 0.1 * (level - check.background))
    # The head: its tissue, with gaps of a few voxels (NaN slices, a NaN block) closed and holes
    # filled. A NaN slab of 3 or more slices across the whole image stays outside it (background):
    # a wider closing, or "tissue on both sides along an axis", also took a NaN background's
    # sulci and fissures for damage and refused such files (docs/benchmarks.md).
    head = ndimage.binary_fill_holes(ndimage.binary_closing(tissue, iterations=HEAD_CLOSING))
    damage = ~finite & head
    damaged = int(np.count_nonzero(damage))
    if check.nonfinite > damaged:
        check.notes.append(f"{check.nonfinite - damaged} NaN or infinite voxels around the head taken as background")
    if not damaged:
        return  # left non-finite: set to 0 once the background is subtracted
    share = damaged / max(int(np.count_nonzero(head)), 1)
    if share > MAX_DAMAGED_SHARE:
        check.failures.append(f"{damaged} voxels inside the head are NaN or infinite ({100 * share:.1f} % of it): "
                              "too much of the scan is missing to read")
        return
    # Damaged voxels take the value of the nearest finite voxel (a block of them
    # too: the mean of 3x3x3 neighbours left a block's inside empty, read as
    # background, and a 10-voxel cube of NaN moved the age by 8 y).
    _, nearest = ndimage.distance_transform_edt(~finite, return_indices=True)
    data[damage] = data[tuple(index[damage] for index in nearest)]
    check.warnings.append(f"{damaged} voxels inside the head were NaN or infinite ({100 * share:.2f} % of it); "
                          "filled in from the nearest finite voxels")


#: Stored intensities whose largest magnitude lies outside this range are rescaled
#: (in double precision) before the float32 copy: beyond about 3e38 float32
#: overflows to infinity, below about 1e-38 it loses its precision; the model's
#: normalisation divides by the mean anyway.
_SAFE_MAGNITUDE = (1e-6, 1e6)


def _in_float32_range(stored: np.ndarray) -> tuple[np.ndarray, str]:
    """A float32 copy of ``stored``, rescaled when its magnitudes would not survive
    float32 (and a note saying so, else "")."""
    values = np.asarray(stored)
    finite = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values
    largest = float(np.abs(finite.astype(np.float64)).max()) if finite.size else 0.0
    if largest == 0.0 or _SAFE_MAGNITUDE[0] <= largest <= _SAFE_MAGNITUDE[1]:
        return np.array(values, dtype=np.float32), ""
    # float32 scans too: QC's squares of 1e18 overflow, and of 1e-18 vanish.
    scale = 1000.0 / largest
    return ((values.astype(np.float64) * scale).astype(np.float32),
            f"intensities up to {largest:.3g} rescaled by {scale:.3g} (float32 could not hold them as they were)")


def _looks_like_labels(data: np.ndarray, values: np.ndarray, background: float) -> bool:
    """Whole numbers, few of them, in flat patches: most voxels off the background
    equal their neighbour (a label map's regions), which a scan's noise never allows."""
    if len(values) > MAX_LABEL_VALUES or not np.all(values == np.round(values)):
        return False
    a, b = data[1:], data[:-1]
    # Finite pairs only: an Inf background equals its neighbours (inf == inf), and a scan
    # with an Inf background was refused as a label image (a new user's test).
    tissue = ((a != background) | (b != background)) & np.isfinite(a) & np.isfinite(b)
    return bool(tissue.any() and (a[tissue] == b[tissue]).mean() > FLAT_LABEL_SHARE)


def _background(sample: np.ndarray, values: np.ndarray, counts: np.ndarray) -> float:
    """The stored value of 'no signal' (see the module docstring)."""
    top = int(np.argmax(counts))
    if counts[top] >= CONSTANT_BACKGROUND_SHARE * sample.size:
        if values[top] <= np.percentile(sample, 10):
            return float(values[top])  # at the dark end: the background, wherever it was stored
        if values[top] == 0:
            return 0.0  # a zero background with values on both sides: a signed map (refused)
    if sample.min() < 0:
        return float(np.percentile(sample, 0.5))
    return 0.0
