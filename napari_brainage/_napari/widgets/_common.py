"""Helpers the dock widgets share: which layers are scans or maps, which scan the
user has selected, layers <-> volumes, workers that always come back, navigation
in world millimetres, and asking before overwriting files."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import TextEdit

from ...io import Volume
from ...options import MapOrigin, map_origin
from ...space.display import RAS_TO_WORLD
from ..layers import SOURCE_HEADER, layer_to_volume, volume_layer_data

#: Layer metadata key marking layers this plugin added, with their kind.
MAP_KIND = "brainage_map"
IMPORTANCE, POPULATION, DIFFERENCE = "importance", "population", "difference"
#: The template the Population widget shows beside the population map: anatomy,
#: not a map, and not a scan to analyse either.
TEMPLATE = "template"
MAP_KINDS = (IMPORTANCE, POPULATION, DIFFERENCE)
#: Metadata key of a map (or mask) naming the scan layer it was made for (its name
#: when the map was made: for people and for maps made before ``SOURCE_ID``).
SOURCE_LAYER = "source_layer"
#: Metadata key of a map (or mask) holding the ``unique_id`` of the scan layer it was
#: made for. A name is no key: the user may rename the scan (the Brain age widget then
#: lost its overlay: the opacity slider moved nothing, a re-run added a second one).
SOURCE_ID = "source_layer_id"


def header_origin(header) -> MapOrigin:
    """What made a map, from its NIfTI header's description (``options.map_origin``);
    empty for another header kind or none."""
    try:
        return map_origin(header["descrip"][()] if header is not None else None)
    except (KeyError, TypeError, ValueError):
        return MapOrigin()


def layer_origin(layer) -> MapOrigin:
    """What made a map layer: the method and model a widget recorded in its metadata,
    else what its file's header says (a map opened with File > Open)."""
    method, model = layer.metadata.get("method", ""), layer.metadata.get("model", "")
    if method or model:
        return MapOrigin(method, model)
    return header_origin(layer.metadata.get(SOURCE_HEADER))


def scan_layers(viewer: napari.Viewer) -> list[napari.layers.Image]:
    """3D grey-scale Image layers that are not layers this plugin added (maps, template)."""
    return [layer for layer in viewer.layers
            if isinstance(layer, napari.layers.Image) and layer.ndim == 3 and not layer.rgb
            and not layer.metadata.get(MAP_KIND)]


def map_layers(viewer: napari.Viewer, *kinds: str) -> list[napari.layers.Image]:
    """Map layers (of the given kinds; importance, population and difference maps when none is given)."""
    kinds = kinds or MAP_KINDS
    return [layer for layer in viewer.layers
            if isinstance(layer, napari.layers.Image) and layer.metadata.get(MAP_KIND) in kinds]


def same_layer(a, b) -> bool:
    """Whether ``a`` and ``b`` are the same layer. Not ``is``: napari gives a docked
    plugin widget its viewer behind a ``PublicOnlyProxy``, whose layers are new proxy
    objects at every access (``viewer.layers[0] is viewer.layers[0]`` is False), so a
    docked widget compared by identity never found the selected scan. The proxy
    passes ``==`` on to the layer, which compares by identity."""
    return a is b or (a is not None and b is not None and a == b)


def layer_id(layer) -> str:
    """The layer's id for ``SOURCE_ID``: napari's ``unique_id``, which is the layer's
    own whether it is reached through a docked widget's proxy or not (``id()`` is not),
    and stays when the layer is renamed."""
    return str(layer.unique_id)


def source_metadata(scan) -> dict:
    """The metadata that ties a map (or mask) to the scan layer it was made for."""
    return {SOURCE_LAYER: scan.name, SOURCE_ID: layer_id(scan)}


def made_for(layer, scan) -> bool:
    """Whether map (or mask) ``layer`` was made for the scan layer ``scan``: by the scan's
    id; by its name only for a map that has no id (made some other way)."""
    if layer is None or scan is None:
        return False
    source_id = layer.metadata.get(SOURCE_ID)
    if source_id is not None:
        return source_id == layer_id(scan)
    source = layer.metadata.get(SOURCE_LAYER)
    return bool(source) and source == scan.name


def source_scan(viewer: napari.Viewer, layer):
    """The scan layer map (or mask) ``layer`` was made for, while it is open; else None."""
    return next((scan for scan in scan_layers(viewer) if made_for(layer, scan)), None)


