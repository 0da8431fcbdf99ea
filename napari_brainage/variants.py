"""Real-world variants of one clean scan, written to files: what users actually feed the plugin.

The default preprocessing gave wrong ages, with QC "ok", for kinds of files that
are common outside a curated pipeline. This module makes those kinds from one
clean, skull-stripped scan on FSL's 1 mm MNI grid (a ``napari-brainage synth
--res 1`` subject), so the same brain can be presented in many ways and the
plugin's answers compared with the clean scan's:

* **geometry**: the same brain in another field of view, axis order, header
  convention or position (padded, cropped, RAS/PSL order, negative qfac,
  disagreeing sform/qform, moved and re-gridded, tilted, shifted, oblique);
* **storage**: the same voxels stored another way (4D with a trailing 1,
  upper-case extensions, uint16, int16 with scl_slope/scl_inter, float64,
  uncompressed);
* **intensity**: the same image with other intensities (a global linear change,
  z-scored, every voxel negative, a few NaN/Inf voxels);
* **head**: the brain with scalp, skull, CSF rim, neck and background noise,
  like a raw T1 off the scanner (on the MNI lattice, and moved into a
  FreeSurfer-like LIA 256 mm cube);
* **resolution**: thick slices, 3 mm voxels, thick slices upsampled again,
  2 and 3 mm scans upsampled to 1 mm, a scan upsampled to half its voxels, smoothed copies;
* **contrast**: T2-like and FLAIR-like renders (the model reads T1 only);
* **not-anatomical**: a statistical map, label images;
* **partial**: the top of the brain, or the cerebellum, outside the field of view.

Every kind is a small function (its docstring says what real file it imitates
and where such files come from) returning the array as stored and how to store
it; :func:`write_variants` writes them with nibabel directly (never with
``io.save_volume``, which normalises headers), so odd headers really are in the
files, and returns a :class:`Variant` per file: its group, what the plugin
should do with it (``expected``: "same age", "flag" or "same age or flag"),
and, for tests, how its world and intensities relate to the clean scan's.

Sizes are given for a 1 mm scan. Distances (shifts, shells, cuts, fields of
view) are world millimetres for any input; voxel sizes of re-gridded variants
(1.2 mm, 3 mm, 5 mm slices) are multiples of the clean scan's voxel size, so a
2 mm copy (used by the tests, for speed) gives 2.4, 6 and 10 mm.

Deterministic: each kind draws from its own generator seeded by ``(seed, kind
name)``, so a kind's file does not depend on which other kinds are written.

Use::

    from napari_brainage.io import load_volume
    from napari_brainage.variants import KINDS, write_variants

    variants = write_variants(load_volume("sub-0001.nii.gz"), "variants/", seed=0,
                              kinds=["geometry", "t2_like"], prefix="sub-0001__")
    for v in variants:
        print(v.name, v.group, v.expected, v.path)

``KINDS`` lists every kind (name, group, expected, function); ``kinds`` takes kind
or group names. ``benchmarks/input_robustness.py`` runs every kind of a held-out
cohort through the public cohort path; ``tests/conftest.py``'s ``variant_files``
fixture writes them all for the bundled 2 mm subject.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

from .errors import InputError
from .io import Volume

GROUPS = ("geometry", "storage", "intensity", "head", "resolution", "contrast", "not-anatomical", "partial")
EXPECTED = ("same age", "flag", "same age or flag")
#: How a variant's voxel values relate to the clean scan's at the same tissue:
#: "exact" (a * clean + b, to float precision), "quantised" (the same, rounded to
#: the stored integer type), "resampled" (interpolated: close, not equal),
#: "changed" (no voxelwise relation: blurred, re-rendered, not an image of it).
FIDELITIES = ("exact", "quantised", "resampled", "changed")

#: NIfTI xform codes.
SCANNER, MNI152 = 1, 4


@dataclass(frozen=True)
class Variant:
    """One written variant file."""

    name: str                    #: the kind, e.g. "axes_psl"
    path: Path
    group: str                   #: one of GROUPS
    expected: str                #: one of EXPECTED: what the plugin should do with it
    description: str = ""        #: what real file it imitates (the kind's docstring, first paragraph)
    #: 4x4: a world point (mm) of this file -> the world point of the same tissue in
    #: the clean scan (identity unless the head was moved).
    world_to_clean: np.ndarray = field(default_factory=lambda: np.eye(4), compare=False)
    #: (a, b): inside the brain, this file's value = a * clean value + b (for "exact"/"quantised").
    intensity: tuple[float, float] = (1.0, 0.0)
    fidelity: str = "exact"      #: one of FIDELITIES


@dataclass
class Made:
    """What a kind function returns: the array as stored and how to store it."""

    data: np.ndarray                     #: the stored array (raw values when slope/inter are set)
    affine: np.ndarray                   #: the true voxel -> world affine (sform, and qform unless told)
    dtype: np.dtype | None = None        #: on-disk dtype (default: data's)
    slope: float | None = None           #: scl_slope / scl_inter written to the header
    inter: float | None = None
    suffix: str = ".nii.gz"              #: file name ending, written as is (upper case too)
    sform_code: int = MNI152
    qform_code: int = MNI152
    qform: np.ndarray | None = None      #: a different affine for the qform (default: ``affine``)
    world_to_clean: np.ndarray | None = None
    intensity: tuple[float, float] = (1.0, 0.0)
    fidelity: str = "exact"


@dataclass(frozen=True)
class Kind:
    """A kind of real-world file: its name, group, what is expected of it, and how to make it."""

    name: str
    group: str
    expected: str
    make: Callable[[Clean, np.random.Generator], Made]

    @property
    def description(self) -> str:
        """The first paragraph of the maker's docstring, on one line."""
        doc = (self.make.__doc__ or "").strip()
        return " ".join(doc.split("\n\n")[0].split())


