"""space.grid: the model's crop, its input and the brain mask, on the real template."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainage.io import Volume, load_volume
from napari_brainage.model.card import InputSpec
from napari_brainage.samples import sample_path
from napari_brainage.space.grid import (
    brain_mask,
    crop,
    model_input,
    on_mni_grid,
    resample,
    to_mni_grid,
    uncrop,
)
from napari_brainage.space.template import load_template, mni_grid


def test_crop_and_uncrop_are_inverse_where_the_brain_is():
    spec = InputSpec()
    kit = load_template(2)
    cropped = crop(kit.t1, spec)
    assert cropped.shape == spec.crop_shape
    back = uncrop(cropped, spec)
    assert back.shape == kit.shape
    np.testing.assert_array_equal(back[kit.brain], kit.t1[kit.brain])  # the crop holds the whole brain
    outside = np.ones(kit.shape, bool)
    outside[tuple(slice(a, a + n) for a, n in zip(spec.crop_start, spec.crop_shape))] = False
    assert (back[outside] == 0).all()  # uncrop fills the rest with 0


def test_model_input_is_normalised_to_a_mean_of_one_and_ignores_negatives_and_nans():
    spec = InputSpec()
    grid = to_mni_grid(load_volume(sample_path("synthetic_age50")), 2).astype(np.float32)
    x = model_input(grid, spec)
    assert x.dtype == np.float32 and x.shape == spec.crop_shape
    assert x[x != 0].mean() == pytest.approx(1.0, abs=1e-5)
    spoiled = grid.copy()
    spoiled[spoiled == 0] = -5.0                  # background below zero
    nan_at = (45, 54, 40)
    spoiled[nan_at] = np.nan                      # one non-finite voxel inside the brain
    y = model_input(spoiled, spec)
    assert np.isfinite(y).all() and (y >= 0).all()
    inside = np.zeros(spec.crop_shape, bool)
    inside[tuple(np.subtract(nan_at, spec.crop_start))] = True
    assert y[inside] == 0 and x[inside] > 0       # the NaN voxel counts as background
    ratio = y[(x > 0) & ~inside] / x[(x > 0) & ~inside]
    assert ratio.std() < 1e-6                     # every other voxel only rescaled (one fewer in the mean)
    assert (y[x == 0] == 0).all()


def test_the_brain_mask_keeps_a_wider_margin_for_skull_stripped_scans_than_for_heads():
    kit = load_template(2)
    stripped, head = brain_mask(kit), brain_mask(kit, head=True)
    assert (stripped & kit.brain).sum() == kit.brain.sum() and (head & kit.brain).sum() == kit.brain.sum()
    assert head.sum() < stripped.sum() and not (head & ~stripped).any()
    with pytest.raises(ValueError):
        stripped[0, 0, 0] = True  # shared and cached: read-only


def test_on_mni_grid_and_resampling_through_the_affine():
    shape, affine = mni_grid(2)
    scan = load_volume(sample_path("synthetic_age80"))
    assert on_mni_grid(scan, 2) and not on_mni_grid(scan, 1)
    # A whole-voxel shift through the affine moves the voxels by one, exactly.
    moved = np.eye(4)
    moved[:3, 3] = [1, 0, 0]
    assert not on_mni_grid(Volume(scan.data, affine @ moved), 2)
    out = resample(scan.data, affine @ moved, shape, affine, order=1)
    np.testing.assert_array_equal(out[1:], np.asarray(scan.data, np.float32)[:-1])
    assert (out[0] == 0).all()  # outside the moved field of view
