"""Scan info dock widget: the selected scan's geometry, as the core sees it.

Lets a user check orientation, voxel size and intensities before trusting a
prediction, and sets the 2D view upright (see ``_viewer.show_anatomically``).
"""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import ComboBox, Container, Label

from ...summary import summarise
from ..layers import layer_to_volume
from ..viewer import show_anatomically


class ScanInfoWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self.layer = ComboBox(
            label="scan",
            choices=self._image_layers,
            tooltip="Image layer to describe (3D scans only).",
        )
        self.info = Label(value="")
        self.info.native.setStyleSheet("font-family: monospace;")
        self.info.native.setWordWrap(True)
        self.extend([self.layer, self.info])
        self.layer.changed.connect(self._refresh)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.layers.selection.events.active.connect(self._on_active_changed)
        show_anatomically(viewer)
        self._on_active_changed()

    def _image_layers(self, _widget=None) -> list:
        return [
            layer for layer in self._viewer.layers
            if isinstance(layer, napari.layers.Image) and layer.ndim == 3 and not layer.rgb
        ]

    def _on_layers_changed(self, _event=None) -> None:
        self.layer.reset_choices()
        self._refresh()

    def _on_active_changed(self, _event=None) -> None:
        self.layer.reset_choices()
        active = self._viewer.layers.selection.active
        if active is not None and active in self.layer.choices:
            self.layer.value = active
        self._refresh()

    def _refresh(self, _value=None) -> None:
        layer = self.layer.value
        if layer is None:
            self.info.value = "Open a 3D scan (File > Open, or File > Open Sample)."
            return
        volume = layer_to_volume(*layer.as_layer_data_tuple()[:2])
        source = layer.metadata.get("source_path")
        # The full path can be long: show the name, keep the path in the tooltip.
        self.info.tooltip = source or ""
        name = Path(source).name if source else "(not from a file)"
        self.info.value = "\n".join([f"file            {name}", *summarise(volume).lines()])
