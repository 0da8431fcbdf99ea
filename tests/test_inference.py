"""Predictions, importance maps and population maps from a model folder."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import rotation

from napari_brainage.inference import (
    AgeResult,
    collect_inputs,
    corrected_gap,
    importance_map,
    load_model,
    predict_age,
)
from napari_brainage.io import Volume, load_volume
from napari_brainage.metrics import auroc, relevance_mass
from napari_brainage.model.card import ModelCard
from napari_brainage.quality import QualityError
from napari_brainage.population import rank_regions, structure_name
from napari_brainage.space.grid import resample
from napari_brainage.space.template import load_template, mni_grid
from napari_brainage.stats import RunningStats


def test_bias_correction_follows_de_lange_and_cole():
    card = ModelCard(bias_slope=0.8, bias_intercept=12.0)
    # A 70-year-old predicted 68: the cohort trend expects 0.8*70+12 = 68, so no residual gap.
    assert corrected_gap(68.0, 70.0, card) == pytest.approx(0.0)
    assert corrected_gap(73.0, 70.0, card) == pytest.approx(5.0)


def test_prediction_and_gaps(tiny_model, tiny_cohort):
    model, device = load_model(tiny_model, "cpu")
    row = next(csv.DictReader(open(tiny_cohort)))
    volume = load_volume(tiny_cohort.parent / row["path"])
    result = predict_age(volume, model, device, age=float(row["age"]))
    assert 0 < result.predicted_age < 120
    assert result.gap == pytest.approx(result.predicted_age - float(row["age"]))
    assert result.corrected_age == pytest.approx(float(row["age"]) + result.corrected_gap)
    assert predict_age(volume, model, device).gap is None


def test_the_api_refuses_another_scans_preparation_and_impossible_ages(tiny_model, tiny_cohort):
    """``prepared=`` from another scan gave that scan's age under this scan's name
    (third break test); ages of -5, nan or "63" gave a gap of 76.8 y, nan, or a
    bare TypeError."""
    from napari_brainage.errors import InputError
    from napari_brainage.inference import importance_in_model_space, prepare_input

    model, device = load_model(tiny_model, "cpu", need_noise_model=True)
    first = load_volume(tiny_cohort.parent / "sub-0001.nii.gz")
    second = load_volume(tiny_cohort.parent / "sub-0002.nii.gz")
    prepared = prepare_input(first)
    with pytest.raises(InputError, match=r"prepared= was made from .*sub-0001\.nii\.gz, not from .*sub-0002"):
        predict_age(second, model, device, prepared=prepared)
    with pytest.raises(InputError, match="prepared= was made from"):
        importance_in_model_space(second, model, device, prepared=prepared)
    # The same scan, loaded again, may reuse it: same grid, same voxels.
    again = load_volume(tiny_cohort.parent / "sub-0001.nii.gz")
    assert predict_age(again, model, device, prepared=prepared).predicted_age == pytest.approx(
        predict_age(first, model, device).predicted_age, abs=1e-4)
    for age, words in ((-5, "between 0 and 120"), (float("nan"), "between 0 and 120"),
                       ("sixty", "not a number of years")):
        with pytest.raises(InputError, match=words):
            predict_age(first, model, device, age=age, prepared=prepared)
    assert predict_age(first, model, device, age="63", prepared=prepared).age == 63.0
    with pytest.raises(InputError, match="has age True, not a number of years"):
        predict_age(first, model, device, age=True, prepared=prepared)


def test_the_api_takes_what_a_researcher_passes_or_says_what_it_needs(tiny_model, tiny_cohort):
    """A path or a nibabel image where a Volume is expected, a device typed as a
    string, one path where a list is expected: each failed deep inside
    ("'str' object has no attribute 'path'", torch's "not compiled with CUDA",
    "/: no NIfTI files": a new user's API test). They are taken, or refused in words."""
    import nibabel as nib
    import torch

    from napari_brainage.errors import InputError
    from napari_brainage.model.card import ModelError

    model, device = load_model(tiny_model, None, need_noise_model=True)  # None: "auto", as elsewhere
    assert device == torch.device("cpu")
    path = tiny_cohort.parent / "sub-0001.nii.gz"
    reference = predict_age(load_volume(path), model, device).predicted_age
    for scan in (str(path), path, nib.load(path)):
        assert predict_age(scan, model, "cpu").predicted_age == pytest.approx(reference, abs=1e-4), type(scan)
    with pytest.raises(InputError, match=r"not numpy.ndarray; wrap an array as Volume\(data, affine\)"):
        predict_age(np.zeros((10, 10, 10)), model, device)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="torch sees no CUDA device"):
            predict_age(path, model, "cuda:0")
    assert collect_inputs(str(tiny_cohort)) == collect_inputs([tiny_cohort])
    # A map's header keeps the scan's geometry, not its description or display range.
    image = nib.load(path)
    image.header["descrip"], image.header["cal_max"] = b"MPRAGE T1", 3000.0
    header = importance_map(image, model, device).header
    assert header["cal_min"] == 0 and header["cal_max"] == 1 and header["descrip"].item() == b""
    assert header.get_sform(coded=True)[1] == image.header.get_sform(coded=True)[1]


