"""Lay a scan out for display in napari, and back, without resampling.

napari slides through the first array axis of a 3D layer and shows the last two
as (rows, columns); it handles an affine that scales, flips or slightly rotates
well, but not one that swaps axes (a sagittally acquired MPRAGE, say). So for
display we reorder voxel axes, by transposes and flips only (exact, no
interpolation), until they point (Superior, Anterior, Right), and give napari
the affine of that array with world axes ordered (z, y, x) in RAS millimetres.

napari's world coordinates therefore stay true scanner millimetres, and with
the camera's vertical axis pointing up (see ``_viewer.show_anatomically``) the
default view is axial, anterior at the top, the patient's right on the
screen's right (neurological convention); coronal and sagittal views come out
upright too.

``from_display`` undoes the reordering, so a layer saved from napari lands on
the voxel grid of the scan it came from.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

#: Direction each display array axis points to (first axis: the slider).
DISPLAY_AXCODES = ("S", "A", "R")
_DISPLAY_ORNT = axcodes2ornt(DISPLAY_AXCODES)

#: Permutation from RAS (x, y, z) to napari's world axis order (z, y, x).
#: It is its own inverse.
RAS_TO_WORLD = np.array(
    [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64
)

#: Tolerance (mm) under which a recomputed affine is taken to equal the source's.
_SNAP_MM = 1e-6


def to_display(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder ``data`` to (S, A, R) axes; return it with its napari affine.

    The napari affine maps display-array indices to world (z, y, x) mm.
    """
    transform = ornt_transform(io_orientation(affine), _DISPLAY_ORNT)
    display = np.ascontiguousarray(apply_orientation(data, transform))
    display_ras = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(transform, data.shape)
    return display, RAS_TO_WORLD @ display_ras


def from_display(
    data: np.ndarray,
    napari_affine: np.ndarray,
    source_affine: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`to_display`: voxel data and NIfTI affine.

    With ``source_affine`` (the affine of the file the layer was read from),
    axes are put back in the source file's order, and when the geometry is
    unchanged the source affine is returned bit for bit (recomputing it
    through flips can differ in the last floating-point digit).
    Without it the data stay in (S, A, R) order, with the matching affine.
    """
    display_ras = RAS_TO_WORLD @ np.asarray(napari_affine, dtype=np.float64)
    if source_affine is None:
        return data, display_ras
    source_affine = np.asarray(source_affine, dtype=np.float64)
    back = ornt_transform(io_orientation(display_ras), io_orientation(source_affine))
    source_data = np.ascontiguousarray(apply_orientation(data, back))
    affine = display_ras @ inv_ornt_aff(back, data.shape)
    if np.allclose(affine, source_affine, rtol=0, atol=_SNAP_MM):
        affine = source_affine.copy()
    return source_data, affine


def orientation_name(affine: np.ndarray) -> str:
    """Three-letter orientation of the voxel axes, e.g. 'RAS' or 'LPI'."""
    return "".join(nib.aff2axcodes(affine))


def obliquity_degrees(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and its nearest world axis."""
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = columns / np.linalg.norm(columns, axis=0)
    cosines = np.abs(unit).max(axis=0).clip(-1.0, 1.0)
    return float(np.degrees(np.arccos(cosines)).max())
