"""Population dock widget: load or compute a population map, compare a subject with it.

* Load: the bundled population map (held-out synthetic cohort) or one written by
  ``napari-brainage population``.
* Compute: the CLI's population run (``cohort.iter_population``) over a
  participants CSV, a scan (Select file) or a folder of scans (Choose folder), in
  a worker with an n-of-N progress bar and Cancel. A scan that fails (any error)
  is skipped and named; the others' map is kept ("3 of 4 mapped, 1 failed").
* Compare: subject - population difference layer (diverging colours centred on 0,
  see-through near 0, with a colour bar), Dice of the top-k % voxels and
  correlation; the numbers are cleared as soon as either map picker changes.
  "Side by side" puts subject and population in napari's grid mode, where all
  panels share one set of sliders; turning it off puts the single view back
  with the subject on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import napari
import numpy as np
from magicgui.types import FileDialogMode
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
from ...compare import compare_maps, origin_mismatch
from ...inference import collect_inputs, map_model_id
from ...io import Volume, load_volume
from ...model.bundle import bundled_model_dir, pick_device
from ...model.card import read_card
from ...options import MapOrigin, RunOptions
from ...space.template import load_template
from ...threshold import counted_voxels, map_contrast_limits
from ..layers import volume_layer_data
from ..viewer import show_anatomically
from ._common import (
    DIFFERENCE,
    MAP_KIND,
    POPULATION,
    TEMPLATE,
    MapPickers,
    WorkerError,
    WorkerSlot,
    header_origin,
    layer_origin,
    layer_volume,
    one_colour_bar,
    overlay_colormap,
    reserve_lines,
    show_lines,
    show_volume,
    source_scan,
    wrapping_label,
)

BUNDLED_MAP = "population_map.nii.gz"
TEMPLATE_LAYER = "ICBM152 template (population space)"


def bundled_population_map() -> Path:
    return bundled_model_dir() / BUNDLED_MAP


#: Failed scans named in a notification (the widget's tooltip lists them all).
NAMED_FAILURES = 3
#: A status longer than this also goes into the label's tooltip: a path has no
#: spaces to wrap at, so the label can only show its start.
LONG_STATUS = 60
#: The comparison panel once the picked maps are not the ones its numbers came from.
STALE_COMPARISON = "maps changed: press Compare"


def difference_colormap(name: str = "PiYG"):
    """The diverging colormap ``name`` with an opacity ramp about its middle: a
    difference near 0 is see-through, so the scan shows wherever subject and
    population agree, and colour marks where they differ (either way: one hue for
    "the subject's map is higher", the other for "lower"). Fully opaque from a third
    of the way to either end, like ``overlay_colormap``; the layer's contrast limits
    must be symmetric (+-m) for 0 to sit in the see-through middle."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    base = ensure_colormap(name)
    positions = np.linspace(0.0, 1.0, 33)  # odd: 0.5 (a difference of 0) is a control point
    colors = base.map(positions)
    colors[:, 3] = np.clip(np.abs(positions - 0.5) * 2 * 1.5, 0.0, 1.0)
    return Colormap(colors=colors, controls=positions, name=f"{name} (see-through about 0)")


#: The difference's colours saturate at this percentile of |difference| in the brain:
#: the largest differences sit on the brain's rim, where the subject's mask ends and
#: the template's does not (about -0.95 on the bundled model, against a median of
#: 0.005 inside), and limits at the maximum left the interior see-through.
DIFFERENCE_SATURATION_PERCENTILE = 98.0


def difference_limits(difference: Volume) -> tuple[float, float]:
    """+-m, m = the ``DIFFERENCE_SATURATION_PERCENTILE`` of |difference| over the brain,
    rounded up to 1, 2, 3, 4 or 5 x 10^k: symmetric, so that 0 is the colormap's
    see-through middle and the colour bar reads the same distance either way; round,
    because the colour bar labels only round values (vispy's ticks): +-0.95 would
    be labelled "0" alone, +-1 is labelled -1, 0 and 1."""
    inside = counted_voxels(difference.data, difference.affine)
    values = np.abs(np.asarray(difference.data, dtype=np.float64))
    values = values[inside] if inside.any() else values.ravel()
    largest = float(np.percentile(values, DIFFERENCE_SATURATION_PERCENTILE))
    if not np.isfinite(largest) or largest <= 0:
        return -1e-3, 1e-3  # the maps agree everywhere: any range shows nothing
    scale = 10.0 ** np.floor(np.log10(largest))
    limit = next(step * scale for step in (1, 2, 3, 4, 5, 10) if step * scale >= largest * (1 - 1e-9))
    return -float(limit), float(limit)


