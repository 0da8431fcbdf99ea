"""A synthetic brain-ageing cohort with known ground truth.

No UK Biobank scans can be used here, so we age a real average brain the way
the literature says brains age, and add the nuisance that registered real data
have. Because we choose which voxels carry age, we can *measure* whether an
importance map points at them.

Each subject has a chronological ``age`` and a biological ``brain_age`` =
age + gap, gap ~ N(0, ``gap_sd``); the scan is aged by ``brain_age``, so the
irreducible error of any predictor of chronological age is |gap|.

Starting point
    The ICBM152 2009a symmetric template (T1, GM, WM; see ``template``), an
    average of 152 young adults aged 18-44, mean 25.0 years (ICBM152 subject
    details as documented with SPM's templates). The template is taken to be
    a brain aged ``TEMPLATE_AGE`` = 25.

Ageing (driven by brain_age b; rates are % of the current volume per year,
constant at ``rate_early`` up to ``knee_age`` and rising linearly to
``rate_at_80`` at 80, so the volume factor is
exp(+/- [rate_early (b - 25) + slope/2 * max(0, b - knee)^2] / 100)):

* Lateral ventricles expand: 1.5 %/yr up to 45, rising to 3.5 %/yr at 80.
  Resnick et al. 2003 (J Neurosci 23:3295) measured +1.4 mL/yr at ages
  59-85, about 3-4 %/yr; total ventricular volume goes from 16.2 mL in the
  20s to 24.9 mL in the 40s (about 2 %/yr; Neurosci Lett 2006;395:155);
  expansion accelerates with age (Carmichael et al. 2007, Neurobiol Aging
  28:1316; Fjell et al. 2009, J Neurosci 29:15223). Net: about x3.2 at 80.
* Hippocampi atrophy: 0.3 %/yr up to 60, rising to 1.5 %/yr at 80.
  Fraser et al. 2021 (Neurobiol Aging 97:97): 0.18 %/yr at mean age 47,
  0.30 %/yr at 63; Fraser et al. 2015 (NeuroImage 112:364) meta-analysis:
  0.85 %/yr overall; Barnes et al. 2009 (Neurobiol Aging 30:1711): 1.41 %/yr
  in elderly controls; acceleration after 60-65 (Raz et al. 2005, Cereb
  Cortex 15:1676). Volume loss is made by a smooth shrinking deformation plus
  a partial-volume darkening of what remains: the tissue fraction lost is
  replaced by CSF, as the hippocampal fissure and temporal horn widen.
* Cortical grey matter thins diffusely by 0.35 %/yr (Storsve et al. 2014,
  J Neurosci 34:8488: -0.35 %/yr, ages 23-87; Shaw et al. 2016: -0.3 %/yr),
  simulated as a partial-volume shift of cortical GM intensity toward CSF in
  proportion to the thickness lost. Mild and everywhere in the cortex by
  design, it is written as its own mask and kept out of the focal union.
* Heterogeneous ageing (``region_age_sd``, off by default): each focal region
  is aged by its own age, brain_age + N(0, region_age_sd), drawn per subject
  and region. Real brains do not age in lockstep: tissue- and region-specific
  brain ages correlate only moderately within a person (Kaufmann et al. 2019,
  Nat Neurosci 22:1617). Off, every region reads out the same brain_age, so a
  predictor needs only the region it measures best (the ventricles); on, each
  region carries information the others do not.
* Other patterns (putamen, thalamus, caudate, amygdala) are available with an
  illustrative 0.3 -> 1.0 %/yr atrophy (half the lost fraction darkens);
  any region's rates can be changed.

Nuisance (independent of age, so neither head size nor pose leaks it), mimicking
affinely registered, skull-stripped data such as UK Biobank's T1_brain_to_MNI:
residual misregistration (rotations ~N(0, 2 deg) clipped at 5, translations
~N(0, 2 mm) clipped at 5, isotropic scale ~N(1, 0.02), per-axis scale
~N(1, 0.01)); a smooth random elastic field with RMS 1-2 mm; a multiplicative
bias field (smooth, about +/-10 %); global gamma 0.85-1.15 and gain 0.8-1.2;
Rician noise with sigma 1-3 % of white-matter intensity.

Implementation: per subject, one stationary velocity field (sum over regions of
strength x the gradient of the Gaussian-smoothed region mask) is integrated by
scaling and squaring into a diffeomorphic ageing warp, composed with the
nuisance warp, and the template is resampled once (trilinear). The strength
that gives a region's target volume is read from a calibration table made once
per grid. Everything is vectorised numpy/scipy; each subject draws from its own
``SeedSequence`` child, so results do not depend on the number of workers.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import InputError
from .io import Volume, atomic_path, save_volume
from .template import TemplateKit, load_template

TEMPLATE_AGE = 25.0
#: Scaling-and-squaring steps: the velocity is divided by 2**STEPS first.
_SQUARING_STEPS = 6
#: Width (mm) of the Gaussian that turns a region mask into a smooth velocity.
_VELOCITY_SMOOTHING_MM = 3.0


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


# ------------------------------------------------------------------ model
@dataclass
class AgeingModel:
    """Precomputed, per-grid parts of the simulation (built once, reused per subject)."""

    kit: TemplateKit
    config: CohortConfig
    masks: dict[str, np.ndarray]            #: region name -> bool mask (template space)
    velocity: dict[str, np.ndarray]         #: region name -> (3, *box) velocity, voxels per unit
    box: tuple[slice, slice, slice]         #: where the velocities are non-negligible
    strength_table: np.ndarray | None = None      #: (ages, regions) velocity strengths
    calibration_ages: np.ndarray | None = None
    csf_intensity: float = 0.0
    wm_intensity: float = 0.0
    cortex: np.ndarray | None = None        #: cortical GM weight (0-1) for thinning

    # ---- building
    @classmethod
    def build(cls, config: CohortConfig) -> "AgeingModel":
        kit = load_template(config.resolution_mm)
        csf_like = kit.t1 < np.percentile(kit.t1[kit.brain], 15)
        masks = {}
        for region in config.regions:
            # The atlas was drawn on another average brain (FSL's MNI152), so
            # keep its voxels that have the region's tissue in this template.
            mask = kit.label_mask(*region.atlas_labels) & kit.brain
            if region.tissue == "csf":
                # ...plus dark neighbours it just missed: ventricles are CSF.
                near = ndimage.binary_dilation(mask, iterations=max(1, 4 // kit.resolution_mm))
                mask = near & csf_like
            else:
                mask &= kit.gm >= 0.5
            if mask.sum() < 8:
                raise InputError(f"region {region.name} has no voxels on the {kit.resolution_mm} mm grid")
            masks[region.name] = mask
        sigma = _VELOCITY_SMOOTHING_MM / kit.resolution_mm
        union = np.logical_or.reduce(list(masks.values()))
        box = _bounding_box(union, margin=int(np.ceil(5 * sigma)) + 2, shape=kit.shape)
        velocity = {}
        for name, mask in masks.items():
            smooth = ndimage.gaussian_filter(mask.astype(np.float32), sigma)[box]
            grad = np.stack(np.gradient(smooth))
            grad /= np.abs(grad).max()  # unit strength moves at most 1 voxel per unit time
            velocity[name] = grad.astype(np.float32)
        cortex_labels = [i for i, n in kit.label_names.items() if not _is_subcortical(n)]
        cortex = np.isin(kit.labels, cortex_labels) * kit.gm
        model = cls(kit=kit, config=config, masks=masks, velocity=velocity, box=box,
                    csf_intensity=float(np.median(kit.t1[csf_like & kit.brain])),
                    wm_intensity=float(np.median(kit.t1[kit.wm > 0.9])),
                    cortex=cortex.astype(np.float32))
        model._calibrate()
        return model

    def _calibrate(self) -> None:
        """Velocity strengths that give every region its target volume, by brain age.

        First, region by region, a table of volume factor against strength.
        Regions touch (the temporal horns border the hippocampi), so then, on a
        grid of brain ages, all strengths are corrected together by a few
        Newton steps that use those tables' slopes.
        """
        # Positive strength samples toward a region: it grows; negative: it shrinks.
        strengths_grid = np.linspace(-6.0, 6.0, 13)
        single = {}  # region -> (log volume factors, their slopes), along strengths_grid
        for region in self.config.regions:
            logs = np.array([self._log_volume_factors({region.name: s})[region.name] for s in strengths_grid])
            single[region.name] = (logs, np.gradient(logs, strengths_grid))
        self.calibration_ages = np.arange(0.0, 111.0, 5.0)
        table = np.zeros((len(self.calibration_ages), len(self.config.regions)))
        for row, age in enumerate(self.calibration_ages):
            targets = {r.name: float(r.log_volume_factor(age)) for r in self.config.regions}
            strengths = {n: float(np.interp(t, single[n][0], strengths_grid)) for n, t in targets.items()}
            for _ in range(3):
                achieved = self._log_volume_factors(strengths)
                for name, target in targets.items():
                    slope = np.interp(strengths[name], strengths_grid, single[name][1])
                    strengths[name] += (target - achieved[name]) / slope
            table[row] = [strengths[r.name] for r in self.config.regions]
        self.strength_table = table

    def _log_volume_factors(self, strengths: dict[str, float]) -> dict[str, float]:
        """log(warped / template volume) of every region under these strengths."""
        u = self._ageing_displacement(strengths)
        return {name: float(np.log(max(self._warped_box_sum(mask, u) / mask.sum(), 1e-6)))
                for name, mask in self.masks.items()}

    def strengths_for(self, brain_age: float, only: Sequence[str] | None = None,
                      region_ages: dict[str, float] | None = None) -> dict[str, float]:
        return {r.name: float(np.interp(_age_of(r, brain_age, region_ages), self.calibration_ages,
                                        self.strength_table[:, i]))
                for i, r in enumerate(self.config.regions) if only is None or r.name in only}

    # ---- warps
    def _ageing_displacement(self, strengths: dict[str, float]) -> np.ndarray:
        """(3, *box) displacement (voxels) of the flow of sum(strength x velocity)."""
        v = np.zeros_like(next(iter(self.velocity.values())))
        for name, strength in strengths.items():
            v += strength * self.velocity[name]
        u = v / 2**_SQUARING_STEPS
        grid = _identity_grid(u.shape[1:])
        for _ in range(_SQUARING_STEPS):
            u = u + sample(u, grid + u, outside="nearest")
        return u

    def _warped_box_sum(self, mask: np.ndarray, u: np.ndarray) -> float:
        sub = mask[self.box].astype(np.float32)[None]
        return float(sample(sub, _identity_grid(sub.shape[1:]) + u).sum())

    # ---- subjects
    def _regions(self, only: Sequence[str] | None) -> list[RegionAgeing]:
        return [r for r in self.config.regions if only is None or r.name in only]

    def aged_intensity(self, brain_age: float, only: Sequence[str] | None = None,
                       cortical: bool = True, region_ages: dict[str, float] | None = None) -> np.ndarray:
        """Template T1 with the partial-volume effects of ageing (before warping)."""
        kit = self.kit
        t1 = kit.t1.copy()
        toward_csf = self.csf_intensity - t1
        years = brain_age - TEMPLATE_AGE
        if cortical and self.config.cortical_thinning:
            lost = np.clip(self.config.cortical_thinning / 100.0 * years, -0.5, 0.5)
            t1 += lost * self.cortex * toward_csf
        for region in self._regions(only):
            if region.intensity_loss and region.direction < 0:
                lost = 1.0 - np.exp(region.log_volume_factor(_age_of(region, brain_age, region_ages)))
                weight = ndimage.gaussian_filter(self.masks[region.name].astype(np.float32), 1.0)
                t1 += region.intensity_loss * lost * weight * toward_csf
        return t1

    def synthesize(self, brain_age: float, rng: np.random.Generator | None, *,
                   only: Sequence[str] | None = None, cortical: bool = True,
                   region_ages: dict[str, float] | None = None) -> "SyntheticScan":
        """One subject aged to ``brain_age``.

        ``rng`` None gives no nuisance at all; ``only`` restricts ageing to
        some regions and ``cortical`` False turns cortical thinning off (both
        used to isolate each region's effect for the ground truth).
        ``region_ages`` ages the named regions by their own ages instead.
        """
        kit = self.kit
        strengths = self.strengths_for(brain_age, only, region_ages)
        u_box = self._ageing_displacement(strengths)
        t1 = self.aged_intensity(brain_age, only, cortical, region_ages)

        nuisance = rng is not None and self.config.nuisance
        grid = _identity_grid(kit.shape)
        coords = self._nuisance_coords(grid, rng) if nuisance else grid
        # Ageing happens in template space: add its displacement at the
        # template positions the nuisance warp points to.
        origin = np.array([s.start for s in self.box], dtype=np.float32).reshape(3, 1, 1, 1)
        source = coords + sample(u_box, coords - origin)

        names = list(self.masks)
        channels = np.stack([t1, kit.brain, *(self.masks[n] for n in names)]).astype(np.float32)
        warped = sample(channels, source)
        image, brain = warped[0], warped[1] > 0.5
        volumes = {n: float(warped[2 + i].sum()) * kit.voxel_volume_ml for i, n in enumerate(names)}
        if nuisance:
            image = self._intensity_nuisance(image, rng)
        image = np.where(brain, np.maximum(image, 0), 0)
        return SyntheticScan(
            data=np.rint(image).astype(np.int16), affine=kit.affine, brain_age=brain_age,
            volumes_ml=volumes,
        )

    def _nuisance_coords(self, grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kit = self.kit
        angles = np.radians(np.clip(rng.normal(0, 2.0, 3), -5, 5))
        shift_mm = np.clip(rng.normal(0, 2.0, 3), -5, 5)
        scale = rng.normal(1.0, 0.02) * rng.normal(1.0, 0.01, 3)
        rotation = _rotation(angles)
        centre_mm = np.array([0.0, -18.0, 18.0])  # middle of the MNI brain
        # Map output (subject) mm to template mm: x_t = R S (x - c) + c + t.
        mm = np.eye(4)
        mm[:3, :3] = rotation @ np.diag(scale)
        mm[:3, 3] = centre_mm + shift_mm - mm[:3, :3] @ centre_mm
        voxel = np.linalg.inv(kit.affine) @ mm @ kit.affine
        coords = np.einsum("ij,j...->i...", voxel[:3, :3], grid) + voxel[:3, 3].reshape(3, 1, 1, 1)
        return coords + self._elastic_field(rng)

    def _elastic_field(self, rng: np.random.Generator) -> np.ndarray:
        """Smooth random displacement (voxels) with RMS 1-2 mm inside the brain."""
        kit = self.kit
        spacing = max(1, int(round(8.0 / kit.resolution_mm)))  # control points every ~8 mm
        coarse_shape = tuple(int(np.ceil(n / spacing)) + 1 for n in kit.shape)
        coarse = ndimage.gaussian_filter(rng.normal(size=(3, *coarse_shape)), sigma=(0, 1.5, 1.5, 1.5))
        # Control point p sits at voxel p * spacing; sample them at every voxel.
        fine = _identity_grid(kit.shape) / spacing
        field = sample(coarse.astype(np.float32), fine, outside="nearest")
        rms = np.sqrt((field[:, kit.brain] ** 2).sum(axis=0).mean())
        target_mm = rng.uniform(1.0, 2.0)
        return (field * (target_mm / kit.resolution_mm / rms)).astype(np.float32)

    def _intensity_nuisance(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kit = self.kit
        axes = [np.linspace(-1, 1, n) for n in kit.shape]
        x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
        terms = [x, y, z, x * y, x * z, y * z, x**2 - 1 / 3, y**2 - 1 / 3, z**2 - 1 / 3]
        bias = np.exp(sum(rng.normal(0, 0.04) * t for t in terms))
        gamma = rng.uniform(0.85, 1.15)
        gain = rng.uniform(0.8, 1.2)
        wm = self.wm_intensity
        image = wm * np.power(np.maximum(image, 0) / wm, gamma) * gain * bias
        sigma = rng.uniform(0.01, 0.03) * wm * gain
        noisy = np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))
        return noisy.astype(np.float32)

    def ground_truth(self, young: float = 45.0, old: float = 80.0, threshold: float = 0.03) -> dict[str, np.ndarray]:
        """Voxels whose intensity each region's ageing changes between ``young`` and ``old``.

        The change must exceed ``threshold`` x white-matter intensity; the
        comparison is noise-free, in template space, one region at a time.
        Also returns the union of focal regions and the (diffuse) cortex mask.
        """
        truth = {}
        for region in self.config.regions:
            a, b = (self.synthesize(age, rng=None, only=[region.name], cortical=False).data
                    .astype(np.float32) for age in (young, old))
            truth[region.name] = (np.abs(b - a) > threshold * self.wm_intensity) & self.kit.brain
        truth["union"] = np.logical_or.reduce([truth[r.name] for r in self.config.regions])
        truth["cortex"] = (self.cortex > 0.5) & self.kit.brain
        return truth


@dataclass
class SyntheticScan:
    data: np.ndarray            #: int16 T1, MNI grid
    affine: np.ndarray
    brain_age: float
    volumes_ml: dict[str, float]


def _age_of(region: RegionAgeing, brain_age: float, region_ages: dict[str, float] | None) -> float:
    return region_ages.get(region.name, brain_age) if region_ages else brain_age


@lru_cache(maxsize=4)
def ageing_model(config: CohortConfig) -> AgeingModel:
    """The (cached) model for ``config``: building it takes a few seconds."""
    return AgeingModel.build(config)


# ------------------------------------------------------------------ cohort
@dataclass(frozen=True)
class Participant:
    subject: str
    age: float
    brain_age: float
    region_ages: tuple[tuple[str, float], ...] = ()   #: (region, its own age) when ageing is heterogeneous


def draw_participants(n: int, seed: int, config: CohortConfig) -> list[Participant]:
    """Ages uniform over ``age_range``; gap ~ N(0, gap_sd); rounded to 0.01 year.
    With ``region_age_sd`` each focal region also gets its own age around brain_age.

    Ages, gaps and regional deviations come from separate streams, so the first
    k participants of a cohort of n are those of a cohort of k with the same seed.
    """
    ages = np.random.default_rng(np.random.SeedSequence([seed, 0])).uniform(*config.age_range, size=n)
    gaps = np.random.default_rng(np.random.SeedSequence([seed, 2])).normal(0.0, config.gap_sd, size=n)
    names = [r.name for r in config.regions]
    # One row per subject (rows are drawn in order), so prefixes stay prefixes.
    deviations = (np.random.default_rng(np.random.SeedSequence([seed, 3])).normal(0.0, config.region_age_sd,
                                                                                   size=(n, len(names)))
                  if config.region_age_sd else np.zeros((n, 0)))
    width = max(4, len(str(n)))
    participants = []
    for i, (a, g) in enumerate(zip(ages, gaps)):
        brain_age = round(float(a + g), 2)
        own = tuple((name, round(brain_age + float(d), 2)) for name, d in zip(names, deviations[i]))
        participants.append(Participant(f"sub-{i + 1:0{width}d}", round(float(a), 2), brain_age, own))
    return participants


def subject_rng(seed: int, index: int) -> np.random.Generator:
    """Each subject's own stream: independent of cohort size and worker count."""
    return np.random.default_rng(np.random.SeedSequence([seed, 1, index]))


def _make_subject(args) -> tuple[int, dict[str, float]]:
    config, seed, index, participant, path = args
    scan = ageing_model(config).synthesize(participant.brain_age, subject_rng(seed, index),
                                           region_ages=dict(participant.region_ages) or None)
    write_scan(scan, participant, path)
    return index, scan.volumes_ml


def write_scan(scan: "SyntheticScan", participant: Participant, path: Path) -> Path:
    """Save a synthetic scan with its ages in the header's description field."""
    note = f"synthetic age={participant.age:.2f} brain_age={participant.brain_age:.2f}"
    return save_volume(Volume(scan.data, scan.affine), path, overwrite=True, description=note)


def generate_cohort(
    out: str | os.PathLike,
    n: int,
    seed: int,
    config: CohortConfig = CohortConfig(),
    *,
    workers: int = 1,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``n`` synthetic subjects, participants.csv and ground_truth/ under ``out``.

    Returns the path of participants.csv. Refuses to write into a folder that
    already holds a cohort unless ``overwrite``. Files are written atomically
    and participants.csv last, so a cohort with a participants.csv is complete.
    """
    if n < 1:
        raise InputError(f"the cohort needs at least 1 subject, got {n}")
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    table = out / "participants.csv"
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if table.exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a cohort (participants.csv); pass overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    model = ageing_model(config)  # built before forking: workers inherit it

    write_ground_truth(model, out / "ground_truth")
    participants = draw_participants(n, seed, config)
    jobs = [(config, seed, i, p, out / f"{p.subject}.nii.gz") for i, p in enumerate(participants)]
    volumes: dict[int, dict[str, float]] = {}
    if workers == 1:
        results = map(_make_subject, jobs)
        for done, (index, vol) in enumerate(results, 1):
            volumes[index] = vol
            if progress:
                progress(done, n)
    else:
        # fork lets workers inherit the built model; one torch thread each, so
        # processes do not oversubscribe the cores (and libgomp is never
        # re-entered after the fork).
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                              else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                 initializer=_single_threaded) as pool:
            for done, (index, vol) in enumerate(pool.map(_make_subject, jobs, chunksize=4), 1):
                volumes[index] = vol
                if progress:
                    progress(done, n)

    region_names = [r.name for r in config.regions]
    with atomic_path(table) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        own_ages = [f"{name}_age" for name in region_names] if config.region_age_sd else []
        writer.writerow(["subject", "path", "age", "brain_age", "gap",
                         *[f"{name}_ml" for name in region_names], *own_ages])
        for i, p in enumerate(participants):
            writer.writerow([p.subject, f"{p.subject}.nii.gz", f"{p.age:.2f}", f"{p.brain_age:.2f}",
                             f"{p.brain_age - p.age:.2f}",
                             *[f"{volumes[i][name]:.3f}" for name in region_names],
                             *[f"{age:.2f}" for _, age in p.region_ages]])
    return table


def _single_threaded() -> None:
    import torch

    torch.set_num_threads(1)


def write_ground_truth(model: AgeingModel, folder: Path) -> dict[str, Path]:
    """One uint8 mask per ageing region, their union, and the cortex mask."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, mask in model.ground_truth().items():
        path = folder / f"{name}.nii.gz"
        save_volume(Volume(mask.astype(np.uint8), model.kit.affine), path, overwrite=True)
        written[name] = path
    return written


# ------------------------------------------------------------------ helpers
def sample(volumes: np.ndarray, coords: np.ndarray, outside: str = "zeros") -> np.ndarray:
    """Trilinear values of ``volumes`` (C, X, Y, Z) at voxel ``coords`` (3, ...).

    torch's grid_sample does what scipy's map_coordinates(order=1) does, for
    all channels at once and about 20x faster; ``outside`` is "zeros" or
    "nearest" (edge values).
    """
    import torch

    if coords.ndim != 4 or coords.shape[0] != 3:
        raise ValueError(f"coords must have shape (3, X, Y, Z), got {coords.shape}")
    volumes = np.asarray(volumes, dtype=np.float32)
    sizes = np.array(volumes.shape[1:], dtype=np.float32).reshape(3, *([1] * (coords.ndim - 1)))
    # grid_sample wants (x, y, z) = (last, middle, first) axis, normalised to [-1, 1].
    normalised = (2.0 * coords / np.maximum(sizes - 1, 1) - 1.0)[::-1]
    grid = torch.from_numpy(np.ascontiguousarray(np.moveaxis(normalised, 0, -1), dtype=np.float32))
    out = torch.nn.functional.grid_sample(
        torch.from_numpy(volumes)[None], grid[None], mode="bilinear",
        padding_mode="zeros" if outside == "zeros" else "border", align_corners=True,
    )
    return out[0].numpy()


def _identity_grid(shape: Sequence[int]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))


def _bounding_box(mask: np.ndarray, margin: int, shape) -> tuple[slice, slice, slice]:
    where = np.argwhere(mask)
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + margin + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))  # type: ignore[return-value]


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _is_subcortical(name: str) -> bool:
    keys = ("Ventricle", "Thalamus", "Caudate", "Putamen", "Pallidum", "Brain-Stem",
            "Hippocampus", "Amygdala", "Accumbens", "White_Matter", "Cerebral_Cortex")
    return any(k in name for k in keys)


def timed_progress(prefix: str = "synth") -> Callable[[int, int], None]:
    """A progress callback printing 'done/total, rate, ETA' about every 2 s."""
    start = time.monotonic()
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 2.0:
            last[0] = now
            rate = done / max(now - start, 1e-9)
            eta = (total - done) / rate if rate else float("nan")
            print(f"{prefix}: {done}/{total} subjects, {rate:.1f}/s, ETA {eta:.0f} s", flush=True)

    return report
