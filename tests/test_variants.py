"""The real-world variant generator (napari_brainage.variants): every file reads, and keeps
the clean scan's world geometry and intensities where it says it does.

The variants are made from the bundled 2 mm synthetic subject (``variant_files`` in
conftest), so re-gridded kinds have 2.4 mm voxels, "5 mm" slices are 10 mm, and so on.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from napari_brainage.io import load_volume
from napari_brainage.variants import EXPECTED, FIDELITIES, GROUPS, KINDS, select_kinds, write_variants


@pytest.fixture(scope="module")
def by_name(variant_files):
    return {variant.name: variant for variant in variant_files}


@pytest.fixture(scope="module")
def loaded(variant_files):
    return {variant.name: load_volume(variant.path) for variant in variant_files}


def interior_points(clean, n=300, seed=0) -> np.ndarray:
    """Voxel indices (n x 3) well inside the clean brain (2 voxels from its edge)."""
    brain = ndimage.binary_erosion(np.asarray(clean.data) > 0, iterations=2)
    points = np.argwhere(brain)
    return points[np.random.default_rng(seed).choice(len(points), n, replace=False)]


def variant_coordinates(variant, volume, clean, points) -> np.ndarray:
    """Where (voxel coordinates of ``volume``) the clean voxels ``points`` lie in the variant."""
    homogeneous = np.c_[points, np.ones(len(points))].T
    clean_to_variant_world = np.linalg.inv(variant.world_to_clean)
    return (np.linalg.inv(volume.affine) @ clean_to_variant_world @ clean.affine @ homogeneous)[:3].T


def test_every_kind_is_written_once_and_reads(variant_files, loaded):
    assert [v.name for v in variant_files] == list(KINDS)
    for variant in variant_files:
        assert variant.path.is_file(), variant.name
        assert variant.group in GROUPS and variant.expected in EXPECTED and variant.fidelity in FIDELITIES
        assert variant.description, variant.name
        assert loaded[variant.name].data.ndim == 3  # load_volume raised no VolumeError
    assert {v.group for v in variant_files} == set(GROUPS)


LATTICE = [k.name for k in KINDS.values() if k.name not in
           ("moved_1", "moved_2", "moved_3", "tilt25", "tilt40", "head_moved_lia")
           and k.group in ("geometry", "storage", "intensity", "head", "partial")]


@pytest.mark.parametrize("name", LATTICE)
def test_lattice_variants_keep_voxels_at_the_same_world_points(name, by_name, loaded, variant_clean):
    """Through the file's own affine, the clean scan's voxels land on voxels of the variant
    holding a * clean + b (exactly, or to the stored integer type's rounding)."""
    variant, volume = by_name[name], loaded[name]
    assert variant.fidelity in ("exact", "quantised")
    points = interior_points(variant_clean)
    coords = variant_coordinates(variant, volume, variant_clean, points)
    np.testing.assert_allclose(coords, np.rint(coords), atol=1e-3)
    coords = np.rint(coords).astype(int)
    inside = np.all((coords >= 0) & (coords < volume.shape), axis=1)
    assert inside.mean() > (0.5 if variant.group == "partial" else 0.999)
    got = volume.data[tuple(coords[inside].T)].astype(np.float64)
    a, b = variant.intensity
    want = a * np.asarray(variant_clean.data, dtype=np.float64)[tuple(points[inside].T)] + b
    finite = np.isfinite(got)
    assert finite.mean() > 0.9
    tolerance = 0.5 + 1e-6 * abs(b) if variant.fidelity == "quantised" else 1e-5 * (abs(a) * 300 + abs(b))
    np.testing.assert_allclose(got[finite], want[finite], atol=tolerance)


@pytest.mark.parametrize("name", ["moved_1", "moved_2", "moved_3", "tilt25", "tilt40", "head_moved_lia"])
def test_moved_variants_hold_the_same_tissue_at_moved_points(name, by_name, loaded, variant_clean):
    """The moved head, sampled where ``world_to_clean`` says each clean voxel went, is the clean
    scan up to interpolation (and is not where the head was before the move)."""
    variant, volume = by_name[name], loaded[name]
    points = interior_points(variant_clean)
    want = np.asarray(variant_clean.data, dtype=np.float64)[tuple(points.T)]
    coords = variant_coordinates(variant, volume, variant_clean, points)
    got = ndimage.map_coordinates(volume.data.astype(np.float64), coords.T, order=1)
    assert np.corrcoef(got, want)[0, 1] > 0.9
    assert np.median(np.abs(got - want)) < 0.1 * np.percentile(want, 90)
    unmoved = np.linalg.inv(volume.affine) @ variant_clean.affine @ np.c_[points, np.ones(len(points))].T
    wrong = ndimage.map_coordinates(volume.data.astype(np.float64), unmoved[:3], order=1)
    assert np.corrcoef(wrong, want)[0, 1] < np.corrcoef(got, want)[0, 1] - 0.1


def test_axis_order_variants(loaded, variant_clean):
    assert "".join(variant_clean.axcodes) == "LAS"
    assert "".join(loaded["axes_ras"].axcodes) == "RAS"
    assert "".join(loaded["axes_psl"].axcodes) == "PSL"
    assert "".join(loaded["head_moved_lia"].axcodes) == "LIA"


def test_negative_qfac_is_what_places_the_slices(by_name, variant_clean):
    image = nib.load(by_name["qfac_negative"].path)
    header = image.header
    assert int(header["sform_code"]) == 0 and int(header["qform_code"]) == 1
    assert header["pixdim"][0] == -1
    np.testing.assert_allclose([header["quatern_b"], header["quatern_c"], header["quatern_d"]], 0, atol=1e-6)
    # Voxel (i, j, k) of the stored RAI array is clean voxel (X-1-i, j, Z-1-k) at the same world point.
    flipped = np.asarray(variant_clean.data)[::-1, :, ::-1]
    np.testing.assert_array_equal(np.asarray(image.dataobj), flipped)
    x, _, z = variant_clean.shape
    expected = variant_clean.affine @ np.array([[-1, 0, 0, x - 1], [0, 1, 0, 0], [0, 0, -1, z - 1], [0, 0, 0, 1]])
    np.testing.assert_allclose(image.affine, expected, atol=1e-4)
    ignoring_qfac = header.copy()
    ignoring_qfac["pixdim"][0] = 1
    assert not np.allclose(ignoring_qfac.get_qform(), expected, atol=1)  # qfac really matters


def test_sform_wins_over_a_disagreeing_qform(by_name, variant_clean):
    image = nib.load(by_name["sform_qform_disagree"].path)
    assert int(image.header["sform_code"]) == 4 and int(image.header["qform_code"]) == 1
    np.testing.assert_allclose(image.affine, variant_clean.affine, atol=1e-4)
    corner = np.array([*variant_clean.shape, 1]) - [1, 1, 1, 0]
    assert np.linalg.norm((image.header.get_qform() - image.header.get_sform()) @ corner) > 20


def test_storage_variants_are_stored_as_named(by_name, variant_clean):
    def gzipped(path):
        return path.read_bytes()[:2] == b"\x1f\x8b"

    assert nib.load(by_name["dim4"].path).shape == (*variant_clean.shape, 1)
    assert by_name["upper_niigz"].path.name.endswith(".NII.GZ") and gzipped(by_name["upper_niigz"].path)
    assert by_name["upper_nii"].path.name.endswith(".NII") and not gzipped(by_name["upper_nii"].path)
    assert by_name["uncompressed"].path.name.endswith(".nii") and not gzipped(by_name["uncompressed"].path)
    with gzip.open(by_name["pad300"].path) as handle:  # the default is compressed
        assert handle.read(4)
    uint16 = nib.load(by_name["uint16"].path)
    assert uint16.get_data_dtype() == np.uint16 and np.asarray(uint16.dataobj).max() == 4095
    scaled = nib.load(by_name["int16_scaled"].path)
    assert scaled.get_data_dtype() == np.int16
    assert (scaled.dataobj.slope, scaled.dataobj.inter) == (0.5, 100.0)
    assert nib.load(by_name["float64"].path).get_data_dtype() == np.float64
    assert nib.load(by_name["zscore_image"].path).get_data_dtype() == np.float64


def test_intensity_variants(by_name, loaded, variant_clean):
    brain = np.asarray(variant_clean.data) > 0
    negative = nib.load(by_name["negative_inter"].path)
    assert negative.dataobj.inter == -5000 and loaded["negative_inter"].data.max() < 0
    bad = ~np.isfinite(loaded["nan_inf"].data)
    assert bad.sum() == 20 and np.isnan(loaded["nan_inf"].data).sum() == 10 and brain[bad].all()
    zimage = loaded["zscore_image"].data
    assert np.unique(zimage[~brain]).size == 1 and zimage[~brain][0] < 0
    zbrain = loaded["zscore_brain"].data
    assert np.all(zbrain[~brain] == 0) and (zbrain[brain] < 0).mean() > 0.2
    linear = loaded["intensity_linear"].data
    assert np.allclose(linear[~brain], 250)


def test_head_variants_have_a_head_around_the_clean_brain(loaded, variant_clean):
    head = loaded["head_mni"]
    assert np.all(head.shape * head.voxel_sizes >= 255)
    assert np.all(head.shape * head.voxel_sizes >= np.array(variant_clean.shape) * variant_clean.voxel_sizes)
    zero = np.asarray(head.data) == 0
    assert zero.mean() < 0.05  # noise everywhere outside the brain, not an empty background
    scalp = np.asarray(head.data) > 1.0 * np.percentile(np.asarray(variant_clean.data)[variant_clean.data > 0], 90)
    assert scalp.sum() > 0.05 * (variant_clean.data > 0).sum()  # bright non-brain tissue (scalp, fat)
    moved = loaded["head_moved_lia"]
    assert moved.shape == head.shape and np.allclose(moved.voxel_sizes, variant_clean.voxel_sizes)


def test_resolution_variants(loaded, variant_clean):
    zoom = variant_clean.voxel_sizes
    np.testing.assert_allclose(loaded["slices5mm"].voxel_sizes, zoom * [1, 1, 5])
    np.testing.assert_allclose(loaded["slices3mm"].voxel_sizes, zoom * [1, 1, 3])
    np.testing.assert_allclose(loaded["iso3mm"].voxel_sizes, zoom * 3)
    upsampled = loaded["slices5mm_upsampled"]
    assert upsampled.shape == variant_clean.shape and np.allclose(upsampled.affine, variant_clean.affine)
    # Block centres: the thick slab's first voxel is the centre of the first 5 clean slices.
    np.testing.assert_allclose(loaded["slices5mm"].affine[:3, 3],
                               (variant_clean.affine @ [0, 0, 2, 1])[:3], atol=1e-4)
    for name in ("upsampled2x", "upsampled3x", "smoothed", "smoothed_mild"):  # the header cannot tell
        assert loaded[name].shape == variant_clean.shape and np.allclose(loaded[name].affine, variant_clean.affine)
    for name in ("sampled2mm", "acquired2mm"):  # voxels twice as large, centred on every second clean voxel
        np.testing.assert_allclose(loaded[name].voxel_sizes, zoom * 2)
        np.testing.assert_allclose(loaded[name].affine[:3, 3], variant_clean.affine[:3, 3], atol=1e-4)
    clean = np.asarray(variant_clean.data, np.float32)
    np.testing.assert_allclose(loaded["sampled2mm"].data, clean[::2, ::2, ::2])
    acquired = np.asarray(loaded["acquired2mm"].data, np.float32)  # band-limited: near, not equal
    assert 0.9 < np.corrcoef(acquired.ravel(), clean[::2, ::2, ::2].ravel())[0, 1] < 0.9999
    half = loaded["upsampled_half"]
    np.testing.assert_allclose(half.voxel_sizes, zoom / 2)
    assert half.shape == tuple(2 * n for n in variant_clean.shape)
    # The fine voxels tile the coarse ones: fine voxels 0 and 1 lie a quarter voxel either side of coarse voxel 0.
    np.testing.assert_allclose((half.affine @ [0.5, 0.5, 0.5, 1])[:3], variant_clean.affine[:3, 3], atol=1e-4)


def test_partial_variants_cut_the_named_slab(loaded, variant_clean):
    def brain_z(volume):
        k = np.flatnonzero((np.asarray(volume.data) != 0).any(axis=(0, 1)))
        return volume.affine[2, 3] + volume.affine[2, 2] * k

    clean = brain_z(variant_clean)
    dz = variant_clean.voxel_sizes[2]
    assert clean.max() - 40 - dz <= brain_z(loaded["cut_top40"]).max() <= clean.max() - 40
    assert clean.min() + 30 <= brain_z(loaded["cut_bottom30"]).min() <= clean.min() + 30 + dz
    assert brain_z(loaded["cut_top40"]).min() == clean.min()


def test_contrast_and_non_anatomical_variants(loaded, variant_clean):
    clean = np.asarray(variant_clean.data, dtype=np.float64)
    wm = np.percentile(clean[clean > 0], 90)
    csf, grey, white = (clean > 0) & (clean < 0.4 * wm), (clean > 0.7 * wm) & (clean < 0.8 * wm), clean > 0.95 * wm
    t2, flair = loaded["t2_like"].data, loaded["flair_like"].data
    assert t2[csf].mean() > t2[grey].mean() > t2[white].mean()
    assert flair[grey].mean() > flair[white].mean() > flair[csf].mean()
    assert set(np.unique(loaded["label_tissue"].data)) == {0, 1, 2, 3}
    atlas = loaded["label_atlas"].data
    assert atlas.dtype == np.uint8 and 100 <= atlas.max() <= 113
    stat = loaded["stat_map"]
    np.testing.assert_allclose(stat.voxel_sizes, variant_clean.voxel_sizes * 3)
    assert stat.data.min() < -2 and stat.data.max() > 2 and (stat.data == 0).mean() > 0.3


def test_same_seed_same_files_other_seed_other_moves(tmp_path, variant_clean):
    kinds = ["sform_qform_disagree", "moved_1", "nan_inf", "stat_map"]
    first = write_variants(variant_clean, tmp_path / "a", seed=3, kinds=kinds)
    again = write_variants(variant_clean, tmp_path / "b", seed=3, kinds=kinds)
    other = write_variants(variant_clean, tmp_path / "c", seed=4, kinds=kinds)
    for a, b in zip(first, again):
        assert a.path.read_bytes() == b.path.read_bytes(), a.name
    for a, c in zip(first, other):
        assert a.path.read_bytes() != c.path.read_bytes(), a.name
    # A kind's file does not depend on which other kinds are written with it.
    alone = write_variants(variant_clean, tmp_path / "d", seed=3, kinds=["nan_inf"], prefix="sub-01_")
    assert alone[0].path.name == "sub-01_nan_inf.nii.gz"
    assert alone[0].path.read_bytes() == first[2].path.read_bytes()


def test_select_kinds_by_name_or_group():
    assert [k.name for k in select_kinds(["contrast", "dim4"])] == ["dim4", "t2_like", "flair_like"]
    with pytest.raises(ValueError, match="unknown variant kind"):
        select_kinds(["nonsense"])