def test_importance_map_lands_on_the_input_grid(tiny_model, tiny_cohort, tmp_path):
    model, device = load_model(tiny_model, "cpu", need_noise_model=True)
    volume = load_volume(tiny_cohort.parent / "sub-0001.nii.gz")
    on_mni = importance_map(volume, model, device)
    assert on_mni.shape == volume.shape
    np.testing.assert_array_equal(on_mni.affine, volume.affine)
    assert 0 <= on_mni.data.min() and on_mni.data.max() <= 1
    assert (on_mni.data[volume.data == 0] == 0).all()  # background carries no importance

    # The same brain on a rotated, 1.5 mm, axis-swapped grid: the map follows it there.
    affine = np.eye(4)
    affine[:3, :3] = rotation((0, 0, 90)) @ np.diag([1.5, 1.5, 1.5])
    affine[:3, 3] = [100, -110, -75]
    shape = (150, 125, 110)
    moved = Volume(resample(volume.data, volume.affine, shape, affine), affine)
    mapped = importance_map(moved, model, device)
    assert mapped.shape == shape
    np.testing.assert_array_equal(mapped.affine, affine)
    back = resample(mapped.data, affine, volume.shape, volume.affine)
    inside = (volume.data > 0) & (back > 0)
    assert np.corrcoef(back[inside], on_mni.data[inside])[0, 1] > 0.8


def test_inputs_from_files_folders_and_csv(tiny_cohort, tmp_path):
    folder = tiny_cohort.parent
    from_csv = collect_inputs([tiny_cohort])
    assert len(from_csv) == 12 and from_csv[0].age is not None
    assert [s.subject for s in collect_inputs([folder])] == [s.subject for s in from_csv]
    assert collect_inputs([folder / "sub-0002.nii.gz"])[0].subject == "sub-0002"
    # The same file named twice is one scan, with the table's age.
    twice = collect_inputs([folder / "sub-0002.nii.gz", tiny_cohort, folder / "sub-0002.nii.gz"])
    assert len(twice) == 12 and next(s for s in twice if s.subject == "sub-0002").age == from_csv[1].age
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(folder / "sub-0002.nii.gz", other / "sub-0002.nii.gz")
    clash = re.escape(f"more than once (sub-0002: {folder / 'sub-0002.nii.gz'}, {other / 'sub-0002.nii.gz'})")
    with pytest.raises(ValueError, match=clash):
        collect_inputs([folder / "sub-0002.nii.gz", other])
    with pytest.raises(FileNotFoundError, match="no such file"):
        collect_inputs([folder / "absent.nii.gz"])


def test_metrics():
    truth = np.zeros(100, bool)
    truth[:10] = True
    perfect = truth.astype(float)
    assert auroc(perfect, truth) == 1.0
    assert auroc(-perfect, truth) == 0.0
    assert auroc(np.ones(100), truth) == 0.5
    rng = np.random.default_rng(0)
    assert 0.4 < auroc(rng.random(100_000), rng.random(100_000) < 0.1) < 0.6
    assert relevance_mass(perfect, truth, np.ones(100, bool)) == 1.0


def test_running_mean_and_region_ranking():
    running = RunningStats((2, 2))
    for value in (1.0, 2.0, 6.0):
        running.add(np.full((2, 2), value))
    np.testing.assert_allclose(running.mean, 3.0)
    kit = load_template(2)
    fake = kit.label_mask("Left_Hippocampus", "Right_Hippocampus").astype(np.float32)
    ranked = rank_regions(fake, kit)
    assert ranked[0].region == "Hippocampus" and ranked[0].mean_importance > 0.99
    assert structure_name("Right_Lateral_Ventricle") == "Lateral_Ventricle"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "napari_brainage.cli", *args],
                          capture_output=True, text=True, timeout=600)


