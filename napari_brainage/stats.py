"""Voxelwise statistics of many maps in constant memory.

``RunningStats`` keeps the count, mean and sum of squared deviations of the
maps added to it (Welford's update, float64); partial results from parallel
workers merge exactly (Chan, Golub & LeVeque 1979). ``effect_size`` compares two
groups (Cohen's d with the pooled standard deviation).
"""

from __future__ import annotations

import numpy as np


class RunningStats:
    """Voxelwise count, mean and sum of squared deviations (Welford), float64.

    ``shape``: the maps' shape (e.g. the 2 mm MNI grid, 91 x 109 x 91). ``add``
    raises ``ValueError`` for a map of another shape.
    """

    def __init__(self, shape: tuple[int, ...]):
        self.count = 0
        self.mean = np.zeros(shape, dtype=np.float64)
        self.m2 = np.zeros(shape, dtype=np.float64)

    def add(self, values: np.ndarray) -> None:
        """Fold one map in (Welford's update)."""
        if values.shape != self.mean.shape:
            raise ValueError(f"map shape {values.shape} differs from {self.mean.shape}")
        self.count += 1
        delta = values - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (values - self.mean)

    def merge(self, other: RunningStats) -> RunningStats:
        """Fold ``other`` (statistics of other subjects) into this one."""
        if other.count == 0:
            return self
        total = self.count + other.count
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta**2 * (self.count * other.count / total)
        self.mean += delta * (other.count / total)
        self.count = total
        return self

    @property
    def variance(self) -> np.ndarray:
        """Sample variance (n - 1); zeros with fewer than two maps."""
        if self.count < 2:
            return np.zeros_like(self.mean)
        return self.m2 / (self.count - 1)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to save or send between processes (count, mean, m2)."""
        return {"count": np.array(self.count), "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_state(cls, state) -> RunningStats:
        """Statistics from ``state()``'s arrays (copied)."""
        stats = cls(state["mean"].shape)
        stats.count, stats.mean, stats.m2 = int(state["count"]), state["mean"].copy(), state["m2"].copy()
        return stats


def effect_size(a: RunningStats, b: RunningStats) -> np.ndarray:
    """Cohen's d of group b against group a, voxelwise (pooled standard deviation)."""
    if a.count < 2 or b.count < 2:
        raise ValueError("an effect size needs at least two subjects per group")
    pooled = ((a.count - 1) * a.variance + (b.count - 1) * b.variance) / (a.count + b.count - 2)
    sd = np.sqrt(pooled)
    return np.divide(b.mean - a.mean, sd, out=np.zeros_like(sd), where=sd > 1e-12)
