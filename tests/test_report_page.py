"""The one-page report: content read back from the PDF, the picture rendered from
it, orientation, failures and resuming."""

from __future__ import annotations

import csv
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from napari_brainage.io import Volume
from napari_brainage.model.card import read_card, write_card
from napari_brainage.report_page import VIEWS, upright_slice
from napari_brainage.uncertainty import Calibration

pdfium = pytest.importorskip("pypdfium2")


def _pdf_text_and_picture(path):
    document = pdfium.PdfDocument(str(path))
    assert len(document) == 1  # one page per scan
    page = document[0]
    return page.get_textpage().get_text_range(), np.asarray(page.render(scale=1.5).to_pil().convert("RGB"))


def test_slices_are_upright_with_the_patient_right_on_the_right():
    """A scan stored LAS (FSL's order, x flipped) with a marker right, anterior and
    superior of the centre: every plane shows it right/front and up."""
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (40, -40, -40)
    data = np.zeros((41, 41, 41), np.float32)
    # voxel i -> x = 40 - 2i: patient right (x > 0) is i < 20
    data[8, 30, 30] = 1.0
    volume = Volume(data, affine)
    canonical = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(data, affine)).dataobj)
    marker = np.unravel_index(np.argmax(canonical), canonical.shape)
    for name, axis, _, _ in VIEWS:
        picture = upright_slice(canonical, axis, marker[axis])
        row, column = np.unravel_index(np.argmax(picture), picture.shape)
        assert row > picture.shape[0] // 2, f"{name}: the marker is not in the upper half (origin lower)"
        assert column > picture.shape[1] // 2, f"{name}: the marker is not on the right"
    assert volume.shape == data.shape


@pytest.fixture
def calibrated_model(tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    card = read_card(folder)
    rng = np.random.default_rng(0)
    ages = rng.uniform(45, 80, 60)
    card.calibration = Calibration(ages=tuple(ages), predicted=tuple(ages + rng.normal(0, 3, 60)), source="test")
    write_card(card, folder)
    return folder


def test_report_pages_say_what_the_csv_says_and_a_bad_scan_stops_nothing(calibrated_model, tiny_cohort, tmp_path,
                                                                        capsys):
    from napari_brainage.cli import main
    from napari_brainage.io import save_volume
    from napari_brainage.synthetic.config import CohortConfig
    from napari_brainage.synthetic.model import ageing_model
    from napari_brainage.synthetic.render import CONTRASTS

    t2 = ageing_model(CohortConfig()).synthesize(66.0, np.random.default_rng(2), contrast=CONTRASTS["t2"])
    t2_path = save_volume(Volume(t2.data, t2.affine), tmp_path / "t2scan.nii.gz")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a scan")
    first = next(csv.DictReader(open(tiny_cohort)))
    good = tmp_path / "one.csv"  # a participants CSV: the scan's age comes with it
    good.write_text(f"subject,path,age\nsub-0001,{tiny_cohort.parent / first['path']},{first['age']}\n")
    out = tmp_path / "reports"
    status = main(["report", str(good), str(t2_path), str(corrupt), "--out", str(out), "--model",
                   str(calibrated_model), "--png", "--interval-level", "0.8"])
    assert status == 1  # done, with failures
    rows = {r["subject"]: r for r in csv.DictReader(open(out / "report.csv"))}
    assert set(rows) == {"sub-0001", "t2scan", "corrupt"}
    assert sorted(p.name for p in out.glob("*.pdf")) == ["sub-0001_report.pdf", "summary.pdf", "t2scan_report.pdf"]

    text, picture = _pdf_text_and_picture(out / "sub-0001_report.pdf")
    row = rows["sub-0001"]
    card = read_card(calibrated_model)
    assert f"{float(row['predicted_age']):.1f} y" in text
    assert f"80 % interval {float(row['interval_low']):.1f}\N{EN DASH}{float(row['interval_high']):.1f} y" in text
    assert "centile)" in text and "against 60 held-out subjects" in text
    assert card.weights["predictor.pt"][:12] in text
    for plane in ("axial", "coronal", "sagittal"):
        assert plane in text
    assert "neurological" in text and "Registration check" in text
    # The map's colours and the colour bar (orange-yellow: inferno's top), and the cyan outline.
    red, green, blue = (picture[..., i].astype(int) for i in range(3))
    assert np.count_nonzero((red > 200) & (green > 90) & (blue < 90)) > 2000
    assert np.count_nonzero((red < 60) & (green > 180) & (blue > 180)) > 200
    png = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "sub-0001_report.png"))
    assert png.shape[0] > png.shape[1]  # portrait

    failed_text, _ = _pdf_text_and_picture(out / "t2scan_report.pdf")
    assert "QC failed" in failed_text and "T2-like" in failed_text
    assert "interval" not in failed_text.split("against")[0] and "axial" not in failed_text
    assert rows["t2scan"]["predicted_age"] == "" and "corrupt" in rows["corrupt"]["error"]
    # Every failed row begins with its scan's path, a QC failure's as a read failure's.
    assert all(rows[name]["error"].startswith(f"{rows[name]['path']}: ") for name in ("t2scan", "corrupt"))

    summary, _ = _pdf_text_and_picture(out / "summary.pdf")
    assert "Failed (2)" in summary and "t2scan" in summary and "corrupt" in summary

    # Nothing replaced without asking; --resume redoes only the failures.
    assert main(["report", str(good), "--out", str(out), "--model", str(calibrated_model)]) == 2
    assert "--resume" in capsys.readouterr().err
    before = (out / "sub-0001_report.pdf").stat().st_mtime_ns
    assert main(["report", str(good), str(t2_path), str(corrupt), "--out", str(out), "--model",
                 str(calibrated_model), "--resume", "--interval-level", "0.8"]) == 1
    assert "2 scans this run" in capsys.readouterr().out
    assert (out / "sub-0001_report.pdf").stat().st_mtime_ns == before
    assert len(list(csv.DictReader(open(out / "report.csv")))) == 3


