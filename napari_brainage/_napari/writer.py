"""npe2 writer: an Image or Labels layer to NIfTI on its source scan's grid.

napari's File > Save dialog (a QFileDialog) has already asked the user before
replacing the file it names, so the writer may overwrite that exact path; the
write is atomic (temporary file + rename), so a failure never leaves a
half-written file or damages the file being replaced. A name it had to extend
(``scan`` -> ``scan.nii.gz``) was never asked about, and neither is a path given
from the console (``viewer.layers.save``): an existing file there is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import WRITABLE_SUFFIXES, has_suffix, save_volume
from .layers import layer_to_volume


def write_volume_layer(path: str, data: Any, attributes: dict) -> list[str]:
    """Write one 3D layer as .nii.gz (or .nii); return the path written.

    Raises ``FileExistsError`` when ``path`` lacked a NIfTI suffix and the
    extended name already exists (nobody was asked about that file).
    """
    target = Path(path)
    extended = not has_suffix(target, WRITABLE_SUFFIXES)
    if extended:
        # napari passes the name the user typed; NIfTI is what we write.
        target = target.with_name(target.name + ".nii.gz")
        if target.exists():
            raise FileExistsError(f"{target} already exists (the name given, {Path(path).name!r}, had no .nii.gz); "
                                  "save with the full name to replace it, or choose another name")
    volume = layer_to_volume(data, attributes)
    save_volume(volume, target, overwrite=not extended)
    return [str(target)]