# ------------------------------------------------------------------ the clean scan
class Clean:
    """The clean scan and what several kinds need from it, computed once."""

    def __init__(self, volume: Volume):
        self.volume = volume
        self.affine = volume.affine
        self.shape = volume.shape
        self.raw = np.asarray(volume.data)

    @cached_property
    def data(self) -> np.ndarray:
        """float32 intensities."""
        return np.asarray(self.raw, dtype=np.float32)

    @cached_property
    def zoom(self) -> float:
        """(Mean) voxel size in mm."""
        return float(np.mean(self.volume.voxel_sizes))

    @cached_property
    def brain(self) -> np.ndarray:
        """The brain: the non-zero voxels (the scan is skull-stripped, background exactly 0)."""
        return np.isfinite(self.data) & (self.data != 0)

    @cached_property
    def wm(self) -> float:
        """White-matter intensity: the 90th percentile of the brain (WM is a T1's brightest tissue)."""
        return float(np.percentile(self.data[self.brain], 90))

    @cached_property
    def centroid(self) -> np.ndarray:
        """World centre (mm) of the brain."""
        return _world(self.affine, np.argwhere(self.brain).mean(0))

    def stored(self, values: np.ndarray) -> tuple[np.ndarray, str]:
        """``values`` in the clean scan's dtype when that is an integer type (as scanners and
        ``synth`` store), else float32; and "exact" or "quantised"."""
        if self.raw.dtype.kind in "iu":
            return _as_stored_int(values, self.raw.dtype)
        return np.asarray(values, dtype=np.float32), "exact"

    @cached_property
    def head_layers(self) -> tuple[np.ndarray, np.ndarray]:
        """(tissue label of every voxel, affine) on the clean lattice enlarged to a 256 mm field of
        view, downwards (the brain's voxels are the clean ones): see ``HEAD_LAYERS``."""
        return _head_layers(self)


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _translate(offset_vox) -> np.ndarray:
    shift = np.eye(4)
    shift[:3, 3] = offset_vox
    return shift


