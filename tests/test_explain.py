"""Importance methods behind one interface (noise model and Captum baselines)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brainage.explain import METHODS, MethodSettings, attribution
from napari_brainage.inference import importance_map, load_model
from napari_brainage.io import load_volume
from napari_brainage.samples import sample_path
from napari_brainage.space.grid import to_model_input

FAST = MethodSettings(ig_steps=4, smoothgrad_samples=2)


@pytest.fixture(scope="module")
def model_and_input(tiny_model):
    model, _ = load_model(tiny_model, "cpu", need_noise_model=True)
    x = torch.from_numpy(to_model_input(load_volume(sample_path("synthetic_age80")), model.card.input))[None, None]
    return model, x


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_a_unit_map_zero_outside_the_scan(model_and_input, method):
    model, x = model_and_input
    values = attribution(x, model, method, FAST)
    assert values.shape == tuple(x.shape[2:]) and values.dtype == np.float32
    inside = x[0, 0].numpy() > 0
    assert (values[~inside] == 0).all()
    assert values.min() >= 0 and values.max() <= 1
    assert values[inside].std() > 0  # not a constant
    if method != "noise":
        assert values.max() == 1.0  # scaled by the 99.5th percentile, then clipped


def test_saliency_matches_a_plain_autograd_gradient(model_and_input):
    model, x = model_and_input
    probe = x.clone().requires_grad_(True)
    model.predictor(probe).sum().backward()
    gradient = probe.grad[0, 0].abs().numpy()
    values = attribution(x, model, "saliency")
    inside = x[0, 0].numpy() > 0
    # Same ordering of voxels (the map is the gradient's magnitude, rescaled).
    assert np.corrcoef(values[inside], np.minimum(gradient[inside], np.percentile(gradient[inside], 99.5)))[0, 1] \
        > 0.999


def test_gradcam_is_coarse_and_occlusion_is_blockwise(model_and_input):
    model, x = model_and_input
    cam = attribution(x, model, "gradcam")
    occlusion = attribution(x, model, "occlusion")
    inside = x[0, 0].numpy() > 0
    # Occlusion is constant within each 16-voxel block (inside the scan).
    block = occlusion[16:32, 16:32, 16:32][inside[16:32, 16:32, 16:32]]
    assert block.size and np.ptp(block) == 0
    # Grad-CAM comes from a 2 x 3 x 2 feature map: neighbouring voxels barely differ.
    assert np.abs(np.diff(cam, axis=0))[inside[1:] & inside[:-1]].max() < 0.2


def test_methods_reach_the_scan_grid_and_bad_names_are_refused(tiny_model):
    model, device = load_model(tiny_model, "cpu", need_noise_model=True)
    volume = load_volume(sample_path("synthetic_age50"))
    saliency = importance_map(volume, model, device, method="saliency")
    assert saliency.shape == volume.shape
    np.testing.assert_array_equal(saliency.affine, volume.affine)
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        importance_map(volume, model, device, method="lime")


def test_noise_map_is_the_mean_over_the_scan_and_its_mirror_image(model_and_input):
    model, x = model_and_input
    mirrored = torch.flip(x, dims=[2])
    single = attribution(x, model, "noise", MethodSettings(mirror_average=False))
    single_of_mirror = attribution(mirrored, model, "noise", MethodSettings(mirror_average=False))
    averaged = attribution(x, model, "noise")  # the default
    inside = x[0, 0].numpy() > 0
    expected = np.where(inside, (single + single_of_mirror[::-1]) / 2, 0)
    np.testing.assert_allclose(averaged, expected, atol=1e-5)
    # So the map of the mirrored scan is exactly the mirrored map, whatever side the model favours...
    np.testing.assert_allclose(attribution(mirrored, model, "noise")[::-1], averaged, atol=1e-5)
    # ...which a single pass does not give.
    assert np.abs(single_of_mirror[::-1] - single)[inside].max() > 1e-3


def test_baselines_stay_single_pass_unless_mirror_averaging_is_asked_for(model_and_input):
    model, x = model_and_input
    mirrored = torch.flip(x, dims=[2])
    plain = attribution(x, model, "saliency")
    assert not np.allclose(attribution(mirrored, model, "saliency")[::-1], plain, atol=1e-4)
    both = MethodSettings(mirror_average=True)
    np.testing.assert_allclose(attribution(mirrored, model, "saliency", both)[::-1],
                               attribution(x, model, "saliency", both), atol=1e-5)