def selected_scan(viewer: napari.Viewer):
    """The scan the user has selected in the layer list: the selected layer when it
    is a scan, else the scan a selected map or mask was made for; None otherwise."""
    active = viewer.layers.selection.active
    if active is None:
        return None
    scans = scan_layers(viewer)
    if any(same_layer(active, scan) for scan in scans):
        return active
    return next((scan for scan in scans if made_for(active, scan)), None)


def follow_selection(viewer: napari.Viewer, *combos) -> None:
    """Make each map picker show what the user selected in the layer list: the
    selected layer when the picker offers it, else the importance map made for the
    selected scan (the noise model's, else the newest). A selection with no map
    to offer leaves the picker as it is."""
    active = viewer.layers.selection.active
    scan = selected_scan(viewer)
    for combo in combos:
        maps = [layer for layer in combo.choices if layer is not None]
        if active is not None and any(same_layer(active, layer) for layer in maps):
            target = active
        elif scan is not None:
            own = [layer for layer in maps if layer.metadata.get(MAP_KIND) == IMPORTANCE and made_for(layer, scan)]
            if not own or any(same_layer(combo.value, layer) for layer in own):
                continue  # nothing made for this scan, or one of its maps is shown already
            noise = [layer for layer in own if layer.metadata.get("method", "noise") == "noise"]
            target = (noise or own)[-1]
        else:
            continue
        if not same_layer(combo.value, target):
            combo.value = target


def refresh_map_choices(*combos, newest: bool = True) -> None:
    """Re-list the layers each combo box offers; an empty box picks a map by itself
    (the newest, or the first), so a freshly computed map is ready to use."""
    for combo in combos:
        combo.reset_choices()
        maps = [layer for layer in combo.choices if layer is not None]
        if combo.value is None and maps:
            combo.value = maps[-1] if newest else maps[0]


def layer_volume(layer) -> Volume:
    """The layer's data on its source grid, with the source affine."""
    return layer_to_volume(*layer.as_layer_data_tuple()[:2])


def counted_in_layer(layer) -> np.ndarray:
    """The voxels a "top k %" of this map layer counts (``threshold.counted_voxels``),
    in the layer's own voxel order: the template brain for a map on the MNI grid,
    so that the Threshold widget and map comparison mean the same "top 10 %"."""
    from ...space.display import to_display
    from ...threshold import counted_voxels

    volume = layer_volume(layer)
    within = counted_voxels(volume.data, volume.affine)
    displayed, _ = to_display(within, volume.affine)
    if displayed.shape != layer.data.shape:  # a layer shown some other way: its non-zero voxels
        return np.asarray(layer.data) > 0
    return np.asarray(displayed, dtype=bool)


_SAME_NAME = object()


def show_volume(viewer: napari.Viewer, volume: Volume, name: str, kind: str, metadata: dict | None = None,
                replace=_SAME_NAME, **kwargs):
    """Add ``volume`` as a map layer called ``name``, replacing ``replace``: by default
    a layer of that name; given a layer (or None), that layer (or none). ``metadata``
    is on the layer from the start, so widgets that follow new layers already see
    which scan a map belongs to."""
    data, layer_kwargs, _ = volume_layer_data(volume, name=name, **kwargs)
    layer_kwargs["metadata"].update(metadata or {})
    layer_kwargs["metadata"][MAP_KIND] = kind
    if replace is _SAME_NAME:
        if name in viewer.layers:
            viewer.layers.remove(name)
    elif replace is not None and replace in viewer.layers:
        viewer.layers.remove(replace)
    layer = viewer.add_image(data, **layer_kwargs)
    layer.events.visible.connect(lambda _event: one_colour_bar(viewer))
    one_colour_bar(viewer)
    return layer


def one_colour_bar(viewer: napari.Viewer) -> None:
    """The values behind the colours, in the view and in exported snapshots: one colour
    bar, the topmost shown map's (napari does not label colour bars, so two side by side
    cannot be told apart). Called whenever a map is added or shown or hidden."""
    maps = map_layers(viewer)
    shown = [layer for layer in maps if layer.visible]
    for layer in maps:
        layer.colorbar.visible = bool(shown) and same_layer(layer, shown[-1])


