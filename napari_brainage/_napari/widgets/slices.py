"""Slices dock widget: pick the plane, move through it, jump to what matters.

The slider and napari's own dims slider are two views of one state
(``viewer.dims``): moving either moves the other. Positions are shown in world
millimetres, which for this plugin's layers are scanner/MNI RAS coordinates.
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, Slider
from napari.utils.notifications import show_error

from ..viewer import show_anatomically
from ._common import follow_selection, go_to, map_layers, refresh_map_choices, voxel_to_world

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
        self.peak = PushButton(text="Go to peak", tooltip="Show the slices through the map's most important voxel.")
        self.extend([self.plane, self.slice, self.position, self.map, self.peak])
        self.plane.changed.connect(self._set_plane)
        self.slice.changed.connect(self._set_slice)
        self.peak.changed.connect(self.go_to_peak)
        viewer.dims.events.point.connect(self._sync_from_viewer)
        viewer.dims.events.range.connect(self._sync_from_viewer)
        viewer.dims.events.order.connect(self._sync_from_viewer)
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
