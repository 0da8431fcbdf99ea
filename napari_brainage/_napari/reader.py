"""npe2 reader: NIfTI / MGZ / ANALYZE scans as napari Image layers in world millimetres
(binary masks, e.g. saved by Threshold, as Labels layers).

A thin wrapper over :func:`napari_brainage.io.load_volume`. The layer's data
are the scan reordered for display (see :mod:`napari_brainage.space.display`), its
affine maps them to RAS millimetres, and its metadata keep the source affine,
shape and header so that the writer can put anything derived back on the
scan's own voxel grid.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
from napari.utils.notifications import show_error

from ..io import READABLE_SUFFIXES, VolumeError, has_suffix, load_volume, pair_partner, strip_suffix
from .layers import volume_layer_data
from .viewer import orient_current_viewer

PathOrPaths = str | Sequence[str]


def get_reader(path: PathOrPaths) -> Callable | None:
    """Claim ``path`` if it is (a list of) .nii, .nii.gz, .mgz or .hdr/.img files; else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(has_suffix(p, READABLE_SUFFIXES) for p in paths):
        return None
    return read_scans


def read_scans(path: PathOrPaths) -> list[tuple]:
    """Read each scan into layer data; a bad file becomes a notification naming the problem.

    napari would wrap an exception in a generic "plugin failed, try another
    plugin" message, which hides the real problem (a 4D file, a corrupt gzip)
    from the user; so we show our own message and tell napari that the read
    produced no layer (npe2's ``[(None,)]`` sentinel) when nothing was readable.
    """
    paths = _one_name_per_pair([path] if isinstance(path, (str, os.PathLike)) else list(path))
    layers = []
    for p in paths:
        try:
            volume = load_volume(p)
        except VolumeError as err:
            show_error(str(err))
            continue
        layers.append(volume_layer_data(volume, name=strip_suffix(p),
                                        layer_type="labels" if _is_mask(volume.data) else "image"))
    if layers:
        orient_current_viewer()  # upright from File > Open, with or without our widgets
    return layers or [(None,)]


def _is_mask(data) -> bool:
    """Whole numbers 0 and 1 only (a mask saved by Threshold, or any binary mask): shown
    as a Labels layer, so it is not offered as a scan to analyse or drawn as a brain."""
    data = np.asarray(data)
    return data.dtype.kind in "biu" and data.size > 0 and int(data.min()) >= 0 and int(data.max()) == 1


def _one_name_per_pair(paths: list) -> list:
    """``paths`` without the ``.img`` of a pair whose ``.hdr`` is also there (both
    files dropped on the viewer are one scan, opened once)."""
    names = {os.fspath(p) for p in paths}
    return [p for p in paths if not (str(p).lower().endswith(".img") and os.fspath(pair_partner(p)) in names)]
