"""Brain age dock widget: predicted age, gaps, and the importance overlay.

Input -> one core call in a worker thread -> numbers in the widget and an
"importance" layer on the scan's own grid. The viewer stays responsive; Cancel
stops the run between steps; errors become notifications. Export writes the
map (NIfTI, the scan's geometry), the numbers (CSV) and a captioned snapshot (PNG).
"""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, Label, LineEdit, ProgressBar, PushButton
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning

from .._layers import SOURCE_PATH
from .._viewer import show_anatomically
from ..inference import AgeResult, importance_map, load_model, predict_age, prepare_input, write_results
from ..explain import LABELS, METHODS
from ..io import Volume, save_volume
from ..preprocess import PREPROCESSING_MODES
from ..report import captioned, save_png
from ._common import (
    IMPORTANCE, confirm_overwrite, layer_volume, map_contrast_limits, overlay_colormap, scan_layers, show_volume,
)

_STEPS = ("loading the model", "preprocessing (registration)", "predicting brain age",
          "computing the importance map")


@thread_worker(progress={"total": len(_STEPS)}, ignore_errors=True)  # errors: _on_error
def _analyse(volume: Volume, age: float | None, model_dir: str | None, device: str, preprocessing: str,
             method: str = "noise"):
    """Generator run in a worker: yields between steps so Cancel can stop it there."""
    yield _STEPS[0]
    model, torch_device = load_model(model_dir or None, device, need_noise_model=True)
    yield _STEPS[1]
    prepared = prepare_input(volume, preprocessing)
    yield _STEPS[2]
    result = predict_age(volume, model, torch_device, age, prepared=prepared)
    yield _STEPS[3]
    return result, importance_map(volume, model, torch_device, prepared=prepared, method=method)


class BrainAgeWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self._worker = None
        self.scan = ComboBox(label="scan", choices=self._image_layers,
                             tooltip="T1 scan aligned to MNI space (e.g. a sample from File > Open Sample).")
        self.age = LineEdit(label="age (years)", tooltip="Chronological age, for the brain-age gap. "
                            "Filled from the scan's metadata when known; leave empty if unknown.")
        self.model = FileEdit(label="model", mode="d", nullable=True,
                              tooltip="Model folder from `napari-brainage train`; empty: the bundled model.")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "gpu"], value="auto",
                               tooltip="auto: the GPU when torch sees one, else the CPU.")
        self.preprocess = ComboBox(label="preprocessing", choices=list(PREPROCESSING_MODES), value="auto",
                                   tooltip="auto: register the scan to the MNI template unless it is already in "
                                           "MNI space; register: always; none: trust the scan's affine.")
        self.method = ComboBox(label="method", choices=[(LABELS[m], m) for m in METHODS], value="noise",
                               tooltip="How importance is computed: the noise model (fast, the plugin's method) "
                                       "or a gradient/occlusion baseline from Captum (slower).")
        self.run = PushButton(text="Run", tooltip="Predict brain age and map voxel importance.")
        self.cancel = PushButton(text="Cancel", enabled=False, tooltip="Stop the running analysis.")
        self.progress = ProgressBar(label="progress", min=0, max=len(_STEPS), value=0, visible=False)
        self.result = Label(label="result", value="")
        self.result.native.setStyleSheet("font-family: monospace;")
        self.result.native.setWordWrap(True)  # QC warnings are sentences
        self.opacity = FloatSlider(label="overlay opacity", min=0.0, max=1.0, step=0.05, value=0.9,
                                   tooltip="Opacity of this scan's importance overlay.")
        self.export_dir = FileEdit(label="export to", mode="d", nullable=True,
                                   tooltip="Folder for the exported map (NIfTI), numbers (CSV) and snapshot (PNG).")
        self.export = PushButton(text="Export", enabled=False,
                                 tooltip="Write <scan>_importance.nii.gz, <scan>_brainage.csv and <scan>_view.png "
                                         "(asks before replacing files).")
        self.extend([self.scan, self.age, self.model, self.device, self.preprocess, self.method, self.run, self.cancel,
                     self.progress, self.result, self.opacity, self.export_dir, self.export])
        self._last: tuple[str, AgeResult, Volume] | None = None
        self.run.changed.connect(self.start)
        self.export.changed.connect(self.export_results)
        self.opacity.changed.connect(self._set_opacity)
        self.cancel.changed.connect(self.stop)
        self.scan.changed.connect(self._prefill_age)
        viewer.layers.events.inserted.connect(self._refresh_choices)
        viewer.layers.events.removed.connect(self._refresh_choices)
        show_anatomically(viewer)
        self._refresh_choices()

    # ---- choices
    def _image_layers(self, _widget=None) -> list:
        return scan_layers(self._viewer)

    def _refresh_choices(self, _event=None) -> None:
        self.scan.reset_choices()
        active = self._viewer.layers.selection.active
        if active in self.scan.choices:
            self.scan.value = active
        self._prefill_age()

    def _prefill_age(self, _value=None) -> None:
        """The age from the layer's metadata (samples), else from a participants.csv
        beside the scan's file that lists it (a cohort made by `synth`, or one's own)."""
        layer = self.scan.value
        if layer is None:
            return
        age = layer.metadata.get("age")
        if age is None:
            age = age_from_participants(layer.metadata.get(SOURCE_PATH))
        if age is not None:
            self.age.value = f"{age:g}"

    # ---- running
    @property
    def busy(self) -> bool:
        """True from Run until the analysis has finished, failed or been cancelled."""
        return self._worker is not None

    def _parse_age(self) -> float | None:
        text = self.age.value.strip()
        if not text:
            return None
        try:
            age = float(text)
        except ValueError:
            raise ValueError(f"age must be a number of years, got {text!r}") from None
        if not 0 < age < 120:
            raise ValueError(f"age {age:g} is outside 0-120 years")
        return age

    def start(self, _value=None):
        layer = self.scan.value
        if layer is None:
            show_error("Brain age: open a 3D scan first (File > Open Sample > napari-brainage).")
            return None
        try:
            age = self._parse_age()
        except ValueError as err:
            show_error(f"Brain age: {err}")
            return None
        volume = layer_volume(layer)
        model_dir = str(self.model.value) if self.model.value is not None else None
        method = self.method.value
        worker = _analyse(volume, age, model_dir, self.device.value, self.preprocess.value, method)
        worker.yielded.connect(self._on_step)
        worker.returned.connect(lambda out: self._on_done(layer, volume, *out, method=method))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run.enabled, self.cancel.enabled = False, True
        self.progress.value, self.progress.visible = 0, True
        self.result.value = "running..."
        worker.start()
        return worker

    def stop(self, _value=None) -> None:
        if self._worker is not None:
            self._worker.quit()
            self.result.value = "cancelled"

    def _on_step(self, step: str) -> None:
        self.progress.value = _STEPS.index(step)
        self.progress.label = step

    def _on_done(self, layer, volume: Volume, result: AgeResult, importance: Volume, method: str = "noise") -> None:
        self.progress.value = len(_STEPS)
        self.result.value = format_result(result)
        importance.path = volume.path
        overlay = show_volume(
            self._viewer, importance, name=self._map_name(layer, method), kind=IMPORTANCE,
            colormap=overlay_colormap(), blending="translucent", opacity=self.opacity.value,
            contrast_limits=map_contrast_limits(importance.data),
        )
        overlay.metadata.update(predicted_age=result.predicted_age, source_layer=layer.name, method=method)
        self._viewer.layers.selection.active = layer
        result.subject = layer.name
        self._last = (layer.name, result, importance)
        self.export.enabled = True
        if result.qc and result.qc != "ok":
            show_warning(f"Brain age of {layer.name}: check the scan: {result.qc}")
        else:
            show_info(f"Brain age of {layer.name}: {result.predicted_age:.1f} years")

    def _map_name(self, layer, method: str | None = None) -> str:
        """One overlay per scan and method: "importance (scan)" for the noise model."""
        method = method or self.method.value
        if method == "noise":
            return f"importance ({layer.name})"
        return f"importance {LABELS[method]} ({layer.name})"

    def _set_opacity(self, opacity: float) -> None:
        layer = self.scan.value
        name = self._map_name(layer) if layer is not None else None
        if name in self._viewer.layers:
            self._viewer.layers[name].opacity = opacity

    # ---- export
    def export_paths(self, folder: Path, name: str) -> dict[str, Path]:
        return {"map": folder / f"{name}_importance.nii.gz", "csv": folder / f"{name}_brainage.csv",
                "png": folder / f"{name}_view.png"}

    def export_results(self, _value=None) -> dict[str, Path] | None:
        """Write the last result's map, numbers and a captioned snapshot of the view."""
        if self._last is None:
            show_error("Brain age: run the analysis before exporting.")
            return None
        if self.export_dir.value is None:
            show_error("Brain age: choose a folder to export to.")
            return None
        folder = Path(self.export_dir.value)
        name, result, importance = self._last
        paths = self.export_paths(folder, name)
        if not folder.is_dir():
            show_error(f"Brain age: {folder} is not a folder.")
            return None
        if not confirm_overwrite(list(paths.values()), self.native):
            return None
        try:
            save_volume(importance, paths["map"], overwrite=True,
                        description="napari-brainage importance (1 - noise mask)")
            write_results([result], paths["csv"])
            snapshot = self._viewer.screenshot(canvas_only=True, flash=False)
            save_png(captioned(snapshot, caption_lines(result, self.model.value)), paths["png"], overwrite=True)
        except (OSError, ValueError) as err:
            show_error(f"Brain age export failed: {err}")
            return None
        show_info(f"Brain age: exported to {folder}")
        return paths

    def _on_error(self, error: Exception) -> None:
        self.result.value = "failed"
        show_error(f"Brain age failed: {error}")

    def _on_finished(self) -> None:
        self._worker = None
        self.run.enabled, self.cancel.enabled = True, False
        self.progress.visible = False


