"""Rendering synthetic subjects in other contrasts and with thick slices (issue 19):
the anatomy, nuisance and truth stay the T1's; QC names the contrast it sees."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_brainage.io import Volume, load_volume
from napari_brainage.quality import CONTRASTS, T1_ONLY, QualityError, tissue_contrast
from napari_brainage.synthetic.cohort import Rendering, generate_cohort, subject_truth_path
from napari_brainage.synthetic.config import CohortConfig
from napari_brainage.synthetic.model import ageing_model
from napari_brainage.synthetic.render import CONTRASTS as RENDERS
from napari_brainage.synthetic.render import thick_slices


@pytest.fixture(scope="module")
def model():
    return ageing_model(CohortConfig())


def tissue_levels(scan: np.ndarray, kit) -> dict[str, float]:
    """Median intensity of each tissue's core (probability > 0.9) in the template."""
    return {name: float(np.median(scan[(getattr(kit, name) > 0.9) & (scan > 0)])) for name in ("csf", "gm", "wm")}


@pytest.mark.parametrize("name, order", [("t1", ("csf", "gm", "wm")), ("t2", ("wm", "gm", "csf")),
                                         ("pd", ("wm", "gm", "csf")), ("flair", ("csf", "wm", "gm"))])
def test_each_contrast_orders_the_tissues_as_its_sequence_does(model, name, order):
    scan = model.synthesize(60.0, rng=None, contrast=RENDERS[name]).data.astype(float)
    levels = tissue_levels(scan, model.kit)
    assert [levels[t] for t in order] == sorted(levels.values()), levels


def test_a_render_keeps_the_t1s_anatomy_nuisance_and_truth(model):
    t1 = model.synthesize(70.0, np.random.default_rng(3), with_truth=True)
    t2 = model.synthesize(70.0, np.random.default_rng(3), with_truth=True, contrast=RENDERS["t2"])
    assert np.array_equal(t1.truth, t2.truth)
    assert t1.volumes_ml == t2.volumes_ml
    assert np.array_equal(t1.data > 0, t2.data > 0)  # the same brain outline
    # Inverted contrast: the two scans anti-correlate in the brain.
    brain = t1.data > 0
    assert np.corrcoef(t1.data[brain], t2.data[brain])[0, 1] < -0.5
    # The T1 rendered from tissues is close to the template's T1, not identical (texture).
    t1_render = model.synthesize(70.0, np.random.default_rng(3), contrast=RENDERS["t1"])
    assert np.corrcoef(t1.data[brain], t1_render.data[brain])[0, 1] > 0.95


def test_ageing_moves_tissue_to_csf_and_keeps_the_total(model):
    young, old = model.aged_tissues(50.0), model.aged_tissues(80.0)
    total = model.kit.gm + model.kit.wm + model.kit.csf
    np.testing.assert_allclose(old.sum(axis=0)[model.kit.brain], total[model.kit.brain], atol=1e-4)
    hippocampus = model.masks["hippocampus"]
    assert old[2][hippocampus].mean() > young[2][hippocampus].mean() + 0.02  # more CSF at 80
    assert old[0][hippocampus].mean() < young[0][hippocampus].mean()         # less grey matter


def test_thick_slices_average_slabs_and_keep_world_positions():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(4, 5, 11)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 1.0, 1.0])
    affine[:3, 3] = (-10, 4, -7)
    slabs, thick = thick_slices(data, affine, axis=2, factor=5)
    assert slabs.shape == (4, 5, 3)
    np.testing.assert_allclose(slabs[..., 1], data[..., 5:10].mean(axis=2), rtol=1e-5)
    np.testing.assert_allclose(slabs[..., 2], data[..., 10], rtol=1e-5)  # the partial last slab
    # A slab's centre sits at the mean world position of the voxels it averages.
    centre = thick @ [1, 2, 1, 1]
    np.testing.assert_allclose(centre, np.mean([affine @ [1, 2, z, 1] for z in range(5, 10)], axis=0))
    assert np.allclose(np.linalg.norm(thick[:3, :3], axis=0), (2, 2, 5))