# ------------------------------------------------------------------ workers
class WorkerError(Exception):
    """Any exception of a worker's generator, carried out of it in words.

    superqt's generator workers take a ``RuntimeError`` raised by the generator
    for a deleted Qt object: they print a warning on the terminal and emit
    neither ``errored`` nor ``finished``, so a widget waiting for them stays busy
    for good. SimpleITK and torch report their errors as ``RuntimeError``; the
    workers therefore raise this instead (``error``: the original exception;
    the message: :func:`describe`'s one line).
    """

    def __init__(self, error: BaseException):
        super().__init__(describe(error))
        self.error = error


def describe(err: BaseException) -> str:
    """One line saying what went wrong, without a traceback (``errors.describe_error``
    where the core has it)."""
    try:
        from ...errors import describe_error
    except ImportError:  # an older core: the exception's own first words
        text = " ".join(str(err).split())
        if isinstance(err, (ValueError, OSError)):
            return text or type(err).__name__
        return f"{type(err).__name__}: {text}" if text else type(err).__name__
    return describe_error(err)


def is_quality_failure(err: BaseException) -> bool:
    """True for the core's ``quality.QualityError`` (a scan that failed QC)."""
    return hasattr(getattr(err, "quality", None), "failures")


def quality_reasons(err: BaseException) -> str:
    """Why a scan failed QC: the report's failures, else the message after "QC failed:"."""
    failures = getattr(getattr(err, "quality", None), "failures", None)
    if failures:
        return "; ".join(failures)
    text = " ".join(str(err).split())
    return text.split("QC failed:", 1)[-1].strip() or text


class WorkerSlot:
    """The one worker a widget listens to.

    ``connect`` wires a worker's signals to handlers that run only while that
    worker is the current one; ``release`` (Cancel) forgets it at once, so the
    widget is ready again even when the worker is stuck in a long core call,
    and whatever that worker sends later (a late result, an error) is dropped.
    """

    def __init__(self):
        self.worker = None

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def connect(self, worker, **handlers) -> None:
        """Make ``worker`` the current one; ``handlers``: signal name -> handler."""
        self.worker = worker
        for signal, handler in handlers.items():
            getattr(worker, signal).connect(self._if_current(worker, handler))

    def _if_current(self, worker, handler):
        def call(*args):
            if worker is self.worker:
                handler(*args)
        return call

    def release(self):
        """Forget the current worker (asking it to stop at its next step); returns it."""
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.quit()
        return worker


def wrapping_label(label, monospace: bool = False):
    """Make a magicgui Label wrap its text to the width the dock gives it, instead
    of widening the dock to fit a long line (a QC reason, an error message)."""
    from qtpy.QtWidgets import QSizePolicy

    native = label.native
    native.setWordWrap(True)
    native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    native.setMinimumWidth(120)
    if monospace:
        native.setStyleSheet("font-family: monospace;")
    return label