def format_result(result: AgeResult) -> str:
    lines = [f"predicted age   {result.predicted_age:.1f} y"]
    if result.age is not None:
        lines += [f"age             {result.age:.1f} y",
                  f"brain-age gap   {result.gap:+.1f} y",
                  f"corrected gap   {result.corrected_gap:+.1f} y"]
    if result.qc and result.qc != "ok":
        lines.append("QC warning      " + result.qc.replace("; ", "\n                "))
    return "\n".join(lines)



def age_from_participants(scan_path: str | None) -> float | None:
    """The ``age`` of ``scan_path`` in a participants.csv in the same folder, if any."""
    if not scan_path:
        return None
    scan = Path(scan_path)
    table = scan.parent / "participants.csv"
    if not table.is_file():
        return None
    try:
        from ..training import read_participants

        for row in read_participants(table):
            if Path(row["path"]).resolve() == scan.resolve() and row.get("age"):
                return float(row["age"])
    except (OSError, ValueError, KeyError):
        return None  # an unreadable table just means no pre-filled age
    return None


def caption_lines(result: AgeResult, model_dir) -> list[str]:
    """Caption of an exported snapshot: what was analysed, the numbers, which model."""
    numbers = f"predicted age {result.predicted_age:.1f} y"
    if result.age is not None:
        numbers += (f"   age {result.age:.1f} y   gap {result.gap:+.1f} y"
                    f"   corrected gap {result.corrected_gap:+.1f} y")
    model = f"model: {model_dir}" if model_dir else "model: bundled (synthetic training data, not for clinical use)"
    return [f"{result.subject}: {numbers}", f"importance = 1 - noise mask (napari-brainage); {model}"]
