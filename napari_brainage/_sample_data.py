"""npe2 sample data: File > Open Sample > napari-brainage."""

from __future__ import annotations

from .samples import SAMPLES, load_sample
from ._layers import volume_layer_data


def icbm152_t1_2mm() -> list[tuple]:
    """The ICBM152 2009a T1 template on the 2 mm MNI grid."""
    sample = SAMPLES["icbm152_t1_2mm"]
    return [volume_layer_data(load_sample(sample.key), name=sample.key)]