class ResultPanel(TextEdit):
    """A read-only panel of "label   value" lines (``report.format_result``'s) that stays
    readable in a crowded dock; ``value`` is that text.

    It is shown as two columns, so a long value (a QC sentence, the interval and its
    caveat) wraps inside its own column instead of back under the labels (a wrapping
    label broke "90 % interval" / "59.8-69.4 y" at the left margin). ``min_lines`` are
    reserved when the widget is built, so they are laid out with the dock; beyond them
    the panel takes the room its lines need where the dock has it (up to their height,
    not more), and scrolls where it has not: docked with two other widgets, a wrapping
    label was cut mid-sentence and its last lines were out of reach. Its minimum does
    not grow with the text: a minimum that grows after the dock is laid out pushed the
    window past the screen's bottom.
    """

    #: A line of a result: the label in the first 16 characters, ending in spaces.
    LABEL_WIDTH = 16

    def __init__(self, min_lines: int = 6, **kwargs):
        from qtpy.QtWidgets import QFrame, QSizePolicy

        self._text = ""
        super().__init__(value="", **kwargs)
        native = self.native
        native.setReadOnly(True)  # the numbers can still be selected and copied
        native.setFrameShape(QFrame.Shape.NoFrame)
        native.setStyleSheet("QTextEdit { background: transparent; border: none; }")
        native.document().setDocumentMargin(2)
        native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)  # room it is given...
        native.setMinimumWidth(120)
        native.ensurePolished()  # the style sheet's font, measured as it will be drawn
        native.setMinimumHeight(min_lines * native.fontMetrics().lineSpacing() + 4)
        # ...up to its text's height (at the width it has), the rest of the dock's stays below.
        native.document().documentLayout().documentSizeChanged.connect(lambda _size: self._fit())
        self._fit()

    @property
    def value(self) -> str:
        return self._text

    @value.setter
    def value(self, text: str) -> None:
        self._text = text or ""
        self.native.setHtml(self.html(self._text))

    @classmethod
    def html(cls, text: str) -> str:
        """The text as a table, label | value; the first line ("scan: <name>") and lines
        without a label (a failure, "cancelled") across both columns."""
        def spanning(value: str) -> str:
            return f'<tr><td colspan="2" style="white-space: pre-wrap">{value}</td></tr>'

        rows, after = [], []  # after: unlabelled lines since the last labelled one (values)
        for index, line in enumerate(text.split("\n")):
            head, tail = line[:cls.LABEL_WIDTH], line[cls.LABEL_WIDTH:]
            labelled = index > 0 and head.endswith("  ") and tail[:1] not in ("", " ")
            value = html.escape(tail if labelled else line)
            # An interval is one unit: "90 % interval 53.1-62.7 y" wraps only as a whole.
            value = re.sub(r"\d+ % interval \S+ y", lambda m: m.group(0).replace(" ", "\N{NO-BREAK SPACE}"), value)
            if labelled:
                rows += [spanning(v) for v in after]  # between labelled lines: in the table
                after = []
                rows.append(f'<tr><td style="white-space: pre; padding-right: 10px">{html.escape(head.strip())}</td>'
                            f'<td style="white-space: pre-wrap">{value}</td></tr>')
            elif index == 0 or not rows:
                rows.append(spanning(value))
            else:
                after.append(value)
        # Unlabelled lines after the numbers (why there is no map) go below the table: in
        # it, Qt widened the label column to fit the long spanning sentence (fourth break test).
        notes = "".join(f'<p style="white-space: pre-wrap; margin: 0">{value}</p>' for value in after)
        return f'<table cellspacing="0" cellpadding="0">{"".join(rows)}</table>{notes}' if text else ""

    def _fit(self) -> None:
        native = self.native
        needed = int(native.document().size().height()) + 2 * native.frameWidth() + 1
        native.setMaximumHeight(max(native.minimumHeight(), needed))


def show_lines(label, text: str) -> None:
    """Set a wrapping label's text and keep it at least as tall as its lines: with an
    ignored width policy, a crowded dock squeezed a comparison's lines out of sight.
    (A magicgui Label emits no ``changed`` when its value is set, hence a function.)
    The height is measured again here, not only in ``reserve_lines``: before the dock
    is shown the label's font is not final (a line measured 14 px then, 15 px after)."""
    label.value = text
    lines = text.count("\n") + 1 if text else 0
    _hold_lines(label, max(lines, label.native.property("reserved_lines") or 0))


def reserve_lines(label, lines: int) -> None:
    """Keep a label (and its row in a labelled container) at least ``lines`` lines tall
    from now on. Reserved when a widget is built, the space is laid out with the dock;
    a minimum that grows later is not (napari's dock splitter keeps the docks' heights,
    and a squeezed row overlaps the next)."""
    label.native.setProperty("reserved_lines", lines)
    _hold_lines(label, lines)


def _hold_lines(label, lines: int) -> None:
    native = label.native
    native.ensurePolished()  # the style sheet's (monospace) font, not the default one
    height = lines * native.fontMetrics().lineSpacing()
    native.setMinimumHeight(height)
    _hold_row(native, height)


def _hold_row(native, height: int) -> None:
    """The container's row around a labelled widget kept its old height (Qt does not
    re-lay a row whose child's minimum grew): hold the row open too."""
    row = native.parentWidget()
    if row is not None and row.layout() is not None and row.layout().indexOf(native) >= 0:
        row.setMinimumHeight(height)


#: Characters a layer name may have that a file name must not: path separators (a
#: scan renamed "../x" exported beside the chosen folder, "a/b" into a missing one),
#: control characters, and what Windows refuses in a name.
_NOT_IN_FILE_NAMES = re.compile(r'[/\\\x00-\x1f\x7f<>:"|?*]+')


def file_stem(name: str) -> str:
    """The stem of the files a widget writes for a layer into the folder the user chose
    (``<stem>_importance.nii.gz``, ``<stem>_report.pdf``): always a plain name in that
    folder, one the CLI's subject-name check (``inference._subject_name``: not empty,
    not "." or "..", no path separator) accepts. The CLI refuses other subject names;
    a layer name was typed for the layer list, not for files, so here it is mended
    instead: the characters above become "_", parts that are only dots are dropped,
    and so are leading dots (a hidden file): "../escaped" -> "escaped", "a/b" -> "a_b".
    Anything else stays, letters of any script and spaces included, so a plain name
    gives the files the CLI would write for it."""
    parts = [part.strip() for part in _NOT_IN_FILE_NAMES.split(name)]
    stem = "_".join(part for part in parts if part.strip(". ")).lstrip(". ")
    return stem or "scan"


