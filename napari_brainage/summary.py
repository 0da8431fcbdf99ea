"""A plain-language description of a scan's geometry and intensities.

Used by ``napari-brainage info`` and the Scan info widget so a user can check,
before trusting any number, that the scan is oriented and sized as expected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io import WARNING, Volume, voxel_sizes
from .space.display import obliquity_degrees, orientation_name


@dataclass(frozen=True)
class ScanSummary:
    """A scan's geometry and intensities, as ``summarise`` measured them."""

    shape: tuple[int, int, int]
    voxel_size_mm: tuple[float, float, float]
    orientation: str            #: e.g. 'LAS': the direction each voxel axis points to
    obliquity_deg: float        #: largest tilt of a voxel axis from the world axes
    field_of_view_mm: tuple[float, float, float]
    centre_mm: tuple[float, float, float]  #: RAS position of the volume's centre
    dtype: str
    intensity_range: tuple[float, float]   #: min and max of the finite voxels
    nonfinite_voxels: int
    note: str = ""  #: how the file was read, when the reader had to guess (``io.WARNING``)

    def lines(self) -> list[str]:
        """Human-readable lines, one fact per line."""
        def fmt(values, unit=""):
            return " x ".join(f"{v:g}" for v in values) + unit

        return [
            f"shape           {fmt(self.shape)} voxels ({self.dtype})",
            f"voxel size      {fmt(self.voxel_size_mm, ' mm')}",
            f"orientation     {self.orientation}"
            + (f", oblique by {self.obliquity_deg:.1f} deg" if self.obliquity_deg > 0.5 else ""),
            f"field of view   {fmt(self.field_of_view_mm, ' mm')}",
            f"centre (RAS)    {', '.join(f'{v:.1f}' for v in self.centre_mm)} mm",
            f"intensities     {self.intensity_range[0]:g} to {self.intensity_range[1]:g}"
            + (f"; {self.nonfinite_voxels} NaN/inf voxels" if self.nonfinite_voxels else ""),
            *([f"note            {self.note}"] if self.note else []),
        ]


def summarise(volume: Volume) -> ScanSummary:
    """Describe ``volume``'s geometry and intensity range."""
    affine = volume.affine
    sizes = voxel_sizes(affine)
    shape = np.asarray(volume.shape)
    centre = affine @ np.append((shape - 1) / 2.0, 1.0)
    data = volume.data
    finite = np.isfinite(data) if data.dtype.kind == "f" else None
    values = data[finite] if finite is not None and not finite.all() else data
    return ScanSummary(
        shape=volume.shape,
        voxel_size_mm=tuple(round(float(s), 4) for s in sizes),
        orientation=orientation_name(affine),
        obliquity_deg=round(obliquity_degrees(affine), 2),
        field_of_view_mm=tuple(round(float(f), 1) for f in sizes * shape),
        centre_mm=tuple(round(float(c), 2) for c in centre[:3]),
        dtype=str(data.dtype),
        intensity_range=(float(values.min()), float(values.max())) if values.size else (np.nan, np.nan),
        nonfinite_voxels=int((~finite).sum()) if finite is not None else 0,
        note=volume.metadata.get(WARNING, ""),
    )
