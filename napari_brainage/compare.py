"""Compare one subject's importance map with a population map.

Population maps live on the 2 mm MNI template grid, so the subject's map is
brought onto that grid first (through its affine: the scan is taken to be
aligned to MNI space, as the model requires). The comparison counts only
voxels inside the template brain, where both maps are defined.

* difference: subject - population, voxelwise (positive where the model looked
  harder at this subject than at the average subject);
* Dice overlap of the two maps' top-k % voxels (k % of the brain each);
* Pearson correlation of the two maps over the brain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .io import Volume
from .options import MapOrigin, Method
from .space.grid import on_mni_grid, resample
from .space.template import load_template, mni_grid
from .threshold import top_percent_mask


@dataclass(frozen=True)
class MapComparison:
    """A subject's map against a population map (``compare_maps``)."""

    difference: Volume      #: subject - population on the population's grid
    dice_top: float         #: Dice of the top ``top_percent`` % voxels of each map
    correlation: float      #: Pearson r over the brain
    top_percent: float
    voxels: int             #: voxels compared (the template brain)

    def summary(self) -> str:
        """Three lines for the Population widget: Dice of the top k %, correlation, voxels compared."""
        return (f"Dice of top {self.top_percent:g} %   {self.dice_top:.2f}\n"
                f"correlation        {self.correlation:.2f}\n"
                f"voxels compared    {self.voxels}")


def origin_mismatch(subject: MapOrigin, population: MapOrigin) -> str | None:
    """A sentence when two maps were made by different methods or models, whose
    difference then measures the methods or models, not the subject against the
    population; None when they agree or either side is unknown."""
    if subject.method and population.method and subject.method != population.method:
        return (f"the maps come from different methods (subject: {Method.parse(subject.method).label}; "
                f"population: {Method.parse(population.method).label}): their difference compares the methods, "
                "not this subject with the population")
    if subject.model and population.model and subject.model != population.model:
        return (f"the maps come from different models (subject: {subject.model}; population: {population.model}): "
                "their difference compares the models, not this subject with the population")
    return None


def on_grid(volume: Volume, shape, affine) -> np.ndarray:
    """``volume``'s data on the grid (shape, affine): as is when already there."""
    if volume.shape == tuple(shape) and np.allclose(volume.affine, affine, atol=1e-4):
        return np.asarray(volume.data, dtype=np.float32)
    return resample(np.nan_to_num(np.asarray(volume.data, dtype=np.float32)), volume.affine, shape, affine)


def template_resolution(volume: Volume) -> int:
    """The MNI grid (1 or 2 mm) ``volume`` lies on; ValueError otherwise."""
    for resolution in (2, 1):
        if on_mni_grid(volume, resolution):
            return resolution
    raise InputError(f"the population map must be on the 1 or 2 mm MNI grid, not a {volume.shape} grid "
                     "(use a map written by `napari-brainage population`)")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A and B| / (|A| + |B|) of two boolean masks; 1 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else 1.0


def compare_maps(subject: Volume, population: Volume, top_percent: float = 10.0) -> MapComparison:
    """Difference, top-k % Dice and correlation of a subject's map with the population's."""
    if not 0 < top_percent < 100:
        raise InputError(f"top percent must be between 0 and 100, got {top_percent:g}")
    resolution = template_resolution(population)
    shape, affine = mni_grid(resolution)
    brain = load_template(resolution).brain
    subject_values = on_grid(subject, shape, affine)
    population_values = np.asarray(population.data, dtype=np.float32)
    a, b = subject_values[brain], population_values[brain]
    if a.std() == 0 or b.std() == 0:
        raise InputError("a map is constant inside the brain: nothing to compare")
    correlation = float(np.corrcoef(a, b)[0, 1])
    overlap = dice(top_percent_mask(subject_values, brain, top_percent),
                   top_percent_mask(population_values, brain, top_percent))
    difference = np.where(brain, subject_values - population_values, 0).astype(np.float32)
    return MapComparison(Volume(data=difference, affine=affine.copy()), overlap, correlation,
                         top_percent, int(brain.sum()))
