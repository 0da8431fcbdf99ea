"""Population dock widget: load or compute a population map, compare a subject with it.

* Load: the bundled population map (held-out synthetic cohort) or one written by
  ``napari-brainage population``.
* Compute: the CLI's population run (``cohort.iter_population``) over a folder,
  CSV or scan, in a worker with an n-of-N
  progress bar and Cancel. A scan that fails (any error) is skipped and named;
  the others' map is kept ("3 of 4 mapped, 1 failed").
* Compare: subject - population difference layer, Dice of the top-k % voxels and
  correlation; "side by side" puts subject and population in napari's grid
  mode, where all panels share one set of sliders.
"""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
)
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning

from ...cohort import NothingMapped, iter_population
from ...compare import compare_maps
from ...inference import collect_inputs
from ...io import Volume, load_volume
from ...model.bundle import bundled_model_dir, pick_device
from ...options import RunOptions
from ...space.template import load_template
from ...threshold import map_contrast_limits
from ..layers import volume_layer_data
from ..viewer import show_anatomically
from ._common import (
    DIFFERENCE,
    MAP_KIND,
    POPULATION,
    SOURCE_LAYER,
    TEMPLATE,
    MapPickers,
    WorkerError,
    WorkerSlot,
    layer_volume,
    overlay_colormap,
    show_volume,
    wrapping_label,
)

BUNDLED_MAP = "population_map.nii.gz"
TEMPLATE_LAYER = "ICBM152 template (population space)"


def bundled_population_map() -> Path:
    return bundled_model_dir() / BUNDLED_MAP


#: Failed scans named in a notification (the widget's tooltip lists them all).
NAMED_FAILURES = 3


@thread_worker(ignore_errors=True)  # errors: _on_error
def _compute(inputs, options: RunOptions):
    """Mean importance map of ``inputs``; yields (done, total, failed) after each scan,
    returns (map or None when no scan could be mapped, count, failed); ``failed``:
    ["subject: reason"].

    The run is the CLI's (``cohort.iter_population``): the same per-scan maps,
    statistics and failure handling. Chunks of one scan on the CPU, so that
    Cancel stops after the current scan; on a GPU, chunks of eight, which the
    noise model maps in one batch.
    """
    try:
        chunk = 8 if pick_device(options.device.value).type == "cuda" else 1
        try:
            for state in iter_population(inputs, options, chunk=chunk):
                failed = [f"{subject}: {error}" for subject, error in state.failed]
                if state.result is not None:
                    return state.result.mean_map(), state.result.total.count, failed
                yield state.done, state.total, failed
        except NothingMapped as err:
            return None, 0, [f"{subject}: {error}" for subject, error in err.failed]
    except Exception as err:  # e.g. RuntimeError, which superqt would swallow
        raise WorkerError(err) from err


