"""How sure a predicted age is: split-conformal prediction intervals and the gap's centile.

A model folder's card may hold a :class:`Calibration`: the chronological ages and
predicted ages of subjects the model never trained on (``napari-brainage
calibrate``). From them, with no assumption about the shape of the errors:

* **Prediction interval** (split conformal prediction; Vovk et al. 2005, Lei et
  al. 2018, Angelopoulos & Bates 2023, "A gentle introduction to conformal
  prediction"). With calibration residuals ``r_i = |age_i - predicted_i|``
  (n of them) and ``q`` the ``ceil((n + 1) level)``-th smallest, the interval
  ``predicted +- q`` holds the chronological age of a new subject, drawn like the
  calibration subjects, with probability at least ``level`` (and at most
  ``level + 1/(n + 1)``). In words: people whose scans read like this one are
  this old, 9 times in 10 at the default level. The guarantee is *marginal*
  (over subjects like the calibration cohort), not for each age band; a scan
  unlike them (another scanner, contrast, resolution) is outside it:
  ``benchmarks/conformal.py`` measures both.
* **Gap centile**: where a subject's bias-corrected brain-age gap (de Lange &
  Cole 2020) falls among the calibration subjects' corrected gaps, 0-100: the
  normative reference for "how unusual is this gap".

Torch-free: the card, the CSV writer and the widgets read it without the networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError, OptionError

#: The interval's default level (the share of subjects whose age it holds).
DEFAULT_LEVEL = 0.9
#: Fewer calibration subjects than this make intervals too coarse to trust (at
#: n = 50 a 90 % interval's coverage lies between 90 % and 92 %, and its
#: width swings with a few subjects).
MIN_CALIBRATION_SUBJECTS = 50


def check_level(level: float) -> float:
    """``level`` as a float in (0, 1); :class:`OptionError` otherwise, with the share
    meant when it reads as a percentage (90: "for 90 % write 0.9")."""
    level = float(level)
    if not 0.0 < level < 1.0:
        if 10.0 <= level < 100.0:  # a percentage; 1.5 was told "for 1.5 % write 0.015", a 1.5 % interval
            hint = f" (for {level:g} % write {level / 100:g})"
        elif level > 1.0:
            hint = " (a share of the subjects: 0.9 for a 90 % interval)"
        else:
            hint = ""
        raise OptionError("interval level", f"must lie between 0 and 1, got {level:g}{hint}")
    return level


@dataclass
class Calibration:
    """Ages and predicted ages (years) of subjects held out from training.

    ``ages`` and ``predicted`` have one entry per subject (same order);
    ``source`` says which cohort (command and seed) they came from.

    Raises
    ------
    InputError
        when the two lists differ in length, hold non-finite values, or have
        fewer than ``MIN_CALIBRATION_SUBJECTS`` subjects.
    """

    ages: tuple[float, ...]
    predicted: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        # Years to 3 decimals (a day), as the results CSVs and the card store them.
        self.ages = tuple(round(float(a), 3) for a in self.ages)
        self.predicted = tuple(round(float(p), 3) for p in self.predicted)
        if len(self.ages) != len(self.predicted):
            raise InputError(f"calibration: {len(self.ages)} ages but {len(self.predicted)} predicted ages")
        if not (np.isfinite(self.ages).all() and np.isfinite(self.predicted).all()):
            raise InputError("calibration: ages and predicted ages must be finite numbers")
        if len(self.ages) < MIN_CALIBRATION_SUBJECTS:
            raise InputError(f"calibration needs at least {MIN_CALIBRATION_SUBJECTS} subjects with an age and "
                             f"a predicted age, got {len(self.ages)}")

    @property
    def n(self) -> int:
        return len(self.ages)

    def residuals(self) -> np.ndarray:
        """|age - predicted age| of each calibration subject (years), sorted."""
        return np.sort(np.abs(np.asarray(self.ages) - np.asarray(self.predicted)))

    def half_width(self, level: float = DEFAULT_LEVEL) -> float:
        """The conformal quantile q (years): the ``ceil((n + 1) level)``-th smallest
        residual; ``inf`` when the level asks for more than n subjects can give
        (n < 1 / (1 - level) - 1)."""
        level = check_level(level)
        rank = math.ceil((self.n + 1) * level)
        return float("inf") if rank > self.n else float(self.residuals()[rank - 1])

    @property
    def max_level(self) -> float:
        """The highest level these n subjects support: n / (n + 1)."""
        return self.n / (self.n + 1)

    def check_level(self, level: float) -> float:
        """``level`` when these subjects support it; ``OptionError`` saying the most they
        do otherwise (a 99.9 % interval from 300 subjects was left blank, unexplained)."""
        level = check_level(level)
        if level > self.max_level:
            raise OptionError("interval level", f"{level:g} needs more than the {self.n} calibration subjects of "
                                                f"this model; the most they support is {self.max_level:.3f}")
        return level

    def interval(self, predicted: float, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
        """(low, high) in years: the ``level`` prediction interval of the chronological
        age of a subject whose predicted age is ``predicted``."""
        q = self.half_width(level)
        return predicted - q, predicted + q

    def corrected_gaps(self, slope: float, intercept: float) -> np.ndarray:
        """The calibration subjects' bias-corrected gaps, predicted - (slope x age + intercept), sorted."""
        ages, predicted = np.asarray(self.ages), np.asarray(self.predicted)
        return np.sort(predicted - (slope * ages + intercept))

    def centile(self, corrected_gap: float, slope: float, intercept: float) -> float:
        """Centile (0-100) of ``corrected_gap`` among the calibration subjects' corrected
        gaps (mid-rank: ties count half), with the card's bias line ``slope``, ``intercept``."""
        gaps = self.corrected_gaps(slope, intercept)
        below = np.searchsorted(gaps, corrected_gap, side="left")
        at_or_below = np.searchsorted(gaps, corrected_gap, side="right")
        return float(100.0 * (below + at_or_below) / (2 * len(gaps)))

    def to_dict(self) -> dict:
        return {"ages": list(self.ages), "predicted": list(self.predicted), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(ages=tuple(data["ages"]), predicted=tuple(data["predicted"]), source=data.get("source", ""))


def coverage(ages: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Share of ``ages`` inside [low, high] (all arrays the same length; 0-1)."""
    ages, low, high = (np.asarray(v, dtype=float) for v in (ages, low, high))
    return float(np.mean((ages >= low) & (ages <= high)))


def interval_text(low: float | None, high: float | None, level: float | None) -> str:
    """"90 % interval 55.8-64.1 y", or "" without an interval: one wording everywhere."""
    if low is None or high is None or level is None:
        return ""
    return f"{level * 100:g} % interval {low:.1f}\N{EN DASH}{high:.1f} y"