def test_cli_predict_explain_population(tiny_model, tiny_cohort, tmp_path):
    results = tmp_path / "results.csv"
    done = run_cli("predict", str(tiny_cohort), "--out", str(results), "--model", str(tiny_model))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(results)))
    assert len(rows) == 12 and all(r["predicted_age"] and r["corrected_gap"] for r in rows)
    again = run_cli("predict", str(tiny_cohort), "--out", str(results), "--model", str(tiny_model))
    assert again.returncode == 2 and "already exists" in again.stderr

    scans = [str(tiny_cohort.parent / f"sub-000{i}.nii.gz") for i in (1, 2)]
    maps = tmp_path / "maps"
    done = run_cli("explain", *scans, "--out", str(maps), "--model", str(tiny_model))
    assert done.returncode == 0, done.stderr
    written = load_volume(maps / "sub-0001_importance.nii.gz")
    np.testing.assert_array_equal(written.affine, load_volume(scans[0]).affine)

    population = tmp_path / "population.nii.gz"
    done = run_cli("population", *scans, "--out", str(population), "--model", str(tiny_model))
    assert done.returncode == 0, done.stderr
    mean = load_volume(population)
    assert mean.shape == mni_grid(2)[0]
    expected = (load_volume(maps / "sub-0001_importance.nii.gz").data
                + load_volume(maps / "sub-0002_importance.nii.gz").data) / 2
    np.testing.assert_allclose(mean.data, expected, atol=1e-5)
    ranks = list(csv.DictReader(open(tmp_path / "population_regions.csv")))
    assert ranks[0]["rank"] == "1" and len(ranks) > 20


