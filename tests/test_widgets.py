"""Widgets driven in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainage._napari.widgets.scan_info import ScanInfoWidget


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
from napari_brainage._napari.widgets.brain_age import BrainAgeWidget  # noqa: E402
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
    assert f"predicted age   {expected.predicted_age:.1f}\u00a0y" in widget.result.value
    assert f"brain-age gap   {expected.gap:+.1f} y" in widget.result.value
    assert f"corrected gap   {expected.corrected_gap:+.1f} y" in widget.result.value

    overlay = viewer.layers["importance (synthetic_age50_accelerated)"]
    np.testing.assert_array_equal(overlay.affine.affine_matrix, scan.affine.affine_matrix)
    assert overlay.colormap.name == "inferno (see-through)" and overlay.blending == "translucent"
    assert overlay.colormap.map(np.array([0.0]))[0, 3] == 0  # low importance: the scan shows through
    # Default display from the map's own distribution: transparent below its median,
    # its top tenth in the brightest colour; the colour bar says what the colours mean.
    inside = overlay.data[overlay.data > 0]
    low, high = overlay.contrast_limits
    assert (inside < low).mean() == pytest.approx(0.5, abs=0.01)
    assert (inside >= high).mean() == pytest.approx(0.10, abs=0.01)
    assert overlay.colorbar.visible
    # Same voxels as the core's map, in napari's display layout.
    from napari_brainage._napari.layers import layer_to_volume

    written = layer_to_volume(*overlay.as_layer_data_tuple()[:2])
    np.testing.assert_allclose(written.data, importance_map(volume, model, device).data, atol=1e-5)
    np.testing.assert_array_equal(written.affine, volume.affine)
    assert widget.run.enabled and not widget.cancel.enabled
    assert overlay not in widget.scan.choices  # maps are not offered as scans to analyse
    widget.opacity.value = 0.35
    assert overlay.opacity == pytest.approx(0.35)


def test_brain_age_widget_cancel_and_errors(make_napari_viewer, qtbot, tiny_model, tmp_path, monkeypatch):
    from napari_brainage._napari.widgets import brain_age

    errors: list[str] = []
    monkeypatch.setattr(brain_age, "show_error", errors.append)  # what the user would be shown
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.open_sample("napari-brainage", "synthetic_age80")
    widget.model.value = str(tiny_model)
    worker = widget.start()
    ended = _ended(worker)
    widget.stop()
    assert not widget.busy and widget.run.enabled  # ready at once, not when the worker notices
    assert widget.result.value.endswith("cancelled") and "synthetic_age80" in widget.result.value
    qtbot.waitUntil(lambda: bool(ended), timeout=120_000)
    qtbot.wait(50)
    assert widget.result.value.endswith("cancelled")
    assert not any(layer.name.startswith("importance") for layer in viewer.layers)

    widget.age.value = "two hundred"
    assert widget.start() is None  # refused before any work
    assert errors[-1] == "Brain age: the age box has age 'two hundred', not a number of years"
    widget.age.value = "130"  # the same rule as tables and the CLI
    assert widget.start() is None
    assert errors[-1] == "Brain age: the age box has age '130'; ages must lie between 0 and 120 years, both excluded"

    widget.age.value = "80"
    widget.model.value = str(tmp_path)  # not a model folder
    _run_and_wait(qtbot, widget)
    assert widget.result.value.startswith("scan: synthetic_age80\nfailed: ")
    assert "not a napari-brainage model folder" in widget.result.value
    assert errors[-1].startswith("Brain age failed for synthetic_age80: ")
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
    from napari_brainage._napari.layers import layer_to_volume

    model, device = load_model(tiny_model, "cpu", need_noise_model=True)
    expected = importance_map(load_volume(sample_path("synthetic_age80")), model, device, method="gradcam")
    np.testing.assert_allclose(layer_to_volume(*layer.as_layer_data_tuple()[:2]).data, expected.data, atol=1e-5)
    widget.method.value = "noise"
    _run_and_wait(qtbot, widget)
    assert "importance (synthetic_age80)" in viewer.layers and layer in viewer.layers  # both kept


def test_brain_age_widget_gives_a_predictor_only_model_its_age_and_says_why_there_is_no_noise_map(
        make_napari_viewer, qtbot, tiny_model, tmp_path, monkeypatch):
    """B8 (third break test): the widget demanded a noise model to load any model, so a
    model from `train predictor` alone could not even give an age."""
    from test_cli import _predictor_only

    shown: list[tuple[str, str]] = []
    for severity in ("info", "warning", "error"):
        monkeypatch.setattr(brain_age_module, f"show_{severity}",
                            lambda message, severity=severity: shown.append((severity, message)))
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.open_sample("napari-brainage", "synthetic_age80")
    # A first run with a noise model leaves its map; the re-run that makes none must not
    # leave that map beside its own numbers (fourth break test).
    widget.model.value = str(tiny_model)
    _run_and_wait(qtbot, widget)
    assert "importance (synthetic_age80)" in viewer.layers
    widget.model.value = str(_predictor_only(tiny_model, tmp_path / "m1"))
    _run_and_wait(qtbot, widget)
    model, device = load_model(tiny_model, "cpu")
    expected = predict_age(load_volume(sample_path("synthetic_age80")), model, device, age=80.0)
    assert f"predicted age   {expected.predicted_age:.1f}\u00a0y" in widget.result.value
    assert widget.result.value.endswith(brain_age_module.NO_NOISE_MODEL)
    assert shown[-1][0] == "warning" and shown[-1][1].startswith(f"Brain age {expected.predicted_age:.1f} y")
    assert "this model has no noise model" in shown[-1][1]
    assert not any(layer.name.startswith("importance") for layer in viewer.layers)
    assert not widget.export.enabled  # Export writes the map: there is none
    # The sentence sits below the numbers, not in their table: there, Qt widened the
    # label column to fit it and pushed the values to the far right (fourth break test).
    table, _, below = brain_age_module.ResultPanel.html(widget.result.value).partition("</table>")
    assert "no importance map" in below and "no importance map" not in table and "predicted age" in table
    widget.method.value = "saliency"  # a Captum method needs only the predictor
    _run_and_wait(qtbot, widget)
    assert "importance Saliency (synthetic_age80)" in viewer.layers and widget.export.enabled
    # Export names the model of the run, not the one in the box now (fourth break test).
    predictor_only = widget.model.value
    widget.model.value = str(tiny_model)
    widget.export_dir.value = str(tmp_path / "out")
    (tmp_path / "out").mkdir()
    captioned_with = []
    real_caption = brain_age_module.caption_lines
    monkeypatch.setattr(brain_age_module, "caption_lines",
                        lambda result, model, *a, **k: captioned_with.append(model) or real_caption(result, model,
                                                                                                    *a, **k))
    assert widget.export_results() is not None
    assert captioned_with == [predictor_only]
    assert all(severity != "error" for severity, _ in shown)


def test_brain_age_widget_prefills_age_from_a_participants_csv(make_napari_viewer, tiny_cohort):
    import csv as _csv

    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    row = next(_csv.DictReader(open(tiny_cohort)))
    viewer.open(str(tiny_cohort.parent / row["path"]), plugin="napari-brainage")
    assert widget.age.value == f"{float(row['age']):g}"


# ------------------------------------------------------------------ Brain age: state, errors, Cancel
# The core is replaced by fast stand-ins where the point is the widget's state, not the numbers.
import threading  # noqa: E402

from widget_fakes import ITK_ERROR, FakeCore  # noqa: E402
from widget_fakes import ended as _ended  # noqa: E402

from napari_brainage._napari.widgets import brain_age as brain_age_module  # noqa: E402
from napari_brainage.inference import AgeResult  # noqa: E402

SAMPLE = "synthetic_age50_accelerated"


@pytest.fixture
def notices(monkeypatch):
    """Every notification the Brain age widget shows, as (severity, message)."""
    shown: list[tuple[str, str]] = []
    for severity in ("info", "warning", "error"):
        monkeypatch.setattr(brain_age_module, f"show_{severity}",
                            lambda message, severity=severity: shown.append((severity, message)))
    return shown


def _is_ready(widget) -> bool:
    return (widget.run.enabled and not widget.cancel.enabled and widget.progress.native.isHidden()
            and not widget.busy)


def test_brain_age_scan_box_follows_opened_and_selected_layers(make_napari_viewer, qtbot, oblique_scan,
                                                                 monkeypatch, notices):
    from napari_brainage._napari.widgets._common import IMPORTANCE, SOURCE_LAYER, layer_volume, show_volume
    from napari_brainage._napari.widgets.population import PopulationWidget

    FakeCore(monkeypatch)
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    [sample] = viewer.open_sample("napari-brainage", SAMPLE)
    assert widget.scan.value is sample and widget.age.value == "50"
    _run_and_wait(qtbot, widget)
    assert "59.9\u00a0y" in widget.result.value and SAMPLE in widget.result.value

    # File > Open of another scan: the box follows it; no age is known for it, so none
    # is shown (not the sample's 50), and the sample's numbers leave the panel.
    [other] = viewer.open(str(oblique_scan), plugin="napari-brainage")
    assert widget.scan.value is other
    assert widget.age.value == ""
    assert widget.result.value == "" and not widget.export.enabled and not widget.report.enabled
    widget.age.value = "63"  # typed for this scan, kept for it

    # Selecting a layer in the layer list selects it in the box, with its own age and result.
    viewer.layers.selection.active = sample
    assert widget.scan.value is sample and widget.age.value == "50"
    assert widget.result.value.startswith(f"scan: {SAMPLE}\npredicted age   59.9\u00a0y")
    assert widget.export.enabled and widget.report.enabled
    viewer.layers.selection.active = other
    assert widget.scan.value is other and widget.age.value == "63"

    # Layers the plugin adds itself are never offered as scans: importance maps, the
    # population map and the template beside it, threshold masks.
    overlay = viewer.layers[f"importance ({SAMPLE})"]
    extra = show_volume(viewer, layer_volume(sample), "importance (copy)", IMPORTANCE,
                        metadata={SOURCE_LAYER: other.name})
    population = PopulationWidget(viewer)
    population_map = population.load_map()
    template = population._add_template()
    from napari_brainage._napari.widgets.threshold import ThresholdWidget

    threshold = ThresholdWidget(viewer)
    threshold.percent.value = 3.0
    assert [layer.name for layer in widget.scan.choices] == [SAMPLE, "oblique_psl"]
    for layer in (overlay, extra, population_map, template):
        assert layer not in widget.scan.choices
    # Selecting a map selects the scan it was made for.
    viewer.layers.selection.active = overlay
    assert widget.scan.value is sample
    viewer.layers.selection.active = extra
    assert widget.scan.value is other
    # Removing the selected scan moves the box to one that is left, with that scan's own age.
    viewer.layers.remove(other)
    assert widget.scan.value is sample and widget.age.value == "50"


def test_brain_age_worker_errors_become_notifications_and_the_widget_is_ready(make_napari_viewer, qtbot,
                                                                               monkeypatch, notices):
    core = FakeCore(monkeypatch)
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.open_sample("napari-brainage", SAMPLE)
    _run_and_wait(qtbot, widget)
    assert "predicted age   59.9\u00a0y" in widget.result.value and widget.export.enabled

    def registration_fails(volume, mode):
        raise RuntimeError(ITK_ERROR)

    core.prepare = registration_fails
    worker, _ = _run_and_wait(qtbot, widget, timeout=20_000)  # superqt drops RuntimeErrors: this hung
    assert _is_ready(widget)
    severity, message = notices[-1]
    assert severity == "error" and message.startswith(f"Brain age failed for {SAMPLE}: ")
    assert "All samples map outside moving image buffer" in message
    assert "\n" not in message and "Traceback" not in message
    # The panel says what failed for which scan; the earlier run's numbers are gone.
    assert widget.result.value.startswith(f"scan: {SAMPLE}\nfailed: ")
    assert "All samples map outside moving image buffer" in widget.result.value
    assert "59.9" not in widget.result.value and not widget.export.enabled
    assert widget.export_results() is None  # nothing stale to export

    # Errors of other kinds (torch, I/O) take the same way.
    for error in (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                  OSError(28, "No space left on device")):
        def fails(volume, mode, error=error):
            raise error

        core.prepare = fails
        _run_and_wait(qtbot, widget, timeout=20_000)
        assert _is_ready(widget)
        assert notices[-1][0] == "error" and SAMPLE in notices[-1][1]
        assert str(error.args[-1]) in notices[-1][1] and "\n" not in notices[-1][1]

    # Then a scan that works is analysed as usual.
    core.prepare = lambda volume, mode: object()
    _run_and_wait(qtbot, widget)
    assert "predicted age   59.9\u00a0y" in widget.result.value and _is_ready(widget)


def test_brain_age_shows_the_qc_verdict(make_napari_viewer, qtbot, monkeypatch, notices):
    from napari_brainage.quality import QualityError, QualityReport

    core = FakeCore(monkeypatch)
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.open_sample("napari-brainage", SAMPLE)
    _run_and_wait(qtbot, widget)
    assert "predicted age   59.9\u00a0y  QC pass" in widget.result.value
    # The calibrated model's interval and the gap's centile, in the panel and the notification.
    assert "90 % interval 54.9\N{EN DASH}64.9 y\n" in widget.result.value
    assert "corrected gap   +9.9 y (97th centile)" in widget.result.value
    assert notices[-1] == ("info", f"Brain age 59.9 y, gap +9.9 y, QC pass: {SAMPLE} (age 50)")

    core.qc = "slices 5.0 mm thick along the z axis"
    _run_and_wait(qtbot, widget)
    assert "predicted age   59.9\u00a0y  QC warning: slices 5.0 mm thick along the z axis" in widget.result.value
    severity, message = notices[-1]
    assert severity == "warning" and message.startswith("Brain age 59.9 y, gap +9.9 y, QC warning: ")
    assert "90 % interval 54.9\N{EN DASH}64.9 y (QC warning: may not hold)" in widget.result.value
    assert message.endswith("slices 5.0 mm thick along the z axis")

    def not_t1(volume, mode):
        raise QualityError(QualityReport(failures=["CSF is brighter than white matter: not a T1-weighted scan"]))

    core.prepare = not_t1
    _run_and_wait(qtbot, widget, timeout=20_000)
    assert _is_ready(widget)
    assert widget.result.value == (f"scan: {SAMPLE}\nQC failed: CSF is brighter than white matter: "
                                   "not a T1-weighted scan \N{EM DASH} no age")
    severity, message = notices[-1]
    assert severity == "error" and SAMPLE in message and "QC failed" in message and "\n" not in message
    assert not widget.export.enabled

    # A result that says "fail" (no age) rather than an exception: the same verdict, no map.
    core.prepare = lambda volume, mode: object()
    monkeypatch.setattr(brain_age_module, "predict_age", lambda *a, **k: AgeResult(
        subject="scan", path="", error="QC failed: most of the brain is outside the field of view"))
    layers = [layer.name for layer in viewer.layers]
    _run_and_wait(qtbot, widget, timeout=20_000)
    assert widget.result.value == (f"scan: {SAMPLE}\nQC failed: most of the brain is outside the field of view "
                                   "\N{EM DASH} no age")
    assert notices[-1][0] == "error" and not widget.export.enabled and _is_ready(widget)
    assert [layer.name for layer in viewer.layers] == layers  # no map made


def test_brain_age_notification_shows_the_numbers_in_its_visible_line(make_napari_viewer, qtbot, monkeypatch,
                                                                       notices):
    """napari's notification shows one line of about 45 characters until expanded:
    the numbers and the verdict must be in it."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QLabel

    FakeCore(monkeypatch)
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.open_sample("napari-brainage", SAMPLE)
    _run_and_wait(qtbot, widget)
    severity, message = notices[-1]
    toast = NapariQtNotification(message, severity)
    qtbot.addWidget(toast)
    toast.show()
    qtbot.wait(20)
    visible = QLabel.text(toast.message)  # the elided text actually drawn
    assert visible.endswith("\u2026") and toast.message.full_text() == message  # it is cut...
    assert "59.9 y" in visible and "gap +9.9 y" in visible and "QC pass" in visible  # ...after the numbers


