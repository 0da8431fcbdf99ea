"""Brain age dock widget: predicted age, gaps, QC verdict and the importance overlay.

Input -> one core call in a worker thread -> numbers in the widget and an
"importance" layer on the scan's own grid. The scan box follows the layer the
user opens or selects; the age and the result panel belong to that scan (a
scan's numbers are never shown beside another's name). The viewer stays
responsive; Cancel returns to ready at once, whatever the worker is doing, and
so does closing the scan being analysed (its result is dropped unseen); any
error becomes a one-line notification naming the scan. An overlay is tied to its
scan by the scan layer's id (``_common.SOURCE_ID``), so renaming the scan loses
nothing. Export writes the map (NIfTI, the scan's geometry), the numbers (CSV)
and a captioned snapshot (PNG), named after the scan (``_common.file_stem``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, LineEdit, ProgressBar, PushButton
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from superqt import QCollapsible

from ...inference import (
    AgeResult,
    check_age,
    importance_map,
    load_model,
    map_model_id,
    predict_age,
    prepare_input,
    write_results,
)
from ...io import Volume, save_volume
from ...options import Device, Method, Preprocessing, RunOptions, map_description
from ...participants import age_from_participants
from ...report import ColourBar, caption_lines, captioned, format_result, notification, save_png, scan_line
from ...report_page import page_path
from ...uncertainty import DEFAULT_LEVEL
from ...threshold import map_contrast_limits
from ..layers import SOURCE_PATH
from ..viewer import orientation_text, show_anatomically, text_overlay
from ._common import (
    IMPORTANCE,
    MAP_KIND,
    ResultPanel,
    WorkerError,
    WorkerSlot,
    confirm_overwrite,
    describe,
    file_stem,
    is_quality_failure,
    layer_volume,
    made_for,
    map_layers,
    overlay_colormap,
    quality_reasons,
    same_layer,
    scan_layers,
    selected_scan,
    show_volume,
    source_metadata,
)

_STEPS = ("loading the model", "preprocessing (registration)", "predicting brain age",
          "computing the importance map")


#: What is said when the noise method is asked of a model that has no noise model.
NO_NOISE_MODEL = ("no importance map: this model has no noise model (train one with `napari-brainage train "
                  "noise-model`), or choose another method under Options (e.g. Saliency: it needs only the "
                  "predictor)")


@thread_worker(progress={"total": len(_STEPS)}, ignore_errors=True)  # errors: _on_error
def _analyse(volume: Volume, age: float | None, options: RunOptions):
    """Generator run in a worker: yields between steps so Cancel can stop it there.
    Any error leaves it as a ``WorkerError`` (see there why not as it is). A model
    with no noise model still gives the age (and the Captum maps); with the noise
    method it returns no map, and ``_on_done`` says why."""
    try:
        yield _STEPS[0]
        # The age needs only the predictor: demanding the noise model here refused any
        # predictor-only model (`train predictor` alone) even an age.
        model, torch_device = load_model(options.model_dir, options.device.value)
        yield _STEPS[1]
        prepared = prepare_input(volume, options.preprocessing.value, model.card.contrasts)
        yield _STEPS[2]
        result = predict_age(volume, model, torch_device, age, prepared=prepared,
                             interval_level=options.interval_level)
        if result.predicted_age is None:  # failed QC, reported in the result: no age, no map
            return result, None, None, model.card
        if options.method is Method.NOISE and model.noise_model is None:  # the age, no map (_on_done says why)
            return result, None, getattr(prepared, "data", None), model.card
        yield _STEPS[3]
        importance = importance_map(volume, model, torch_device, prepared=prepared, method=options.method.value)
        # The scan on the template grid and the card travel with the result: the Report needs them.
        return result, importance, getattr(prepared, "data", None), model.card
    except Exception as err:
        raise WorkerError(err) from err


def _row(*widgets) -> Container:
    """Buttons side by side (one row instead of one each)."""
    return Container(widgets=list(widgets), layout="horizontal", labels=False, label=" ")


@dataclass
class _Analysis:
    """One scan's finished analysis, kept for Export and Report."""

    result: AgeResult
    importance: Volume
    method: str
    scan: Volume
    template_scan: np.ndarray | None  #: the scan on the template grid (the report's registration check)
    card: object                      #: the model's card (the report's chart and footer)
    model_dir: str | None = None      #: the model folder of the run, not the box's value at Export


