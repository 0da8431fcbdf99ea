"""npe2 writer: an Image or Labels layer to NIfTI on its source scan's grid.

napari's File > Save dialog (a QFileDialog) has already asked the user before
replacing an existing file, so the writer itself may overwrite; the write is
still atomic (temporary file + rename), so a failure never leaves a
half-written file or damages the file being replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import WRITABLE_SUFFIXES, has_suffix, save_volume
from .layers import layer_to_volume


def write_volume_layer(path: str, data: Any, attributes: dict) -> list[str]:
    """Write one 3D layer as .nii.gz (or .nii); return the path written."""
    target = Path(path)
    if not has_suffix(target, WRITABLE_SUFFIXES):
        # napari passes the name the user typed; NIfTI is what we write.
        target = target.with_name(target.name + ".nii.gz")
    volume = layer_to_volume(data, attributes)
    save_volume(volume, target, overwrite=True)
    return [str(target)]
