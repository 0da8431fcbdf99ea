"""Viewer settings shared by the reader, the samples, the widgets and the demo:
slices upright, the orientation on the canvas, the left-right convention, 3D.

Layers are laid out (S, A, R) in world millimetres (``space.display``). napari's
2D camera draws rows downwards by default, which shows axial and coronal
slices upside down; ``show_anatomically`` turns rows upwards, names the world
axes S, A, R (the sliders say which axis they move along) and writes on the
canvas which way is which ("axial: anterior up, patient's right on the right
(neurological)"). napari's axes overlay would draw its arrows at the world
origin, which for MNI-space scans is the middle of the brain.
"""

from __future__ import annotations

import weakref

import napari

from ..io import WARNING

#: The two ways of showing the patient's left and right (2D camera's (vertical,
#: horizontal) axes): neurological has the patient's right on the screen's right
#: (FSLeyes' and the report's default), radiological on the left (as if facing the
#: patient: PACS). Rows grow upwards in both, so anterior (axial) and superior
#: (coronal, sagittal) are at the top.
CONVENTIONS = {"neurological": ("up", "right"), "radiological": ("up", "left")}
#: World axis names of this plugin's layers, shown beside the sliders.
AXIS_LABELS = ("S", "A", "R")


def _camera(viewer: napari.Viewer):
    # napari 0.9 moved the camera to viewer.scene; older releases keep viewer.camera.
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def text_overlay(viewer: napari.Viewer):
    """The canvas's text overlay (napari 0.9 moved it to ``viewer.canvas.overlays``)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.overlays.text if canvas is not None and hasattr(canvas, "overlays") else viewer.text_overlay


def convention(viewer: napari.Viewer) -> str:
    """"neurological" or "radiological": how ``viewer``'s 2D camera shows left and right."""
    horizontal = tuple(_camera(viewer).orientation2d)[1]
    return "radiological" if str(horizontal) == "left" else "neurological"


def show_anatomically(viewer: napari.Viewer, convention_name: str | None = None) -> None:
    """Brain slices upright in every plane, the patient's right where ``convention_name``
    puts it (default: keep the viewer's, neurological at first), the world axes
    named S, A, R, and a line on the canvas saying which way is which."""
    name = convention_name or convention(viewer)
    if name not in CONVENTIONS:
        raise ValueError(f"unknown convention {name!r}; choose from {', '.join(CONVENTIONS)}")
    _camera(viewer).orientation2d = CONVENTIONS[name]
    if viewer not in _HOOKED:
        # A reader runs before its layer is added, and napari names the axes 0, 1, 2
        # when the layer arrives: label them (and the plane) whenever they change.
        _HOOKED.add(viewer)
        for event in (viewer.dims.events.ndim, viewer.dims.events.order, viewer.dims.events.ndisplay,
                      viewer.layers.events.removed):
            event.connect(lambda _event=None: _label(viewer))

        def inserted(event) -> None:  # a layer's note counts while it is shown
            event.value.events.visible.connect(lambda _event=None: _label(viewer))
            _label(viewer)

        viewer.layers.events.inserted.connect(inserted)
        for layer in viewer.layers:
            layer.events.visible.connect(lambda _event=None: _label(viewer))
        overlay = text_overlay(viewer)
        overlay.position = "top_left"  # the top right holds the colour bars; notifications pop up bottom right
        overlay.color = "white"
        overlay.font_size = 10
    _label(viewer)


_HOOKED: weakref.WeakSet = weakref.WeakSet()
_PLANES = {0: "axial", 1: "coronal", 2: "sagittal"}
_UP = {0: "superior", 1: "anterior"}


def orientation_text(viewer: napari.Viewer) -> str:
    """What the canvas shows, in words: "axial: anterior up, patient's right on the
    right (neurological)"; "" when it is not a 3D scan seen in 2D."""
    if viewer.dims.ndim != len(AXIS_LABELS):
        return ""
    if viewer.dims.ndisplay == 3:
        return "3D view: drag to rotate"
    sliced, vertical, horizontal = (int(a) for a in viewer.dims.order)
    side = "right" if convention(viewer) == "neurological" else "left"
    across = "patient's right" if horizontal == 2 else "anterior"
    up = _UP.get(vertical, "patient's right")
    text = f"{_PLANES[sliced]}: {up} up, {across} on the {side} ({convention(viewer)})"
    if any(layer.visible and layer.metadata.get(WARNING) for layer in viewer.layers):  # e.g. an ANALYZE file
        text += "; left/right guessed: not in the file"
    return text


def _label(viewer: napari.Viewer) -> None:
    if viewer.dims.ndim == len(AXIS_LABELS) and tuple(viewer.dims.axis_labels) != AXIS_LABELS:
        viewer.dims.axis_labels = AXIS_LABELS
    text = orientation_text(viewer)
    overlay = text_overlay(viewer)
    # Short lines on the canvas: one line ran off a narrow window (docked widgets, a laptop).
    overlay.text = text.replace(", ", "\n", 1).replace(" (", "\n(", 1).replace("; ", "\n", 1)
    overlay.visible = bool(text)


def orient_current_viewer() -> None:
    """Readers and sample loaders get no viewer: orient the one napari is opening
    into (``napari.current_viewer()``), so File > Open shows scans upright without
    any of this plugin's widgets."""
    viewer = napari.current_viewer()
    if viewer is not None:
        show_anatomically(viewer)