@thread_worker(ignore_errors=True)  # errors: the Report button's errored handler
def _write_report_page(analysis: _Analysis, model_dir, level: float, path: Path) -> Path:
    """Draw and write one report page off the GUI thread (matplotlib's Figure API)."""
    from ...model.bundle import bundled_model_dir
    from ...population import rank_regions_of
    from ...report_page import ScanReport, draw_page, model_label, population_shares, save_page

    try:
        report = ScanReport(result=analysis.result, scan=analysis.scan, template_scan=analysis.template_scan,
                            importance=analysis.importance, regions=rank_regions_of(analysis.importance),
                            population_regions=population_shares(model_dir or bundled_model_dir()))
        return save_page(draw_page(report, analysis.card, model_label(model_dir), level), path)
    except Exception as err:
        raise WorkerError(err) from err


class BrainAgeWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self._slot = WorkerSlot()     # the worker this widget listens to
        self._running = None          # the scan layer that worker analyses
        self._shown = None            # the scan the age and the result panel belong to
        self._panels: dict = {}       # scan layer -> its result panel text
        self._results: dict = {}      # scan layer -> (AgeResult, importance Volume), for Export
        self._ages: dict = {}         # scan layer -> the age typed for it
        self.scan = ComboBox(label="scan", choices=self._image_layers,
                             tooltip="The scan to analyse: follows the layer you open or select. "
                                     "Maps and masks made by this plugin are not offered.")
        self.age = LineEdit(label="age (years)", tooltip="Chronological age, for the brain-age gap. "
                            "Filled from the scan's metadata or a participants.csv beside it when known; "
                            "empty otherwise (type it, or leave it empty if unknown).")
        self.model = FileEdit(label="model", mode="d", nullable=True,
                              tooltip="Model folder from `napari-brainage train`; empty: the bundled model.")
        self.device = ComboBox(label="device", choices=list(Device.values()), value=Device.AUTO.value,
                               tooltip="auto: the GPU when torch sees one, else the CPU.")
        self.preprocess = ComboBox(label="preprocessing", choices=list(Preprocessing.values()),
                                   value=Preprocessing.AUTO.value,
                                   tooltip="auto: use a scan on the MNI grid (or its voxel lattice) as it is, "
                                           "register any other to the MNI template; register: always; none: "
                                           "trust the scan's affine. Every route ends with the same brain mask "
                                           "and quality control.")
        self.method = ComboBox(label="method", choices=[(m.label, m.value) for m in Method], value=Method.NOISE.value,
                               tooltip="How importance is computed: the noise model (fast, the plugin's method) "
                                       "or a gradient/occlusion baseline from Captum (slower).")
        self.run = PushButton(text="Run", tooltip="Predict brain age and map voxel importance.")
        self.cancel = PushButton(text="Cancel", enabled=False,
                                 tooltip="Stop the running analysis (the widget is ready again at once).")
        self.progress = ProgressBar(label="progress", min=0, max=len(_STEPS), value=0, visible=False)
        # The age, its interval and the gaps without scrolling; a QC warning's sentence
        # takes more room where the dock has it, and scrolls where it has not.
        self.result = ResultPanel(min_lines=6)
        self.opacity = FloatSlider(label="overlay opacity", min=0.0, max=1.0, step=0.05, value=0.9,
                                   tooltip="Opacity of this scan's importance overlay.")
        self.export_dir = FileEdit(label="export to", mode="d", nullable=True,
                                   tooltip="Folder for the exported map (NIfTI), numbers (CSV) and snapshot (PNG).")
        self.export = PushButton(text="Export", enabled=False,
                                 tooltip="Write <scan>_importance.nii.gz, <scan>_brainage.csv and <scan>_view.png "
                                         "for the selected scan (asks before replacing files).")
        self.report = PushButton(text="Report", enabled=False,
                                 tooltip="Write <scan>_report.pdf: a one-page report (the age and its interval, the "
                                         "gap's centile, QC, three slices through the map's peak, the regions, the "
                                         "model), as `napari-brainage report` does (asks before replacing it).")
        self.level = ComboBox(label="interval", choices=[("80 %", 0.8), ("90 %", 0.9), ("95 %", 0.95)],
                              value=DEFAULT_LEVEL,
                              tooltip="Level of the prediction interval shown with the age (split conformal, "
                                      "calibrated on held-out subjects: it holds the age of this share of people "
                                      "whose scans read like this one).")
        # Settings most people leave alone fold away, so three docked widgets fit a
        # 1080-pixel screen (they did not: 1,125 px).
        self.settings = Container(widgets=[self.model, self.device, self.preprocess, self.method, self.level],
                                 labels=True)
        self._options_box = QCollapsible("Options: model, device, preprocessing, method, interval")
        self._options_box.addWidget(self.settings.native)
        self.extend([self.scan, self.age, _row(self.run, self.cancel), self.progress, self.opacity,
                     self.export_dir, _row(self.export, self.report)])
        self.native.layout().insertWidget(2, self._options_box)
        # The result across the dock's whole width, with no row label beside it (it says
        # "scan: <name>" first): the wider, the fewer lines a QC sentence wraps into.
        self.native.layout().insertWidget(5, self.result.native)
        # napari keeps a dock's rows together with a stretch below them only when no row
        # expands; the panel does (up to its text's height): the stretch is ours to add.
        self.native.layout().addStretch()
        self.run.changed.connect(self.start)
        self.export.changed.connect(self.export_results)
        self.report.changed.connect(self.write_report)
        self.opacity.changed.connect(self._set_opacity)
        self.cancel.changed.connect(self.stop)
        self.scan.changed.connect(self._follow_scan)
        self.age.changed.connect(self._remember_age)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        viewer.layers.selection.events.active.connect(self._on_selected)
        show_anatomically(viewer)
        self.scan.reset_choices()
        self._on_selected()
        self._follow_scan()

    # ---- which scan
    def _image_layers(self, _widget=None) -> list:
        return scan_layers(self._viewer)

    def _offered(self, layer) -> bool:
        return layer is not None and any(same_layer(layer, choice) for choice in self.scan.choices)

    def _on_inserted(self, event=None) -> None:
        """A newly opened scan becomes the one to analyse (maps this plugin adds are not scans)."""
        self.scan.reset_choices()
        layer = getattr(event, "value", None)
        if self._offered(layer):
            self.scan.value = layer
        self._follow_scan()

    def _on_removed(self, event=None) -> None:
        closed = getattr(event, "value", None)
        if closed is not None and not closed.metadata.get(MAP_KIND):
            # A closed scan's maps would stay drawn over the scans left, and the other
            # widgets would go on reading them (fourth break test): they go with it.
            for orphan in [m for m in map_layers(self._viewer) if made_for(m, closed)]:
                self._viewer.layers.remove(orphan)
        self.scan.reset_choices()
        layers = self._viewer.layers
        if self.busy and self._running not in layers:
            # The scan being analysed was closed: its numbers would belong to nothing
            # (they still popped up a notification). Stop, as Cancel does, and quietly.
            self._slot.release()
            self._set_ready(True)
        for table in (self._panels, self._results, self._ages):
            for layer in [layer for layer in table if layer not in layers]:
                del table[layer]
        self._follow_scan()

    def _on_selected(self, _event=None) -> None:
        """Selecting a scan in the layer list (or a map made for it) selects it here."""
        scan = selected_scan(self._viewer)
        if self._offered(scan):
            self.scan.value = scan

    def _follow_scan(self, _value=None) -> None:
        """When the scan changes, the age, the result panel and Export are that scan's."""
        layer = self.scan.value
        if same_layer(layer, self._shown):
            return
        self._shown = layer
        if layer in self._ages:  # what the user typed for this scan
            self.age.value = self._ages[layer]
        else:  # never another scan's age: the scan's own, or nothing
            age = self.known_age(layer)
            self.age.value = "" if age is None else f"{age:g}"
        self.result.value = self._panels.get(layer, "")
        self.export.enabled = self.report.enabled = layer in self._results

    def _remember_age(self, text: str) -> None:
        if self._shown is not None:
            self._ages[self._shown] = text

    @staticmethod
    def known_age(layer) -> float | None:
        """The age from the layer's metadata (samples), else from a participants.csv
        beside the scan's file that lists it (a cohort made by `synth`, or one's own)."""
        if layer is None:
            return None
        age = layer.metadata.get("age")
        if age is None:
            age = age_from_participants(layer.metadata.get(SOURCE_PATH))
        return age

    def _set_panel(self, layer, text: str) -> None:
        """The result panel of ``layer`` (shown now when it is the selected scan)."""
        self._panels[layer] = text
        if same_layer(layer, self.scan.value):
            self.result.value = text
            self.export.enabled = self.report.enabled = layer in self._results

    # ---- running
    @property
    def busy(self) -> bool:
        """True from Run until the analysis has finished, failed or been cancelled."""
        return self._slot.busy

    def _parse_age(self) -> float | None:
        text = self.age.value.strip()
        # The one rule for ages (tables, CLI, API): a finite number of years in 0-120.
        return check_age(text, "the age box") if text else None

    def start(self, _value=None):
        layer = self.scan.value
        if layer is None:
            show_error("Brain age: open a 3D scan first (File > Open Sample > napari-brainage).")
            return None
        if self.busy:
            return None
        try:
            age = self._parse_age()
            volume = layer_volume(layer)
        except ValueError as err:
            show_error(f"Brain age: {err}")
            return None
        options = RunOptions(model_dir=self.model.value, device=self.device.value,
                             preprocessing=self.preprocess.value, method=self.method.value,
                             interval_level=self.level.value)
        method = options.method.value
        worker = _analyse(volume, age, options)
        model_dir = options.model_dir
        selected = self._viewer.layers.selection.active  # given back at the end only if still so
        self._slot.connect(
            worker, yielded=self._on_step,
            returned=lambda out: self._on_done(layer, volume, *out, method=method, model_dir=model_dir,
                                               selected=selected),
            errored=lambda err: self._on_error(layer, err),
            finished=self._on_finished)
        self._running = layer
        self._results.pop(layer, None)  # this scan's numbers are being replaced
        self._set_panel(layer, scan_line(layer.name) + "\nrunning...")
        self._set_ready(False)
        self.progress.value = 0
        worker.start()
        return worker

    def stop(self, _value=None) -> None:
        """Ready again at once; the worker stops at its next step, and whatever it
        sends after this (a late result, an error) is ignored."""
        if not self._slot.busy:
            return
        self._slot.release()
        self._set_panel(self._running, scan_line(self._running.name) + "\ncancelled")
        self._set_ready(True)

    def _set_ready(self, ready: bool) -> None:
        self.run.enabled, self.cancel.enabled = ready, not ready
        self.progress.visible = not ready
        if ready:
            self.progress.label = "progress"

    def _on_step(self, step: str) -> None:
        self.progress.value = _STEPS.index(step)
        self.progress.label = step

    def _on_done(self, layer, volume: Volume, result: AgeResult, importance: Volume | None,
                 template_scan=None, card=None, method: str = "noise", model_dir=None, selected=None) -> None:
        if layer not in self._viewer.layers:  # closed meanwhile: nothing to show the numbers with
            return
        result.subject = layer.name
        result.path = result.path or str(layer.metadata.get(SOURCE_PATH) or "")  # the file, for CSV and report
        if result.predicted_age is None:  # failed QC: no age, no map
            self._drop_overlays(layer)
            self._set_panel(layer, format_result(result, layer.name))
            show_error(notification(result, layer.name))
            return
        if importance is None:  # the model has no noise model: the age, and why there is no map
            self._drop_overlays(layer)
            self._set_panel(layer, f"{format_result(result, layer.name)}\n{NO_NOISE_MODEL}")
            show_warning(f"{notification(result, layer.name)}; {NO_NOISE_MODEL}")
            return
        self.progress.value = len(_STEPS)
        importance.path = volume.path
        self._results[layer] = _Analysis(result, importance, method, volume, template_scan, card, model_dir)
        # The scan's earlier overlay of this method is replaced, found by the scan's id:
        # by its name, a renamed scan got a second overlay beside the first.
        show_volume(
            self._viewer, importance, name=self._map_name(layer, method), kind=IMPORTANCE,
            metadata={"predicted_age": result.predicted_age, **source_metadata(layer), "method": method,
                      "model": map_model_id(card, method) if card is not None else ""},
            replace=self._overlay(layer, method), colormap=overlay_colormap(), blending="translucent",
            opacity=self.opacity.value, contrast_limits=map_contrast_limits(importance.data),
        )
        if self._viewer.layers.selection.active is selected:  # the user chose no other layer meanwhile
            self._viewer.layers.selection.active = layer
        self._set_panel(layer, format_result(result, layer.name))
        (show_warning if result.qc_status == "warn" else show_info)(notification(result, layer.name))

    def _on_error(self, layer, error: Exception) -> None:
        """The scan's panel says why it failed (no numbers of an earlier run), and
        a one-line notification names the scan and the problem."""
        if layer not in self._viewer.layers:  # closed meanwhile: its failure concerns nobody
            return
        error = getattr(error, "error", error)  # a WorkerError carries the original
        self._results.pop(layer, None)
        self._drop_overlays(layer)
        if is_quality_failure(error):
            reasons = quality_reasons(error)
            self._set_panel(layer, f"{scan_line(layer.name)}\nQC failed: {reasons} \N{EM DASH} no age")
            show_error(f"Brain age: QC failed for {layer.name}: {reasons} \N{EM DASH} no age")
        else:
            reason = describe(error)
            self._set_panel(layer, f"{scan_line(layer.name)}\nfailed: {reason}")
            show_error(f"Brain age failed for {layer.name}: {reason}")

    def _on_finished(self) -> None:
        self._slot.release()
        self._set_ready(True)

    def _drop_overlays(self, layer) -> None:
        """Remove the scan's importance overlays: a re-run whose numbers replace the
        panel's but that made no map (failed, failed QC, no noise model) must not
        leave an earlier run's map, of another model perhaps, on the scan."""
        for overlay in [m for m in map_layers(self._viewer, IMPORTANCE) if made_for(m, layer)]:
            self._viewer.layers.remove(overlay)

    def _map_name(self, layer, method: str | None = None) -> str:
        """One overlay per scan and method: "importance (scan)" for the noise model
        (the name is for people; the widget finds the overlay with ``_overlay``)."""
        method = method or self.method.value
        if method == "noise":
            return f"importance ({layer.name})"
        return f"importance {Method.parse(method).label} ({layer.name})"

    def _overlay(self, layer, method: str | None = None):
        """The scan's importance overlay of ``method`` (the newest), by the scan's id in
        its metadata: the scan may have been renamed since (or the overlay)."""
        method = method or self.method.value
        own = [overlay for overlay in map_layers(self._viewer, IMPORTANCE)
               if made_for(overlay, layer) and overlay.metadata.get("method", "noise") == method]
        return own[-1] if own else None

    def _set_opacity(self, opacity: float) -> None:
        overlay = self._overlay(self.scan.value) if self.scan.value is not None else None
        if overlay is not None:
            overlay.opacity = opacity

    # ---- export
    def _view_line(self) -> str:
        """Which slice the snapshot is, and which way is which, for its caption."""
        dims = self._viewer.dims
        if dims.ndim != 3 or dims.ndisplay != 2:
            return orientation_text(self._viewer)
        sliced = int(dims.order[0])
        return f"{orientation_text(self._viewer)}; slice at {'SAR'[sliced]} = {dims.point[sliced]:+.1f} mm"

    def _colour_bar(self, layer, method: str) -> ColourBar | None:
        """The overlay's colours and limits as shown, for the snapshot's caption."""
        overlay = self._overlay(layer, method)
        if overlay is None:
            return None
        low, high = overlay.contrast_limits
        colours = overlay.colormap.map(np.linspace(0.0, 1.0, 256))
        return ColourBar(colours, float(low), float(high), Method.parse(method).definition)

    def write_report(self, _value=None):
        """Write the selected scan's one-page report into the export folder, in a worker."""
        layer = self.scan.value
        if layer not in self._results:
            show_error("Brain age: run the analysis of this scan before writing its report.")
            return None
        if self.export_dir.value is None or not Path(self.export_dir.value).is_dir():
            show_error("Brain age: choose an existing folder to write the report to (export to).")
            return None
        analysis = self._results[layer]
        path = page_path(self.export_dir.value, file_stem(analysis.result.subject))
        if not confirm_overwrite([path], self.native):
            return None
        level = analysis.result.interval_level or DEFAULT_LEVEL
        worker = _write_report_page(analysis, analysis.model_dir, level, path)
        worker.returned.connect(lambda written: show_info(f"Brain age: report written to {written}"))
        worker.errored.connect(
            lambda err: show_error(f"Brain age report failed: {describe(getattr(err, 'error', err))}"))
        self.report.enabled = False
        worker.finished.connect(lambda: setattr(self.report, "enabled", self.scan.value in self._results))
        worker.start()
        return worker

    def export_paths(self, folder: Path, name: str) -> dict[str, Path]:
        """The files Export writes for scan ``name``: always in ``folder`` (``file_stem``)."""
        name = file_stem(name)
        return {"map": folder / f"{name}_importance.nii.gz", "csv": folder / f"{name}_brainage.csv",
                "png": folder / f"{name}_view.png"}

    def export_results(self, _value=None) -> dict[str, Path] | None:
        """Write the selected scan's map, numbers and a captioned snapshot of the view."""
        layer = self.scan.value
        if layer not in self._results:
            show_error("Brain age: run the analysis of this scan before exporting.")
            return None
        if self.export_dir.value is None:
            show_error("Brain age: choose a folder to export to.")
            return None
        folder = Path(self.export_dir.value)
        analysis = self._results[layer]
        result, importance, method = analysis.result, analysis.importance, analysis.method
        name = result.subject
        paths = self.export_paths(folder, name)
        if not folder.is_dir():
            show_error(f"Brain age: {folder} is not a folder.")
            return None
        if not confirm_overwrite(list(paths.values()), self.native):
            return None
        try:
            save_volume(importance, paths["map"], overwrite=True,
                        description=map_description(method, result.qc_status,
                                                    map_model_id(analysis.card, method) if analysis.card else ""))
            write_results([result], paths["csv"])
            overlay = text_overlay(self._viewer)  # the caption says it in full; the canvas line may be cut
            # The snapshot shows this scan and this map only: another scan above it in the
            # layer list, or another map, put other anatomy under the caption's numbers
            # (fourth break test). Its masks (Threshold's) stay.
            own_map = self._overlay(layer, method)
            hidden = [other for other in self._viewer.layers if other.visible and not same_layer(other, layer)
                      and not same_layer(other, own_map)
                      and not (made_for(other, layer) and not other.metadata.get(MAP_KIND))]
            shown, overlay.visible = overlay.visible, False
            for other in hidden:
                other.visible = False
            try:
                snapshot = self._viewer.screenshot(canvas_only=True, flash=False)
            finally:
                overlay.visible = shown
                for other in hidden:
                    other.visible = True
            lines = caption_lines(result, analysis.model_dir, method, view=self._view_line())
            save_png(captioned(snapshot, lines, self._colour_bar(layer, method)), paths["png"], overwrite=True)
        except (OSError, ValueError) as err:
            show_error(f"Brain age export failed: {err}")
            return None
        show_info(f"Brain age: exported to {folder}")
        return paths
