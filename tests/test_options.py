"""The run options: one definition of each choice list, checked when made."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from napari_brainage.errors import BrainAgeError, InputError
from napari_brainage.options import (
    Device,
    MapOrigin,
    Method,
    Preprocessing,
    RunOptions,
    map_description,
    map_origin,
    population_description,
)


def test_run_options_convert_strings_and_refuse_unknown_choices():
    options = RunOptions(model_dir="models/mine", device="CPU", preprocessing="register", method="gradcam")
    assert options.model_dir == Path("models/mine")
    assert options.device is Device.CPU and options.device == "cpu"
    assert options.preprocessing is Preprocessing.REGISTER and options.method is Method.GRADCAM
    assert RunOptions(device="cuda").device is Device.GPU  # torch's word
    assert pickle.loads(pickle.dumps(options)) == options  # travels to Dask workers
    with pytest.raises(InputError, match="unknown preprocessing 'fast'; choose from auto, register, none"):
        RunOptions(preprocessing="fast")
    with pytest.raises(InputError, match="unknown method 'lime'"):
        RunOptions(method="lime")
    with pytest.raises(AttributeError):  # frozen: one run, one set of options
        options.device = Device.GPU


def test_every_method_has_a_label_and_a_definition_that_fits_a_nifti_description():
    assert Method.NOISE.definition == "importance = 1 - noise mask (U-Noise)"
    for method in Method:
        assert method.label and method.definition.startswith("importance = ")
        if method is not Method.NOISE:
            assert "noise mask" not in method.definition and method.label in method.definition
        model = "275d5e45+62e299c0" if method is Method.NOISE else "275d5e45"  # inference.map_model_id
        description = map_description(method, "warn", model)
        assert len(description) <= 80 and f"({method.value})" in description
        assert map_origin(description) == MapOrigin(method.value, model)  # read back from a file
        population = population_description(method, 100_000, "275d5e45")
        assert len(population) <= 80 and map_origin(population.encode()) == MapOrigin(method.value, "275d5e45")
    # Another tool's description, or a map written before maps said what made them: unknown, not a guess.
    assert map_origin("FSL5.0") == MapOrigin() and map_origin(None) == MapOrigin()
    assert map_origin("napari-brainage importance (noise); QC pass") == MapOrigin("noise", "")


def test_maps_of_different_methods_or_models_are_named_before_they_are_compared():
    from napari_brainage.compare import origin_mismatch

    noise, smoothgrad = MapOrigin("noise", "275d5e45+62e299c0"), MapOrigin("smoothgrad", "275d5e45")
    assert "different methods (subject: SmoothGrad; population: noise model (U-Noise))" in origin_mismatch(
        smoothgrad, noise)
    assert "different models (subject: 275d5e45+aaaaaaaa; population: 275d5e45+62e299c0)" in origin_mismatch(
        MapOrigin("noise", "275d5e45+aaaaaaaa"), noise)
    assert origin_mismatch(noise, noise) is None
    assert origin_mismatch(noise, MapOrigin()) is None and origin_mismatch(MapOrigin("", ""), smoothgrad) is None


def test_user_errors_are_value_errors_too():
    """``InputError`` is what the CLI prints in one line; it stays a ``ValueError`` for
    callers that caught those before."""
    from napari_brainage.io import VolumeError
    from napari_brainage.quality import QualityError

    for error in (InputError, VolumeError, QualityError):
        assert issubclass(error, BrainAgeError) and issubclass(error, ValueError)