def test_cli_reports_a_bad_scan_without_stopping(tiny_model, tiny_cohort, tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a scan")
    good = tiny_cohort.parent / "sub-0003.nii.gz"
    done = run_cli("predict", str(bad), str(good), "--out", str(tmp_path / "r.csv"), "--model", str(tiny_model))
    assert done.returncode == 1
    rows = {r["subject"]: r for r in csv.DictReader(open(tmp_path / "r.csv"))}
    assert "corrupt" in rows["bad"]["error"] and rows["sub-0003"]["predicted_age"]


def test_a_scan_in_a_contrast_the_model_reads_says_so_in_the_csv_and_the_panel(tiny_model, tmp_path):
    """A model whose card reads T2 ages a T2 render; the row and the result panel say
    which contrast QC saw. The T1 model refuses the same scan, naming the contrast."""
    import json

    from napari_brainage.model.card import CARD_FILE
    from napari_brainage.quality import ANY_CONTRAST
    from napari_brainage.report import format_result
    from napari_brainage.synthetic.config import CohortConfig
    from napari_brainage.synthetic.model import ageing_model
    from napari_brainage.synthetic.render import CONTRASTS

    synthetic = ageing_model(CohortConfig())
    scan = synthetic.synthesize(66.0, np.random.default_rng(2), contrast=CONTRASTS["t2"])
    volume = Volume(scan.data, scan.affine, path=tmp_path / "t2.nii.gz")
    model, device = load_model(tiny_model, "cpu")
    with pytest.raises(QualityError, match="T2-like; this model reads T1 contrast only"):
        predict_age(volume, model, device)
    reads_all = tmp_path / "model"
    shutil.copytree(tiny_model, reads_all)
    card = json.loads((reads_all / CARD_FILE).read_text())
    card["contrasts"] = list(ANY_CONTRAST)
    (reads_all / CARD_FILE).write_text(json.dumps(card))
    model, device = load_model(reads_all, "cpu")
    result = predict_age(volume, model, device, age=64.0)
    assert result.predicted_age is not None and result.contrast == "T2" and result.qc_status == "pass"
    row = dict(zip(AgeResult.FIELDS, result.row()))
    assert row["contrast"] == "T2"
    assert "read as         T2-weighted" in format_result(result, "t2")


def test_an_exported_caption_carries_the_qc_warning_the_panel_shows():
    """The snapshot people paste into slides said "predicted age 45.3 y ... gap +15.3 y" for
    a 5 mm scan whose panel warned (helper's report, 2026-12-01)."""
    from napari_brainage.report import caption_lines, format_result

    warned = AgeResult(subject="thick", path="thick.nii.gz", predicted_age=45.3, age=30.0, gap=15.3,
                       corrected_gap=13.0, interval_low=40.5, interval_high=50.1, interval_level=0.9,
                       qc_status="warn", qc="slices 5.0 mm thick along the z axis")
    lines = caption_lines(warned, None)
    assert lines[0].startswith("thick: predicted age 45.3 y (90 % interval 40.5") and "; may not hold)" in lines[0]
    assert lines[1] == "QC warning: slices 5.0 mm thick along the z axis"
    assert "QC warning: slices 5.0 mm thick" in format_result(warned)  # the panel says the same
    # A warning about the person's age, not the scan: the interval (of ages, given the scan) still holds.
    young = AgeResult(subject="young", path="young.nii.gz", predicted_age=78.4, age=25.0, gap=53.4,
                      corrected_gap=50.9, interval_low=73.6, interval_high=83.2, interval_level=0.9, qc_status="warn",
                      qc="age 25.0 y lies outside the ages the model learned (37-87 y): the gap is extrapolated "
                         "and has no centile")
    assert "may not hold" not in format_result(young) and "may not hold" not in caption_lines(young, None)[0]
    assert caption_lines(young, None)[1].startswith("QC warning: age 25.0 y lies outside")
    both = AgeResult(**{**young.__dict__, "qc": "slices 5.0 mm thick along the z axis; " + young.qc})
    assert "may not hold" in format_result(both)
    passed = AgeResult(subject="fine", path="fine.nii.gz", predicted_age=61.0, qc_status="pass", qc="ok")
    assert not any("QC" in line for line in caption_lines(passed, None))


def test_participant_tables_and_folders_as_people_have_them(tiny_cohort, tmp_path):
    """Excel's byte-order mark and semicolons, BIDS's TSV, n/a ages, capitalised columns,
    macOS ._ files and a BIDS tree were refused or misread (helper's report, 2026-12-01)."""
    from napari_brainage.participants import read_participants

    rows = list(csv.DictReader(open(tiny_cohort)))[:3]
    scans = [str(tiny_cohort.parent / r["path"]) for r in rows]
    tables = {
        "excel.csv": ("\ufeffsubject,path,age\r\n" + "".join(f"{r['subject']},{p},{r['age']}\r\n"
                                                            for r, p in zip(rows, scans)), "utf-8"),
        "semicolons.csv": ("Subject;Path;Age\n" + "".join(f"{r['subject']};{p};{r['age']}\n"
                                                          for r, p in zip(rows, scans)), "utf-8"),
        "bids_like.tsv": ("participant_id\tpath\tage\n" + "".join(f"{r['subject']}\t{p}\tn/a\n"
                                                                  for r, p in zip(rows, scans)), "utf-8"),
    }
    for name, (text, encoding) in tables.items():
        (tmp_path / name).write_text(text, encoding=encoding)
        found = collect_inputs([tmp_path / name])
        assert [s.subject for s in found] == [r["subject"] for r in rows], name
        assert [str(s.path) for s in found] == scans, name
        expected = [None] * 3 if name.endswith(".tsv") else [float(r["age"]) for r in rows]
        assert [s.age for s in found] == expected, name
    # Semicolons come with decimal commas (a second user's report).
    (tmp_path / "commas.csv").write_text(f"subject;path;age\ns1;{scans[0]};70,5\n")
    assert collect_inputs([tmp_path / "commas.csv"])[0].age == 70.5
    # One file named by a table and again by itself is one scan, with the table's name and age.
    with pytest.warns(UserWarning, match="subjects 's1' and 'sub-0001' are the same scan .*analysed once, as 's1'"):
        both = collect_inputs([scans[0], tmp_path / "commas.csv"])  # named sub-0001 by itself, s1 by the table
    assert [(s.subject, s.age) for s in both] == [("s1", 70.5)]
    (tmp_path / "no_path.tsv").write_text("participant_id\tage\nsub-01\t40\n")
    with pytest.raises(ValueError, match="BIDS participants.tsv names no scan files: give the BIDS folder"):
        read_participants(tmp_path / "no_path.tsv")

    # Hidden files in a folder are not subjects.
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(scans[0], folder / "sub-01.nii.gz")
    (folder / "._sub-01.nii.gz").write_bytes(b"\0\5\26\7")  # macOS AppleDouble
    (folder / ".backup.nii.gz").write_bytes(b"")
    assert [s.subject for s in collect_inputs([folder])] == ["sub-01"]

    # A BIDS dataset: its T1w scans (sessions too), named by file, aged by participants.tsv.
    bids = tmp_path / "bids"
    for part, scan in (("sub-01/anat", scans[0]), ("sub-02/ses-1/anat", scans[1])):
        (bids / part).mkdir(parents=True)
        name = part.replace("/anat", "").replace("/", "_") + "_T1w.nii.gz"
        shutil.copy(scan, bids / part / name)
    (bids / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz").write_bytes(b"")  # not a T1w: not listed
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t61.5\tF\nsub-02\tn/a\tM\n")
    found = collect_inputs([bids])
    assert [(s.subject, s.age) for s in found] == [("sub-01_T1w", 61.5), ("sub-02_ses-1_T1w", None)]
