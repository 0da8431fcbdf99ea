"""Slices dock widget: pick the plane, move through it, jump to what matters,
choose how left and right are shown, and look at the map in 3D.

The slider and napari's own dims slider are two views of one state
(``viewer.dims``): moving either moves the other. Positions are shown in world
millimetres, which for this plugin's layers are scanner/MNI RAS coordinates.
The 3D view draws the scan as a translucent surface (the brain's outline) and
the map's top 10 % as a solid surface inside it; 2D puts every layer back as it was.
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, Slider
from napari.utils.notifications import show_error

from ...threshold import map_contrast_limits
from ..viewer import CONVENTIONS, convention, show_anatomically
from ._common import (
    follow_selection,
    go_to,
    made_for,
    map_layers,
    refresh_map_choices,
    same_layer,
    scan_layers,
    voxel_to_world,
)

#: Display layers are laid out (S, A, R): the axis each plane slices through,
#: and the dims order that shows that plane (sliced axis first).
PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}
_ORDERS = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}
_AXIS_NAMES = ("z (inferior-superior)", "y (posterior-anterior)", "x (left-right)")


class SliceWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self._syncing = False
        self.plane = ComboBox(label="plane", choices=list(PLANES), value="axial",
                              tooltip="Which slices to show: axial, coronal or sagittal.")
        self.slice = Slider(label="slice", min=0, max=1, value=0, tracking=True,
                            tooltip="Move through the slices (same as napari's slider; arrow keys work).")
        self.position = Label(label="position", value="")
        self.map = ComboBox(label="map", choices=self._map_choices, nullable=True,
                            tooltip="The map whose most important voxel 'Go to peak' shows "
                                    "(follows the scan or map selected in the layer list).")
        self.peak = PushButton(text="Go to peak", tooltip="Show the slices through the map's most important voxel "
                                                          "and mark it with a cross.")
        self.convention = ComboBox(label="left-right", choices=list(CONVENTIONS), value=convention(viewer),
                                   tooltip="neurological: the patient's right on the screen's right (FSLeyes, the "
                                           "reports); radiological: on the left, as if facing the patient (PACS).")
        self.view3d = PushButton(text="3D view", tooltip="The scan as a translucent brain outline with the map's "
                                                         "top 10 % as a surface inside it (drag to rotate); press "
                                                         "again for slices.")
        buttons = Container(widgets=[self.peak, self.view3d], layout="horizontal", labels=False, label=" ")
        self.extend([self.plane, self.slice, self.position, self.map, self.convention, buttons])
        self._saved_2d: list = []  # (layer, rendering, iso_threshold, opacity, blending) to restore after 3D
        self._hidden_in_3d: list = []  # other maps, hidden in 3D, shown again after
        self.plane.changed.connect(self._set_plane)
        self.slice.changed.connect(self._set_slice)
        self.peak.changed.connect(self.go_to_peak)
        self.convention.changed.connect(lambda name: show_anatomically(self._viewer, name))
        self.view3d.changed.connect(self.toggle_3d)
        viewer.dims.events.point.connect(self._sync_from_viewer)
        viewer.dims.events.range.connect(self._sync_from_viewer)
        viewer.dims.events.order.connect(self._sync_from_viewer)
        viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        viewer.layers.events.inserted.connect(self._refresh_choices)
        viewer.layers.events.removed.connect(self._refresh_choices)
        viewer.layers.selection.events.active.connect(self._follow_selection)
        show_anatomically(viewer)
        self._refresh_choices()
        self._sync_from_viewer()

    @property
    def axis(self) -> int:
        return PLANES[self.plane.value]

    def _map_choices(self, _widget=None) -> list:
        return map_layers(self._viewer)

    def _refresh_choices(self, _event=None) -> None:
        refresh_map_choices(self.map, newest=False)
        self._follow_selection()

    def _follow_selection(self, _event=None) -> None:
        """The importance map of the scan selected in the layer list (or the selected map)."""
        follow_selection(self._viewer, self.map)

    # ---- widget -> viewer
    def _set_plane(self, plane: str) -> None:
        if self._syncing or self._viewer.dims.ndim != 3:
            return
        self._viewer.dims.order = _ORDERS[plane]
        self._viewer.reset_view()  # the new plane has another aspect: fit it
        self._sync_from_viewer()

    def _set_slice(self, step: int) -> None:
        if self._syncing or self._viewer.dims.ndim != 3:
            return
        self._viewer.dims.set_current_step(self.axis, int(step))

    # ---- viewer -> widget
    def _sync_from_viewer(self, _event=None) -> None:
        dims = self._viewer.dims
        if dims.ndim != 3:
            self.position.value = "open a 3D scan"
            return
        self._syncing = True
        try:
            sliced = dims.order[0]
            for plane, order in _ORDERS.items():
                if order[0] == sliced:
                    self.plane.value = plane
            self.slice.max = max(1, int(dims.nsteps[sliced]) - 1)
            self.slice.value = int(dims.current_step[sliced])
            self.position.value = f"{_AXIS_NAMES[sliced]} = {dims.point[sliced]:+.1f} mm"
        finally:
            self._syncing = False

    # ---- jumps
    def go_to_peak(self, _value=None):
        layer = self.map.value
        if layer is None:
            show_error("Slices: no map to search (run Brain age or load a population map).")
            return None
        voxel = np.unravel_index(int(np.nanargmax(layer.data)), layer.data.shape)
        world = voxel_to_world(layer, voxel)
        go_to(self._viewer, world)
        return world

    # ---- 3D
    def _on_ndisplay(self, _event=None) -> None:
        """Back to slices by any button (ours or napari's 2D/3D one): the layers as they
        were, and our button saying what it does now."""
        if self._viewer.dims.ndisplay == 2:
            for layer, rendering, threshold, opacity, blending in self._saved_2d:
                if layer in self._viewer.layers:
                    layer.rendering, layer.iso_threshold = rendering, threshold
                    layer.opacity, layer.blending = opacity, blending
            for layer in self._hidden_in_3d:
                if layer in self._viewer.layers:
                    layer.visible = True
            self._saved_2d, self._hidden_in_3d = [], []
        self.view3d.text = "2D slices" if self._viewer.dims.ndisplay == 3 else "3D view"

    def toggle_3d(self, _value=None) -> None:
        """Slices <-> 3D: the scan as a translucent iso-surface (the brain's outline),
        the chosen map's top 10 % as a solid surface inside it."""
        viewer = self._viewer
        if viewer.dims.ndisplay == 3:
            viewer.dims.ndisplay = 2  # _on_ndisplay puts the layers back
            return
        if viewer.dims.ndim != 3:
            show_error("Slices: open a 3D scan first.")
            return
        shown = self.map.value
        # Outlined: the visible grey-scale scans (a mask made in the console, bool, has no
        # intensities to outline); only the chosen map's own scan when it is among them
        # (two translucent outlines read as a doubled brain).
        scans = [layer for layer in scan_layers(viewer)
                 if layer.visible and np.asarray(layer.data).dtype != bool]
        own = [layer for layer in scans if made_for(shown, layer)]
        scans = own or scans
        # The brain's outline: the surface where intensity crosses the lower quartile of
        # the scan's non-zero voxels (cerebrospinal fluid and background lie below).
        # Every threshold first, so that a failure changes no layer.
        thresholds = []
        for layer in scans:
            data = np.asarray(layer.data, dtype=np.float32)
            inside = data[data > 0]
            thresholds.append(float(np.percentile(inside, 25)) if inside.size else 0.0)
        self._saved_2d = [(layer, layer.rendering, layer.iso_threshold, layer.opacity, layer.blending)
                          for layer in [*scans, *([shown] if shown is not None else [])]]
        for layer, threshold in zip(scans, thresholds):
            layer.iso_threshold = threshold
            # Without depth: the map's surface inside stays visible through the outline.
            layer.rendering, layer.opacity, layer.blending = "iso", 0.3, "translucent_no_depth"
        # Other maps, volume-rendered, would cover the brain: only the chosen one is shown.
        self._hidden_in_3d = [layer for layer in map_layers(viewer)
                              if layer.visible and not same_layer(layer, shown)]
        self._hidden_in_3d += [layer for layer in scan_layers(viewer) if layer.visible and layer not in scans]
        for layer in self._hidden_in_3d:
            layer.visible = False
        if shown is not None:
            _, top = map_contrast_limits(np.asarray(shown.data))
            shown.rendering, shown.iso_threshold, shown.opacity, shown.blending = "iso", top, 1.0, "translucent"
        viewer.dims.ndisplay = 3
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        # Upright, from behind and to the side (napari's default (0, 0, 90) looks from
        # behind for these (S, A, R) layers; the first angle turns about the vertical):
        # the hemisphere's outline and the depth of the map inside it.
        camera.angles = (-60.0, 0.0, 90.0)
