"""Helpers the dock widgets share: which layers are scans or maps, layers <-> volumes,
navigation in world millimetres, and asking before overwriting files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import napari
import numpy as np

from .._layers import layer_to_volume, volume_layer_data
from ..geometry import RAS_TO_WORLD
from ..io import Volume

#: Layer metadata key marking layers this plugin computed, with their kind.
MAP_KIND = "brainage_map"
IMPORTANCE, POPULATION, DIFFERENCE = "importance", "population", "difference"


def scan_layers(viewer: napari.Viewer) -> list[napari.layers.Image]:
    """3D grey-scale Image layers that are not maps this plugin made."""
    return [layer for layer in viewer.layers
            if isinstance(layer, napari.layers.Image) and layer.ndim == 3 and not layer.rgb
            and not layer.metadata.get(MAP_KIND)]


def map_layers(viewer: napari.Viewer, *kinds: str) -> list[napari.layers.Image]:
    """Map layers (of the given kinds; any kind when none is given)."""
    return [layer for layer in viewer.layers
            if isinstance(layer, napari.layers.Image) and layer.metadata.get(MAP_KIND)
            and (not kinds or layer.metadata[MAP_KIND] in kinds)]


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


def show_volume(viewer: napari.Viewer, volume: Volume, name: str, kind: str, **kwargs):
    """Add ``volume`` as a map layer called ``name``, replacing a layer of that name."""
    data, layer_kwargs, _ = volume_layer_data(volume, name=name, **kwargs)
    layer_kwargs["metadata"][MAP_KIND] = kind
    if name in viewer.layers:
        viewer.layers.remove(name)
    return viewer.add_image(data, **layer_kwargs)


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


def map_contrast_limits(values: np.ndarray, lower_percentile: float = 50.0) -> tuple[float, float]:
    """Colour the upper half of a map's in-brain values: with the see-through
    colormap the lower half stays invisible, so the scan shows through where the
    model did not look."""
    values = np.asarray(values)
    inside = values[values > 0]
    if inside.size == 0:
        return (0.0, 1.0)
    low, high = np.percentile(inside, [lower_percentile, 99.5])
    return float(low), float(max(high, low + 1e-3))


def ras_to_world(ras_mm: Sequence[float]) -> np.ndarray:
    """RAS millimetres (x, y, z) -> napari world coordinates (z, y, x)."""
    return (RAS_TO_WORLD @ np.array([*ras_mm, 1.0]))[:3]


def go_to(viewer: napari.Viewer, world_point: Sequence[float]) -> None:
    """Move every slider to ``world_point`` (napari world coordinates, mm)."""
    viewer.dims.set_point(range(3), tuple(float(v) for v in world_point))


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
