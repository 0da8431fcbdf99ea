"""Threshold dock widget: show only the top k % of a map, or the voxels above a value.

The mask layer follows the slider while it is dragged: the map's values are
sorted once when the map is picked (``threshold.Thresholder``), then each update
is one comparison written into the Labels layer's own buffer, and a re-slice of
the shown plane (see benchmarks/threshold_update.py). The mask keeps the map's
geometry, so "Keep as layer" and "Save mask" land on the source scan's voxels.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, Label, PushButton, RadioButtons
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info

from ...io import save_volume
from ...threshold import Thresholder
from ._common import (
    confirm_overwrite,
    counted_in_layer,
    follow_selection,
    layer_volume,
    map_layers,
    refresh_map_choices,
)

TOP, ABOVE = "top %", "above value"
MASK_COLOUR = "cyan"


class ThresholdWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self._thresholder: Thresholder | None = None
        self._source = None          # the map layer the mask is computed from
        self._mask_layer = None      # the live Labels layer (its data is our buffer)
        self._updating = False
        self._mode = TOP
        self.map = ComboBox(label="map", choices=self._map_choices, nullable=True,
                            tooltip="The importance or population map to threshold (follows the scan or "
                                    "map selected in the layer list).")
        self.mode = RadioButtons(label="keep", choices=[TOP, ABOVE], value=TOP, orientation="horizontal",
                                 tooltip="The k % most important brain voxels, or every voxel above a value.")
        self.percent = FloatSlider(label="top %", min=0.1, max=50.0, step=0.1, value=5.0, tracking=True,
                                   tooltip="Share of the brain's voxels to keep (updates while dragging).")
        self.value = FloatSlider(label="above", min=0.0, max=1.0, step=0.001, value=0.5, tracking=True,
                                 visible=False, tooltip="Keep voxels at or above this importance.")
        self.readout = Label(label="mask", value="")
        self.keep = PushButton(text="Keep as layer", tooltip="Copy the current mask into its own Labels layer.")
        self.save_path = FileEdit(label="save to", mode="w", nullable=True, filter="*.nii.gz",
                                  tooltip="NIfTI file for the mask, written on the map's source grid.")
        self.save = PushButton(text="Save mask", tooltip="Write the current mask as a NIfTI mask (0/1).")
        self.extend([self.map, self.mode, self.percent, self.value, self.readout, self.keep,
                     self.save_path, self.save])
        self.map.changed.connect(self._use_map)
        self.mode.changed.connect(self._set_mode)
        self.percent.changed.connect(self.update)
        self.value.changed.connect(self.update)
        self.keep.changed.connect(self.keep_layer)
        self.save.changed.connect(self.save_mask)
        viewer.layers.events.inserted.connect(self._refresh_choices)
        viewer.layers.events.removed.connect(self._refresh_choices)
        viewer.layers.selection.events.active.connect(self._follow_selection)
        self._refresh_choices()

    def _map_choices(self, _widget=None) -> list:
        return map_layers(self._viewer)

    def _refresh_choices(self, event=None) -> None:
        if self._mask_layer is not None and self._mask_layer not in self._viewer.layers:
            self._mask_layer = None  # the user deleted it: make a new one on the next update
        if event is not None and not isinstance(event.value, napari.layers.Image):
            return  # only Image layers can be maps (and adding our mask must not recurse)
        refresh_map_choices(self.map, newest=False)  # picking a map calls _use_map
        follow_selection(self._viewer, self.map)
        if self.map.value is not self._source:
            self._use_map(self.map.value)

    def _follow_selection(self, _event=None) -> None:
        """The importance map of the scan selected in the layer list (or the selected map)."""
        if self._updating:
            return  # our own mask layer being added
        follow_selection(self._viewer, self.map)

    # ---- state
    @property
    def threshold(self) -> float | None:
        """The importance value the mask starts at (None without a map)."""
        if self._thresholder is None:
            return None
        if self.mode.value == TOP:
            return self._thresholder.value_for_top_percent(self.percent.value)
        return float(self.value.value)

    def _use_map(self, layer) -> None:
        self._source = layer
        if layer is None:
            self._thresholder = None
            self.readout.value = "pick a map"
            # The last map is gone (its scan closed): its mask would stay drawn over what is left.
            if self._mask_layer is not None and self._mask_layer in self._viewer.layers:
                self._viewer.layers.remove(self._mask_layer)
            self._mask_layer = None
            return
        try:
            self._thresholder = Thresholder(layer.data, within=counted_in_layer(layer))
        except ValueError as err:
            self._thresholder = None
            show_error(f"Threshold: {layer.name}: {err}")
            return
        low, high = self._thresholder.value_range
        self.value.min, self.value.max = low, high
        self.value.value = float(np.clip(self.value.value, low, high))
        if self._mask_layer is not None and self._mask_layer in self._viewer.layers:
            self._viewer.layers.remove(self._mask_layer)
        self._mask_layer = None
        self.update()

    def _set_mode(self, mode: str) -> None:
        if mode == self._mode:
            return  # napari re-sets every choice widget's value whenever layers change
        self._mode = mode
        self.percent.visible, self.value.visible = mode == TOP, mode == ABOVE
        if mode == ABOVE and self._thresholder is not None:
            self.value.value = self._thresholder.value_for_top_percent(self.percent.value)
        self.update()

    # ---- the live mask
    def update(self, _value=None) -> None:
        """Recompute the mask in place (called on every slider move)."""
        if self._thresholder is None or self._updating:
            return
        if self._source not in self._viewer.layers:  # the map was deleted
            self._thresholder = self._source = None
            return
        threshold = self.threshold
        # Adding the mask layer makes napari reset this container's choices, which
        # re-emits the mode's value: the guard keeps that from adding a second layer.
        self._updating = True
        try:
            layer = self._live_layer()
        finally:
            self._updating = False
        self._thresholder.mask(threshold, out=layer.data.view(bool))
        layer.refresh(extent=False)
        share = self._thresholder.percent_above(threshold)
        kept = round(self._thresholder.voxels * share / 100)
        self.readout.value = f"{kept} voxels ({share:.1f} % of brain) >= {threshold:.3f}"
        layer.metadata.update(threshold=threshold, percent=share)

    def _live_layer(self):
        if self._mask_layer is None or self._mask_layer not in self._viewer.layers:
            source = self._source
            self._mask_layer = self._viewer.add_labels(
                np.zeros(source.data.shape, dtype=np.uint8), name=f"threshold ({source.name})",
                affine=source.affine.affine_matrix, metadata=dict(source.metadata, brainage_map=None),
                colormap=DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: MASK_COLOUR}),
                opacity=0.6, units=source.units,
            )
            self._viewer.layers.selection.active = source
        return self._mask_layer

    # ---- export
    def _describe(self) -> str:
        if self.mode.value == TOP:
            return f"top {self.percent.value:g} %"
        return f">= {self.value.value:.3f}"

    def keep_layer(self, _value=None):
        if self._mask_layer is None:
            show_error("Threshold: pick a map first.")
            return None
        live = self._mask_layer
        name = f"{self._source.name} {self._describe()}"
        for layer in self._viewer.layers:  # pressed twice: the same mask is already kept
            if layer.name == name and np.array_equal(layer.data, live.data):
                self._viewer.layers.selection.active = layer
                show_info(f"Threshold: this mask is already kept as '{name}'")
                return layer
        return self._viewer.add_labels(
            live.data.copy(), name=name, affine=live.affine.affine_matrix,
            metadata=dict(live.metadata), colormap=live.colormap, opacity=live.opacity, units=live.units)

    def save_mask(self, _value=None) -> Path | None:
        if self._mask_layer is None:
            show_error("Threshold: pick a map first.")
            return None
        if self.save_path.value is None:
            show_error("Threshold: choose a file to save the mask to.")
            return None
        path = Path(self.save_path.value)
        if not confirm_overwrite([path], self.native):
            return None
        try:
            save_volume(layer_volume(self._mask_layer), path, overwrite=True,
                        description=f"napari-brainage mask: {self._describe()}"[:80])
        except (OSError, ValueError) as err:
            show_error(f"Threshold: {err}")
            return None
        show_info(f"Threshold: mask saved to {path}")
        return path
