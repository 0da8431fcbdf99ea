"""Widgets driven in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainage._widgets.scan_info import ScanInfoWidget



def test_scan_info_follows_the_selected_layer(make_napari_viewer, oblique_scan, tmp_path):
    viewer = make_napari_viewer()
    widget = ScanInfoWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert "Open a 3D scan" in widget.info.value
    assert tuple(viewer.scene.camera.orientation2d) == ("up", "right")

    viewer.open_sample("napari-brainage", "icbm152_t1_2mm")
    text = widget.info.value
    assert "icbm152_2009a_t1_2mm.nii.gz" in text
    assert "2 x 2 x 2 mm" in text and "LAS" in text and "91 x 109 x 91" in text

    viewer.open(str(oblique_scan), plugin="napari-brainage")
    text = widget.info.value
    assert widget.layer.value.name == "oblique_psl"
    assert "PSL" in text and "oblique by" in text
    assert "0.9 x 1.2 x 2.5 mm" in text
    assert widget.info.tooltip == str(oblique_scan)

    # Picking a layer in the combo box switches the description.
    widget.layer.value = viewer.layers["icbm152_t1_2mm"]
    assert "LAS" in widget.info.value
    viewer.layers.clear()
    assert "Open a 3D scan" in widget.info.value


def test_scan_info_ignores_2d_and_rgb_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = ScanInfoWidget(viewer)
    viewer.add_image(np.zeros((10, 10)), name="2d")
    viewer.add_image(np.zeros((10, 10, 3), np.uint8), rgb=True, name="rgb")
    assert widget.layer.choices == ()


# ------------------------------------------------------------------ Brain age
from napari_brainage._widgets.brain_age import BrainAgeWidget  # noqa: E402
from napari_brainage.inference import importance_map, load_model, predict_age  # noqa: E402
from napari_brainage.io import load_volume  # noqa: E402
from napari_brainage.samples import sample_path  # noqa: E402


def _run_and_wait(qtbot, widget, timeout=120_000):
    """Start the widget's worker; count GUI-thread timer ticks while it runs."""
    from qtpy.QtCore import QTimer

    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    worker = widget.start()
    assert worker is not None and widget.busy
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)
    timer.stop()
    return worker, len(ticks)


def test_brain_age_widget_predicts_and_overlays_importance(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    [scan] = viewer.open_sample("napari-brainage", "synthetic_age50_accelerated")
    assert widget.scan.value is scan and widget.age.value == "50"  # pre-filled from the sample
    widget.model.value = str(tiny_model)

    _, ticks = _run_and_wait(qtbot, widget)

    # The GUI thread kept processing events while the model ran.
    assert ticks > 5
    model, device = load_model(tiny_model, "cpu", need_noise_model=True)
    volume = load_volume(sample_path("synthetic_age50_accelerated"))
    expected = predict_age(volume, model, device, age=50.0)
    assert f"predicted age   {expected.predicted_age:.1f} y" in widget.result.value
    assert f"brain-age gap   {expected.gap:+.1f} y" in widget.result.value
    assert f"corrected gap   {expected.corrected_gap:+.1f} y" in widget.result.value

    overlay = viewer.layers["importance (synthetic_age50_accelerated)"]
    np.testing.assert_array_equal(overlay.affine.affine_matrix, scan.affine.affine_matrix)
    assert overlay.colormap.name == "inferno (see-through)" and overlay.blending == "translucent"
    assert overlay.colormap.map(np.array([0.0]))[0, 3] == 0  # low importance: the scan shows through
    # Same voxels as the core's map, in napari's display layout.
    from napari_brainage._layers import layer_to_volume

    written = layer_to_volume(*overlay.as_layer_data_tuple()[:2])
    np.testing.assert_allclose(written.data, importance_map(volume, model, device).data, atol=1e-5)
    np.testing.assert_array_equal(written.affine, volume.affine)
    assert widget.run.enabled and not widget.cancel.enabled
    assert overlay not in widget.scan.choices  # maps are not offered as scans to analyse
    widget.opacity.value = 0.35
    assert overlay.opacity == pytest.approx(0.35)


def test_brain_age_widget_cancel_and_errors(make_napari_viewer, qtbot, tiny_model, tmp_path, monkeypatch):
    from napari_brainage._widgets import brain_age

    errors: list[str] = []
    monkeypatch.setattr(brain_age, "show_error", errors.append)  # what the user would be shown
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.open_sample("napari-brainage", "synthetic_age80")
    widget.model.value = str(tiny_model)
    widget.start()
    widget.stop()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert widget.result.value == "cancelled"
    assert not any(layer.name.startswith("importance") for layer in viewer.layers)

    widget.age.value = "two hundred"
    assert widget.start() is None  # refused before any work
    assert errors[-1] == "Brain age: age must be a number of years, got 'two hundred'"

    widget.age.value = "80"
    widget.model.value = str(tmp_path)  # not a model folder
    _run_and_wait(qtbot, widget)
    assert widget.result.value == "failed"
    assert "not a napari-brainage model folder" in errors[-1]
    assert widget.run.enabled and len(viewer.layers) == 1


def test_brain_age_widget_runs_a_baseline_method_beside_the_noise_model(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.open_sample("napari-brainage", "synthetic_age80")
    widget.model.value = str(tiny_model)
    widget.method.value = "gradcam"
    _run_and_wait(qtbot, widget)
    layer = viewer.layers["importance Grad-CAM (synthetic_age80)"]
    assert layer.metadata["method"] == "gradcam"
    from napari_brainage._layers import layer_to_volume

    model, device = load_model(tiny_model, "cpu", need_noise_model=True)
    expected = importance_map(load_volume(sample_path("synthetic_age80")), model, device, method="gradcam")
    np.testing.assert_allclose(layer_to_volume(*layer.as_layer_data_tuple()[:2]).data, expected.data, atol=1e-5)
    widget.method.value = "noise"
    _run_and_wait(qtbot, widget)
    assert "importance (synthetic_age80)" in viewer.layers and layer in viewer.layers  # both kept


def test_brain_age_widget_prefills_age_from_a_participants_csv(make_napari_viewer, tiny_cohort):
    import csv as _csv

    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    row = next(_csv.DictReader(open(tiny_cohort)))
    viewer.open(str(tiny_cohort.parent / row["path"]), plugin="napari-brainage")
    assert widget.age.value == f"{float(row['age']):g}"