def test_a_rendered_cohort_is_the_t1_cohort_in_another_dress(tmp_path):
    t1 = generate_cohort(tmp_path / "t1", 3, seed=11)
    rendered = generate_cohort(tmp_path / "random", 3, seed=11, rendering=Rendering("random", slice_mm=4))
    again = generate_cohort(tmp_path / "again", 3, seed=11, rendering=Rendering("random", slice_mm=4))
    rows = list(csv.DictReader(open(rendered)))
    assert [r["age"] for r in rows] == [r["age"] for r in csv.DictReader(open(t1))]
    assert len({r["contrast"] for r in rows}) == 3 and all(r["contrast"].startswith("random (CSF") for r in rows)
    assert [r["contrast"] for r in rows] == [r["contrast"] for r in csv.DictReader(open(again))]
    scan = load_volume(tmp_path / "random" / "sub-0001.nii.gz")
    assert scan.shape == (91, 109, 46) and np.allclose(scan.voxel_sizes, (2, 2, 4))
    assert np.array_equal(load_volume(subject_truth_path(tmp_path / "t1", "sub-0001")).data,
                          load_volume(subject_truth_path(tmp_path / "random", "sub-0001")).data)
    assert np.array_equal(load_volume(tmp_path / "again" / "sub-0002.nii.gz").data,
                          load_volume(tmp_path / "random" / "sub-0002.nii.gz").data)


def test_slices_that_are_not_whole_voxels_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="5 mm slices are not a whole number of 2 mm voxels"):
        generate_cohort(tmp_path / "out", 2, seed=1, rendering=Rendering(slice_mm=5))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [dict(contrast="t3"), dict(slice_mm=0), dict(slice_mm=100), dict(slice_axis=3)])
def test_a_rendering_no_scanner_makes_is_refused(bad):
    with pytest.raises(ValueError):
        Rendering(**bad)


@pytest.mark.parametrize("name, seen", [("t1", "T1"), ("t2", "T2"), ("pd", "PD"), ("flair", "FLAIR")])
def test_qc_names_the_contrast_of_each_render(model, name, seen):
    scan = model.synthesize(65.0, np.random.default_rng(5), contrast=RENDERS[name]).data.astype(np.float32)
    _, fit, contrast, failures = tissue_contrast(scan, model.kit, reads=CONTRASTS)
    assert contrast == seen and failures == [] and fit > 0.25
    _, _, _, failures = tissue_contrast(scan, model.kit, reads=T1_ONLY)
    assert (failures == []) == (seen == "T1")
    if failures:
        assert f"{seen}-like" in failures[0] and "reads T1 contrast only" in failures[0]


def test_a_model_that_reads_every_contrast_gets_an_age_for_a_t2_scan(model):
    from napari_brainage.preprocess import prepare

    scan = model.synthesize(65.0, np.random.default_rng(5), contrast=RENDERS["t2"])
    volume = Volume(scan.data, scan.affine)
    with pytest.raises(QualityError, match="T2-like.*reads T1 contrast only"):
        prepare(volume)
    prepared = prepare(volume, reads=CONTRASTS)
    assert prepared.quality.contrast == "T2" and prepared.quality.status == "pass"
    assert not prepared.quality.registered  # on the grid, used as it is, whatever its contrast