def test_names_and_ages_that_would_mislead_or_escape_are_refused(tmp_path, tiny_cohort):
    """A subject name with path parts wrote a report outside --out; a "nan" age gave a
    centile of 100; a non-number crashed with a traceback."""
    from napari_brainage.errors import InputError
    from napari_brainage.inference import collect_inputs

    scan = tiny_cohort.parent / "sub-0001.nii.gz"
    for subject, age, message in (("../keep", "50", "cannot name a file"), ("", "50", "cannot name a file"),
                                  ("a", "eighty", "not a number of years"), ("a", "nan", "between 0 and 120"),
                                  ("a", "-5", "between 0 and 120"), ("a", "inf", "between 0 and 120")):
        table = tmp_path / "bad.csv"
        table.write_text(f"subject,path,age\n{subject},{scan},{age}\n")
        with pytest.raises(InputError, match=message):
            collect_inputs([table])


def test_nan_blocks_are_filled_and_huge_floats_rescaled_not_overflowed():
    from napari_brainage.intensity import standardise
    from napari_brainage.io import load_volume
    from napari_brainage.samples import sample_path

    data = load_volume(sample_path("synthetic_age50")).data.astype(np.float64)
    holed = data.copy()
    holed[40:50, 40:50, 40:50] = np.nan  # a 10-voxel cube inside the brain
    check = standardise(holed)
    assert np.isfinite(check.data).all() and check.data[40:50, 40:50, 40:50].min() > 0  # no hole read as background
    assert "nearest finite voxels" in check.warnings[0]
    huge = standardise(data * 1e36)  # float32 overflows beyond 3.4e38
    assert np.isfinite(huge.data).all() and "rescaled" in huge.notes[0]
    np.testing.assert_allclose(huge.data / huge.data.mean(), standardise(data).data / standardise(data).data.mean(),
                               rtol=1e-4, atol=1e-5)


