"""Reading and writing scans: exact geometry, clear errors, atomic writes."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_affine, phantom, write_nifti

from napari_brainage import io
from napari_brainage.io import Volume, VolumeError, load_volume, save_volume


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_round_trip_keeps_data_and_affine_exactly(tmp_path, dtype, suffix):
    affine = make_affine()  # oblique, axes swapped, x flipped, 0.9/1.2/2.5 mm voxels
    source = write_nifti(tmp_path / f"source{suffix}", phantom(dtype=dtype), affine)

    first = load_volume(source)
    save_volume(first, tmp_path / f"copy{suffix}")
    second = load_volume(tmp_path / f"copy{suffix}")

    assert second.data.dtype == first.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(second.data, first.data)
    np.testing.assert_array_equal(second.affine, first.affine)
    # NIfTI-1 stores the affine as float32: the first read is the source to that precision.
    np.testing.assert_allclose(first.affine, affine, atol=1e-5)
    np.testing.assert_allclose(first.voxel_sizes, [0.9, 1.2, 2.5], atol=1e-5)
    assert first.axcodes == nib.aff2axcodes(affine)


def test_scaled_integers_are_read_as_float_and_round_trip(tmp_path):
    raw = phantom(dtype=np.int16)
    image = nib.Nifti1Image(raw, make_affine())
    image.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, path)

    volume = load_volume(path)

    assert volume.data.dtype == np.float32
    np.testing.assert_allclose(volume.data, raw * 0.5 + 10.0, rtol=1e-6)
    save_volume(volume, tmp_path / "out.nii.gz")
    np.testing.assert_array_equal(load_volume(tmp_path / "out.nii.gz").data, volume.data)


def test_single_volume_4d_file_is_read_as_3d(tmp_path):
    data = phantom()[..., None]
    volume = load_volume(write_nifti(tmp_path / "one_volume.nii.gz", data, np.eye(4)))
    assert volume.shape == data.shape[:3]


def test_saving_keeps_source_header_fields(tmp_path, oblique_scan):
    volume = load_volume(oblique_scan)
    volume.header["descrip"] = b"subject 007"
    save_volume(volume, tmp_path / "map.nii.gz")
    header = nib.load(tmp_path / "map.nii.gz").header
    assert header["descrip"].tobytes().startswith(b"subject 007")
    assert int(header["sform_code"]) == 1  # the source's code, not a default


@pytest.mark.parametrize("description, expected", [
    ("napari-brainage preprocess (auto) of sub-ADNI002S0295_ses-M00_acq-MPRAGE_run-1_T1w.nii.gz",
     b"napari-brainage preprocess (auto) of sub-ADNI002S0295_ses-M00_acq-MPRAGE_run-..."),
    ("Cohen's d: Ünïcødé vs 控制; Søren\tmap", b"Cohen's d: Unicode vs ??; Soren map"),
])
def test_a_long_or_non_ascii_description_is_folded_to_fit_never_refused(tmp_path, description, expected):
    """The descrip field holds 80 ASCII bytes; refusing more failed every scan with a long
    (BIDS) or accented file name in preprocess, and population runs at their very end."""
    path = save_volume(Volume(phantom().astype(np.float32), np.eye(4) * [2, 2, 2, 1]), tmp_path / "m.nii.gz",
                       description=description)
    written = nib.load(path).header["descrip"].tobytes().rstrip(b"\0")
    assert written == expected and len(written) <= 80


# ----------------------------------------------------------------- bad input
def _write_raw(path, content: bytes):
    path.write_bytes(content)
    return path


def _nifti(tmp_path, name, data, affine=None):
    return write_nifti(tmp_path / name, data, np.eye(4) if affine is None else affine)


def _truncated(tmp_path):
    full = _nifti(tmp_path, "full.nii", phantom())
    blob = full.read_bytes()
    return _write_raw(tmp_path / "truncated.nii", blob[: len(blob) // 2])


def _huge_header_only(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 2048))
    header.set_data_dtype(np.float32)
    path = tmp_path / "huge.nii"
    with open(path, "wb") as handle:
        header.write_to(handle)
    return path


def _affine_with(change):
    affine = np.eye(4)
    change(affine)
    return affine


BAD_INPUTS = {
    "wrong type": (lambda t: _write_raw(t / "scan.png", b"\x89PNG...."), "not a NIfTI"),
    "missing": (lambda t: t / "absent.nii.gz", "no such file"),
    "zero bytes": (lambda t: _write_raw(t / "empty.nii.gz", b""), "empty (0 bytes)"),
    "corrupt gzip": (lambda t: _write_raw(t / "corrupt.nii.gz", b"\x1f\x8b" + os.urandom(500)), "corrupt"),
    "not gzip at all": (lambda t: _write_raw(t / "junk.nii.gz", os.urandom(2000)), "corrupt"),
    "truncated data": (_truncated, "truncated or corrupt"),
    "2D": (lambda t: _nifti(t, "slice.nii.gz", phantom((30, 30, 1))), "2D"),
    "flat 3D": (lambda t: _nifti(t, "flat.nii.gz", phantom((30, 1, 30))), "2D"),
    "4D": (lambda t: _nifti(t, "fmri.nii.gz", phantom((10, 10, 10, 5))), "4D with 5 volumes"),
    "5D": (lambda t: _nifti(t, "five.nii.gz", phantom((6, 6, 6, 2, 2))), "5D"),
    "zero-size": (lambda t: _nifti(t, "zero.nii", np.zeros((10, 0, 10), np.float32)), "empty"),
    "NaN only": (lambda t: _nifti(t, "nan.nii.gz", np.full((8, 8, 8), np.nan, np.float32)), "NaN"),
    "constant": (lambda t: _nifti(t, "blank.nii.gz", np.zeros((8, 8, 8), np.int16)), "every voxel has the value 0"),
    "zeros and infinities": (lambda t: _nifti(t, "inf.nii.gz", np.where(phantom() > 0, np.inf, 0).astype(np.float32)),
                             f"every finite voxel has the value 0.0 and {np.count_nonzero(phantom() > 0)} are NaN "
                             "or infinite"),
    "huge": (_huge_header_only, "too large"),
    "singular affine": (lambda t: _nifti(t, "sing.nii.gz", phantom(),
                                         _affine_with(lambda a: a.__setitem__((slice(0, 3), 1), a[:3, 0]))),
                        "singular"),
    "absurd voxel size": (lambda t: _nifti(t, "big_vox.nii.gz", phantom(), np.diag([200.0, 1, 1, 1])),
                          "voxel sizes"),
    "absurd origin": (lambda t: _nifti(t, "far.nii.gz", phantom(),
                                       _affine_with(lambda a: a.__setitem__((0, 3), 1e7))), "10 m"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_clear_error_naming_file_and_problem(tmp_path, case):
    make, expected = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(VolumeError) as caught:
        load_volume(path)
    message = str(caught.value)
    assert path.name in message
    assert expected in message


def test_nonfinite_affine_is_refused():
    assert "NaN" in io.affine_problem(_affine_with(lambda a: a.__setitem__((1, 1), np.nan)), (8, 8, 8))
    assert io.affine_problem(make_affine(), (64, 64, 64)) is None


def test_partially_nan_scan_is_accepted(tmp_path):
    data = phantom()
    data[:3] = np.nan  # e.g. outside the field of view after another tool resampled
    volume = load_volume(_nifti(tmp_path, "partial_nan.nii.gz", data))
    assert np.isnan(volume.data).sum() == np.isnan(data).sum()


# ------------------------------------------------------------------ writing
def test_existing_file_is_not_replaced_without_overwrite(tmp_path, oblique_scan):
    volume = load_volume(oblique_scan)
    target = tmp_path / "map.nii.gz"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        save_volume(volume, target)
    assert target.read_bytes() == b"precious"
    save_volume(volume, target, overwrite=True)
    np.testing.assert_array_equal(load_volume(target).data, volume.data)


def _failing_save(image, filename):
    """Write half a file, then fail the way a full disk would."""
    with open(filename, "wb") as handle:
        handle.write(b"\x1f\x8b partial")
    raise OSError(28, "No space left on device")


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, oblique_scan, monkeypatch):
    volume = load_volume(oblique_scan)
    fresh = tmp_path / "out" / "fresh.nii.gz"
    fresh.parent.mkdir()
    existing = tmp_path / "out" / "existing.nii.gz"
    existing.write_bytes(b"previous map")
    monkeypatch.setattr(io.nib, "save", _failing_save)

    for target in (fresh, existing):
        with pytest.raises(OSError, match="No space"):
            save_volume(volume, target, overwrite=True)

    assert not fresh.exists()
    assert existing.read_bytes() == b"previous map"
    assert sorted(p.name for p in fresh.parent.iterdir()) == ["existing.nii.gz"]


def test_written_file_has_normal_permissions(tmp_path, oblique_scan):
    old = os.umask(0o022)
    try:
        path = save_volume(load_volume(oblique_scan), tmp_path / "map.nii.gz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_refuses_to_write_other_formats_and_unusable_affines(tmp_path):
    with pytest.raises(VolumeError, match=".nii.gz or .nii"):
        save_volume(Volume(phantom(), np.eye(4)), tmp_path / "map.png")
    with pytest.raises(VolumeError, match="NaN"):
        save_volume(Volume(phantom(), np.full((4, 4), np.nan)), tmp_path / "map.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_gzip_output_is_really_compressed(tmp_path, oblique_scan):
    path = save_volume(load_volume(oblique_scan), tmp_path / "map.nii.gz")
    with gzip.open(path) as handle:
        assert len(handle.read(348)) == 348  # a NIfTI-1 header inside a gzip stream


# --------------------------------------------------------------------- ANALYZE and NIfTI pairs
def test_analyze_pair_is_read_with_nibabels_affine_and_a_note(tmp_path):
    data = phantom(dtype=np.int16)
    nib.save(nib.AnalyzeImage(data, np.diag([2.0, 3.0, 4.0, 1.0])), tmp_path / "old.hdr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.hdr", "old.img"]
    expected = nib.load(tmp_path / "old.hdr").affine  # no orientation stored: nibabel's reading of it

    for name in ("old.hdr", "old.img"):  # either name opens the pair
        volume = load_volume(tmp_path / name)
        np.testing.assert_array_equal(volume.data, data)
        assert volume.data.dtype == np.int16
        np.testing.assert_array_equal(volume.affine, expected)
        np.testing.assert_allclose(volume.voxel_sizes, [2.0, 3.0, 4.0])
        assert volume.axcodes == ("L", "A", "S")  # radiological, as ANALYZE tools assume
        assert "no orientation" in volume.metadata[io.WARNING]
        assert io.strip_suffix(volume.path) == "old"

    # A map derived from it is written as NIfTI on the same grid.
    save_volume(Volume(data.astype(np.float32), volume.affine, volume.header), tmp_path / "map.nii.gz")
    written = load_volume(tmp_path / "map.nii.gz")
    np.testing.assert_allclose(written.affine, expected, atol=1e-5)
    assert written.metadata[io.WARNING] == io.NO_ORIENTATION_WARNING  # the map claims no orientation either


def test_nifti_pair_keeps_its_oblique_affine(tmp_path):
    affine = make_affine()
    image = nib.Nifti1Pair(phantom(), affine)
    image.set_sform(affine, code=1)
    nib.save(image, tmp_path / "pair.hdr")
    assert (tmp_path / "pair.img").is_file()

    volume = load_volume(tmp_path / "pair.hdr")
    np.testing.assert_array_equal(volume.data, phantom())
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    assert io.WARNING not in volume.metadata  # NIfTI: the orientation is in the header
    save_volume(volume, tmp_path / "copy.nii.gz")  # its header's fields go into a single-file NIfTI
    copy = nib.load(tmp_path / "copy.nii.gz")
    assert copy.header["magic"] == b"n+1"
    np.testing.assert_array_equal(load_volume(tmp_path / "copy.nii.gz").affine, volume.affine)


def test_half_a_pair_is_refused_naming_the_missing_file(tmp_path):
    nib.save(nib.AnalyzeImage(phantom(), np.eye(4)), tmp_path / "a.hdr")
    (tmp_path / "a.img").unlink()
    with pytest.raises(VolumeError, match=r"a\.hdr: the header of an ANALYZE/NIfTI pair, but its voxel file "
                                          r"a\.img is missing"):
        load_volume(tmp_path / "a.hdr")

    nib.save(nib.Nifti1Pair(phantom(), np.eye(4)), tmp_path / "B.HDR")
    (tmp_path / "B.HDR").unlink()
    with pytest.raises(VolumeError, match=r"B\.IMG: an \.img file without its header B\.HDR"):
        load_volume(tmp_path / "B.IMG")


def test_unsupported_suffix_message_names_every_readable_format(tmp_path):
    with pytest.raises(VolumeError, match=r"not a NIfTI \(\.nii, \.nii\.gz\), MGZ \(\.mgz, \.mgh\) or ANALYZE/NIfTI "
                                          r"pair \(\.hdr \+ \.img\) file"):
        load_volume(_write_raw(tmp_path / "scan.dcm", b"DICM"))


def test_a_folder_lists_each_pair_once_by_its_header(tmp_path):
    from napari_brainage.inference import collect_inputs

    nib.save(nib.AnalyzeImage(phantom(), np.eye(4)), tmp_path / "a.hdr")
    nib.save(nib.Nifti1Pair(phantom(), np.eye(4)), tmp_path / "b.hdr")
    write_nifti(tmp_path / "c.nii.gz", phantom(), np.eye(4))
    _write_raw(tmp_path / "lone.img", b"\0" * 64)  # no lone.hdr: listed, so that its row says so
    found = {item.subject: item.path.name for item in collect_inputs([tmp_path])}
    assert found == {"a": "a.hdr", "b": "b.hdr", "c": "c.nii.gz", "lone": "lone.img"}
    with pytest.raises(VolumeError, match=r"lone\.img: an \.img file without its header lone\.hdr"):
        load_volume(tmp_path / "lone.img")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no NIfTI .* or ANALYZE/NIfTI pair \(\.hdr \+ \.img\) files"):
        collect_inputs([empty])


def test_napari_reader_opens_a_pair_once(tmp_path):
    pytest.importorskip("napari")
    from napari_brainage._napari import reader as _reader

    nib.save(nib.AnalyzeImage(phantom(), np.eye(4)), tmp_path / "a.hdr")
    hdr, img = str(tmp_path / "a.hdr"), str(tmp_path / "a.img")
    for claimed in (hdr, img, "A.HDR", [hdr, img]):
        assert callable(_reader.get_reader(claimed))
    assert len(_reader.read_scans([hdr, img])) == 1  # both files dropped: one layer
    [(data, kwargs, kind)] = _reader.read_scans(img)
    assert kind == "image" and kwargs["name"] == "a"


def test_a_file_that_stores_no_orientation_says_so_everywhere_and_its_map_claims_none(tmp_path):
    """ANALYZE files and NIfTI files with qform and sform codes 0 were shown as "LAS" with no
    note, and their maps written with sform code 2 (helper's report, 2026-12-01)."""
    from napari_brainage.preprocess import prepare
    from napari_brainage.samples import sample_path
    from napari_brainage.summary import summarise

    sample = nib.load(sample_path("synthetic_age50"))
    bare = nib.Nifti1Image(np.asarray(sample.dataobj), None)  # no affine given: codes 0, pixdim only
    bare.header.set_zooms(sample.header.get_zooms())
    assert int(bare.header["qform_code"]) == int(bare.header["sform_code"]) == 0
    nib.save(bare, tmp_path / "bare.nii.gz")
    nib.save(nib.AnalyzeImage(np.asarray(sample.dataobj), sample.affine), tmp_path / "old.hdr")
    for name, words in (("bare.nii.gz", "no orientation (qform and sform codes 0)"), ("old.hdr", "ANALYZE 7.5")):
        volume = load_volume(tmp_path / name)
        assert words in volume.metadata[io.WARNING] and "Check left and right" in volume.metadata[io.WARNING]
        assert any(line.startswith("note") and words in line for line in summarise(volume).lines())
        quality = prepare(volume).quality
        assert quality.status == "warn" and words in quality.summary(), name

    # Its map claims no orientation either, so every viewer places scan and map alike.
    scan = load_volume(tmp_path / "bare.nii.gz")
    save_volume(Volume(np.random.default_rng(0).random(scan.shape, np.float32), scan.affine, scan.header),
                tmp_path / "map.nii.gz")
    written = nib.load(tmp_path / "map.nii.gz")
    assert int(written.header["qform_code"]) == int(written.header["sform_code"]) == 0
    np.testing.assert_allclose(written.affine, scan.affine)
    assert load_volume(tmp_path / "map.nii.gz").metadata[io.WARNING] == io.NO_ORIENTATION_WARNING
    old = load_volume(tmp_path / "old.hdr")  # an ANALYZE scan's map likewise (a second user's report)
    save_volume(Volume(np.random.default_rng(1).random(old.shape, np.float32), old.affine, old.header),
                tmp_path / "old_map.nii.gz")
    written = nib.load(tmp_path / "old_map.nii.gz")
    assert int(written.header["qform_code"]) == int(written.header["sform_code"]) == 0
    np.testing.assert_allclose(written.affine, old.affine)


def test_a_map_of_a_nifti2_scan_is_written_quietly_on_its_grid(tmp_path, capfd):
    """nibabel printed "sizeof_hdr should be 348; set sizeof_hdr to 348" into users' terminals."""
    nib.save(nib.Nifti2Image(phantom(), make_affine()), tmp_path / "scan.nii.gz")
    scan = load_volume(tmp_path / "scan.nii.gz")
    capfd.readouterr()
    save_volume(Volume(scan.data * 2.0, scan.affine, scan.header), tmp_path / "map.nii.gz")
    captured = capfd.readouterr()
    assert "sizeof_hdr" not in captured.out + captured.err
    written = nib.load(tmp_path / "map.nii.gz")
    assert isinstance(written, nib.Nifti1Image)
    np.testing.assert_allclose(written.affine, scan.affine)
    assert int(written.header["sform_code"]) == int(scan.header["sform_code"]) == 2


def test_uncompressed_mgh_is_read_wherever_mgz_is(tmp_path):
    """FreeSurfer's .mgh (an uncompressed .mgz) was refused as "not a NIfTI ... convert DICOM"
    by the CLI and the napari reader (break-test report, #13)."""
    from napari_brainage.inference import collect_inputs

    data, affine = phantom(), make_affine(zooms=(1.0, 1.0, 1.0))
    nib.save(nib.MGHImage(data, affine), tmp_path / "orig.mgh")
    nib.save(nib.MGHImage(data, affine), tmp_path / "brain.mgz")
    for name in ("orig.mgh", "brain.mgz"):
        volume = load_volume(tmp_path / name)
        np.testing.assert_array_equal(volume.data, data)
        np.testing.assert_allclose(volume.affine, affine, atol=1e-4)
    assert {item.subject: item.path.name for item in collect_inputs([tmp_path])} == {
        "orig": "orig.mgh", "brain": "brain.mgz"}
    plugin = (Path(io.__file__).parent / "napari.yaml").read_text()
    assert '"*.mgh"' in plugin and '"*.MGH"' in plugin  # napari offers the reader for them
    pytest.importorskip("napari")
    from napari_brainage._napari import reader as _reader

    assert callable(_reader.get_reader(str(tmp_path / "orig.mgh")))


def test_a_name_that_contradicts_the_compression_says_which_name_to_use(tmp_path):
    """A gzip file named .nii said "the file looks corrupt (Cannot work out file type)" (#13)."""
    write_nifti(tmp_path / "real.nii.gz", phantom(), np.eye(4))
    nib.save(nib.MGHImage(phantom(), np.eye(4)), tmp_path / "real.mgz")
    nib.save(nib.MGHImage(phantom(), np.eye(4)), tmp_path / "real.mgh")
    cases = {"gz_as.nii": ("real.nii.gz", "gzip-compressed but named .nii .*rename it to gz_as.nii.gz"),
             "mgz_as.mgh": ("real.mgz", "gzip-compressed but named .mgh .*rename it to mgz_as.mgz"),
             "mgh_as.mgz": ("real.mgh", "named .mgz but not gzip-compressed .*rename it to mgh_as.mgh")}
    for name, (source, expected) in cases.items():
        _write_raw(tmp_path / name, (tmp_path / source).read_bytes())
        with pytest.raises(VolumeError, match=expected):
            load_volume(tmp_path / name)
    # Gzip that holds no NIfTI is still just corrupt: no renaming advice that would not help.
    _write_raw(tmp_path / "junk.nii", gzip.compress(os.urandom(2000)))
    with pytest.raises(VolumeError, match="corrupt") as caught:
        load_volume(tmp_path / "junk.nii")
    assert "rename" not in str(caught.value)


def test_a_folder_named_like_a_scan_and_rgb_or_complex_voxels_are_named_for_what_they_are(tmp_path):
    """A folder "x.nii.gz" was "no such file"; RGB and complex voxels were "truncated or corrupt" (#12)."""
    (tmp_path / "x.nii.gz").mkdir()
    with pytest.raises(VolumeError, match=r"x\.nii\.gz: a folder, not a scan file"):
        load_volume(tmp_path / "x.nii.gz")
    (tmp_path / "sub-01").mkdir()  # a table's path cell naming the subject's folder: was "not a NIfTI"
    with pytest.raises(VolumeError, match=r"sub-01: a folder, not a scan file; give a file"):
        load_volume(tmp_path / "sub-01")
    rgb = np.zeros((10, 10, 10), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = 7
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii.gz")
    nib.save(nib.Nifti1Image(phantom().astype(np.complex64), np.eye(4)), tmp_path / "complex.nii.gz")
    for name, kind in (("rgb.nii.gz", "RGB"), ("complex.nii.gz", r"complex \(complex64\)")):
        with pytest.raises(VolumeError, match=f"{name}: {kind} voxels are not an MRI intensity image") as caught:
            load_volume(tmp_path / name)
        assert "corrupt" not in str(caught.value)


def test_the_napari_reader_opens_a_binary_mask_as_labels_and_a_scan_or_map_as_an_image(tmp_path):
    """A mask saved by Threshold came back as a grey Image: Brain age offered it as the scan
    to analyse and Slices' 3D view drew it as a brain (second break test)."""
    pytest.importorskip("napari")
    from napari_brainage._napari import reader as _reader

    mask = (phantom() > 110).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    nib.save(nib.Nifti1Image(phantom(dtype=np.int16), np.eye(4)), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.float32) * 0.9, np.eye(4)), tmp_path / "map.nii.gz")  # a map, 0-0.9
    kinds = {name: _reader.read_scans(str(tmp_path / f"{name}.nii.gz"))[0][2] for name in ("mask", "scan", "map")}
    assert kinds == {"mask": "labels", "scan": "image", "map": "image"}
    [(data, kwargs, _)] = _reader.read_scans(str(tmp_path / "mask.nii.gz"))
    assert np.count_nonzero(data) == np.count_nonzero(mask) and "colormap" not in kwargs