def test_brain_age_cancel_returns_to_ready_while_the_core_is_stuck(make_napari_viewer, qtbot, monkeypatch,
                                                                   notices):
    core = FakeCore(monkeypatch, predicted=77.7)
    entered, release = threading.Event(), threading.Event()

    def stuck(volume, mode):  # a registration that takes for ever
        entered.set()
        release.wait(60)
        return object()

    core.prepare = stuck
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.open_sample("napari-brainage", SAMPLE)
    stale = widget.start()
    ended = _ended(stale)
    qtbot.waitUntil(entered.is_set, timeout=20_000)
    assert widget.cancel.enabled and not widget.run.enabled

    widget.cancel.clicked.emit()  # the button, as the user presses it
    assert _is_ready(widget)  # at once, while the worker is still in the core call
    assert widget.result.value == f"scan: {SAMPLE}\ncancelled"
    assert not ended

    release.set()  # the core call returns late: its result is not shown
    qtbot.waitUntil(lambda: bool(ended), timeout=20_000)
    qtbot.wait(50)
    assert widget.result.value.endswith("cancelled") and "77.7" not in widget.result.value
    assert not [layer for layer in viewer.layers if layer.name.startswith("importance")]
    assert not [message for _, message in notices if "77.7" in message]

    # A new run works as usual.
    core.prepare = lambda volume, mode: object()
    _run_and_wait(qtbot, widget)
    assert "predicted age   77.7\u00a0y" in widget.result.value and f"importance ({SAMPLE})" in viewer.layers


