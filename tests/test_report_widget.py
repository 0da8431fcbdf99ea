"""The Brain age widget's Report button and its exported snapshot's caption, in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_brainage._napari.widgets import brain_age

SAMPLE = "synthetic_age50_accelerated"  # the scan the ``analysed`` fixture (conftest) analyses
pdfium = pytest.importorskip("pypdfium2")


def test_report_button_writes_the_page_of_the_selected_scan(analysed, qtbot, tmp_path, monkeypatch):
    viewer, widget, _, _ = analysed
    errors = []
    monkeypatch.setattr(brain_age, "show_error", errors.append)
    assert widget.report.enabled
    widget.export_dir.value = None
    assert widget.write_report() is None and "choose an existing folder" in errors[-1]

    widget.export_dir.value = str(tmp_path)
    worker = widget.write_report()
    path = tmp_path / f"{SAMPLE}_report.pdf"
    qtbot.waitUntil(lambda: path.exists() and widget.report.enabled, timeout=60_000)
    assert worker is not None
    text = pdfium.PdfDocument(str(path))[0].get_textpage().get_text_range()
    result = widget._results[widget.scan.value].result
    assert f"Brain age report: {SAMPLE}" in text
    assert f"{result.predicted_age:.1f} y" in text and "chronological age 50.0 y" in text
    assert "axial" in text and "Registration check" in text
    assert f"file: {viewer.layers[SAMPLE].metadata['source_path']}" in text  # the scan's file, not blank

    # Asked before replacing: a "no" leaves the page as it was.
    stamp = path.stat().st_mtime_ns
    monkeypatch.setattr(brain_age, "confirm_overwrite", lambda paths, parent: False)
    assert widget.write_report() is None
    assert path.stat().st_mtime_ns == stamp


def test_the_exported_snapshot_caption_wraps_and_shows_the_slice_and_colours(analysed, tmp_path):
    viewer, widget, _, _ = analysed
    viewer.window.resize(900, 700)  # a narrow canvas: the caption must wrap, not be cut
    widget.export_dir.value = str(tmp_path)
    lines = brain_age.caption_lines(widget._results[widget.scan.value].result, widget.model.value, "noise",
                                    view=widget._view_line())
    assert lines[-1].startswith("axial: anterior up") and "slice at S = " in lines[-1]
    paths = widget.export_results()
    png = np.asarray(Image.open(paths["png"]))
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    band = png[canvas.shape[0]:]
    # Wrapped: more text rows than caption lines (each row of text is about 24 px).
    assert band.shape[0] > 24 * (len(lines) + 1)
    # The colour bar: the overlay's inferno colours (orange, purple) appear in the caption band.
    red, green, blue = (band[..., i].astype(int) for i in range(3))
    assert np.count_nonzero((red > 180) & (green > 60) & (green < 170) & (blue < 80)) > 20
    assert np.count_nonzero((red > 60) & (blue > 60) & (green < 40)) > 20
