"""The one-page report: content read back from the PDF, the picture rendered from
it, orientation, failures and resuming."""

from __future__ import annotations

import csv
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

    summary, _ = _pdf_text_and_picture(out / "summary.pdf")
    assert "Failed QC (2)" in summary and "t2scan" in summary and "corrupt" in summary

    # Nothing replaced without asking; --resume redoes only the failures.
    assert main(["report", str(good), "--out", str(out), "--model", str(calibrated_model)]) == 2
    assert "--resume" in capsys.readouterr().err
    before = (out / "sub-0001_report.pdf").stat().st_mtime_ns
    assert main(["report", str(good), str(t2_path), str(corrupt), "--out", str(out), "--model",
                 str(calibrated_model), "--resume"]) == 1
    assert "2 scans this run" in capsys.readouterr().out
    assert (out / "sub-0001_report.pdf").stat().st_mtime_ns == before
    assert len(list(csv.DictReader(open(out / "report.csv")))) == 3