def test_brain_age_cancel_while_stuck_then_run_again_ignores_the_first(make_napari_viewer, qtbot, monkeypatch,
                                                                       notices):
    """A second run started while the cancelled one is still stuck is the one shown,
    whichever ends first."""
    core = FakeCore(monkeypatch, predicted=61.0)
    release = threading.Event()
    calls = []

    def first_stuck(volume, mode):
        calls.append(1)
        if len(calls) == 1:
            release.wait(60)
            raise RuntimeError("late error of the cancelled run")
        return object()

    core.prepare = first_stuck
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.open_sample("napari-brainage", SAMPLE)
    stale = widget.start()
    ended = _ended(stale)
    qtbot.waitUntil(lambda: bool(calls), timeout=20_000)
    widget.stop()
    _run_and_wait(qtbot, widget)
    assert "predicted age   61.0\u00a0y" in widget.result.value
    release.set()
    qtbot.waitUntil(lambda: bool(ended), timeout=20_000)
    qtbot.wait(50)
    assert "predicted age   61.0\u00a0y" in widget.result.value and _is_ready(widget)
    assert not [message for _, message in notices if "late error" in message]


def test_three_docked_widgets_fit_a_1080_pixel_screen(make_napari_viewer):
    """Brain age, Slices and Regions docked together: the window's minimum height
    leaves room for a taskbar on a 1920 x 1080 screen (it was 1,125 px)."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-brainage", SAMPLE)
    for name in ("Brain age", "Slices", "Regions"):
        viewer.window.add_plugin_dock_widget("napari-brainage", name)
    assert viewer.window._qt_window.minimumSizeHint().height() <= 1000


def test_brain_age_interval_level_is_the_users_choice(make_napari_viewer, qtbot, monkeypatch, notices):
    FakeCore(monkeypatch)
    viewer = make_napari_viewer()
    widget = BrainAgeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.open_sample("napari-brainage", SAMPLE)
    assert widget.level.value == 0.9
    widget.level.value = 0.8
    _run_and_wait(qtbot, widget)
    assert "80 % interval 55.9\N{EN DASH}63.9 y" in widget.result.value


# ------------------------------------------------------------------ Brain age: layer names, renames, crowded docks
def _docked(viewer, *names):
    """The plugin's widgets docked as a user docks them (napari hands them its viewer
    behind a proxy, whose layers are new objects at every access)."""
    return [viewer.window.add_plugin_dock_widget("napari-brainage", name)[1] for name in names]


def test_file_stem_keeps_plain_names_and_mends_the_others():
    from napari_brainage._napari.widgets._common import file_stem
    from napari_brainage.inference import _subject_name  # the CLI's rule for names that name files

    for plain in ("sub-0001", "sub-0001 [1]", "mäsk ü,1", "被験者 3"):
        assert file_stem(plain) == plain
    for name, stem in (("../escaped", "escaped"), ("a/b", "a_b"), ("..\\..\\x", "x"), (".hidden", "hidden"),
                       ("..", "scan"), ("", "scan"), ("/abs/path", "abs_path"), ("a\x00b", "a_b")):
        assert file_stem(name) == stem
        assert _subject_name(stem, "table") == stem  # one the CLI accepts as it is


def test_brain_age_export_and_report_stay_in_the_chosen_folder(make_napari_viewer, qtbot, monkeypatch, notices,
                                                               tmp_path):
    """A layer named "../escaped" exported one folder up, "a/b" into a missing folder."""
    from napari.qt.threading import thread_worker

    FakeCore(monkeypatch)
    reports = []

    @thread_worker
    def write_page(analysis, model_dir, level, path):  # where the page would go (drawing it is tested elsewhere)
        reports.append(path)
        return path

    monkeypatch.setattr(brain_age_module, "_write_report_page", write_page)
    viewer = make_napari_viewer()
    [widget] = _docked(viewer, "Brain age")
    [scan] = viewer.open_sample("napari-brainage", SAMPLE)
    folder = tmp_path / "export"
    folder.mkdir()
    widget.export_dir.value = str(folder)
    for name, stem in (("../escaped", "escaped"), ("a/b", "a_b")):
        scan.name = name
        _run_and_wait(qtbot, widget)
        paths = widget.export_results()
        assert paths is not None, notices[-1]
        assert sorted(p.name for p in paths.values()) == [f"{stem}_brainage.csv", f"{stem}_importance.nii.gz",
                                                          f"{stem}_view.png"]
        assert all(p.parent == folder and p.exists() for p in paths.values())
        assert notices[-1] == ("info", f"Brain age: exported to {folder}")
        worker = widget.write_report()
        qtbot.waitUntil(lambda: widget.report.enabled, timeout=20_000)
        assert worker is not None and reports[-1] == folder / f"{stem}_report.pdf"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # nothing beside the folder
    import csv

    [row] = list(csv.DictReader(open(folder / "a_b_brainage.csv")))
    assert row["subject"] == "a/b"  # the numbers still name the layer as it is called


def test_brain_age_and_the_map_widgets_follow_a_renamed_scan(make_napari_viewer, qtbot, monkeypatch, notices,
                                                             oblique_scan, tmp_path):
    """Overlays are tied to their scan by its id, not its name: after a rename the
    opacity slider, a re-run, Export's colour bar and the other widgets' pickers
    still find the scan's overlay."""
    from napari_brainage._napari.widgets._common import IMPORTANCE, map_layers

    FakeCore(monkeypatch)
    viewer = make_napari_viewer()
    widget, threshold, slices, regions, population = _docked(viewer, "Brain age", "Threshold", "Slices", "Regions",
                                                             "Population")
    [first] = viewer.open_sample("napari-brainage", SAMPLE)
    _run_and_wait(qtbot, widget)
    [second] = viewer.open(str(oblique_scan), plugin="napari-brainage")
    _run_and_wait(qtbot, widget)
    overlays = map_layers(viewer, IMPORTANCE)
    assert [layer.name for layer in overlays] == [f"importance ({SAMPLE})", "importance (oblique_psl)"]
    first_map, second_map = overlays
    first.name, second.name = "renamed scan", "a/b"

    viewer.layers.selection.active = first
    assert widget.scan.value == first
    widget.opacity.value = 0.2
    assert first_map.opacity == pytest.approx(0.2) and second_map.opacity == pytest.approx(0.9)
    bar = widget._colour_bar(first, "noise")
    assert bar is not None and (bar.low, bar.high) == pytest.approx(tuple(first_map.contrast_limits))
    # Each picker shows the map of the scan selected in the layer list...
    for picker in (threshold.map, slices.map, regions.subject, population.subject):
        assert picker.value == first_map
    viewer.layers.selection.active = second
    for picker in (threshold.map, slices.map, regions.subject, population.subject):
        assert picker.value == second_map
    # ...and selecting a map selects its scan.
    viewer.layers.selection.active = first_map
    assert widget.scan.value == first

    # A re-run replaces the scan's overlay (at the slider's opacity); it does not add a second.
    _run_and_wait(qtbot, widget)
    overlays = map_layers(viewer, IMPORTANCE)
    assert [layer.name for layer in overlays] == ["importance (oblique_psl)", "importance (renamed scan)"]
    assert overlays[1].opacity == pytest.approx(0.2) and first_map not in viewer.layers
    widget.export_dir.value = str(tmp_path)
    assert widget.export_results() is not None and widget._colour_bar(first, "noise") is not None

    # Side by side finds the renamed scan, to show it under its map.
    population.load_map()
    population.subject.value = overlays[0]
    population.side_by_side.value = True
    assert population._grid().enabled and population._grid().stride == 2
    assert [layer.name for layer in list(viewer.layers)[:2]] == ["a/b", "importance (oblique_psl)"]
    population.side_by_side.value = False