def _bbox(mask: np.ndarray, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last index of ``mask``'s True voxels per axis, widened by ``margin``."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, mask.shape)
    return lo, hi


def _axis_of(affine: np.ndarray, world_axis: int) -> tuple[int, int]:
    """(array axis, +1 or -1) of the voxel axis closest to ``world_axis`` (0 x, 1 y, 2 z)."""
    ornt = io_orientation(affine)
    axis = int(np.flatnonzero(ornt[:, 0] == world_axis)[0])
    return axis, int(ornt[axis, 1])


def rotation(axis, degrees: float) -> np.ndarray:
    """3x3 rotation by ``degrees`` about ``axis`` (a 3-vector; right-hand rule)."""
    axis = np.asarray(axis, dtype=np.float64)
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def move_matrix(centre, axis, degrees: float, shift) -> np.ndarray:
    """4x4 world -> world (mm): rotate by ``degrees`` about ``axis`` through ``centre``, then shift."""
    move = np.eye(4)
    move[:3, :3] = rotation(axis, degrees)
    move[:3, 3] = np.asarray(centre) + np.asarray(shift) - move[:3, :3] @ np.asarray(centre)
    return move


def _unit(rng: np.random.Generator) -> np.ndarray:
    vector = rng.normal(size=3)
    return vector / np.linalg.norm(vector)


_DIRECTIONS = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


def grid_covering(lo, hi, codes: str, zoom: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of a grid whose voxel axes point along ``codes`` (e.g. "LAS"), with
    ``zoom`` mm voxels whose centres cover the world box [lo, hi] (mm)."""
    axes, shape, origin = np.zeros((3, 3)), [], np.zeros(3)
    for column, code in enumerate(codes):
        row, sign = _DIRECTIONS[code]
        n = int(np.ceil((hi[row] - lo[row]) / zoom - 1e-6)) + 1
        axes[row, column] = sign * zoom
        origin[row] = lo[row] if sign > 0 else lo[row] + (n - 1) * zoom
        shape.append(n)
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = axes, origin
    return tuple(shape), affine  # type: ignore[return-value]


def _moved_box(clean: Clean, move: np.ndarray, margin_mm: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """World box around the brain once moved by ``move``."""
    lo, hi = _bbox(clean.brain)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0] - 1) for b in (lo[1], hi[1] - 1)
                        for c in (lo[2], hi[2] - 1)], dtype=np.float64)
    moved = _world(move @ clean.affine, corners)
    return moved.min(0) - margin_mm, moved.max(0) + margin_mm


def _resample(data: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray, order: int,
              mode: str = "constant") -> np.ndarray:
    """``data`` (on ``affine``) sampled on the grid (shape, target_affine); 0 outside (mode "constant")."""
    voxel_map = np.linalg.inv(affine) @ target_affine
    return ndimage.affine_transform(np.asarray(data, dtype=np.float32), voxel_map[:3, :3], offset=voxel_map[:3, 3],
                                    output_shape=tuple(shape), order=order, mode=mode, cval=0.0)


def _cubic_at(data: np.ndarray, voxel_map: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Cubic B-spline values of ``data`` (0 outside it, as scipy's mode "constant") at the output
    voxels ``where`` (a boolean output array) mapped into ``data`` by ``voxel_map``. Evaluating
    only where needed is what makes 1 mm variants affordable (scipy's affine_transform would
    evaluate the whole output grid)."""
    points = np.vstack(np.nonzero(where)).astype(np.float64)
    coords = voxel_map[:3, :3] @ points + voxel_map[:3, 3:4]
    lo = np.maximum(np.floor(coords.min(1)).astype(int) - 10, 0)
    hi = np.minimum(np.ceil(coords.max(1)).astype(int) + 11, data.shape)
    if np.any(hi <= lo):
        return np.zeros(points.shape[1], np.float32)
    block = np.pad(np.asarray(data[tuple(slice(a, b) for a, b in zip(lo, hi))], dtype=np.float32), 12)
    coefficients = ndimage.spline_filter(block, order=3, output=np.float32, mode="mirror")
    return ndimage.map_coordinates(coefficients, coords - lo[:, None] + 12, order=3, prefilter=False,
                                   mode="mirror", output=np.float32)


def _regrid(data: np.ndarray, affine: np.ndarray, move: np.ndarray, shape, target_affine: np.ndarray
            ) -> np.ndarray:
    """A skull-stripped ``data`` moved by ``move`` (world -> world) and sampled on (shape,
    target_affine) with a cubic B-spline; negatives clipped, background exactly 0 beyond the
    source's support (a skull-stripped scan in native space has an empty background, not
    spline ringing)."""
    to_source = np.linalg.inv(move) @ target_affine
    support = _resample((np.asarray(data) != 0).astype(np.float32), affine, shape, to_source, 1) >= 0.5
    out = np.zeros(tuple(shape), np.float32)
    out[support] = np.maximum(_cubic_at(data, np.linalg.inv(affine) @ to_source, support), 0)
    return out


def _moved(clean: Clean, move: np.ndarray, zoom: float, codes: str = "LAS") -> Made:
    shape, affine = grid_covering(*_moved_box(clean, move), codes, zoom)
    return Made(_regrid(clean.data, clean.affine, move, shape, affine), affine, sform_code=SCANNER,
                qform_code=SCANNER, world_to_clean=np.linalg.inv(move), fidelity="resampled")


def _as_stored_int(values: np.ndarray, dtype) -> tuple[np.ndarray, str]:
    """``values`` rounded to ``dtype``, and "exact" or "quantised" (whether rounding changed any)."""
    rounded = np.rint(values)
    info = np.iinfo(dtype)
    if rounded.min() < info.min or rounded.max() > info.max:
        raise ValueError(f"values {rounded.min()}..{rounded.max()} do not fit {np.dtype(dtype)}")
    fidelity = "exact" if np.array_equal(rounded, values) else "quantised"
    return rounded.astype(dtype), fidelity


def _block_mean(data: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean over blocks of ``factors`` voxels (trailing partial blocks dropped)."""
    trimmed = data[tuple(slice(0, (n // f) * f) for n, f in zip(data.shape, factors))]
    shape = []
    for n, f in zip(trimmed.shape, factors):
        shape += [n // f, f]
    return trimmed.reshape(shape).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def _block_affine(affine: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Affine of a block-averaged grid: voxel k is the centre of source voxels k*f .. k*f+f-1."""
    scale = np.diag([*factors, 1]).astype(np.float64)
    scale[:3, 3] = (np.asarray(factors) - 1) / 2
    return affine @ scale


# ------------------------------------------------------------------ geometry
def pad300(clean: Clean, rng: np.random.Generator) -> Made:
    """Padded to a 300 mm field of view with the brain off-centre (same voxels, MNI space, not on FSL's grid).

    Imitates a scan already in MNI space but on a laboratory's own grid: SPM or
    ANTs outputs written into a large bounding box, data shared after
    normalisation to a study template's grid.
    """
    target = np.maximum(np.ceil(300.0 / clean.volume.voxel_sizes - 1e-6).astype(int), clean.shape)
    room = target - np.array(clean.shape)
    near_end = rng.integers(0, 2, 3).astype(bool)  # the brain near the start or the end of each axis
    before = np.rint(room * np.where(near_end, rng.uniform(0.7, 0.9, 3), rng.uniform(0.1, 0.3, 3))).astype(int)
    data = np.zeros(tuple(target), dtype=clean.raw.dtype)
    data[tuple(slice(b, b + n) for b, n in zip(before, clean.shape))] = clean.raw
    return Made(data, clean.affine @ _translate(-before))


def crop_tight(clean: Clean, rng: np.random.Generator) -> Made:
    """Cropped to a tight box around the brain (2 voxels of margin; still all brain).

    Imitates files cropped to save space or by ``fslroi``/``robustfov``-style
    tools, and the defaced-and-cropped scans of some open data sets.
    """
    lo, hi = _bbox(clean.brain, margin=2)
    return Made(np.ascontiguousarray(clean.raw[tuple(slice(a, b) for a, b in zip(lo, hi))]),
                clean.affine @ _translate(lo))


def _reordered(clean: Clean, codes: str) -> Made:
    transform = ornt_transform(io_orientation(clean.affine), axcodes2ornt(tuple(codes)))
    data = np.ascontiguousarray(apply_orientation(clean.raw, transform))
    return Made(data, clean.affine @ inv_ornt_aff(transform, clean.shape))


def axes_ras(clean: Clean, rng: np.random.Generator) -> Made:
    """Stored in RAS axis order (x flipped; the same world geometry).

    Imitates files written by tools that store RAS+ order (nibabel's
    ``as_closest_canonical``, ``mri_convert --out_orientation RAS``, many Python
    pipelines), where FSL stores LAS.
    """
    return _reordered(clean, "RAS")


def axes_psl(clean: Clean, rng: np.random.Generator) -> Made:
    """Stored in PSL axis order (axes swapped and flipped; the same world geometry).

    Imitates a sagittally acquired 3D MPRAGE converted by dcm2niix without
    reorientation: the first array axis runs anterior to posterior, the last
    right to left.
    """
    return _reordered(clean, "PSL")


def qfac_negative(clean: Clean, rng: np.random.Generator) -> Made:
    """Only a qform, whose slice axis is flipped by qfac = -1 (pixdim[0] = -1); sform_code 0.

    The array is stored in RAI order, so the qform's quaternion is the identity
    and only qfac says that the slices run downwards: a reader that ignores qfac
    sees the brain upside down. Imitates older DICOM converters (dcm2nii,
    mri_convert, AFNI's 3dAFNItoNIFTI) that write the qform alone.
    """
    made = _reordered(clean, "RAI")
    made.sform_code, made.qform_code = 0, SCANNER
    return made


def sform_qform_disagree(clean: Clean, rng: np.random.Generator) -> Made:
    """A correct sform (code 4) and a qform (code 1) 20 degrees and 30 mm away from it.

    Imitates a header whose sform was updated by a registration or a header edit
    (FSL ``flirt -applyxfm``, ``fslcpgeom``, hand edits) while the qform kept an
    old geometry. NIfTI readers then disagree: nibabel and FSL use the sform,
    ITK-based tools may use the qform.
    """
    garbage = move_matrix(clean.centroid, _unit(rng), 20.0, 30.0 * _unit(rng)) @ clean.affine
    return Made(clean.raw, clean.affine, sform_code=MNI152, qform_code=SCANNER, qform=garbage)


def _moved_draw(clean: Clean, rng: np.random.Generator) -> Made:
    """Moved rigidly (4-12 degrees about a random axis, 5-15 mm in a random direction) and
    re-gridded at 1.2 mm (cubic B-spline) in LAS order, on a box that covers the moved brain.

    Imitates a skull-stripped scan in native (scanner) space: the head where the
    subject lay, voxels of the acquisition's size, not registered to MNI
    (e.g. a BET or SynthStrip output).
    """
    move = move_matrix(clean.centroid, _unit(rng), rng.uniform(4, 12), rng.uniform(5, 15) * _unit(rng))
    return _moved(clean, move, 1.2 * clean.zoom)


def moved_1(clean: Clean, rng: np.random.Generator) -> Made:
    return _moved_draw(clean, rng)


def moved_2(clean: Clean, rng: np.random.Generator) -> Made:
    return _moved_draw(clean, rng)


def moved_3(clean: Clean, rng: np.random.Generator) -> Made:
    return _moved_draw(clean, rng)


for _function in (moved_1, moved_2, moved_3):  # three seeded draws of the same kind
    _function.__doc__ = _moved_draw.__doc__


def tilt25(clean: Clean, rng: np.random.Generator) -> Made:
    """The head tilted 25 degrees (chin down, about the left-right axis), re-gridded at the clean voxel size.

    Imitates a subject scanned with the head pitched forward in the coil (common
    in elderly subjects) and stored in scanner axes.
    """
    return _moved(clean, move_matrix(clean.centroid, (1, 0, 0), -25.0, (0, 0, 0)), clean.zoom)


def tilt40(clean: Clean, rng: np.random.Generator) -> Made:
    """The head tilted 40 degrees about the left-right axis (an extreme pitch), re-gridded at the clean voxel size.

    Beyond what moments initialisation and a local optimiser are usually asked
    to recover; imitates extreme positioning.
    """
    return _moved(clean, move_matrix(clean.centroid, (1, 0, 0), -40.0, (0, 0, 0)), clean.zoom)


def shift40(clean: Clean, rng: np.random.Generator) -> Made:
    """Shifted 40 mm in a random direction (in the affine only: the same voxels, exactly).

    Imitates a scan whose origin is the scanner's isocentre rather than the
    anterior commissure: the brain 4 cm away from where MNI space expects it.
    """
    shift = np.eye(4)
    shift[:3, 3] = 40.0 * _unit(rng)
    return Made(clean.raw, shift @ clean.affine, sform_code=SCANNER, qform_code=SCANNER,
                world_to_clean=np.linalg.inv(shift))


def oblique_affine(clean: Clean, rng: np.random.Generator) -> Made:
    """The same voxels with an oblique affine: rotated 15 degrees about a random axis and shifted 10 mm.

    Imitates an oblique acquisition planned on the head (slices along the AC-PC
    line): the voxel grid follows the head, the header carries the obliquity.
    """
    move = move_matrix(clean.centroid, _unit(rng), 15.0, 10.0 * _unit(rng))
    return Made(clean.raw, move @ clean.affine, sform_code=SCANNER, qform_code=SCANNER,
                world_to_clean=np.linalg.inv(move))


# ------------------------------------------------------------------ storage
def dim4(clean: Clean, rng: np.random.Generator) -> Made:
    """4D with a trailing 1 (shape X, Y, Z, 1).

    Imitates a volume extracted from a series (``fslroi``, ``fslsplit``) or
    written by tools that always write 4D images.
    """
    return Made(clean.raw[..., None], clean.affine)


def upper_niigz(clean: Clean, rng: np.random.Generator) -> Made:
    """Upper-case extension ``.NII.GZ`` (gzip-compressed NIfTI).

    Imitates files copied from Windows shares, PACS exports and old DICOM converters.
    """
    return Made(clean.raw, clean.affine, suffix=".NII.GZ")


def upper_nii(clean: Clean, rng: np.random.Generator) -> Made:
    """Upper-case extension ``.NII`` (uncompressed).

    Imitates files copied from Windows shares, PACS exports and old DICOM converters.
    """
    return Made(clean.raw, clean.affine, suffix=".NII")


def uint16(clean: Clean, rng: np.random.Generator) -> Made:
    """uint16, intensities scaled to 0-4095 (12 bits).

    Imitates scanner DICOM converted without rescaling: an unsigned 12-bit range.
    """
    scale = 4095.0 / float(np.nanmax(clean.data))
    stored, fidelity = _as_stored_int(clean.data.astype(np.float64) * scale, np.uint16)
    return Made(stored, clean.affine, slope=1.0, inter=0.0, intensity=(scale, 0.0), fidelity=fidelity)


def int16_scaled(clean: Clean, rng: np.random.Generator) -> Made:
    """int16 with scl_slope 0.5 and scl_inter 100 (a reader must apply them to get the intensities).

    Imitates dcm2niix conversions of Philips data, where the header's scaling
    turns stored integers into the scanner's values.
    """
    stored, fidelity = _as_stored_int((clean.data.astype(np.float64) - 100.0) / 0.5, np.int16)
    return Made(stored, clean.affine, slope=0.5, inter=100.0, fidelity=fidelity)


def float64(clean: Clean, rng: np.random.Generator) -> Made:
    """float64 voxels.

    Imitates outputs of numpy/MATLAB scripts saved without choosing a type.
    """
    return Made(clean.raw.astype(np.float64), clean.affine)


def uncompressed(clean: Clean, rng: np.random.Generator) -> Made:
    """Uncompressed ``.nii``.

    Imitates SPM outputs and files unpacked for speed.
    """
    return Made(clean.raw, clean.affine, suffix=".nii")


# ------------------------------------------------------------------ intensity
def intensity_linear(clean: Clean, rng: np.random.Generator) -> Made:
    """A global linear change, x * 3.7 + 250 (the background becomes a constant 250), float32.

    Imitates another scanner's or protocol's gain and offset, and tools that add
    a constant to avoid zeros.
    """
    return Made((clean.data.astype(np.float64) * 3.7 + 250.0).astype(np.float32), clean.affine,
                intensity=(3.7, 250.0))


def zscore_image(clean: Clean, rng: np.random.Generator) -> Made:
    """z-scored over the whole image, float64: (x - mean) / sd; the background becomes a constant negative value.

    Imitates deep-learning preprocessing outputs (nnU-Net/MONAI-style
    normalisation) saved and shared as images.
    """
    data = clean.data.astype(np.float64)
    mean, sd = float(data.mean()), float(data.std())
    return Made((data - mean) / sd, clean.affine, intensity=(1.0 / sd, -mean / sd))


def zscore_brain(clean: Clean, rng: np.random.Generator) -> Made:
    """z-scored inside the brain, background kept 0, float32 (about half the brain negative).

    Imitates brain-masked normalisation (for segmentation networks). The
    background is no longer the darkest value, so QC may refuse it.
    """
    data = clean.data.astype(np.float64)
    mean, sd = float(data[clean.brain].mean()), float(data[clean.brain].std())
    return Made(np.where(clean.brain, (data - mean) / sd, 0.0).astype(np.float32), clean.affine,
                intensity=(1.0 / sd, -mean / sd))


def negative_inter(clean: Clean, rng: np.random.Generator) -> Made:
    """int16 with scl_inter = -5000: every voxel negative (the background -5000).

    Imitates scaled integer storage with a large negative intercept: only the
    header's scaling makes the intensities, and all of them are below zero.
    """
    stored, fidelity = _as_stored_int(clean.data.astype(np.float64), np.int16)
    return Made(stored, clean.affine, slope=1.0, inter=-5000.0, intensity=(1.0, -5000.0), fidelity=fidelity)


def nan_inf(clean: Clean, rng: np.random.Generator) -> Made:
    """20 NaN and Inf voxels scattered inside the brain (10 NaN, 5 +Inf, 5 -Inf), float32.

    Imitates division-based corrections (bias-field division, ratio images) and
    failed resampling, which leave non-finite voxels.
    """
    data = clean.data.copy()
    picks = rng.choice(np.flatnonzero(clean.brain), size=20, replace=False)
    data.flat[picks[:10]] = np.nan
    data.flat[picks[10:15]] = np.inf
    data.flat[picks[15:]] = -np.inf
    return Made(data, clean.affine)


# ------------------------------------------------------------------ head
#: Tissue labels of the synthetic head: (intensity relative to WM, relative noise sd).
#: Distances are from the brain's surface.
HEAD_LAYERS = {
    1: ("brain", None, 0.0),
    2: ("CSF rim, 0-3 mm", 0.15, 0.0),
    3: ("skull, 3-9 mm", 0.10, 0.5),
    4: ("scalp and fat, 9-15 mm", 1.10, 0.05),
    5: ("neck fat (outer 6 mm)", 1.10, 0.05),
    6: ("neck muscle", 0.50, 0.08),
    7: ("spinal canal CSF", 0.15, 0.0),
    8: ("spinal cord", 0.90, 0.03),
}


def _head_layers(clean: Clean) -> tuple[np.ndarray, np.ndarray]:
    zoom = clean.volume.voxel_sizes
    target = np.maximum(np.rint(256.0 / zoom).astype(int), clean.shape)
    room = target - np.array(clean.shape)
    before = room // 2
    up_axis, up_sign = _axis_of(clean.affine, 2)
    before[up_axis] = room[up_axis] if up_sign > 0 else 0  # all the extra field of view goes down
    affine = clean.affine @ _translate(-before)
    brain = np.zeros(tuple(target), bool)
    brain[tuple(slice(b, b + n) for b, n in zip(before, clean.shape))] = clean.brain

    labels = np.zeros(tuple(target), np.uint8)
    margin = int(np.ceil(16.0 / zoom.min()))  # distances (mm) from the brain, in a box around it
    lo, hi = _bbox(brain, margin)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    distance = ndimage.distance_transform_edt(~brain[box], sampling=zoom).astype(np.float32)
    shells = np.select([distance <= 0, distance <= 3, distance <= 9, distance <= 15], [1, 2, 3, 4], 0)
    labels[box] = shells

    # Neck and cord below the brain's lowest point.
    grid = np.ix_(*(np.arange(n, dtype=np.float32) for n in target))
    x, y, z = (np.broadcast_to(affine[row, 3] + sum(affine[row, k] * grid[k] for k in range(3)), tuple(target))
               for row in range(3))
    bottom = float(z[brain].min())
    low = brain & (z <= bottom + 2)  # the brainstem where the brain ends
    cord_x, cord_y = float(x[low].mean()), float(y[low].mean())
    ellipse = ((x - cord_x) / 60.0) ** 2 + ((y - cord_y - 10.0) / 55.0) ** 2
    neck = (z < bottom) & (labels == 0) & (ellipse <= 1.0)
    labels[neck] = 5
    labels[neck & (ellipse <= (1 - 6 / 57.5) ** 2)] = 6
    radius = np.hypot(x - cord_x, y - cord_y)
    canal = (z < bottom + 5) & (labels != 1)
    labels[canal & (radius <= 9)] = 7
    labels[canal & (radius <= 6)] = 8
    return labels, affine


def _paint_head(clean: Clean, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(noise-free head intensities, affine, brain mask): ``HEAD_LAYERS`` painted, the brain's
    voxels the clean ones, textured tissue noise from ``rng``."""
    labels, affine = clean.head_layers
    head = np.zeros(labels.shape, np.float32)
    for label, (_, level, texture) in HEAD_LAYERS.items():
        if level is None:
            continue
        where = labels == label
        values = np.full(int(where.sum()), level * clean.wm, np.float32)
        if texture:
            values *= 1 + texture * rng.standard_normal(values.size, dtype=np.float32)
        head[where] = np.maximum(values, 0)
    brain = labels == 1
    inner = np.zeros(labels.shape, np.float32)
    offset = np.rint(np.linalg.inv(affine) @ clean.affine[:, 3])[:3].astype(int)
    inner[tuple(slice(o, o + n) for o, n in zip(offset, clean.shape))] = clean.data
    head[brain] = inner[brain]
    return head, affine, brain


def _rician(signal: np.ndarray, where: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """|signal + complex Gaussian noise| at ``where`` (the noise of magnitude images)."""
    out = signal.copy()
    n = int(where.sum())
    out[where] = np.hypot(signal[where] + sd * rng.standard_normal(n, dtype=np.float32),
                          sd * rng.standard_normal(n, dtype=np.float32))
    return out


def head_mni(clean: Clean, rng: np.random.Generator) -> Made:
    """The brain with a CSF rim, skull, scalp, neck and background noise in a 256 mm field of
    view, on the clean scan's MNI-space voxel lattice (the brain's voxels are the clean ones).

    Imitates a raw (not skull-stripped) T1 aligned to MNI space, e.g. UK
    Biobank's ``T1_to_MNI_linear`` or a ``flirt`` output without brain
    extraction: Rician noise (sd 2 % of WM) outside the brain.
    """
    head, affine, brain = _paint_head(clean, rng)
    stored, fidelity = clean.stored(_rician(head, ~brain, 0.02 * clean.wm, rng))
    return Made(stored, affine, fidelity=fidelity)


def head_moved_lia(clean: Clean, rng: np.random.Generator) -> Made:
    """The head of head_mni moved (10 degrees about a random axis, 10 mm) into a 256 mm cube of
    clean-sized voxels in LIA order, with background noise.

    Imitates a raw T1 off the scanner as FreeSurfer conforms it (an
    ``orig.mgz``-like 256^3 1 mm LIA volume) or a dcm2niix conversion of a
    coronal acquisition: scalp, neck, noise, the subject's own position.
    """
    head, affine, brain = _paint_head(clean, rng)
    move = move_matrix(clean.centroid, _unit(rng), 10.0, 10.0 * _unit(rng))
    n = int(np.rint(256.0 / clean.zoom))
    lo = (move @ [*clean.centroid, 1.0])[:3] - (n - 1) * clean.zoom / 2
    shape, target = grid_covering(lo, lo + (n - 1) * clean.zoom, "LIA", clean.zoom)
    to_source = np.linalg.inv(move) @ target
    signal = np.maximum(_resample(head, affine, shape, to_source, 1), 0)  # linear outside the brain,
    inside = _resample(brain.astype(np.float32), affine, shape, to_source, 1) >= 0.5
    signal[inside] = np.maximum(_cubic_at(head, np.linalg.inv(affine) @ to_source, inside), 0)  # cubic in it
    stored, _ = clean.stored(_rician(signal, ~inside, 0.02 * clean.wm, rng))
    return Made(stored, target, sform_code=SCANNER, qform_code=SCANNER, world_to_clean=np.linalg.inv(move),
                fidelity="resampled")


# ------------------------------------------------------------------ resolution
def _thick_slices(clean: Clean, factor: int) -> Made:
    axis, _ = _axis_of(clean.affine, 2)
    factors = [1, 1, 1]
    factors[axis] = factor
    stored, _ = clean.stored(_block_mean(clean.data, factors))
    return Made(stored, _block_affine(clean.affine, factors), fidelity="changed")


def slices5mm(clean: Clean, rng: np.random.Generator) -> Made:
    """Thick axial slices: 5 slices averaged, stored at 1 x 1 x 5 mm.

    Imitates clinical 2D T1 (spin-echo) acquisitions with 5 mm slices, the
    commonest T1 in hospital archives.
    """
    return _thick_slices(clean, 5)


def slices3mm(clean: Clean, rng: np.random.Generator) -> Made:
    """Axial slices 3 mm thick (1 x 1 x 3 mm).

    Imitates older or faster clinical protocols with thick partitions.
    """
    return _thick_slices(clean, 3)


def iso3mm(clean: Clean, rng: np.random.Generator) -> Made:
    """3 mm isotropic: 3 x 3 x 3 blocks averaged, stored at 3 mm.

    Imitates low-resolution research data (images shared at the resolution of
    functional data, quick localiser-like scans).
    """
    stored, _ = clean.stored(_block_mean(clean.data, (3, 3, 3)))
    return Made(stored, _block_affine(clean.affine, (3, 3, 3)), fidelity="changed")


def slices5mm_upsampled(clean: Clean, rng: np.random.Generator) -> Made:
    """Thick 5 mm slices interpolated back onto the clean 1 mm grid (linear along z).

    Imitates pipelines that resample every input to 1 mm first: the voxels look
    1 mm, the content is 5 mm slices.
    """
    thick = _thick_slices(clean, 5)
    data = _resample(thick.data, thick.affine, clean.shape, clean.affine, order=1, mode="nearest")
    stored, _ = clean.stored(data * clean.brain)
    return Made(stored, clean.affine, fidelity="changed")


def _upsampled(clean: Clean, factor: int) -> Made:
    coarse = _block_mean(clean.data, (factor,) * 3)
    data = _resample(coarse, _block_affine(clean.affine, (factor,) * 3), clean.shape, clean.affine, order=1,
                     mode="nearest")
    stored, _ = clean.stored(data * clean.brain)
    return Made(stored, clean.affine, fidelity="changed")


def upsampled2x(clean: Clean, rng: np.random.Generator) -> Made:
    """Voxels twice as large (2 x 2 x 2 blocks averaged) interpolated back onto the clean grid (linear).

    Imitates a 2 mm scan resampled to 1 mm by a pipeline that makes every input
    1 mm (or a low-resolution scan "upgraded" for a tool that asks for 1 mm):
    the header says 1 mm, the content is 2 mm.
    """
    return _upsampled(clean, 2)


def upsampled3x(clean: Clean, rng: np.random.Generator) -> Made:
    """Voxels three times as large (3 x 3 x 3 blocks averaged) interpolated back onto the clean grid (linear).

    Imitates a 3 mm research or localiser scan resampled to 1 mm: the header
    says 1 mm, the content is 3 mm.
    """
    return _upsampled(clean, 3)


def upsampled_half(clean: Clean, rng: np.random.Generator) -> Made:
    """The clean voxels interpolated (linear) onto voxels half as large: 0.5 mm for a 1 mm scan.

    Imitates scans upsampled for hippocampal-subfield or surface pipelines, and
    scanner reconstructions interpolated to twice the matrix.
    """
    half = clean.affine @ np.diag([0.5, 0.5, 0.5, 1.0])
    half[:3, 3] = _world(clean.affine, np.full(3, -0.25))  # the fine voxels tile the coarse ones
    shape = tuple(2 * n for n in clean.shape)
    data = _resample(clean.data, clean.affine, shape, half, order=1)
    stored, _ = clean.stored(data)
    return Made(stored, half, fidelity="changed")


def smoothed(clean: Clean, rng: np.random.Generator) -> Made:
    """Gaussian smoothing with sd 1 voxel (FWHM 2.4 voxels), background kept 0.

    Imitates images smoothed or heavily denoised before sharing (a "display"
    copy, an aggressive non-local-means or anisotropic-diffusion filter).
    """
    stored, _ = clean.stored(ndimage.gaussian_filter(clean.data, 1.0) * clean.brain)
    return Made(stored, clean.affine, fidelity="changed")


def smoothed_mild(clean: Clean, rng: np.random.Generator) -> Made:
    """Gaussian smoothing with sd 0.5 voxel (FWHM 1.2 voxels), background kept 0.

    Imitates scanner-side k-space filtering and light denoising, which many
    clinical reconstructions apply by default.
    """
    stored, _ = clean.stored(ndimage.gaussian_filter(clean.data, 0.5) * clean.brain)
    return Made(stored, clean.affine, fidelity="changed")


def _every_second(clean: Clean, data: np.ndarray) -> Made:
    """``data`` at every second voxel of the clean grid: voxels twice as large, centred on the
    clean voxels 0, 2, 4, ... (on FSL's grids, the 2 mm voxel centres are 1 mm voxel centres)."""
    stored, _ = clean.stored(np.maximum(data[::2, ::2, ::2], 0))
    return Made(stored, clean.affine @ np.diag([2.0, 2.0, 2.0, 1.0]), fidelity="changed")


def sampled2mm(clean: Clean, rng: np.random.Generator) -> Made:
    """Every second voxel of the clean scan: a 1 mm MNI scan written at 2 mm without anti-aliasing.

    Imitates the commonest 2 mm MNI file: a 1 mm scan resampled into MNI 2 mm with
    trilinear or spline interpolation (FSL ``flirt -applyisoxfm 2``, ANTs, SPM's
    normalise at 2 mm), which on these grids samples every second voxel.
    """
    return _every_second(clean, clean.data)


def acquired2mm(clean: Clean, rng: np.random.Generator) -> Made:
    """The clean scan band-limited to 2 mm voxels in k-space, then every second voxel.

    Imitates a scan acquired at 2 mm: the scanner measures only the k-space band
    a 2 mm voxel holds (an ideal low-pass, no aliasing), sharper than a Gaussian
    anti-aliasing filter leaves it.
    """
    spectrum = np.fft.fftn(clean.data)
    for axis, n in enumerate(clean.shape):
        keep = (np.abs(np.fft.fftfreq(n)) < 0.25).astype(np.float32)
        spectrum *= keep.reshape([n if a == axis else 1 for a in range(3)])
    return _every_second(clean, np.real(np.fft.ifftn(spectrum)).astype(np.float32))


# ------------------------------------------------------------------ contrast
#: Tissue levels of a T1 scan relative to its WM level (the ICBM152 template:
#: CSF 69, GM 167, WM 222 of 255).
_T1_CSF, _T1_GM = 0.31, 0.75


def _render(clean: Clean, levels: Sequence[float], scale: float = 1000.0) -> Made:
    """Inside the brain, the T1 intensity x (relative to WM) -> another contrast, piecewise linear
    through x = 0, CSF, GM, WM, 2 WM; background 0; int16 like scanners store it."""
    values = np.interp(clean.data / clean.wm, [0.0, _T1_CSF, _T1_GM, 1.0, 2.0], levels) * scale
    stored, _ = _as_stored_int(np.where(clean.brain, values, 0.0), np.int16)
    return Made(stored, clean.affine, fidelity="changed")


def t2_like(clean: Clean, rng: np.random.Generator) -> Made:
    """A T2-weighted-like render of the same brain: CSF bright, GM mid, WM dark.

    Imitates the wrong series picked from a DICOM study (T2 instead of T1), a
    common mistake in batch conversions. The model reads T1 only: QC must flag it.
    """
    return _render(clean, [1.0, 1.0, 0.6, 0.35, 0.2])


def flair_like(clean: Clean, rng: np.random.Generator) -> Made:
    """A FLAIR-like render: CSF dark, GM brighter than WM.

    Imitates a T2-FLAIR series picked instead of the T1 (FLAIR is in almost
    every clinical brain protocol). QC must flag it.
    """
    return _render(clean, [0.1, 0.1, 0.8, 0.6, 0.5])


# ------------------------------------------------------------------ not anatomical
def stat_map(clean: Clean, rng: np.random.Generator) -> Made:
    """A statistical map: Gaussian noise smoothed (FWHM 8 mm), scaled to z values (sd 2,
    negative and positive), masked to the brain, 3 mm voxels on an MNI-space grid, float32.

    Imitates an SPM/FSL z-stat or contrast image dropped into the input folder
    next to the T1s. QC must flag it.
    """
    mask = _block_mean(clean.brain.astype(np.float32), (3, 3, 3)) >= 0.5
    sigma = 8.0 / 2.3548 / (3 * clean.zoom)
    noise = ndimage.gaussian_filter(rng.standard_normal(mask.shape, dtype=np.float32), sigma)
    z = 2.0 * (noise - noise[mask].mean()) / noise[mask].std()
    return Made(np.where(mask, z, 0).astype(np.float32), _block_affine(clean.affine, (3, 3, 3)),
                fidelity="changed")


def label_tissue(clean: Clean, rng: np.random.Generator) -> Made:
    """A 3-class tissue segmentation of the scan: 0 background, 1 CSF, 2 GM, 3 WM, uint8.

    Imitates FSL FAST's ``_seg`` or SPM/SynthSeg label images left in the input
    folder. QC must flag it.
    """
    labels = np.digitize(clean.data / clean.wm, [(_T1_CSF + _T1_GM) / 2, (_T1_GM + 1.0) / 2]) + 1
    return Made(np.where(clean.brain, labels, 0).astype(np.uint8), clean.affine, fidelity="changed")


def label_atlas(clean: Clean, rng: np.random.Generator) -> Made:
    """The Harvard-Oxford atlas labels (integers 0-113, uint8) on the scan's grid.

    Imitates an atlas or parcellation image (FSL's ``HarvardOxford-*-maxprob``)
    among the inputs. QC must flag it.
    """
    from .io import load_volume
    from .space.template import TEMPLATE_FILES, template_dir

    atlas = load_volume(template_dir() / TEMPLATE_FILES["labels"])  # on the 1 mm grid
    if clean.shape == atlas.shape and np.allclose(clean.affine, atlas.affine, atol=1e-4):
        labels = np.asarray(atlas.data)
    else:  # nearest neighbour onto the scan's grid
        labels = np.rint(_resample(atlas.data, atlas.affine, clean.shape, clean.affine, order=0))
    return Made(labels.astype(np.uint8), clean.affine, fidelity="changed")


# ------------------------------------------------------------------ partial
def _keep_slab(clean: Clean, keep) -> Made:
    """The slices whose world z (mm) satisfies ``keep(z, top, bottom)`` (the brain's top and bottom)."""
    axis, _ = _axis_of(clean.affine, 2)
    others = [a for a in range(3) if a != axis]
    if np.any(np.abs(clean.affine[2, others]) > 1e-3 * np.abs(clean.affine[2, axis])):
        raise InputError("partial cuts need a scan whose voxel axes follow the world axes")
    z = clean.affine[2, 3] + clean.affine[2, axis] * np.arange(clean.shape[axis])
    has_brain = clean.brain.any(axis=tuple(others))
    kept = np.flatnonzero(keep(z, z[has_brain].max(), z[has_brain].min()))
    index = [slice(None)] * 3
    index[axis] = slice(int(kept.min()), int(kept.max()) + 1)
    offset = [0, 0, 0]
    offset[axis] = int(kept.min())
    return Made(np.ascontiguousarray(clean.raw[tuple(index)]), clean.affine @ _translate(offset))


def cut_top40(clean: Clean, rng: np.random.Generator) -> Made:
    """The field of view ends 40 mm below the top of the brain (the vertex is missing).

    Imitates a partial field of view: a slab planned too low, a thin-slab
    research acquisition. QC must flag it.
    """
    return _keep_slab(clean, lambda z, top, bottom: z <= top - 40.0)


def cut_bottom30(clean: Clean, rng: np.random.Generator) -> Made:
    """The field of view starts 30 mm above the bottom of the brain (most of the cerebellum missing).

    Imitates an axial slab planned high, common in clinical scans. The age may
    stay or QC may flag it.
    """
    return _keep_slab(clean, lambda z, top, bottom: z >= bottom + 30.0)


# ------------------------------------------------------------------ registry
_SAME, _FLAG, _EITHER = EXPECTED

KINDS: dict[str, Kind] = {kind.name: kind for kind in [
    Kind("pad300", "geometry", _SAME, pad300),
    Kind("crop_tight", "geometry", _SAME, crop_tight),
    Kind("axes_ras", "geometry", _SAME, axes_ras),
    Kind("axes_psl", "geometry", _SAME, axes_psl),
    Kind("qfac_negative", "geometry", _SAME, qfac_negative),
    Kind("sform_qform_disagree", "geometry", _SAME, sform_qform_disagree),
    Kind("moved_1", "geometry", _SAME, moved_1),
    Kind("moved_2", "geometry", _SAME, moved_2),
    Kind("moved_3", "geometry", _SAME, moved_3),
    Kind("tilt25", "geometry", _SAME, tilt25),
    Kind("tilt40", "geometry", _SAME, tilt40),
    Kind("shift40", "geometry", _SAME, shift40),
    Kind("oblique_affine", "geometry", _SAME, oblique_affine),
    Kind("dim4", "storage", _SAME, dim4),
    Kind("upper_niigz", "storage", _SAME, upper_niigz),
    Kind("upper_nii", "storage", _SAME, upper_nii),
    Kind("uint16", "storage", _SAME, uint16),
    Kind("int16_scaled", "storage", _SAME, int16_scaled),
    Kind("float64", "storage", _SAME, float64),
    Kind("uncompressed", "storage", _SAME, uncompressed),
    Kind("intensity_linear", "intensity", _SAME, intensity_linear),
    Kind("zscore_image", "intensity", _SAME, zscore_image),
    Kind("zscore_brain", "intensity", _EITHER, zscore_brain),
    Kind("negative_inter", "intensity", _SAME, negative_inter),
    Kind("nan_inf", "intensity", _SAME, nan_inf),
    Kind("head_mni", "head", _SAME, head_mni),
    Kind("head_moved_lia", "head", _SAME, head_moved_lia),
    Kind("slices5mm", "resolution", _EITHER, slices5mm),
    Kind("slices3mm", "resolution", _EITHER, slices3mm),
    Kind("iso3mm", "resolution", _EITHER, iso3mm),
    Kind("slices5mm_upsampled", "resolution", _EITHER, slices5mm_upsampled),
    Kind("upsampled2x", "resolution", _EITHER, upsampled2x),
    Kind("upsampled3x", "resolution", _EITHER, upsampled3x),
    Kind("upsampled_half", "resolution", _EITHER, upsampled_half),
    Kind("smoothed", "resolution", _EITHER, smoothed),
    Kind("smoothed_mild", "resolution", _EITHER, smoothed_mild),
    Kind("sampled2mm", "resolution", _EITHER, sampled2mm),
    Kind("acquired2mm", "resolution", _EITHER, acquired2mm),
    Kind("t2_like", "contrast", _FLAG, t2_like),
    Kind("flair_like", "contrast", _FLAG, flair_like),
    Kind("stat_map", "not-anatomical", _FLAG, stat_map),
    Kind("label_tissue", "not-anatomical", _FLAG, label_tissue),
    Kind("label_atlas", "not-anatomical", _FLAG, label_atlas),
    Kind("cut_top40", "partial", _FLAG, cut_top40),
    Kind("cut_bottom30", "partial", _EITHER, cut_bottom30),
]}


def select_kinds(kinds: Iterable[str] | None = None) -> list[Kind]:
    """The kinds named by ``kinds`` (kind names or group names, in registry order); all when None."""
    if kinds is None:
        return list(KINDS.values())
    wanted = set(kinds)
    unknown = wanted - set(KINDS) - set(GROUPS)
    if unknown:
        raise InputError(f"unknown variant kind(s) or group(s) {sorted(unknown)}; kinds: {', '.join(KINDS)}; "
                         f"groups: {', '.join(GROUPS)}")
    return [kind for kind in KINDS.values() if kind.name in wanted or kind.group in wanted]


def kind_rng(seed: int, name: str) -> np.random.Generator:
    """The generator a kind draws from: one stream per (seed, kind name)."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


# ------------------------------------------------------------------ writing
def write_nifti(path: Path, made: Made) -> Path:
    """Write ``made`` with nibabel exactly as described (codes, qform, scaling, suffix case)."""
    data = np.asarray(made.data)
    image = nib.Nifti1Image(data, made.affine)
    header = image.header
    header.set_data_dtype(made.dtype or data.dtype)
    image.set_sform(made.affine, code=made.sform_code)
    if made.sform_code == 0:
        for row in ("srow_x", "srow_y", "srow_z"):
            header[row] = 0
    image.set_qform(made.qform if made.qform is not None else made.affine, code=made.qform_code)
    if made.slope is not None:
        header.set_slope_inter(made.slope, made.inter if made.inter is not None else 0.0)
    header["descrip"] = b"napari_brainage.variants"
    # nibabel picks compression from the lower-cased suffix; write a lower-case name, then rename,
    # so an upper-case ".NII.GZ" is surely compressed and ".NII" surely not.
    temporary = path.with_name(f".{path.name}.tmp{made.suffix.lower()}")
    nib.save(image, temporary)
    os.replace(temporary, path)
    return path


def make_variant(clean: Volume | Clean, kind: Kind | str, seed: int = 0) -> Made:
    """The stored array and header choices of one kind (not written)."""
    clean = clean if isinstance(clean, Clean) else Clean(clean)
    kind = KINDS[kind] if isinstance(kind, str) else kind
    return kind.make(clean, kind_rng(seed, kind.name))


def write_variants(volume: Volume, folder: str | os.PathLike, seed: int = 0,
                   kinds: Iterable[str] | None = None, prefix: str = "") -> list[Variant]:
    """Write each kind of variant of the clean scan ``volume`` into ``folder`` as
    ``<prefix><kind><suffix>``; return them in registry order.

    ``kinds``: kind or group names (default: every kind). ``volume`` should be
    a skull-stripped scan (background exactly 0) aligned to MNI space, e.g. a
    ``napari-brainage synth --res 1`` subject.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean, written = Clean(volume), []
    for kind in select_kinds(kinds):
        made = make_variant(clean, kind, seed)
        path = write_nifti(folder / f"{prefix}{kind.name}{made.suffix}", made)
        written.append(Variant(
            name=kind.name, path=path, group=kind.group, expected=kind.expected, description=kind.description,
            world_to_clean=np.eye(4) if made.world_to_clean is None else made.world_to_clean,
            intensity=tuple(float(v) for v in made.intensity), fidelity=made.fidelity))  # type: ignore[arg-type]
    return written