def test_a_header_whose_sform_and_qform_disagree_is_named(tmp_path):
    """A qform mirrored against the sform passed without a word, though ITK-based
    tools read the qform and show the scan left-right flipped (third break test)."""
    from napari_brainage.samples import sample_path

    scan = nib.load(sample_path("synthetic_age50"))
    agree = nib.Nifti1Image(np.asanyarray(scan.dataobj), scan.affine)
    agree.set_sform(scan.affine, code=4)
    agree.set_qform(scan.affine, code=1)
    nib.save(agree, tmp_path / "agree.nii.gz")
    assert io.WARNING not in load_volume(tmp_path / "agree.nii.gz").metadata

    mirrored = nib.Nifti1Image(np.asanyarray(scan.dataobj), scan.affine)
    mirrored.set_sform(scan.affine, code=4)
    mirrored.set_qform(np.diag([-1.0, 1.0, 1.0, 1.0]) @ scan.affine, code=1)
    nib.save(mirrored, tmp_path / "mirrored.nii.gz")
    volume = load_volume(tmp_path / "mirrored.nii.gz")
    np.testing.assert_allclose(volume.affine, scan.affine)  # the sform, as nibabel and FSL read it
    assert "sform and qform disagree: they mirror each other" in volume.metadata[io.WARNING]

    moved = scan.affine.copy()
    moved[:3, 3] += [0.0, 12.0, 0.0]
    shifted = nib.Nifti1Image(np.asanyarray(scan.dataobj), scan.affine)
    shifted.set_sform(scan.affine, code=4)
    shifted.set_qform(moved, code=1)
    nib.save(shifted, tmp_path / "shifted.nii.gz")
    assert "are up to 12 mm apart" in load_volume(tmp_path / "shifted.nii.gz").metadata[io.WARNING]


