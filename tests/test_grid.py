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


def test_a_1mm_scan_off_the_grid_is_low_passed_like_the_same_scan_on_it():
    """``--preprocess none`` (and every other use of the affine alone): a noisy 1 mm
    scan stored on a smaller field of view, shifted half a voxel, or in another axis
    order is low-passed before it is resampled onto the 2 mm grid, as on the grid's
    own route. A plain trilinear resampling aliased the noise (half a voxel off:
    noise sd on the 2 mm grid 1.47x the on-grid route's; now 0.95x), and the bundled
    predictor read such scans 4-9 y older than the same voxels on the MNI lattice."""
    kit = load_template(1)
    rng = np.random.default_rng(0)
    noisy = np.where(kit.brain, kit.t1 + rng.normal(0, 0.1 * kit.t1[kit.brain].mean(), kit.shape), 0)
    on_grid = to_mni_grid(Volume(noisy.astype(np.float32), kit.affine), 2)
    # The same voxels, cropped and stored right-to-left (another axis direction).
    box = tuple(slice(10, n - 10) for n in kit.shape)
    affine = kit.affine.copy()
    affine[:3, 3] = (kit.affine @ [10, 10, 10, 1])[:3]
    cropped = noisy[box]
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] = cropped.shape[0] - 1
    stored = Volume(cropped[::-1].astype(np.float32), affine @ flipped)
    assert not on_mni_grid(stored, 1)
    off_grid = to_mni_grid(stored, 2)
    brain = load_template(2).brain & (on_grid > 0) & (off_grid > 0)
    residual = off_grid[brain] - on_grid[brain]
    assert np.abs(residual).mean() < 0.02 * on_grid[brain].mean()
    # Half a voxel off the lattice: the interpolation differs, the noise left does not.
    shifted = Volume(noisy.astype(np.float32), kit.affine @ _translation(0.5))
    half = to_mni_grid(shifted, 2)
    smooth = np.where(kit.brain, kit.t1, 0).astype(np.float32)
    clean_half = to_mni_grid(Volume(smooth, kit.affine @ _translation(0.5)), 2)
    clean_grid = to_mni_grid(Volume(smooth, kit.affine), 2)
    inner = load_template(2).brain & (clean_grid > 0) & (clean_half > 0)
    noise_on_grid = (on_grid - clean_grid)[inner].std()
    noise_half = (half - clean_half)[inner].std()
    assert noise_half < 1.3 * noise_on_grid


def _translation(voxels: float) -> np.ndarray:
    move = np.eye(4)
    move[:3, 3] = voxels
    return move
