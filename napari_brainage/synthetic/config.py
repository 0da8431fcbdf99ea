"""What a synthetic cohort is made of: the ageing regions and their rates (from
the literature; see the package's docstring) and the cohort's settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError

TEMPLATE_AGE = 25.0
#: Largest spread of brain age - age (years) a cohort may ask for: 1e6 overflowed the
#: ageing model into empty images that `synth` called a success.
MAX_GAP_SD = 20.0


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


def _both(*structures: str) -> tuple[str, ...]:
    """The left and right Harvard-Oxford labels of each structure."""
    return tuple(f"{side}_{s}" for s in structures for side in ("Left", "Right"))


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
    # Cortical and peripheral regions, where a map that knows only depth scores
    # below chance. Rates of the order of regional grey-matter loss in 65-82-year-olds
    # (Crivello et al. 2014, PLoS One 9:e114478: global -0.83 %/yr, fastest in
    # frontal, parietal and temporal cortex) and of association-cortex shrinkage
    # accelerating with age (Raz et al. 2005, Cereb Cortex 15:1676).
    "frontal_cortex": _atrophy("frontal_cortex", _both("Superior_Frontal_Gyrus", "Middle_Frontal_Gyrus"),
                               0.3, 1.2, 50.0),
    "parietal_cortex": _atrophy("parietal_cortex", _both("Superior_Parietal_Lobule", "Angular_Gyrus",
                                                         "Supramarginal_Gyrus_anterior_division",
                                                         "Supramarginal_Gyrus_posterior_division"), 0.3, 1.0, 50.0),
    "temporal_cortex": _atrophy("temporal_cortex", _both(
        "Middle_Temporal_Gyrus_anterior_division", "Middle_Temporal_Gyrus_posterior_division",
        "Inferior_Temporal_Gyrus_anterior_division", "Inferior_Temporal_Gyrus_posterior_division"),
        0.3, 1.2, 50.0),
    "insula": _atrophy("insula", _both("Insular_Cortex"), 0.3, 1.0, 50.0),
    "precuneus": _atrophy("precuneus", _both("Precuneous_Cortex"), 0.3, 1.0, 50.0),
}

#: The cortical presets. The insula (under the operculum) and the precuneus (on the
#: medial wall) lie as deep as the hippocampus by distance to the brain's edge.
CORTICAL_REGIONS = ("frontal_cortex", "parietal_cortex", "temporal_cortex", "insula", "precuneus")
#: Those at the brain's edge: the outside case for importance maps, whose easy
#: answer ("deep = important") ranks them below the average brain voxel.
PERIPHERAL_REGIONS = ("frontal_cortex", "parietal_cortex", "temporal_cortex")


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
        if not TEMPLATE_AGE <= low < high <= 110:  # the ageing model runs forward from the template's age
            raise InputError(f"age range {self.age_range} must satisfy {TEMPLATE_AGE:g} <= low < high <= 110 "
                             f"(the template is a brain aged {TEMPLATE_AGE:g}; the model does not make younger ones)")
        if not 0 <= self.gap_sd <= MAX_GAP_SD:  # also false for nan
            raise InputError(f"gap sd must be 0-{MAX_GAP_SD:g} years, got {self.gap_sd}")
        if not 0 <= self.region_age_sd <= 20:
            raise InputError(f"region age sd must be 0-20 years, got {self.region_age_sd}")
        names = [r.name for r in self.regions]
        if not names or len(set(names)) != len(names):
            raise InputError(f"regions must be a non-empty list without repeats, got {names}")
