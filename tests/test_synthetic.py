"""The synthetic ageing cohort: documented rates, determinism, ground truth, CLI."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_brainage.io import load_volume
from napari_brainage.synthetic.cohort import (
    draw_participants,
    generate_cohort,
    read_ground_truth,
    subject_rng,
    subject_truth_path,
)
from napari_brainage.synthetic.config import REGION_PRESETS, CohortConfig, parse_region
from napari_brainage.synthetic.model import ageing_model

COHORT_SIZE = 120  # 66 and 54 subjects in the two age bands: slopes within 0.25 of the model (0.6 allowed)


def read_table(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """COHORT_SIZE subjects at 2 mm, the way a user makes them (two worker processes)."""
    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, COHORT_SIZE, seed=123, workers=2)
    return out


def _annual_rate_fit(rows, region, low, high):
    """Fitted % volume change per year among subjects with brain_age in [low, high)."""
    chosen = [r for r in rows if low <= float(r["brain_age"]) < high]
    b = np.array([float(r["brain_age"]) for r in chosen])
    v = np.log([float(r[f"{region}_ml"]) for r in chosen])
    slope = np.polyfit(b, v, 1)[0]
    expected = np.mean([REGION_PRESETS[region].annual_rate(x) for x in b])
    return 100 * slope, expected, len(chosen)


@pytest.mark.parametrize("region", ["lateral_ventricles", "hippocampus"])
@pytest.mark.parametrize("band", [(40, 63), (63, 95)])
def test_volumes_follow_the_documented_rates(cohort, region, band):
    rows = read_table(cohort / "participants.csv")
    assert len(rows) == COHORT_SIZE
    measured, expected, n = _annual_rate_fit(rows, region, *band)
    assert n > 40
    # Nuisance scale (~2 % per axis) blurs single volumes; the slope survives.
    assert measured == pytest.approx(expected, abs=0.6), (measured, expected)


def test_volumes_track_the_model_over_the_whole_range(cohort):
    rows = read_table(cohort / "participants.csv")
    b = np.array([float(r["brain_age"]) for r in rows])
    # The hippocampus is small: the nuisance scale (~6 % in volume) is most of its spread (r2 0.39-0.46).
    for region, min_r2 in [("lateral_ventricles", 0.9), ("hippocampus", 0.3)]:
        log_v = np.log([float(r[f"{region}_ml"]) for r in rows])
        model = REGION_PRESETS[region].log_volume_factor(b)
        slope, _ = np.polyfit(model, log_v, 1)
        r2 = np.corrcoef(model, log_v)[0, 1] ** 2
        assert slope == pytest.approx(1.0, abs=0.1) and r2 > min_r2, (region, slope, r2)


def test_head_size_does_not_leak_age(cohort):
    rows = read_table(cohort / "participants.csv")[:60]
    ages = [float(r["age"]) for r in rows]
    brain_voxels = [np.count_nonzero(load_volume(cohort / r["path"]).data) for r in rows]
    assert abs(np.corrcoef(ages, brain_voxels)[0, 1]) < 0.3


def test_cohort_table_and_files(cohort):
    rows = read_table(cohort / "participants.csv")
    assert list(rows[0]) == ["subject", "path", "age", "brain_age", "gap",
                             "lateral_ventricles_ml", "hippocampus_ml"]
    ages = np.array([float(r["age"]) for r in rows])
    gaps = np.array([float(r["brain_age"]) - float(r["age"]) for r in rows])
    assert ages.min() >= 45 and ages.max() <= 80
    assert abs(gaps.mean()) < 0.6 and 2.5 < gaps.std() < 3.5  # gap ~ N(0, 3)
    np.testing.assert_allclose(gaps, [float(r["gap"]) for r in rows], atol=0.011)
    scan = load_volume(cohort / rows[0]["path"])
    truth = load_volume(cohort / "ground_truth" / "union.nii.gz")
    assert scan.shape == truth.shape == (91, 109, 91)
    np.testing.assert_array_equal(scan.affine, truth.affine)
    assert scan.header["descrip"].tobytes().startswith(f"synthetic age={rows[0]['age']}".encode())
    own = load_volume(subject_truth_path(cohort, rows[0]["subject"]))
    np.testing.assert_array_equal(own.affine, scan.affine)
    assert (own.data.astype(bool) & (scan.data == 0)).sum() == 0  # inside the subject's brain
    assert len(list((cohort / "ground_truth" / "subjects").glob("sub-*.nii.gz"))) == len(rows)
    made = ageing_model(CohortConfig()).synthesize(float(rows[0]["brain_age"]), subject_rng(123, 0), with_truth=True)
    np.testing.assert_array_equal(own.data.astype(bool), made.truth)  # the truth of the scan on disk
    assert not list(cohort.glob(".*partial*"))


def test_ground_truth_sits_in_ventricles_and_hippocampi(cohort, tmp_path):
    kit = ageing_model(CohortConfig()).kit
    masks = read_ground_truth(cohort)
    with pytest.raises(FileNotFoundError, match="no ground-truth union.nii.gz"):
        read_ground_truth(tmp_path)  # a folder that is no cohort
    assert set(masks) == {"lateral_ventricles", "hippocampus", "union", "cortex"}
    np.testing.assert_array_equal(masks["union"], masks["lateral_ventricles"] | masks["hippocampus"])
    near = {
        "lateral_ventricles": kit.label_mask("Left_Lateral_Ventricle", "Right_Lateral_Ventricle"),
        "hippocampus": kit.label_mask("Left_Hippocampus", "Right_Hippocampus"),
    }
    from scipy.ndimage import binary_dilation

    for name, atlas in near.items():
        # Within 10 mm of the atlas structure (the ventricles triple in size).
        inside = (masks[name] & binary_dilation(atlas, iterations=5)).sum() / masks[name].sum()
        assert inside > 0.95, (name, inside)
        assert masks[name].sum() > 100
    # The union is a focal share of the brain, not everything.
    assert 0.005 < masks["union"].sum() / kit.brain.sum() < 0.15


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path, cohort):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_cohort(a, 3, seed=123, workers=1)
    generate_cohort(b, 3, seed=123, workers=1)
    assert _digest(a) == _digest(b)
    # ...and the same subjects as the first three of the 200 made with 2 workers.
    for name in ["sub-0001.nii.gz", "sub-0003.nii.gz", "ground_truth/union.nii.gz"]:
        assert (a / name).read_bytes() == (cohort / name).read_bytes()
    generate_cohort(tmp_path / "c", 3, seed=124, workers=1)
    assert (tmp_path / "c" / "sub-0001.nii.gz").read_bytes() != (a / "sub-0001.nii.gz").read_bytes()


def test_ageing_changes_the_scan_only_where_the_ground_truth_says():
    model = ageing_model(CohortConfig(cortical_thinning=0.0))
    young = model.synthesize(50.0, rng=None).data.astype(float)
    old = model.synthesize(80.0, rng=None).data.astype(float)
    changed = np.abs(old - young) > 0.03 * model.wm_intensity
    truth = model.ground_truth()["union"]
    assert (changed & truth).sum() / changed.sum() > 0.99
    # The ventricles grow: more dark voxels near them at 80 than at 50.
    ventricles = model.masks["lateral_ventricles"]
    dark = model.csf_intensity + 0.5 * (model.wm_intensity - model.csf_intensity)
    from scipy.ndimage import binary_dilation

    around = binary_dilation(ventricles, iterations=4)
    # exp(1.175 - 0.382) = 2.2x the volume; partial-volume edges count less.
    assert (old[around] < dark).sum() > 1.5 * (young[around] < dark).sum()


def test_a_subjects_own_truth_follows_its_warp():
    """The subject's truth is where ageing changes *its* scan: the same subject (same
    nuisance) at two brain ages differs inside its own truth, less so inside the
    template's union, which the subject's pose and shape have moved away from."""
    model = ageing_model(CohortConfig(cortical_thinning=0.0))
    young = model.synthesize(50.0, np.random.default_rng(7), with_truth=True)
    old = model.synthesize(80.0, np.random.default_rng(7))
    changed = np.abs(old.data.astype(float) - young.data) > 0.1 * model.wm_intensity
    own = (changed & young.truth).sum() / changed.sum()
    template = (changed & model.truth_union()).sum() / changed.sum()
    assert own > 0.9 and own > template + 0.1, (own, template)
    assert young.truth.sum() == pytest.approx(model.truth_union().sum(), rel=0.15)


def test_participants_are_a_prefix_of_larger_cohorts():
    config = CohortConfig()
    assert draw_participants(3, 5, config) == draw_participants(50, 5, config)[:3]


def test_heterogeneous_ageing_ages_each_region_by_its_own_age():
    model = ageing_model(CohortConfig(cortical_thinning=0.0))
    mixed = model.synthesize(55.0, rng=None, region_ages={"hippocampus": 80.0}).volumes_ml
    at_55, at_80 = (model.synthesize(age, rng=None).volumes_ml for age in (55.0, 80.0))
    # The ventricles follow brain_age; the hippocampus mostly its own age. Not
    # all of it: the expanding temporal horns also press on the hippocampi
    # (calibration is joint, at equal ages), here 0.35 of the 1.97 mL that
    # 25 years of its own ageing take.
    assert mixed["lateral_ventricles"] == pytest.approx(at_55["lateral_ventricles"], rel=0.01)
    own_ageing = at_55["hippocampus"] - at_80["hippocampus"]
    assert own_ageing > 0.1 * at_55["hippocampus"]
    assert abs(mixed["hippocampus"] - at_80["hippocampus"]) < 0.25 * own_ageing

    config = CohortConfig(region_age_sd=3.0)
    people = draw_participants(400, 5, config)
    assert draw_participants(3, 5, config) == people[:3]
    deviations = np.array([[own - p.brain_age for _, own in p.region_ages] for p in people])
    assert deviations.shape == (400, 2)
    assert deviations.std(axis=0) == pytest.approx([3.0, 3.0], rel=0.15)
    assert abs(np.corrcoef(deviations.T)[0, 1]) < 0.15  # independent per region
    assert all(p.region_ages == () for p in draw_participants(3, 5, CohortConfig()))
    with pytest.raises(ValueError, match="region age sd"):
        CohortConfig(region_age_sd=-1.0)


def test_a_heterogeneous_cohort_lists_each_regions_age(tmp_path):
    table = generate_cohort(tmp_path / "c", 2, seed=5, config=CohortConfig(region_age_sd=3.0))
    rows = read_table(table)
    people = draw_participants(2, 5, CohortConfig(region_age_sd=3.0))
    for row, person in zip(rows, people):
        assert float(row["hippocampus_age"]) == pytest.approx(dict(person.region_ages)["hippocampus"])
        assert float(row["lateral_ventricles_age"]) != pytest.approx(float(row["brain_age"]))


def test_regions_and_rates_are_parameters():
    custom = parse_region("putamen=2.5")
    assert custom.name == "putamen" and custom.rate_at_80 == 2.5
    assert custom.annual_rate(80) == pytest.approx(-2.5)
    for bad, message in [("cerebellum", "unknown region"), ("putamen=fast", "must be a number"),
                         ("putamen=50", "outside 0-20")]:
        with pytest.raises(ValueError, match=message):
            parse_region(bad)
    with pytest.raises(ValueError, match="age range"):
        CohortConfig(age_range=(80, 45))


def test_peripheral_regions_lie_where_depth_does_not_help():
    """The cortical presets name real atlas labels; the peripheral ones lie shallower
    than the average brain voxel, so a depth-only map ranks them below chance."""
    from napari_brainage.metrics import depth_map
    from napari_brainage.synthetic.config import CORTICAL_REGIONS, DEFAULT_REGIONS, PERIPHERAL_REGIONS

    kit = ageing_model(CohortConfig()).kit
    depth = depth_map(kit.brain, 2.0)

    def mean_depth(name):
        mask = kit.label_mask(*REGION_PRESETS[name].atlas_labels) & kit.brain
        assert mask.sum() > 1000, name
        return float(depth[mask].mean())

    for name in CORTICAL_REGIONS:
        region = parse_region(name)
        assert region.direction == -1 and 0.9 <= -region.annual_rate(80) <= 1.5
    average = float(depth[kit.brain].mean())
    assert all(mean_depth(name) < 0.8 * average for name in PERIPHERAL_REGIONS)
    assert all(mean_depth(name) > average for name in DEFAULT_REGIONS)


def test_refuses_to_overwrite_a_cohort(tmp_path):
    generate_cohort(tmp_path, 1, seed=1)
    before = (tmp_path / "sub-0001.nii.gz").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a cohort"):
        generate_cohort(tmp_path, 1, seed=2)
    assert (tmp_path / "sub-0001.nii.gz").read_bytes() == before


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "napari_brainage.cli", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--n", "0", "--seed", "1"], "--n must be at least 1"),
    (["--n", "2"], "required: --seed"),
    (["--n", "2", "--seed", "1", "--res", "3"], "invalid choice: 3"),
    (["--n", "2", "--seed", "1", "--regions", "cerebellum"], "unknown region 'cerebellum'"),
    (["--n", "2", "--seed", "1", "--regions", "hippocampus=x"], "must be a number"),
    (["--n", "2", "--seed", "1", "--age-range", "80", "45"], "age range"),
    (["--n", "2", "--seed", "1", "--gap-sd", "-1"], "gap sd must be 0-20 years"),
    (["--n", "2", "--seed", "1", "--gap-sd", "1e6"], "gap sd must be 0-20 years"),  # overflowed into empty scans
    (["--n", "2", "--seed", "1", "--gap-sd", "nan"], "gap sd must be 0-20 years"),
    (["--n", "2", "--seed", "1", "--age-range", "5", "10"], "the template is a brain aged 25"),
    (["--n", "2", "--seed", "-1"], "--seed must be a whole number >= 0"),
    (["--n", "2", "--seed", "1", "--slice-mm", "0"], "--slice-mm must be at least 1 mm"),
    (["--n", "2", "--seed", "1", "--workers", "0"], "--workers must be at least 1"),
    (["--n", "two", "--seed", "1"], "invalid int value"),
    (["--n", "2", "--seed", "1", "--contrast", "t3"], "invalid choice: 't3'"),
    (["--n", "2", "--seed", "1", "--slice-mm", "5"], "--slice-mm 5 is not a whole number of 2 mm voxels"),
    # Refused after the ground truth was written, by the scans' writer ("voxel sizes [2.0, 2.0, 100.0] mm").
    (["--n", "2", "--seed", "1", "--slice-mm", "100"], "--slice-mm must be at most 50 mm"),
    # Recorded as the axis of slabs that were never made.
    (["--n", "2", "--seed", "1", "--slice-axis", "x"], "--slice-axis x: no slabs are made"),
    (["--n", "2", "--seed", "1", "--slice-mm", "2", "--slice-axis", "y"], "--slice-axis y: no slabs are made"),
    (["--n", "2", "--seed", "1", "--slice-mm", "random", "--slice-axis", "x"], "draws each subject's axis"),
])
def test_cli_rejects_bad_arguments(tmp_path, cli_in_process, args, message):
    result = cli_in_process("synth", tmp_path / "out", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_generates_a_cohort_with_custom_regions(tmp_path):
    result = run_cli("synth", str(tmp_path), "--n", "2", "--seed", "9",
                     "--regions", "lateral_ventricles", "putamen=2", "--workers", "1")
    assert result.returncode == 0, result.stderr
    rows = read_table(tmp_path / "participants.csv")
    assert [r["subject"] for r in rows] == ["sub-0001", "sub-0002"]
    assert "putamen_ml" in rows[0]
    assert (tmp_path / "ground_truth" / "putamen.nii.gz").exists()
    again = run_cli("synth", str(tmp_path), "--n", "2", "--seed", "9")
    assert again.returncode == 2 and "already holds a cohort" in again.stderr


def test_cli_renders_a_cohort_in_another_contrast_with_thick_slices(tmp_path):
    result = run_cli("synth", str(tmp_path), "--n", "1", "--seed", "9", "--contrast", "flair",
                     "--slice-mm", "6", "--slice-axis", "y", "--workers", "1")
    assert result.returncode == 0, result.stderr
    (row,) = read_table(tmp_path / "participants.csv")
    assert row["contrast"] == "flair"
    scan = load_volume(tmp_path / "sub-0001.nii.gz")
    assert scan.shape == (91, 37, 91) and np.allclose(scan.voxel_sizes, (2, 6, 2))
