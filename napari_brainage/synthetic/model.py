"""The simulation: the template aged by a diffeomorphic deformation and partial-volume
changes, with the nuisance of registered real data, and its ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..space.template import TemplateKit, load_template
from .config import TEMPLATE_AGE, CohortConfig, RegionAgeing
from .render import Contrast, render

#: Scaling-and-squaring steps: the velocity is divided by 2**STEPS first.
_SQUARING_STEPS = 6
#: Width (mm) of the Gaussian that turns a region mask into a smooth velocity.
_VELOCITY_SMOOTHING_MM = 3.0


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
    _truth_union: np.ndarray | None = None

    # ---- building
    @classmethod
    def build(cls, config: CohortConfig) -> "AgeingModel":
        """Region masks, velocity fields and the strength calibration for ``config``
        (takes seconds; ``ageing_model`` caches it)."""
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

    def _csf_shifts(self, brain_age: float, only: Sequence[str] | None, cortical: bool,
                    region_ages: dict[str, float] | None) -> list[np.ndarray]:
        """The partial-volume effects of ageing (template space): each term is the
        fraction of a voxel's tissue replaced by CSF (thinning cortex, shrinking regions)."""
        shifts = []
        years = brain_age - TEMPLATE_AGE
        if cortical and self.config.cortical_thinning:
            lost = np.clip(self.config.cortical_thinning / 100.0 * years, -0.5, 0.5)
            shifts.append(lost * self.cortex)
        for region in self._regions(only):
            if region.intensity_loss and region.direction < 0:
                lost = 1.0 - np.exp(region.log_volume_factor(_age_of(region, brain_age, region_ages)))
                weight = ndimage.gaussian_filter(self.masks[region.name].astype(np.float32), 1.0)
                shifts.append(region.intensity_loss * lost * weight)
        return shifts

    def aged_intensity(self, brain_age: float, only: Sequence[str] | None = None,
                       cortical: bool = True, region_ages: dict[str, float] | None = None) -> np.ndarray:
        """Template T1 with the partial-volume effects of ageing (before warping)."""
        t1 = self.kit.t1.copy()
        toward_csf = self.csf_intensity - t1
        for shift in self._csf_shifts(brain_age, only, cortical, region_ages):
            t1 += shift * toward_csf
        return t1

    def aged_tissues(self, brain_age: float, only: Sequence[str] | None = None,
                     cortical: bool = True, region_ages: dict[str, float] | None = None) -> np.ndarray:
        """(3, X, Y, Z) GM, WM and CSF fractions with the partial-volume effects of
        ageing (before warping): what ``aged_intensity`` does to the T1, done to the
        tissues, for rendering in other contrasts (``render``)."""
        kit = self.kit
        shift = sum(self._csf_shifts(brain_age, only, cortical, region_ages), np.zeros(kit.shape, np.float32))
        kept = 1.0 - shift  # cortical thinning may be negative before TEMPLATE_AGE: tissue gained
        gm, wm = kit.gm * kept, kit.wm * kept
        csf = np.clip(kit.csf * kept + shift * (kit.gm + kit.wm + kit.csf), 0.0, None)
        return np.stack([gm, wm, csf]).astype(np.float32)

    def synthesize(self, brain_age: float, rng: np.random.Generator | None, *,
                   only: Sequence[str] | None = None, cortical: bool = True,
                   region_ages: dict[str, float] | None = None, with_truth: bool = False,
                   contrast: Contrast | None = None) -> "SyntheticScan":
        """One subject aged to ``brain_age``.

        ``rng`` None gives no nuisance at all; ``only`` restricts ageing to
        some regions and ``cortical`` False turns cortical thinning off (both
        used to isolate each region's effect for the ground truth).
        ``region_ages`` ages the named regions by their own ages instead.
        ``with_truth`` also returns the subject's own ground truth: the
        ageing union carried onto the scan by the subject's nuisance warp (the
        truth is defined on the aged, un-moved template, so the ageing warp is
        already in it).
        ``contrast`` renders the subject from its aged, warped tissue fractions
        with that contrast's tissue intensities (``render``) instead of the
        template's T1; the ageing, nuisance and truth are the same.
        """
        kit = self.kit
        strengths = self.strengths_for(brain_age, only, region_ages)
        u_box = self._ageing_displacement(strengths)
        # Trilinear resampling is linear: mixing the tissues before the warp is
        # mixing them after it, with one channel to warp instead of three.
        aged = (self.aged_intensity(brain_age, only, cortical, region_ages) if contrast is None
                else render(self.aged_tissues(brain_age, only, cortical, region_ages), contrast, self.wm_intensity))

        nuisance = rng is not None and self.config.nuisance
        grid = _identity_grid(kit.shape)
        coords = self._nuisance_coords(grid, rng) if nuisance else grid
        # Ageing happens in template space: add its displacement at the
        # template positions the nuisance warp points to.
        origin = np.array([s.start for s in self.box], dtype=np.float32).reshape(3, 1, 1, 1)
        source = coords + sample(u_box, coords - origin)

        names = list(self.masks)
        channels = np.stack([aged, kit.brain, *(self.masks[n] for n in names)]).astype(np.float32)
        warped = sample(channels, source)
        image, brain = warped[0], warped[1] > 0.5
        volumes = {n: float(warped[2 + i].sum()) * kit.voxel_volume_ml for i, n in enumerate(names)}
        subject_truth = None
        if with_truth:
            # The truth marks where ageing changes the aged (un-moved) template, so only
            # the nuisance warp carries it to the subject's scan.
            subject_truth = (sample(self.truth_union()[None].astype(np.float32), coords)[0] > 0.5) & brain
        if nuisance:
            image = self._intensity_nuisance(image, rng)
        image = np.where(brain, np.maximum(image, 0), 0)
        return SyntheticScan(
            data=np.rint(image).astype(np.int16), affine=kit.affine, brain_age=brain_age,
            volumes_ml=volumes, truth=subject_truth,
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

    def truth_union(self) -> np.ndarray:
        """The ground truth's union of focal regions (template space; default
        ``ground_truth`` settings, computed once per model)."""
        if self._truth_union is None:
            self._truth_union = self.ground_truth()["union"]
        return self._truth_union

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
        if (young, old, threshold) == (45.0, 80.0, 0.03):
            self._truth_union = truth["union"].copy()
            self._truth_union.setflags(write=False)  # shared by every subject: never changed in place
        return truth


@dataclass
class SyntheticScan:
    """One synthetic subject's scan, its brain age (years) and its regions' volumes (mL)."""

    data: np.ndarray            #: int16 T1, MNI grid
    affine: np.ndarray
    brain_age: float
    volumes_ml: dict[str, float]
    #: The subject's own ground truth (bool, the scan's grid): the ageing union moved
    #: by the subject's warp. Scoring a subject's map against the template's union
    #: instead caps a perfect map's AP near 0.53 (the nuisance moves the thin truth
    #: by 1-2 voxels); see ``metrics``.
    truth: np.ndarray | None = None


def _age_of(region: RegionAgeing, brain_age: float, region_ages: dict[str, float] | None) -> float:
    return region_ages.get(region.name, brain_age) if region_ages else brain_age


@lru_cache(maxsize=4)
def ageing_model(config: CohortConfig) -> AgeingModel:
    """The (cached) model for ``config``: building it takes a few seconds."""
    return AgeingModel.build(config)


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
