"""Thresholding an importance map: the top k% of voxels, or voxels above a value.

One definition of "top k %" for the whole product (the Threshold widget, map
comparison, benchmarks): the k % highest voxels among those :func:`counted_voxels`
names, ties at the cut kept (every voxel >= the cut value). Counting *how much*
of a region lies in the top k % (the Regions ranking) uses
:func:`top_percent_weights` instead, which counts exactly k %: on a map that is 0
over most of the brain, keeping ties would put every voxel in the top.

The threshold widget updates while a slider is dragged, so an update must cost
a single pass over the voxels. ``Thresholder`` sorts the map's in-brain values
once (a few hundred ms on a 1 mm map); after that a top-k% threshold is an
index into the sorted values (no ``np.percentile`` per update) and the mask is
one comparison written into a reused buffer.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def counted_voxels(values: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
    """The voxels a "top k %" counts (boolean, the map's shape): the template's
    brain for a map on the 1 or 2 mm MNI grid (a population map), otherwise the
    map's non-zero voxels (a subject's map is 0 outside its scan's brain)."""
    values = np.asarray(values)
    if affine is not None:
        from .space.template import load_template, mni_grid

        for resolution in (2, 1):
            shape, grid_affine = mni_grid(resolution)
            if values.shape == shape and np.allclose(affine, grid_affine, atol=1e-4):
                return load_template(resolution).brain.copy()
    return values > 0


def top_percent_mask(values: np.ndarray, within: np.ndarray, percent: float) -> np.ndarray:
    """The top ``percent`` % of ``values`` among the voxels ``within`` (ties at the cut
    kept), as a new boolean array; see the module's definition."""
    thresholder = Thresholder(values, within=within)
    return thresholder.mask(thresholder.value_for_top_percent(percent)).copy()


def top_percent_weights(values: np.ndarray, percent: float) -> np.ndarray:
    """Per value (any shape, flattened): 1 in the top ``percent`` %, 0 below, and for
    values tied at the cut the share of the top that is left, so the weights sum
    to exactly ``percent`` % of the values (float64, ``values.ravel()``'s order)."""
    values = np.asarray(values).ravel()
    keep = max(1, int(round(values.size * percent / 100.0)))
    cut = np.partition(values, values.size - keep)[values.size - keep]
    above = values > cut
    tied = values == cut
    weights = above.astype(np.float64)
    weights[tied] = (keep - above.sum()) / tied.sum()
    return weights


class Thresholder:
    """Masks of one map at any threshold, fast enough to follow a slider.

    Percentages count only voxels inside ``within`` (default: voxels > 0, i.e.
    the brain: maps are 0 outside the scan), so "top 5 %" means 5 % of the
    brain, whatever the field of view.
    """

    def __init__(self, values: np.ndarray, within: np.ndarray | None = None):
        values = np.asarray(values)
        if values.ndim != 3:
            raise InputError(f"a 3D map is needed, got {values.ndim}D")
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        inside = self.values > 0 if within is None else np.asarray(within, dtype=bool)
        self._sorted = np.sort(self.values[inside])
        if self._sorted.size == 0:
            raise InputError("the map has no voxels inside the brain (all values are 0)")
        # Voxels > 0 are inside by construction; an explicit mask must be applied.
        self._inside = None if within is None else inside
        self._buffer = np.zeros(self.values.shape, dtype=bool)

    @property
    def voxels(self) -> int:
        """Number of voxels that percentages count."""
        return int(self._sorted.size)

    @property
    def value_range(self) -> tuple[float, float]:
        """Lowest and highest value among the counted voxels."""
        return float(self._sorted[0]), float(self._sorted[-1])

    def value_for_top_percent(self, percent: float) -> float:
        """The lowest value kept when keeping the top ``percent`` % of voxels."""
        if not 0 < percent <= 100:
            raise InputError(f"percent must be in (0, 100], got {percent:g}")
        keep = max(1, int(round(self._sorted.size * percent / 100.0)))
        return float(self._sorted[self._sorted.size - keep])

    def percent_above(self, value: float) -> float:
        """Share (%) of the counted voxels at or above ``value``."""
        below = np.searchsorted(self._sorted, value, side="left")
        return 100.0 * (self._sorted.size - below) / self._sorted.size

    def mask(self, value: float, out: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of voxels >= ``value`` (written into ``out`` when given).

        Without ``out`` the same internal buffer is reused by every call: copy it
        to keep a mask.
        """
        out = self._buffer if out is None else out
        if self._inside is None:
            value = max(value, np.finfo(np.float32).tiny)  # never select the 0 background
        np.greater_equal(self.values, value, out=out)
        if self._inside is not None:
            out &= self._inside
        return out

    def top_percent(self, percent: float, out: np.ndarray | None = None) -> np.ndarray:
        """Mask of the top ``percent`` % of the counted voxels (see ``mask`` for ``out``)."""
        return self.mask(self.value_for_top_percent(percent), out=out)


#: A map's default display: its top this many per cent of in-brain voxels in the
#: brightest colour, fading to transparent at the median (issue 18: importance
#: is high over most of the brain, so limits at the map's maximum showed one
#: broad glow; the top decile is where the eye should go).
SATURATED_TOP_PERCENT = 10.0


def map_contrast_limits(values: np.ndarray, lower_percentile: float = 50.0,
                        saturated_top_percent: float = SATURATED_TOP_PERCENT) -> tuple[float, float]:
    """Contrast limits from the map's own distribution over its in-brain (non-zero)
    voxels: transparent up to the ``lower_percentile`` (the scan shows through where
    the model did not look), saturated over the top ``saturated_top_percent`` %."""
    values = np.asarray(values)
    inside = values[values > 0]
    if inside.size == 0:
        return (0.0, 1.0)
    low, high = np.percentile(inside, [lower_percentile, 100.0 - saturated_top_percent])
    return float(low), float(max(high, low + 1e-3))
