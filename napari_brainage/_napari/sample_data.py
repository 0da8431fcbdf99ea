"""npe2 sample data: File > Open Sample > napari-brainage.

One function per menu entry (npe2 needs a named callable for each); they all
go through ``_load``. Synthetic subjects carry their ages in the layer metadata.
"""

from __future__ import annotations

from ..samples import SAMPLES, load_sample
from .layers import volume_layer_data
from .viewer import orient_current_viewer


def _load(key: str) -> list[tuple]:
    sample = SAMPLES[key]
    volume = load_sample(key)
    orient_current_viewer()
    if sample.is_mask:
        return [volume_layer_data(volume, name=key, layer_type="labels", opacity=0.5)]
    return [volume_layer_data(volume, name=key)]


def icbm152_t1_2mm() -> list[tuple]:
    return _load("icbm152_t1_2mm")


def synthetic_age50() -> list[tuple]:
    return _load("synthetic_age50")


def synthetic_age80() -> list[tuple]:
    return _load("synthetic_age80")


def synthetic_age50_accelerated() -> list[tuple]:
    return _load("synthetic_age50_accelerated")


def synthetic_ground_truth() -> list[tuple]:
    return _load("synthetic_ground_truth")
