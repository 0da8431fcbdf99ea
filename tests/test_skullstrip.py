"""Brain extraction of heads with skull, scalp and neck (deepbet), and what happens without it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainage.io import load_volume
from napari_brainage.preprocess import prepare
from napari_brainage.space import skullstrip

pytest.importorskip("deepbet", reason="brain extraction is the [skullstrip] extra")


@pytest.fixture(scope="module")
def head(variant_files):
    """The bundled 50-year-old with scalp, skull, neck and background noise, on its MNI lattice."""
    [variant] = [v for v in variant_files if v.name == "head_mni"]
    return load_volume(variant.path)


@pytest.fixture
def fresh_extractor(monkeypatch):
    """Forget the loaded networks, so a test's checksums are checked again (and restored after)."""
    monkeypatch.setattr(skullstrip, "_extractor", None)


def _clean_on(head_volume, clean):
    """The clean scan's brain mask on the head's grid (the same voxel lattice, enlarged)."""
    offset = np.rint(np.linalg.inv(head_volume.affine) @ clean.affine @ [0, 0, 0, 1]).astype(int)[:3]
    mask = np.zeros(head_volume.shape, bool)
    mask[tuple(slice(o, o + n) for o, n in zip(offset, clean.shape))] = np.asarray(clean.data) > 0
    return mask


def test_the_extracted_brain_is_the_clean_brain(head, variant_clean):
    stripped, brain_ml = skullstrip.extract_brain(head)
    assert stripped.shape == head.shape and np.array_equal(stripped.affine, head.affine)
    kept, truth = np.asarray(stripped.data) > 0, _clean_on(head, variant_clean)
    dice = 2 * (kept & truth).sum() / (kept.sum() + truth.sum())
    assert dice > 0.9, dice
    # Scalp and skull are gone: almost nothing is kept more than a few mm outside the brain.
    from scipy import ndimage

    far = ~ndimage.binary_dilation(truth, iterations=3)
    assert (kept & far).sum() < 0.01 * truth.sum()
    assert brain_ml == pytest.approx(kept.sum() * np.prod(head.voxel_sizes) / 1000, rel=1e-6)
    # Inside the mask the voxels are the head's own.
    np.testing.assert_array_equal(np.asarray(stripped.data)[kept], np.asarray(head.data)[kept])


def test_a_head_goes_through_the_skull_stripped_route_and_passes_qc(head, variant_clean):
    prepared = prepare(head)
    clean = prepare(variant_clean)
    assert "brain extracted with deepbet" in prepared.quality.route
    assert not any("not skull-stripped" in w for w in prepared.quality.warnings)
    # The same lattice, so after extraction the head's brain is used as it is, like the clean scan.
    assert "not registered" in prepared.quality.route
    inside = clean.data > 0
    r = np.corrcoef(prepared.data[inside], clean.data[inside])[0, 1]
    assert r > 0.97, r


def test_without_deepbet_a_head_keeps_the_template_mask_and_the_warning(head, monkeypatch):
    monkeypatch.setattr(skullstrip, "available", lambda: False)
    prepared = prepare(head)
    assert "no brain extraction installed (napari-brainage[skullstrip])" in prepared.quality.route
    assert any(w.startswith("not skull-stripped") for w in prepared.quality.warnings)
    assert prepared.quality.registered


def test_networks_that_fail_their_checksum_are_not_loaded(head, monkeypatch, fresh_extractor):
    from napari_brainage.preprocess import _brain_extracted

    monkeypatch.setitem(skullstrip.DEEPBET_MODELS, "model.pt", "0" * 64)
    with pytest.raises(skullstrip.SkullStripError, match="does not match the pinned release"):
        skullstrip.extract_brain(head)
    # prepare then keeps the head (the fallback tested above) and says why in the route.
    stripped, note = _brain_extracted(head)
    assert stripped is None and note.startswith("not skull-stripped; brain extraction not used") and "checksum" in note


def test_an_implausible_brain_mask_is_not_used():
    skullstrip.check_brain_volume(1400.0)
    for ml in (120.0, 4100.0):  # a fragment; the whole head
        with pytest.raises(skullstrip.SkullStripError, match=rf"brain mask is {ml:.0f} ml, outside 600-2600 ml"):
            skullstrip.check_brain_volume(ml)


def test_a_skull_stripped_scan_is_not_touched(variant_clean, monkeypatch):
    def fail(volume):
        raise AssertionError("brain extraction ran on a skull-stripped scan")

    monkeypatch.setattr(skullstrip, "extract_brain", fail)
    assert "deepbet" not in prepare(variant_clean).quality.route
