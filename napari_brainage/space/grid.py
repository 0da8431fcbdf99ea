"""Between a scan's own voxel grid and the model's input space, both ways.

The model works on the 2 mm MNI grid, cropped (``InputSpec``). A scan already
on that grid is used as is; one on the 1 mm MNI grid is downsampled exactly as
the template is; any other scan is resampled onto the 2 mm grid through its
affine, i.e. assuming it is already aligned to MNI space (``preprocess``
registers raw scans and maps results back onto their grid).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from ..io import Volume
from ..model.card import InputSpec, normalise
from .template import downsample, load_template, mni_grid

#: Margin (2 mm voxels) of the template brain kept as every scan's brain mask.
#: A skull-stripped scan keeps 8 mm: scans in MNI space keep the residual
#: misregistration such scans have (up to 5 mm and 5 degrees in the synthetic
#: cohort), and cutting into a brain's edge changes the age (a 4 mm margin
#: moved held-out 1 mm scans by 0.6 y on average, 2.1 y at most; 8 mm by under
#: 0.1 y). A head with skull and scalp is registered first and keeps 4 mm: its
#: brain then lies within 1-2 mm of the template's, and a wider margin lets
#: skull and scalp in (a head in MNI space read up to 11 y off with 8 mm).
BRAIN_MASK_DILATION = {"skull-stripped": 4, "head": 2}


def brain_mask(kit, head: bool = False) -> np.ndarray:
    """Every scan's brain mask on the template kit's grid (bool, read-only): the
    template brain dilated by ``BRAIN_MASK_DILATION``'s margin (``head``: a scan
    with skull and scalp, registered)."""
    return dilated_brain(kit.resolution_mm, BRAIN_MASK_DILATION["head" if head else "skull-stripped"])


@lru_cache(maxsize=8)
def dilated_brain(resolution_mm: int, iterations: int) -> np.ndarray:
    """The template brain at ``resolution_mm`` dilated ``iterations`` voxels (bool, read-only, cached)."""
    mask = ndimage.binary_dilation(load_template(resolution_mm).brain, iterations=iterations)
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=4)
def eroded_brain(resolution_mm: int, iterations: int = 2) -> np.ndarray:
    """The template brain at ``resolution_mm`` eroded ``iterations`` voxels, away from
    its edge (bool, read-only, cached): where a tissue's core can be measured."""
    mask = ndimage.binary_erosion(load_template(resolution_mm).brain, iterations=iterations)
    mask.setflags(write=False)
    return mask


def on_mni_grid(volume: Volume, resolution_mm: int, atol: float = 1e-4) -> bool:
    """Whether ``volume`` lies on FSL's MNI grid at ``resolution_mm`` (shape and affine)."""
    shape, affine = mni_grid(resolution_mm)
    return volume.shape == shape and np.allclose(volume.affine, affine, atol=atol)


def resample(data: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray,
             order: int = 1) -> np.ndarray:
    """``data`` (on ``affine``) resampled onto the grid (``shape``, ``target_affine``).

    Trilinear by default; voxels outside the source field of view are 0.
    """
    voxel_map = np.linalg.inv(affine) @ target_affine  # target voxel -> source voxel
    return ndimage.affine_transform(np.asarray(data, dtype=np.float32), voxel_map[:3, :3],
                                    offset=voxel_map[:3, 3], output_shape=tuple(shape),
                                    order=order, mode="constant", cval=0.0)


def to_mni_grid(volume: Volume, resolution_mm: int = 2) -> np.ndarray:
    """The scan's intensities on the model's MNI grid (float32), through its affine.

    Onto the 2 mm grid, any scan is low-passed for the resolution it loses, as on
    every other route (``registration.resample_to_template`` with the identity): a
    plain trilinear resampling of a 1 mm scan aliases its noise, and the bundled
    predictor read such a scan 4-9 y older than the same voxels on the MNI lattice.
    """
    if on_mni_grid(volume, resolution_mm):
        return np.asarray(volume.data, dtype=np.float32)
    if resolution_mm == 2 and on_mni_grid(volume, 1):
        return downsample(np.asarray(volume.data, dtype=np.float32), 2)
    if resolution_mm == 2:
        import SimpleITK as sitk

        from .registration import resample_to_template

        return resample_to_template(volume, sitk.Transform())
    shape, affine = mni_grid(resolution_mm)
    data = np.nan_to_num(np.asarray(volume.data, dtype=np.float32))
    return resample(data, volume.affine, shape, affine)


def crop(data: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The model's box of a volume on the 2 mm MNI grid (a view, ``spec.crop_shape``)."""
    box = tuple(slice(s, s + n) for s, n in zip(spec.crop_start, spec.crop_shape))
    return data[box]


def uncrop(data: np.ndarray, spec: InputSpec, fill: float = 0.0) -> np.ndarray:
    """A model-space array placed back on the full MNI grid (``fill`` outside the crop)."""
    shape, _ = mni_grid(spec.resolution_mm)
    full = np.full(shape, fill, dtype=np.float32)
    full[tuple(slice(s, s + n) for s, n in zip(spec.crop_start, spec.crop_shape))] = data
    return full


def model_input(grid_data: np.ndarray, spec: InputSpec) -> np.ndarray:
    """What the networks are given, from intensities on the full MNI grid: cropped
    and normalised as ``spec`` says (float32, ``spec.crop_shape``). Non-finite and
    negative intensities count as background."""
    # Crop first: the clean-up is voxelwise, so only the cropped voxels need it
    # (``prepare`` has already cleaned the full grid once).
    data = crop(grid_data, spec)
    return normalise(np.where(np.isfinite(data), np.maximum(data, 0), 0).astype(np.float32))


def to_model_input(volume: Volume, spec: InputSpec) -> np.ndarray:
    """:func:`model_input` of a scan taken onto the grid through its affine alone:
    ``preprocess.prepare(volume, "none").model_input(spec)`` without the quality
    report or the intensity clean-up (benchmarks and tests on clean scans known to
    be in MNI space)."""
    grid = to_mni_grid(volume, spec.resolution_mm)
    return model_input(grid * brain_mask(load_template(spec.resolution_mm)), spec)