def test_brain_age_drops_the_result_of_a_scan_closed_while_it_ran(make_napari_viewer, qtbot, monkeypatch, notices):
    core = FakeCore(monkeypatch, predicted=64.6)
    entered, release = threading.Event(), threading.Event()

    def stuck(volume, mode):
        entered.set()
        release.wait(60)
        return object()

    core.prepare = stuck
    viewer = make_napari_viewer()
    [widget] = _docked(viewer, "Brain age")
    [scan] = viewer.open_sample("napari-brainage", SAMPLE)
    [other] = viewer.open_sample("napari-brainage", "synthetic_age80")
    viewer.layers.selection.active = scan
    worker = widget.start()
    finished = _ended(worker)
    qtbot.waitUntil(entered.is_set, timeout=20_000)
    viewer.layers.remove(scan)
    assert _is_ready(widget)  # nothing left to wait for
    assert widget.scan.value == other and widget.result.value == ""
    release.set()
    qtbot.waitUntil(lambda: bool(finished), timeout=20_000)
    qtbot.wait(50)
    assert notices == [] and [layer.name for layer in viewer.layers] == ["synthetic_age80"]
    assert widget._results == {} and widget._panels == {}


def test_brain_age_result_stays_readable_docked_with_threshold_and_slices(make_napari_viewer, qtbot, monkeypatch,
                                                                         notices):
    """After a QC warning with Threshold and Slices docked below, the panel was cut
    mid-sentence with the interval out of sight, and the interval wrapped to the
    left margin: each line of the result is reachable, values wrap in their column."""
    from qtpy.QtGui import QTextCursor, QTextDocument

    core = FakeCore(monkeypatch, predicted=57.9)
    core.qc = ("slices 5.0 mm thick along the x axis (voxels 5 x 2 x 2 mm; the model was trained on 1-2 mm "
               "scans): the age may be biased by a few years")
    viewer = make_napari_viewer(show=True)
    widget, _, _ = _docked(viewer, "Brain age", "Threshold", "Slices")
    viewer.open_sample("napari-brainage", SAMPLE)
    window = viewer.window._qt_window
    window.resize(window.width(), window.minimumSizeHint().height())  # as crowded as the docks get
    _run_and_wait(qtbot, widget)
    qtbot.wait(100)
    panel = widget.result.native
    assert "QC warning" in widget.result.value and "may not hold" in widget.result.value
    assert panel.toPlainText().replace("\t", " ").replace("\n", " ").count("corrected gap") == 1
    line = panel.fontMetrics().lineSpacing()
    assert panel.viewport().height() >= 5 * line  # the numbers, not a sliver

    def shown(text: str):
        """Scroll ``text`` into view (as a user scrolls); where it starts and ends in the
        viewport, which must hold both."""
        found = panel.document().find(text, 0, QTextDocument.FindFlag.FindCaseSensitively)
        assert not found.isNull(), text
        panel.setTextCursor(found)
        panel.ensureCursorVisible()
        rects = []
        for position in (found.selectionStart(), found.selectionEnd()):
            cursor = QTextCursor(panel.document())
            cursor.setPosition(position)
            rects.append(panel.cursorRect(cursor))
            assert panel.viewport().rect().contains(rects[-1]), (text, rects[-1], panel.viewport().rect())
        return rects

    value_column = shown("57.9")[0].left()
    for text in ("scan: ", "few years", "not hold", "50.0 y", "corrected gap", "(97th centile)"):
        shown(text)
    # The interval is one unit in the value column: "90 % interval 52.9-62.9 y" on one line.
    start, end = shown("90 % interval 52.9\N{EN DASH}62.9 y")
    assert start.left() == value_column and start.top() == end.top()
