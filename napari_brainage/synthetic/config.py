"""What a synthetic cohort is made of: the ageing regions and their rates (from
the literature; see the package's docstring) and the cohort's settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError

TEMPLATE_AGE = 25.0


@dataclass(frozen=True)
class RegionAgeing:
    """How one anatomical region changes with brain age."""

    name: str
    atlas_labels: tuple[str, ...]   #: Harvard-Oxford label names forming the region
    direction: int                  #: +1 expands (ventricles), -1 atrophies
    rate_early: float               #: % volume change per year up to knee_age
    rate_at_80: float               #: % per year at age 80 (linear from the knee)
    knee_age: float
    intensity_loss: float = 0.0     #: share of the lost volume fraction turned into darkening
    tissue: str = "gm"              #: keep the atlas voxels of this tissue: "gm" or "csf"

    def log_volume_factor(self, brain_age: np.ndarray | float) -> np.ndarray:
        """log(volume at brain_age / volume at TEMPLATE_AGE)."""
        b = np.asarray(brain_age, dtype=np.float64)
        slope = (self.rate_at_80 - self.rate_early) / (80.0 - self.knee_age)
        integral = self.rate_early * (b - TEMPLATE_AGE) + 0.5 * slope * np.maximum(0.0, b - self.knee_age) ** 2
        return self.direction * integral / 100.0

    def annual_rate(self, brain_age: float) -> float:
        """Signed % volume change per year at ``brain_age``."""
        slope = (self.rate_at_80 - self.rate_early) / (80.0 - self.knee_age)
        return self.direction * (self.rate_early + slope * max(0.0, brain_age - self.knee_age))


def _atrophy(name: str, labels: tuple[str, ...], early=0.3, at_80=1.0, knee=60.0, loss=0.5):
    return RegionAgeing(name, labels, -1, early, at_80, knee, intensity_loss=loss)


REGION_PRESETS: dict[str, RegionAgeing] = {
    "lateral_ventricles": RegionAgeing(
        "lateral_ventricles", ("Left_Lateral_Ventricle", "Right_Lateral_Ventricle"),
        +1, 1.5, 3.5, 45.0, tissue="csf"),
    "hippocampus": _atrophy("hippocampus", ("Left_Hippocampus", "Right_Hippocampus"), 0.3, 1.5, 60.0,
                            loss=1.0),
    "amygdala": _atrophy("amygdala", ("Left_Amygdala", "Right_Amygdala")),
    "thalamus": _atrophy("thalamus", ("Left_Thalamus", "Right_Thalamus")),
    "putamen": _atrophy("putamen", ("Left_Putamen", "Right_Putamen")),
    "caudate": _atrophy("caudate", ("Left_Caudate", "Right_Caudate")),
}


DEFAULT_REGIONS = ("lateral_ventricles", "hippocampus")


def parse_region(spec: str) -> RegionAgeing:
    """``name`` or ``name=RATE`` (RATE: % per year at 80, e.g. hippocampus=2.0)."""
    name, _, rate = spec.partition("=")
    if name not in REGION_PRESETS:
        raise InputError(f"unknown region {name!r}; choose from {', '.join(REGION_PRESETS)}")
    region = REGION_PRESETS[name]
    if rate:
        try:
            value = float(rate)
        except ValueError:
            raise InputError(f"{spec!r}: the rate after '=' must be a number (% per year at 80)") from None
        if not 0 <= value <= 20:
            raise InputError(f"{spec!r}: a rate of {value} % per year is outside 0-20")
        region = replace(region, rate_at_80=value, rate_early=min(region.rate_early, value))
    return region


@dataclass(frozen=True)
class CohortConfig:
    """Everything that defines a cohort besides the seed and its size."""

    regions: tuple[RegionAgeing, ...] = tuple(REGION_PRESETS[r] for r in DEFAULT_REGIONS)
    resolution_mm: int = 2
    age_range: tuple[float, float] = (45.0, 80.0)
    gap_sd: float = 3.0
    cortical_thinning: float = 0.35     #: % cortical thickness per year
    nuisance: bool = True
    region_age_sd: float = 0.0          #: sd (years) of each focal region's own age around brain_age

    def __post_init__(self):
        low, high = self.age_range
        if not 0 < low < high <= 110:
            raise InputError(f"age range {self.age_range} must satisfy 0 < low < high <= 110")
        if self.gap_sd < 0 or not np.isfinite(self.gap_sd):
            raise InputError(f"gap sd must be >= 0 years, got {self.gap_sd}")
        if not 0 <= self.region_age_sd <= 20:
            raise InputError(f"region age sd must be 0-20 years, got {self.region_age_sd}")
        names = [r.name for r in self.regions]
        if not names or len(set(names)) != len(names):
            raise InputError(f"regions must be a non-empty list without repeats, got {names}")
