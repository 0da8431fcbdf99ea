"""summary: a scan described in words (napari-brainage info, the Scan info widget)."""

from __future__ import annotations

import numpy as np

from napari_brainage.io import Volume, load_volume
from napari_brainage.samples import sample_path
from napari_brainage.summary import summarise


def test_the_sample_is_described_as_it_is_stored():
    summary = summarise(load_volume(sample_path("synthetic_age50")))
    assert summary.shape == (91, 109, 91) and summary.voxel_size_mm == (2.0, 2.0, 2.0)
    assert summary.orientation == "LAS" and summary.obliquity_deg == 0
    assert summary.field_of_view_mm == (182.0, 218.0, 182.0)
    lines = summary.lines()
    assert lines[0].startswith("shape           91 x 109 x 91 voxels")
    assert "oblique" not in lines[2] and summary.nonfinite_voxels == 0


def test_an_oblique_scan_with_nans_says_so():
    angle = np.radians(20)
    affine = np.eye(4)
    affine[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    data = np.ones((10, 12, 14), np.float32)
    data[0, 0, :3] = np.nan
    summary = summarise(Volume(data, affine))
    assert summary.obliquity_deg == 20.0 and summary.nonfinite_voxels == 3
    assert "oblique by 20.0 deg" in summary.lines()[2] and "3 NaN/inf voxels" in summary.lines()[5]
    assert summary.intensity_range == (1.0, 1.0)
