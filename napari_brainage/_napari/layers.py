"""Turn core volumes into napari layer-data tuples, and layers back into volumes.

Shared by the reader, the writer, the sample data and the widgets so that
every layer this plugin makes carries the same geometry metadata.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..io import WARNING, Volume
from ..space.display import from_display, to_display

#: Layer metadata keys (plain values, so layers stay easy to inspect).
SOURCE_AFFINE = "source_affine"
SOURCE_SHAPE = "source_shape"
SOURCE_PATH = "source_path"
SOURCE_HEADER = "source_header"


def volume_layer_data(
    volume: Volume, name: str, layer_type: str = "image", **layer_kwargs: Any
) -> tuple[np.ndarray, dict, str]:
    """A (data, kwargs, type) tuple that shows ``volume`` in world millimetres."""
    data, napari_affine = to_display(volume.data, volume.affine)
    metadata = dict(volume.metadata)
    metadata.update({
        SOURCE_AFFINE: volume.affine.copy(),
        SOURCE_SHAPE: volume.shape,
        SOURCE_PATH: str(volume.path) if volume.path else None,
        SOURCE_HEADER: volume.header,
    })
    kwargs: dict[str, Any] = {
        "name": name,
        "affine": napari_affine,
        "metadata": metadata,
        "units": ("mm", "mm", "mm"),
    }
    if layer_type == "image":
        kwargs["colormap"] = "gray"
        kwargs["contrast_limits"] = robust_contrast_limits(data)
    kwargs.update(layer_kwargs)
    return data, kwargs, layer_type


def robust_contrast_limits(data: np.ndarray) -> tuple[float, float]:
    """0.5th-99.5th percentile of the non-zero finite voxels.

    Scans are mostly background, and a few bright voxels (vessels, fat) would
    wash out min/max contrast; sampling keeps this fast on 1 mm volumes.
    """
    flat = data.reshape(-1)
    step = max(1, flat.size // 1_000_000)
    sample = flat[::step].astype(np.float64)
    sample = sample[np.isfinite(sample) & (sample != 0)]
    if sample.size == 0:
        return (0.0, 1.0)
    low, high = np.percentile(sample, [0.5, 99.5])
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def layer_to_volume(data: np.ndarray, attributes: dict) -> Volume:
    """Volume (source voxel order, NIfTI affine) of a 3D layer's data and state.

    ``attributes`` is napari's layer state (as given to writers): its ``affine``
    and its ``scale``/``translate``/``rotate``/``shear`` are composed the way
    napari does (world = affine @ composite(scale, ...)).
    """
    from napari.utils.transforms import CompositeAffine

    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(f"only 3D layers can be written as brain volumes (got {data.ndim}D)")
    composite = CompositeAffine(
        scale=attributes.get("scale") or (1, 1, 1),
        translate=attributes.get("translate") or (0, 0, 0),
        rotate=attributes.get("rotate"),
        shear=attributes.get("shear"),
        ndim=3,
    ).affine_matrix
    napari_affine = np.asarray(attributes.get("affine", np.eye(4)), dtype=np.float64) @ composite
    metadata = dict(attributes.get("metadata") or {})
    source_affine = metadata.get(SOURCE_AFFINE)
    source_shape = metadata.get(SOURCE_SHAPE)
    if source_shape is not None and sorted(source_shape) != sorted(data.shape):
        source_affine = None  # a different grid: the source orientation no longer applies
    voxels, affine = from_display(data, napari_affine, source_affine)
    header = metadata.get(SOURCE_HEADER) if source_affine is not None else None
    # How the file was read (e.g. no orientation stored) still holds for the same grid.
    note = {WARNING: metadata[WARNING]} if source_affine is not None and metadata.get(WARNING) else {}
    if source_affine is None and not metadata.get("brainage_map"):
        # A layer from the console (viewer.add_image(nib.load(f).get_fdata(), ...)) carries
        # no orientation: its axes are read as napari's (S, A, R), and a scan in nibabel's
        # (x, y, z) order then failed QC as "partial field of view" (fourth break test).
        note = {WARNING: CONSOLE_LAYER_WARNING}
    return Volume(data=voxels, affine=affine, header=header, metadata=note)


#: Said (a QC warning) of a layer that did not come through this plugin's reader.
CONSOLE_LAYER_WARNING = ("this layer carries no file orientation (added from the console or another reader?): "
                         "its axes are read as napari's superior, anterior, right; if QC fails or left and right "
                         "look wrong, open the file with File > Open (napari-brainage)")