def test_random_slices_give_each_subject_its_own_thickness_and_axis(tmp_path):
    """--slice-mm random: thicknesses of whole voxels up to 6 mm along any axis, one
    draw per subject (the same on a rerun), listed in participants.csv, stored as
    the listed slabs; the anatomy and truths are those of the T1 cohort."""
    table = generate_cohort(tmp_path / "random", 6, seed=11, rendering=Rendering(random_slices=True))
    rows = list(csv.DictReader(open(table)))
    drawn = [(int(r["slice_mm"]), r["slice_axis"]) for r in rows]
    assert all(mm in (2, 4, 6) and axis in "xyz" for mm, axis in drawn)
    assert len(set(drawn)) > 1  # not one setting for everyone
    for row, (mm, axis) in zip(rows, drawn):
        sizes = load_volume(tmp_path / "random" / row["path"]).voxel_sizes
        expected = [2.0, 2.0, 2.0]
        expected["xyz".index(axis)] = float(mm)
        np.testing.assert_allclose(sizes, expected)
    again = list(csv.DictReader(open(generate_cohort(tmp_path / "again", 6, seed=11,
                                                     rendering=Rendering(random_slices=True)))))
    assert [(r["slice_mm"], r["slice_axis"]) for r in again] == [(r["slice_mm"], r["slice_axis"]) for r in rows]
    t1 = list(csv.DictReader(open(generate_cohort(tmp_path / "t1", 6, seed=11))))
    assert [r["brain_age"] for r in t1] == [r["brain_age"] for r in rows] and "slice_mm" not in t1[0]


@pytest.mark.parametrize("name, seen", [("t2", "T2"), ("pd", "PD")])
def test_qc_names_t2_and_pd_alike_across_subjects_and_ages(model, name, seen):
    # A least-squares fit of the template's tissues blurred bright CSF into the tissues
    # around it: 6 of 16 held-out T2 renders were named PD, 7 of 16 PD renders FLAIR.
    # The tissues' cores name them (docs/benchmarks.md, issue 19, third session).
    # (At 80 y a PD render's tissue fit is too weak to be judged at all: not asked here.)
    named = []
    for seed, age in ((11, 48.0), (12, 63.0), (5, 65.0)):
        scan = model.synthesize(age, np.random.default_rng(seed), contrast=RENDERS[name]).data.astype(np.float32)
        named.append(tissue_contrast(scan, model.kit, reads=CONTRASTS)[2])
    assert named == [seen] * 3


def test_tissue_cores_give_each_tissues_level_or_none_when_a_core_is_missing(model):
    from napari_brainage.quality import core_levels

    scan = model.synthesize(65.0, np.random.default_rng(2), contrast=RENDERS["t2"]).data.astype(np.float32)
    gm, wm, csf = core_levels(scan, model.kit)
    assert wm < gm < csf  # T2: white matter darkest, CSF brightest
    cut = np.where(model.kit.csf >= 0.5, 0, scan)  # the ventricles outside the field of view
    assert core_levels(cut, model.kit) is None


def test_a_low_contrast_scan_whose_tissue_fit_is_weak_is_named_by_its_cores(model):
    # A PD render of a 66-year-old fits the template's tissues at R^2 -0.10: it used to
    # go unjudged, and QC then blamed the alignment ("does not match the template:
    # correlation -0.36"), 7 of 20 held-out PD renders on the grid.
    from napari_brainage.quality import MIN_TISSUE_FIT

    scan = model.synthesize(66.0, np.random.default_rng(2), contrast=RENDERS["pd"]).data.astype(np.float32)
    _, fit, contrast, failures = tissue_contrast(scan, model.kit)
    assert fit < MIN_TISSUE_FIT  # the weak-fit branch is what is tested
    assert contrast == "PD" and len(failures) == 1
    assert "PD-like" in failures[0] and "line up only loosely" in failures[0]


@pytest.mark.parametrize("name, voxels", [("t1", 5), ("t1", 8), ("t2", 5), ("t2", 8)])
def test_cores_of_a_scan_moved_off_the_template_name_no_contrast(model, name, voxels):
    # Moved 10-16 mm, the cores mix tissues and their ordering is chance (a T2 moved
    # 16 mm reads FLAIR-like): QC leaves the contrast unjudged and the alignment check speaks.
    from scipy import ndimage

    from napari_brainage.quality import MIN_TISSUE_FIT, core_levels

    scan = model.synthesize(70.0, np.random.default_rng(3), contrast=RENDERS[name]).data.astype(np.float32)
    moved = ndimage.shift(scan, (voxels, 0, voxels), order=1)
    _, fit, contrast, failures = tissue_contrast(moved, model.kit)
    assert fit < MIN_TISSUE_FIT and contrast == "" and failures == []
    assert core_levels(moved, model.kit) is not None  # the cores exist; they only do not separate