def test_a_cifti_file_is_refused_as_not_a_volume(tmp_path, cli_in_process):
    """A CIFTI-2 .nii (grayordinates, no affine) failed with "AttributeError: 'Cifti2Image'
    object has no attribute 'affine'": a traceback in info, "reading the scan failed
    (AttributeError ...)" in a results row (fifth break test)."""
    from nibabel import cifti2

    brain = cifti2.cifti2_axes.BrainModelAxis.from_mask(np.ones((2, 2, 2), dtype=bool), affine=np.eye(4))
    scalars = cifti2.cifti2_axes.ScalarAxis(["thickness"])
    path = tmp_path / "sub-01.dscalar.nii"
    cifti2.Cifti2Image(np.ones((1, 8), dtype=np.float32), header=(scalars, brain)).to_filename(path)
    with pytest.raises(VolumeError, match=rf"{path}: a CIFTI-2 file .*not a volume.*NIfTI \(\.nii"):
        load_volume(path)

    result = cli_in_process("info", path)
    assert result.returncode == 2
    assert "a CIFTI-2 file" in result.stderr and "Traceback" not in result.stderr


def test_a_big_endian_scan_reads_in_native_byte_order_and_info_says_int16(tmp_path, cli_in_process):
    """Big-endian files came as ">i2"/">f4", which info printed as the dtype (fifth break test)."""
    for dtype in (np.int16, np.float32):
        image = nib.Nifti1Image(phantom(dtype=dtype), make_affine(), header=nib.Nifti1Header(endianness=">"))
        image.set_data_dtype(dtype)
        path = tmp_path / f"big-{np.dtype(dtype).name}.nii"
        nib.save(image, path)
        assert nib.load(path).get_data_dtype().byteorder == ">"  # really stored big-endian
        volume = load_volume(path)
        assert volume.data.dtype == np.dtype(dtype) and volume.data.dtype.isnative
        np.testing.assert_array_equal(volume.data, phantom(dtype=dtype))
        result = cli_in_process("info", path)
        assert result.returncode == 0, result.stderr
        assert f"voxels ({np.dtype(dtype).name})" in result.stdout


def test_a_volume_prints_what_it_is_not_its_voxels():
    """The dataclass repr printed every voxel into a notebook (a new user's API test)."""
    from napari_brainage.samples import load_sample

    text = repr(load_sample("synthetic_age50"))
    assert text.startswith("Volume(shape=(91, 109, 91), dtype=int16, voxels 2 x 2 x 2 mm, LAS, path=")
    assert len(text) < 200
