"""Viewer settings shared by the widgets and the demo."""

from __future__ import annotations

import napari

#: 2D camera axes: rows grow upwards, columns to the right. With layers laid out
#: (S, A, R) by ``geometry.to_display`` this shows axial slices with anterior
#: up and the patient's right on the right (neurological convention), and
#: coronal/sagittal slices upright.
ANATOMICAL_ORIENTATION_2D = ("up", "right")


def show_anatomically(viewer: napari.Viewer) -> None:
    """Orient the 2D camera so brain slices appear upright."""
    # napari 0.9 moved the camera to viewer.scene; older releases keep viewer.camera.
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.orientation2d = ANATOMICAL_ORIENTATION_2D
