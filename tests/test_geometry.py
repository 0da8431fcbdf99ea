"""Display layout for napari: exact reordering to (S, A, R) and back."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import make_affine, phantom

from napari_brainage.space.display import (
    RAS_TO_WORLD,
    from_display,
    obliquity_degrees,
    orientation_name,
    to_display,
)

# All 48 voxel-axis layouts a NIfTI file can have (6 axis orders x 8 flips).
LAYOUTS = [tuple({0: "RL", 1: "AP", 2: "SI"}[axis][flip] for axis, flip in zip(order, flips))
           for order in itertools.permutations(range(3))
           for flips in itertools.product((0, 1), repeat=3)]


def test_there_are_48_distinct_layouts():
    assert len(set(LAYOUTS)) == 48


@pytest.mark.parametrize("axcodes", LAYOUTS, ids="".join)
def test_display_keeps_every_voxel_at_its_world_position(axcodes):
    affine = make_affine(axcodes=axcodes, tilt=(0, 0, 0))
    data = phantom(shape=(5, 6, 7))
    display, napari_affine = to_display(data, affine)

    # The display array points (S, A, R) with positive voxel sizes: no swap, no flip left.
    assert orientation_name(RAS_TO_WORLD @ napari_affine) == "SAR"
    assert np.all(np.diag(napari_affine)[:3] > 0)
    # Each source voxel's value sits where napari puts the same world point.
    rng = np.random.default_rng(1)
    for ijk in rng.integers(0, [5, 6, 7], size=(20, 3)):
        world_zyx = RAS_TO_WORLD @ affine @ np.append(ijk, 1)
        display_index = np.linalg.solve(napari_affine, world_zyx)[:3]
        np.testing.assert_allclose(display_index, np.rint(display_index), atol=1e-9)
        assert display[tuple(np.rint(display_index).astype(int))] == data[tuple(ijk)]


@pytest.mark.parametrize("axcodes", LAYOUTS, ids="".join)
def test_from_display_restores_source_voxels_and_affine_bit_for_bit(axcodes):
    affine = make_affine(axcodes=axcodes)  # oblique, anisotropic
    data = phantom(shape=(5, 6, 7))
    display, napari_affine = to_display(data, affine)

    back, back_affine = from_display(display, napari_affine, source_affine=affine)

    np.testing.assert_array_equal(back, data)
    np.testing.assert_array_equal(back_affine, affine)


def test_without_source_the_display_layout_is_written_with_its_own_affine():
    affine = make_affine()
    data = phantom(shape=(5, 6, 7))
    display, napari_affine = to_display(data, affine)
    out, out_affine = from_display(display, napari_affine)
    assert out.shape == display.shape
    assert orientation_name(out_affine) == "SAR"
    # Same world position for the same value: voxel (0,0,0) of the source.
    corner = affine @ [0, 0, 0, 1]
    index = np.rint(np.linalg.solve(out_affine, corner)[:3]).astype(int)
    assert out[tuple(index)] == data[0, 0, 0]


def test_obliquity():
    assert obliquity_degrees(np.diag([2.0, 2.0, 2.0, 1.0])) == 0.0
    assert obliquity_degrees(make_affine(tilt=(0, 0, 20))) == pytest.approx(20.0)