def overlay_colormap(name: str = "inferno"):
    """``name`` with an opacity ramp: low importance is see-through, so the scan
    shows where the model did not look and colour marks where it did (with
    translucent blending; additive blending would wash the scan out to white)."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    base = ensure_colormap(name)
    positions = np.linspace(0.0, 1.0, 32)
    colors = base.map(positions)
    colors[:, 3] = np.clip(positions * 1.5, 0.0, 1.0)  # fully opaque from two thirds up
    return Colormap(colors=colors, controls=positions, name=f"{name} (see-through)")


def ras_to_world(ras_mm: Sequence[float]) -> np.ndarray:
    """RAS millimetres (x, y, z) -> napari world coordinates (z, y, x)."""
    return (RAS_TO_WORLD @ np.array([*ras_mm, 1.0]))[:3]


#: The Points layer that marks the voxel Go to peak or a region click went to.
MARKER = "marked voxel"


def go_to(viewer: napari.Viewer, world_point: Sequence[float]) -> None:
    """Move every slider to ``world_point`` (napari world coordinates, mm) and mark it
    with a cyan cross (the ``MARKER`` layer, reused), so the eye finds the voxel."""
    point = tuple(float(v) for v in world_point)
    viewer.dims.set_point(range(3), point)
    mark(viewer, point)


def mark(viewer: napari.Viewer, world_point: Sequence[float]) -> None:
    """Put the ``MARKER`` cross at ``world_point``; the layer selection is left as it was."""
    marker = next((layer for layer in viewer.layers
                   if layer.name == MARKER and isinstance(layer, napari.layers.Points)), None)
    if marker is None:
        active = viewer.layers.selection.active
        # Scaled like the sliders' steps: a layer with 1 mm steps would turn a 2 mm
        # scan's sliders into 1 mm steps (napari steps by the finest layer).
        steps = tuple(float(r.step) for r in viewer.dims.range)
        marker = viewer.add_points([np.asarray(world_point) / steps], scale=steps, name=MARKER, symbol="cross",
                                   size=8 / min(steps), face_color="cyan", border_color="cyan", opacity=0.9,
                                   units="mm")  # as the scans
        if active is not None:  # adding a layer selects it; the widgets follow the selected scan
            viewer.layers.selection.active = active
    else:
        marker.data = np.asarray([world_point], dtype=float) / np.asarray(marker.scale)


def voxel_to_world(layer, voxel: Sequence[int]) -> np.ndarray:
    return np.asarray(layer.data_to_world(np.asarray(voxel, dtype=float)))


def confirm_overwrite(paths: Sequence[Path], parent=None) -> bool:
    """Ask the user before replacing files; True when nothing exists or they agree."""
    existing = [p for p in paths if Path(p).exists()]
    if not existing:
        return True
    from qtpy.QtWidgets import QMessageBox

    names = "\n".join(str(p) for p in existing)
    answer = QMessageBox.question(parent, "Replace files?", f"These files exist already:\n{names}\n\nReplace them?",
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class MapPickers:
    """Subject-map and population-map pickers (``self.subject``, ``self.population``)
    that list the viewer's maps of each kind and follow the scan selected in the
    layer list; for the Population and Regions widgets. Call ``_watch_layers()``
    once the pickers exist."""

    def _subject_choices(self, _widget=None) -> list:
        return map_layers(self._viewer, IMPORTANCE)

    def _population_choices(self, _widget=None) -> list:
        return map_layers(self._viewer, POPULATION)

    def _watch_layers(self) -> None:
        self._viewer.layers.events.inserted.connect(self._refresh_choices)
        self._viewer.layers.events.removed.connect(self._refresh_choices)
        self._viewer.layers.selection.events.active.connect(self._follow_selection)

    def _refresh_choices(self, _event=None) -> None:
        refresh_map_choices(self.subject, self.population)
        self._follow_selection()

    def _follow_selection(self, _event=None) -> None:
        """The importance map of the scan selected in the layer list (or the selected map)."""
        follow_selection(self._viewer, self.subject, self.population)