class PopulationWidget(MapPickers, Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self._slot = WorkerSlot()
        self._hidden_for_grid: list = []
        self.map_file = FileEdit(label="population map", mode="r", nullable=True, filter="*.nii.gz *.nii",
                                 tooltip="A map from `napari-brainage population`; empty: the bundled map "
                                         "(200 held-out synthetic subjects).")
        self.load = PushButton(text="Load map", tooltip="Show the population map as a layer.")
        self.cohort = FileEdit(label="cohort", mode="r", nullable=True,
                               tooltip="participants CSV (subject, path[, age]) or a scan; "
                                       "type a folder path to use every scan in it.")
        self.model = FileEdit(label="model", mode="d", nullable=True,
                              tooltip="Model folder from `napari-brainage train`; empty: the bundled model.")
        self.compute = PushButton(text="Compute map", tooltip="Average the cohort's importance maps.")
        self.cancel = PushButton(text="Cancel", enabled=False, tooltip="Stop computing the map.")
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0, visible=False)
        self.status = wrapping_label(Label(label="mapped", value=""))
        self.subject = ComboBox(label="subject map", choices=self._subject_choices, nullable=True,
                                tooltip="A subject's importance map (run Brain age first).")
        self.population = ComboBox(label="population", choices=self._population_choices, nullable=True,
                                   tooltip="The population map to compare with.")
        self.top_percent = FloatSpinBox(label="top %", value=10.0, min=0.5, max=50.0, step=0.5,
                                        tooltip="Dice overlap of the k % most important brain voxels of each map.")
        self.compare = PushButton(text="Compare", tooltip="Difference layer, Dice of the top k % and correlation.")
        self.result = Label(label="comparison", value="")
        self.result.native.setStyleSheet("font-family: monospace;")
        self.side_by_side = CheckBox(text="side by side (grid, linked slices)", value=False,
                                     tooltip="Subject (on its scan) and population (on the template) in two "
                                             "panels that share the sliders.")
        self.extend([self.map_file, self.load, self.cohort, self.model, self.compute, self.cancel,
                     self.progress, self.status, self.subject, self.population, self.top_percent, self.compare,
                     self.result, self.side_by_side])
        self.load.changed.connect(self.load_map)
        self.compute.changed.connect(self.start)
        self.cancel.changed.connect(self.stop)
        self.compare.changed.connect(self.run_comparison)
        self.side_by_side.changed.connect(self.show_side_by_side)
        self._watch_layers()
        show_anatomically(viewer)
        self._refresh_choices()


    # ---- load
    def load_map(self, _value=None):
        path = Path(self.map_file.value) if self.map_file.value is not None else bundled_population_map()
        try:
            volume = load_volume(path)
        except (ValueError, OSError) as err:
            show_error(f"Population: {err}")
            return None
        return self._show_population(volume, f"population ({path.name.split('.')[0]})")

    def _show_population(self, volume: Volume, name: str):
        layer = show_volume(self._viewer, volume, name=name, kind=POPULATION, colormap=overlay_colormap(),
                            blending="translucent", opacity=0.9, contrast_limits=map_contrast_limits(volume.data))
        self.population.value = layer
        return layer

    # ---- compute
    @property
    def busy(self) -> bool:
        return self._slot.busy

    def start(self, _value=None):
        if self.cohort.value is None:
            show_error("Population: choose a cohort (participants CSV, folder or scan) first.")
            return None
        try:
            inputs = collect_inputs([self.cohort.value])
        except (ValueError, OSError) as err:
            show_error(f"Population: {err}")
            return None
        if self.busy:
            return None
        model_dir = str(self.model.value) if self.model.value is not None else None
        worker = _compute(inputs, RunOptions(model_dir=model_dir))
        name = f"population ({Path(self.cohort.value).stem}, n={len(inputs)})"
        self._slot.connect(worker, yielded=self._on_progress,
                           returned=lambda out: self._on_done(name, len(inputs), *out),
                           errored=self._on_error, finished=self._on_finished)
        self._set_ready(False)
        self.progress.max, self.progress.value = len(inputs), 0
        self.progress.label = f"0 of {len(inputs)} subjects"
        self._set_status(f"0 of {len(inputs)} done", [])
        worker.start()
        return worker

    def stop(self, _value=None) -> None:
        """Ready again at once; the worker stops after its current scan, and what it
        sends after this is ignored."""
        if not self._slot.busy:
            return
        self._slot.release()
        self._set_ready(True)
        self.status.value = "cancelled"
        show_info("Population: cancelled")

    def _set_ready(self, ready: bool) -> None:
        self.compute.enabled, self.cancel.enabled = ready, not ready
        self.progress.visible = not ready
        if ready:
            self.progress.label = "progress"

    def _set_status(self, text: str, failed: list[str]) -> None:
        self.status.value = text
        self.status.tooltip = "Failed:\n" + "\n".join(failed) if failed else ""

    def _on_progress(self, state) -> None:
        done, total, failed = state
        self.progress.value = done
        self.progress.label = f"{done} of {total} subjects"
        self._set_status(f"{done} of {total} done" + (f", {len(failed)} failed" if failed else ""), failed)

    def _on_done(self, name: str, total: int, volume: Volume | None, count: int, failed: list[str]) -> None:
        """The map of the scans that could be mapped; the others named, with why."""
        counts = f"{count} of {total} mapped, {len(failed)} failed"
        self._set_status(counts, failed)
        named = "; ".join(failed[:NAMED_FAILURES]) + (f"; and {len(failed) - NAMED_FAILURES} more"
                                                      if len(failed) > NAMED_FAILURES else "")
        if volume is None:
            show_error(f"Population: no map, {counts}: {named}")
            return
        self._show_population(volume, name.replace(f"n={total}", f"n={count}"))
        if failed:
            show_warning(f"Population: {counts}: {named}")

    def _on_error(self, error: Exception) -> None:
        self._set_status(f"failed: {error}", [])
        show_error(f"Population failed: {error}")

    def _on_finished(self) -> None:
        self._slot.release()
        self._set_ready(True)

    # ---- compare
    def run_comparison(self, _value=None):
        subject, population = self.subject.value, self.population.value
        if subject is None or population is None:
            show_error("Population: pick a subject map (run Brain age) and a population map (Load map).")
            return None
        try:
            comparison = compare_maps(layer_volume(subject), layer_volume(population), self.top_percent.value)
        except ValueError as err:
            show_error(f"Population: {err}")
            return None
        self.result.value = comparison.summary()
        limit = float(max(abs(comparison.difference.data).max(), 1e-3))
        layer = show_volume(self._viewer, comparison.difference, name=f"difference ({subject.name} - population)",
                            kind=DIFFERENCE, colormap="PiYG", opacity=0.8, contrast_limits=(-limit, limit))
        layer.visible = False  # on demand: it would hide the overlays below it
        layer.metadata.update(dice_top=comparison.dice_top, correlation=comparison.correlation,
                              top_percent=comparison.top_percent)
        return comparison

    # ---- side by side
    def show_side_by_side(self, on: bool) -> None:
        grid = self._viewer.canvas.grid if hasattr(self._viewer, "canvas") else self._viewer.grid
        if not on:
            for layer in self._hidden_for_grid:
                if layer in self._viewer.layers:
                    layer.visible = True
            self._hidden_for_grid = []
            grid.enabled = False
            self._viewer.reset_view()
            return
        subject, population = self.subject.value, self.population.value
        if subject is None or population is None:
            show_error("Population: pick a subject map and a population map first.")
            self.side_by_side.value = False
            return
        layers = self._viewer.layers
        scan_name = subject.metadata.get(SOURCE_LAYER)
        scan = layers[scan_name] if scan_name in layers else None
        if scan is not None:  # stride 2: (scan, subject map) | (template, population map)
            template = layers[TEMPLATE_LAYER] if TEMPLATE_LAYER in layers else self._add_template()
            panels, stride = [scan, subject, template, population], 2
        else:  # the map's scan is gone: the two maps alone
            panels, stride = [subject, population], 1
        layers.move_multiple([layers.index(layer) for layer in panels], 0)
        self._hidden_for_grid = [layer for layer in layers if layer not in panels and layer.visible]
        for layer in self._hidden_for_grid:
            layer.visible = False
        for layer in panels:
            layer.visible = True
        grid.stride, grid.shape, grid.enabled = stride, (1, -1), True
        self._viewer.reset_view()  # fit both panels

    def _add_template(self):
        kit = load_template(2)
        data, kwargs, _ = volume_layer_data(Volume(data=kit.t1, affine=kit.affine), name=TEMPLATE_LAYER)
        kwargs["metadata"][MAP_KIND] = TEMPLATE  # anatomy for the panel: not a scan to analyse
        return self._viewer.add_image(data, **kwargs)
