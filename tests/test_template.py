"""The bundled template kit on the 1 and 2 mm MNI grids."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainage.errors import InputError
from napari_brainage.space.template import downsample_labels, load_template, mni_grid


@pytest.mark.parametrize("resolution, shape", [(1, (182, 218, 182)), (2, (91, 109, 91))])
def test_mni_grids_match_fsl(resolution, shape):
    grid_shape, affine = mni_grid(resolution)
    assert grid_shape == shape
    # Voxel (0, 0, 0) sits at FSL's origin; the MNI origin falls on a voxel centre.
    np.testing.assert_array_equal(affine[:3, 3], [90, -126, -72])
    index = np.linalg.solve(affine, [0, 0, 0, 1])[:3]
    np.testing.assert_array_equal(index, np.rint(index))


def test_unsupported_resolution_is_refused():
    with pytest.raises(ValueError, match="resolution must be one of"):
        mni_grid(3)


def test_two_mm_kit_is_anatomically_sensible():
    kit = load_template(2)
    assert kit.shape == (91, 109, 91)
    # MNI templates are larger than an average brain (about 1.9 L with cerebellum).
    assert 1500 < kit.brain.sum() * kit.voxel_volume_ml < 2200
    ventricles = kit.label_mask("Left_Lateral_Ventricle", "Right_Lateral_Ventricle")
    hippocampi = kit.label_mask("Left_Hippocampus", "Right_Hippocampus")
    # Ventricles are dark CSF, hippocampi grey matter, in this T1.
    assert np.median(kit.t1[ventricles]) < 0.6 * np.median(kit.t1[kit.wm > 0.9])
    assert np.median(kit.gm[hippocampi]) > 0.6
    # Left structures lie at negative x (RAS).
    left = kit.label_mask("Left_Hippocampus")
    x_mm = (kit.affine @ np.vstack([np.argwhere(left).T, np.ones(left.sum())]))[0]
    assert np.all(x_mm < 0)
    with pytest.raises(InputError, match="unknown atlas labels"):
        kit.label_mask("Left_Hipocampus")


def test_label_downsampling_is_a_majority_vote():
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:6, 2:6, 2:6] = 3      # a 4-voxel cube
    labels[0, 0, 0] = 9            # a lone voxel: outvoted by background
    coarse = downsample_labels(labels, 2)
    assert coarse.shape == (4, 4, 4)
    assert coarse[2, 2, 2] == 3 and coarse[1, 1, 1] == 0  # 1,1,1 has 1/8 weight of label 3... and corners
    assert 9 not in coarse
    # Volume roughly preserved: 64 fine voxels = 8 coarse voxels.
    assert abs((coarse == 3).sum() - 8) <= 4