def test_report_and_calibrate_never_replace_or_mix_without_asking(calibrated_model, tiny_cohort, tmp_path, capsys):
    from napari_brainage.cli import main

    first = next(csv.DictReader(open(tiny_cohort)))
    scan = tiny_cohort.parent / first["path"]
    table = tmp_path / "one.csv"
    table.write_text(f"subject,path,age\nsub-0001,{scan},{first['age']}\n")
    model = ["--model", str(calibrated_model)]
    out = tmp_path / "reports"
    out.mkdir()
    (out / "summary.pdf").write_text("KEEP")  # pages without a report.csv: still someone's
    assert main(["report", str(table), "--out", str(out), *model]) == 2
    assert (out / "summary.pdf").read_text() == "KEEP" and "already holds reports" in capsys.readouterr().err
    assert main(["report", str(table), "--out", str(out), "--resume", "--overwrite", *model]) == 2
    assert main(["report", str(table), "--out", str(out), "--overwrite", "--interval-level", "0.8", *model]) == 0
    page = out / "sub-0001_report.pdf"
    # A resumed run at another level would mix levels in one table: refused.
    assert main(["report", str(table), "--out", str(out), "--resume", *model]) == 2
    assert "--interval-level 0.800" in capsys.readouterr().err
    # A deleted page is redone on resume.
    page.unlink()
    assert main(["report", str(table), "--out", str(out), "--resume", "--interval-level", "0.8", *model]) == 0
    assert page.exists() and "1 scans this run" in capsys.readouterr().out
    # More than 60 calibration subjects can give: refused before any scan is read, with the most they can.
    assert main(["predict", str(table), "--out", str(tmp_path / "p.csv"), "--interval-level", "0.99", *model]) == 2
    assert "most they support is 0.984" in capsys.readouterr().err
    assert main(["predict", str(table), "--out", str(out), *model]) == 2  # a folder for a file
    assert "needs a file name" in capsys.readouterr().err

    keep = tmp_path / "keep.csv"
    keep.write_text("KEEP")
    twice = tmp_path / "twice.csv"
    twice.write_text(f"subject,path,age\na,{scan},50\nb,{scan},60\n")
    assert main(["calibrate", str(twice), "--model", str(calibrated_model), "--overwrite"]) == 2
    assert "the same scan" in capsys.readouterr().err
    assert main(["calibrate", str(table), "--model", str(calibrated_model), "--out", str(keep)]) == 2
    assert keep.read_text() == "KEEP"


def test_resuming_with_another_model_is_refused(calibrated_model, tiny_model, tiny_cohort, tmp_path, capsys):
    from napari_brainage.cli import main
    from napari_brainage.inference import model_id

    out = tmp_path / "results.csv"
    assert main(["predict", str(tiny_cohort.parent / "sub-0001.nii.gz"), "--out", str(out), "--model",
                 str(calibrated_model)]) == 0
    [row] = list(csv.DictReader(open(out)))
    assert row["model"] == model_id(read_card(calibrated_model)) and len(row["model"]) == 12
    # The bundled model: another predictor, with weights that match their card (a card
    # faked to name another predictor is refused as tampered before any of this).
    assert main(["predict", str(tiny_cohort.parent / "sub-0002.nii.gz"), "--out", str(out), "--resume"]) == 2
    assert "another model" in capsys.readouterr().err


def test_population_shares_are_read_once_and_again_when_the_table_changes(tmp_path, monkeypatch):
    from napari_brainage import report_page

    assert report_page.population_shares(tmp_path) == {}  # a folder with no table
    table = tmp_path / "population_regions.csv"
    table.write_text("region,share_in_top10\nhippocampus,0.5\nthalamus,0.25\n")
    assert report_page.population_shares(tmp_path) == {"hippocampus": 0.5, "thalamus": 0.25}
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    for _ in range(3):  # a cohort's pages: no re-reading
        assert report_page.population_shares(tmp_path)["hippocampus"] == 0.5
    assert opened == []
    table.write_text("region,share_in_top10\nhippocampus,0.75\n")
    os.utime(table, ns=(1, table.stat().st_mtime_ns + 10**9))  # a newer version of the file
    assert report_page.population_shares(tmp_path) == {"hippocampus": 0.75}
    assert len(opened) == 1


def test_the_summary_shows_predicted_ages_of_scans_without_a_chronological_age():
    """A scan with a predicted age but no chronological one was on no chart and in no list
    (the page read "no scan has an age: nothing to plot"; second break test)."""
    from napari_brainage.inference import AgeResult
    from napari_brainage.model.card import ModelCard
    from napari_brainage.report_page import draw_summary

    def texts(figure):
        found = [t.get_text() for t in figure.texts]
        for ax in figure.axes:
            found += [ax.get_title(), ax.get_xlabel(), *(t.get_text() for t in ax.texts),
                      *(t.get_text() for t in ax.get_yticklabels())]
        return "\n".join(found)

    unaged = AgeResult(subject="noage", path="noage.nii.gz", predicted_age=64.52, interval_low=59.71,
                       interval_high=69.33, interval_level=0.9, qc_status="pass")
    aged = AgeResult(subject="good1", path="good1.nii.gz", predicted_age=72.8, age=69.6, qc_status="pass")
    alone = texts(draw_summary([unaged], ModelCard(), "bundled"))
    assert "nothing to plot" not in alone and "predicted brain ages" in alone and "noage" in alone
    mixed = texts(draw_summary([aged, unaged], ModelCard(), "bundled"))
    assert "Brain age reports: 2 scans" in mixed and "1 scan with an age" in mixed
    assert "Without a chronological age (1): noage 64.5 y (59.7-69.3)" in mixed