def _ask_for_folder(start: str | None):
    """A folder the user picks in the platform's dialog (None when cancelled)."""
    from magicgui.application import use_app

    return use_app().get_obj("show_file_dialog")(FileDialogMode.EXISTING_DIRECTORY, caption="Choose a folder of scans",
                                                  start_path=start)


@dataclass
class _GridUndo:
    """What turning side by side on changed, to put back when it is turned off."""

    order: list                  # every layer, bottom to top, before
    grid: tuple                  # (enabled, stride, shape) before
    hidden: list                 # layers it hid (shown before)
    cover: list                  # the population panel's layers: they would lie over the subject in one view
    subject: list                # the subject's scan and map
    added: list = field(default_factory=list)  # layers it added (the template)


@thread_worker(ignore_errors=True)  # errors: _on_error
def _compute(inputs, options: RunOptions):
    """Mean importance map of ``inputs``; yields (done, total, failed) after each scan,
    returns (map or None when no scan could be mapped, count, failed, the map's
    ``MapOrigin``); ``failed``: ["subject: reason"].

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
                    origin = MapOrigin(state.result.method, state.result.model)
                    return state.result.mean_map(), state.result.total.count, failed, origin
                yield state.done, state.total, failed
        except NothingMapped as err:
            return None, 0, [f"{subject}: {error}" for subject, error in err.failed], MapOrigin()
    except Exception as err:  # e.g. RuntimeError, which superqt would swallow
        raise WorkerError(err) from err


class PopulationWidget(MapPickers, Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self._slot = WorkerSlot()
        self.map_file = FileEdit(label="population map", mode="r", nullable=True, filter="*.nii.gz *.nii",
                                 tooltip="A map from `napari-brainage population`; empty: the bundled map "
                                         "(200 held-out synthetic subjects).")
        self.load = PushButton(text="Load map", tooltip="Show the population map as a layer.")
        self.cohort = FileEdit(mode="r", nullable=True,
                               tooltip="Select file: a participants CSV (subject, path[, age]) or one scan. "
                                       "Choose folder: every scan in a folder.")
        # FileEdit's dialog picks files or folders, never either: a second button
        # for the folder case (collect_inputs takes both).
        self.cohort_folder = PushButton(text="Choose folder", tooltip="Use every scan in a folder as the cohort.")
        self.cohort_folder.changed.connect(self.choose_cohort_folder)
        cohort_row = Container(widgets=[self.cohort, self.cohort_folder], layout="horizontal", labels=False,
                               label="cohort", tooltip=self.cohort.tooltip)
        cohort_row.margins = (0, 0, 0, 0)
        self.model = FileEdit(label="model", mode="d", nullable=True,
                              tooltip="Model folder from `napari-brainage train`; empty: the bundled model.")
        self.compute = PushButton(text="Compute map", tooltip="Average the cohort's importance maps.")
        self.cancel = PushButton(text="Cancel", enabled=False, tooltip="Stop computing the map.")
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0, visible=False)
        # "n of N subjects" inside the bar, not in its row label: a row label as long
        # as the count would widen the labels column (and the dock) as the count grows.
        self.progress.native.setFormat("%v of %m subjects")
        self.status = wrapping_label(Label(label="status", value=""))
        self.subject = ComboBox(label="subject map", choices=self._subject_choices, nullable=True,
                                tooltip="A subject's importance map (run Brain age first).")
        self.population = ComboBox(label="population", choices=self._population_choices, nullable=True,
                                   tooltip="The population map to compare with.")
        self.top_percent = FloatSpinBox(label="top %", value=10.0, min=0.5, max=50.0, step=0.5,
                                        tooltip="Dice overlap of the k % most important brain voxels of each map.")
        self.compare = PushButton(text="Compare", tooltip="Difference layer, Dice of the top k % and correlation.")
        self.result = wrapping_label(Label(label="comparison", value=""), monospace=True)
        self._compared: tuple = ()  # (subject, population) layers the numbers shown came from
        self.side_by_side = CheckBox(text="side by side (grid, linked slices)", value=False,
                                     tooltip="On: subject (on its scan) and population (on the template) in two "
                                             "panels that share the sliders. Off: one view again, the subject on "
                                             "top (the template is removed, the population map hidden).")
        self._grid_undo: _GridUndo | None = None
        self.extend([self.map_file, self.load, cohort_row, self.model, self.compute, self.cancel,
                     self.progress, self.status, self.subject, self.population, self.top_percent, self.compare,
                     self.result, self.side_by_side])
        reserve_lines(self.result, 3)  # the comparison's three lines, laid out with the dock
        self.load.changed.connect(self.load_map)
        self.compute.changed.connect(self.start)
        self.cancel.changed.connect(self.stop)
        self.compare.changed.connect(self.run_comparison)
        self.side_by_side.changed.connect(self.show_side_by_side)
        self.subject.changed.connect(self._maps_changed)
        self.population.changed.connect(self._maps_changed)
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
        origin = header_origin(volume.header)
        if self.map_file.value is None and not origin.method:  # the bundled map: the bundled noise model's
            origin = MapOrigin("noise", map_model_id(read_card(bundled_model_dir()), "noise"))
        return self._show_population(volume, f"population ({path.name.split('.')[0]})", origin)

    def _show_population(self, volume: Volume, name: str, origin: MapOrigin | None = None):
        origin = origin or MapOrigin()
        layer = show_volume(self._viewer, volume, name=name, kind=POPULATION, colormap=overlay_colormap(),
                            metadata={"method": origin.method, "model": origin.model},
                            blending="translucent", opacity=0.9, contrast_limits=map_contrast_limits(volume.data))
        self.population.value = layer
        return layer

    # ---- compute
    def choose_cohort_folder(self, _value=None):
        """Ask for a folder of scans and make it the cohort; returns it (None: cancelled)."""
        start = self.cohort.value
        folder = _ask_for_folder(str(Path(start).expanduser().absolute()) if start is not None else None)
        if folder:
            self.cohort.value = folder
        return self.cohort.value if folder else None

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

    def _set_status(self, text: str, failed: list[str]) -> None:
        """The status wraps to the dock's width; the tooltip has a long status in full
        (a path cannot wrap) and every failed scan with its reason."""
        self.status.value = text
        lines = [text] if len(text) > LONG_STATUS else []
        if failed:
            lines += ["Failed:", *failed]
        self.status.tooltip = "\n".join(lines)

    def _on_progress(self, state) -> None:
        done, total, failed = state
        self.progress.value = done
        self._set_status(f"{done} of {total} done" + (f", {len(failed)} failed" if failed else ""), failed)

    def _on_done(self, name: str, total: int, volume: Volume | None, count: int, failed: list[str],
                 origin: MapOrigin | None = None) -> None:
        """The map of the scans that could be mapped; the others named, with why."""
        counts = f"{count} of {total} mapped, {len(failed)} failed"
        self._set_status(counts, failed)
        named = "; ".join(failed[:NAMED_FAILURES]) + (f"; and {len(failed) - NAMED_FAILURES} more"
                                                      if len(failed) > NAMED_FAILURES else "")
        if volume is None:
            show_error(f"Population: no map, {counts}: {named}")
            return
        self._show_population(volume, name.replace(f"n={total}", f"n={count}"), origin)
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
        # Maps of two methods or models differ whatever the subject: say so beside the numbers.
        mismatch = origin_mismatch(layer_origin(subject), layer_origin(population))
        # One short line (the panel keeps room for whole lines, not for a wrapped sentence);
        # the sentence in the tooltip and the notification.
        short = f"\nnote: {mismatch.split(' (')[0].replace('the maps come from ', '')}" if mismatch else ""
        show_lines(self.result, comparison.summary() + short)
        self.result.tooltip = mismatch or ""
        if mismatch:
            show_warning(f"Population: {mismatch}")
        self._compared = (subject, population)
        # Translucent blending (not additive, which washes the scan out) and a
        # colormap see-through about 0: the anatomy shows where the maps agree.
        # show_volume gives it the colour bar whenever it is the topmost shown map.
        layer = show_volume(self._viewer, comparison.difference, name=f"difference ({subject.name} - population)",
                            kind=DIFFERENCE, colormap=difference_colormap(), blending="translucent", opacity=0.9,
                            contrast_limits=difference_limits(comparison.difference))
        layer.visible = False  # on demand: it would hide the subject's overlay below it
        layer.metadata.update(dice_top=comparison.dice_top, correlation=comparison.correlation,
                              top_percent=comparison.top_percent)
        return comparison

    def _maps_changed(self, _value=None) -> None:
        """Numbers are never shown beside maps they were not computed from."""
        if self.result.value and (self.subject.value, self.population.value) != self._compared:
            show_lines(self.result, STALE_COMPARISON)
            self.result.tooltip = ""

    # ---- side by side
    def _grid(self):
        return self._viewer.canvas.grid if hasattr(self._viewer, "canvas") else self._viewer.grid

    def show_side_by_side(self, on: bool) -> None:
        if not on:
            self._single_view()
            return
        subject, population = self.subject.value, self.population.value
        if subject is None or population is None:
            show_error("Population: pick a subject map and a population map first.")
            self.side_by_side.value = False
            return
        if self._grid_undo is not None:  # on already (called again): start from the single view
            self._single_view()
        grid, layers = self._grid(), self._viewer.layers
        undo = _GridUndo(order=list(layers), grid=(grid.enabled, grid.stride, tuple(grid.shape)), hidden=[],
                         cover=[population], subject=[subject])
        scan = source_scan(self._viewer, subject)  # by the scan's id: it may have been renamed
        if scan is not None:  # stride 2: (scan, subject map) | (template, population map)
            if TEMPLATE_LAYER in layers:
                template = layers[TEMPLATE_LAYER]
            else:
                template = self._add_template()
                undo.added.append(template)
            undo.cover.insert(0, template)
            undo.subject.insert(0, scan)
            panels, stride = [scan, subject, template, population], 2
        else:  # the map's scan is gone: the two maps alone
            panels, stride = [subject, population], 1
        layers.move_multiple([layers.index(layer) for layer in panels], 0)
        undo.hidden = [layer for layer in layers if layer not in panels and layer.visible]
        for layer in undo.hidden:
            layer.visible = False
        for layer in panels:
            layer.visible = True
        self._grid_undo = undo
        grid.stride, grid.shape, grid.enabled = stride, (1, -1), True
        # Each panel's map with its own colour bar: in a grid each bar sits in its
        # map's panel, so the two cannot be confused (one view shows only one).
        for layer in (subject, population):
            layer.colorbar.visible = True
        self._viewer.reset_view()  # fit both panels

    def _single_view(self) -> None:
        """Undo side by side: the grid as it was, the layer order and the layers hidden
        for it back, the template it added removed and the population panel hidden
        (on the subject's grid they would lie over the subject's scan and map, which
        are shown on top)."""
        undo, self._grid_undo = self._grid_undo, None
        if undo is None:  # never turned on (no maps picked): nothing to undo
            return
        layers = self._viewer.layers
        grid = self._grid()
        enabled, stride, shape = undo.grid
        grid.enabled = False
        grid.stride, grid.shape = stride, shape
        for layer in undo.added:
            if layer in layers:
                layers.remove(layer)
        present = [layer for layer in undo.order if layer in layers]  # layers added since stay on top
        for target, layer in enumerate(present):
            if layers.index(layer) != target:
                layers.move(layers.index(layer), target)
        for layer in undo.hidden:
            if layer in layers:
                layer.visible = True
        for layer in undo.cover:
            if layer in layers:
                layer.visible = False
        self._subject_on_top([layer for layer in undo.subject if layer in layers])
        grid.enabled = enabled
        one_colour_bar(self._viewer)  # one bar again: the topmost shown map's
        self._viewer.reset_view()

    def _subject_on_top(self, subject: list) -> None:
        """Show the subject's scan and map, and move them above any other shown image
        (another scan would hide them); translucent difference maps may stay above."""
        layers = self._viewer.layers
        for layer in subject:
            layer.visible = True
        if not subject:
            return
        bottom = layers.index(subject[0])
        covering = [layers.index(layer) for layer in list(layers)[bottom + 1:]
                    if isinstance(layer, napari.layers.Image) and layer.visible and layer not in subject
                    and layer.metadata.get(MAP_KIND) != DIFFERENCE]
        if covering:
            layers.move_multiple([layers.index(layer) for layer in subject], max(covering) + 1)

    def _add_template(self):
        kit = load_template(2)
        data, kwargs, _ = volume_layer_data(Volume(data=kit.t1, affine=kit.affine), name=TEMPLATE_LAYER)
        kwargs["metadata"][MAP_KIND] = TEMPLATE  # anatomy for the panel: not a scan to analyse
        active = self._viewer.layers.selection.active
        template = self._viewer.add_image(data, **kwargs)
        if active is not None:  # adding a layer selects it; the pickers follow the selection
            self._viewer.layers.selection.active = active
        return template
