"""Read and write brain scans with their geometry intact.

A scan is a 3D array plus the 4x4 affine that maps voxel indices (i, j, k) to
scanner/world millimetres in RAS+ orientation (x to the Right, y Anterior,
z Superior), exactly as NIfTI defines it. Everything downstream (models,
maps, napari layers) keeps that affine, so a map written here lands on the same
voxels in napari, FSLeyes or 3D Slicer.

Two rules shape this module:

* Bad input fails early with a :class:`VolumeError` whose message names the
  file and the problem in words a user can act on (2D, 4D, empty, NaN-only,
  corrupt, absurd affine, too large), before any large allocation.
* Writes are atomic: data goes to a temporary file beside the target, which is
  renamed over it only once complete, so a crash never leaves a half-written
  map; an existing file is replaced only when the caller says so.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .errors import InputError

#: File name endings this package reads. ``.mgh``: FreeSurfer's uncompressed ``.mgz``.
#: ``.hdr``/``.img``: a pair of files, the header and the voxels, of an ANALYZE 7.5
#: image or a NIfTI pair; either name opens the pair.
READABLE_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh", ".hdr", ".img")
#: The two files of an ANALYZE 7.5 / NIfTI pair.
PAIR_SUFFIXES = (".hdr", ".img")
#: The formats :data:`READABLE_SUFFIXES` stand for, as messages name them.
READABLE_FORMATS = "NIfTI (.nii, .nii.gz), MGZ (.mgz, .mgh) or ANALYZE/NIfTI pair (.hdr + .img)"
#: ``Volume.metadata`` key of a note about how a file was read (e.g. an ANALYZE
#: header, which stores no orientation).
WARNING = "warning"
ANALYZE_WARNING = ("ANALYZE 7.5 header: the file stores no orientation; read with nibabel's default "
                   "(radiological: the first voxel axis points left). Check left and right.")
NO_ORIENTATION_WARNING = ("NIfTI header with no orientation (qform and sform codes 0): read with nibabel's "
                          "default from the voxel sizes (radiological: the first voxel axis points left). "
                          "Check left and right.")
#: File name endings this package writes (NIfTI only: the lingua franca).
WRITABLE_SUFFIXES = (".nii.gz", ".nii")

#: Largest volume accepted, in voxels (2**28 = 268 M, i.e. 1 GiB of float32).
#: A 0.5 mm whole-head scan is about 100 M voxels; anything bigger is almost
#: certainly a wrong header, and would exhaust a laptop's memory.
MAX_VOXELS = 2**28
#: Plausible voxel edge lengths in mm. Outside this range the affine is wrong.
MIN_VOXEL_MM, MAX_VOXEL_MM = 0.01, 50.0
#: A head fits in 1 m; a field of view beyond 2 m means a broken header.
MAX_FIELD_OF_VIEW_MM = 2000.0
#: An origin further than 10 m from the scanner centre is a broken header.
MAX_ORIGIN_MM = 10_000.0

# Read once at import (single-threaded): files we create get the permissions
# the user's umask asks for, not mkstemp's private 0600.
_UMASK = os.umask(0)
os.umask(_UMASK)


class VolumeError(InputError):
    """A file could not be used as a 3D brain volume; the message says why."""


@dataclass
class Volume:
    """A 3D scan: voxel data and the voxel-to-RAS-millimetre affine.

    ``header`` is the source file's header (kept so that writing a derived map
    preserves units, descriptions and codes); ``path`` is where it came from.
    """

    data: np.ndarray
    affine: np.ndarray
    header: Any = None
    path: Path | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise VolumeError(f"affine must be 4x4, got shape {self.affine.shape}")
        if np.ndim(self.data) != 3:
            raise VolumeError(f"a volume must be 3D, got shape {np.shape(self.data)}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The voxel grid's shape (X, Y, Z)."""
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def voxel_sizes(self) -> np.ndarray:
        """Edge length of a voxel along each array axis, in mm."""
        return voxel_sizes(self.affine)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Anatomical direction each array axis points to, e.g. ('L', 'A', 'S')."""
        return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]

    def __repr__(self) -> str:
        # The dataclass's repr printed every voxel (a notebook cell of numbers).
        sizes = " x ".join(f"{s:.3g}" for s in self.voxel_sizes)
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return (f"Volume(shape={self.shape}, dtype={np.asarray(self.data).dtype}, voxels {sizes} mm, "
                f"{''.join(self.axcodes)}{where})")


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (mm) of an affine: the norms of its first 3 columns."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def has_suffix(path: str | os.PathLike, suffixes: tuple[str, ...]) -> bool:
    """Whether ``path`` ends with one of ``suffixes`` (case-insensitive)."""
    return str(path).lower().endswith(suffixes)


def pair_partner(path: str | os.PathLike) -> Path:
    """The other file of an ANALYZE / NIfTI pair: ``a.hdr`` -> ``a.img``, ``a.IMG`` -> ``a.HDR``
    (upper-case suffixes pair with upper case, as nibabel looks for them)."""
    path = Path(path)
    other = ".img" if path.suffix.lower() == ".hdr" else ".hdr"
    return path.with_suffix(other.upper() if path.suffix.isupper() else other)


def strip_suffix(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``sub-01_T1w.nii.gz`` -> ``sub-01_T1w``, ``a.hdr`` -> ``a``."""
    name = Path(path).name
    for suffix in READABLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


# --------------------------------------------------------------------- reading
def load_volume(path: str | os.PathLike, *, max_voxels: int = MAX_VOXELS) -> Volume:
    """Load a NIfTI (.nii, .nii.gz), MGZ/MGH or ANALYZE/NIfTI-pair (.hdr + .img) scan as a :class:`Volume`.

    Data keep their stored dtype (in the machine's byte order) unless the file
    scales them (scl_slope / scl_inter), in which case they are returned as float32. A 4D file holding a
    single volume (shape X, Y, Z, 1) is accepted as 3D. A pair is opened by
    either of its names. An ANALYZE 7.5 header stores no orientation: the
    affine is nibabel's (voxel sizes and origin from the header, the first axis
    pointing left), and ``metadata[WARNING]`` says so.

    Raises
    ------
    VolumeError
        naming the file and the problem, for anything that is not a usable
        3D scan.
    """
    path = Path(path)
    where = str(path)
    if path.is_dir():
        named = " (though named like one)" if has_suffix(path, READABLE_SUFFIXES) else ""
        raise VolumeError(f"{where}: a folder, not a scan file{named}; give a file (a DICOM folder: convert it "
                          "with dcm2niix first).")
    if not has_suffix(path, READABLE_SUFFIXES):
        raise VolumeError(
            f"{where}: not a {READABLE_FORMATS} file; convert DICOM series with dcm2niix first."
        )
    if not path.is_file():
        raise VolumeError(f"{where}: no such file.")
    if path.stat().st_size == 0:
        raise VolumeError(f"{where}: the file is empty (0 bytes).")
    if has_suffix(path, PAIR_SUFFIXES):
        _check_pair(path)
    _check_compression(path)

    try:
        image = nib.load(path)
    except _CORRUPT as err:
        raise VolumeError(f"{where}: not a readable image, the file looks corrupt ({err}).") from err
    _check_is_volume(where, image)
    try:
        shape = tuple(int(n) for n in image.shape)
        affine = np.asarray(image.affine, dtype=np.float64)
    except _CORRUPT as err:
        raise VolumeError(f"{where}: not a readable image, the file looks corrupt ({err}).") from err

    shape = _check_shape(where, shape, max_voxels)
    _check_affine(where, affine, shape)
    _check_voxel_type(where, image.get_data_dtype())

    try:
        data = _read_voxels(image)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError, ValueError) as err:
        raise VolumeError(
            f"{where}: the voxel data could not be read; the file is truncated or corrupt ({err})."
        ) from err
    data = data.reshape(shape)
    _check_values(where, data)
    volume = Volume(data=data, affine=affine, header=image.header, path=path)
    if isinstance(image.header, nib.AnalyzeHeader) and not isinstance(image.header, nib.Nifti1Header):
        volume.metadata[WARNING] = ANALYZE_WARNING
    elif isinstance(image.header, nib.Nifti1Header) and not (int(image.header["qform_code"])
                                                              or int(image.header["sform_code"])):
        volume.metadata[WARNING] = NO_ORIENTATION_WARNING
    elif isinstance(image.header, nib.Nifti1Header):
        disagreement = sform_qform_disagreement(image.header, shape)
        if disagreement:
            volume.metadata[WARNING] = disagreement
    return volume


def sform_qform_disagreement(header: nib.Nifti1Header, shape) -> str | None:
    """A warning when a NIfTI header's sform and qform (both set) place the scan
    more than a voxel apart anywhere in its field of view, or mirror each other.

    nibabel and FSL read the sform (so does this package); ITK-based tools may
    read the qform, so the same file then shows another position or side there.
    None when they agree or only one is set.
    """
    if not (int(header["sform_code"]) and int(header["qform_code"])):
        return None
    sform, qform = header.get_sform(), header.get_qform()
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    apart = float(np.max(np.linalg.norm((sform @ corners - qform @ corners)[:3], axis=0)))
    mirrored = np.sign(np.linalg.det(sform[:3, :3])) != np.sign(np.linalg.det(qform[:3, :3]))
    if apart <= float(np.min(voxel_sizes(sform))) and not mirrored:
        return None
    how = "mirror each other (left and right swapped)" if mirrored else f"are up to {apart:.0f} mm apart"
    return (f"the header's sform and qform disagree: they {how}; the sform was used (as nibabel and FSL do), "
            "but tools that read the qform (some ITK-based ones) show this scan elsewhere. Check left and "
            "right, and fix the header (e.g. fslorient -copysform2qform).")


#: What nibabel raises for a file it cannot parse.
_CORRUPT = (nib.filebasedimages.ImageFileError, gzip.BadGzipFile, EOFError, zlib.error, OSError, ValueError)
#: What the images nibabel reads that are not volumes hold, by class name.
_NOT_VOLUMES = {
    "Cifti2Image": "a CIFTI-2 file (data on grayordinates: cortical surface vertices and subcortical "
                   "structures, stored in a NIfTI-2 container)",
    "GiftiImage": "a GIFTI file (data on a surface mesh)",
}


def _check_is_volume(where: str, image) -> None:
    """A file nibabel reads as something without a voxel-to-world affine (CIFTI inside
    a .nii, GIFTI) is no voxel grid; reading its ``affine`` failed as an AttributeError,
    a traceback in ``info`` and "reading the scan failed" in a results row."""
    if isinstance(image, nib.spatialimages.SpatialImage):
        return
    kind = _NOT_VOLUMES.get(type(image).__name__, f"a {type(image).__name__} file")
    raise VolumeError(f"{where}: {kind}, not a volume: it has no voxel grid placed in millimetres "
                      f"(no affine). Brain age needs a 3D volume: {READABLE_FORMATS}.")


def _check_pair(path: Path) -> None:
    """Both files of an ANALYZE / NIfTI pair are there (nibabel would fail late, or vaguely)."""
    partner = pair_partner(path)
    if partner.is_file():
        return
    if path.suffix.lower() == ".hdr":
        raise VolumeError(f"{path}: the header of an ANALYZE/NIfTI pair, but its voxel file {partner.name} "
                          f"is missing; keep {partner.name} beside {path.name}.")
    raise VolumeError(f"{path}: an .img file without its header {partner.name}; an ANALYZE/NIfTI pair "
                      f"needs both files side by side (another .img, e.g. a disk image, is not a scan).")


#: What the first bytes of an uncompressed file of each format hold: NIfTI-1/2's magic
#: (at byte 344 of the header), MGH's version number 1 (big-endian int32 at byte 0).
_NIFTI_MAGIC = (b"n+1\0", b"n+2\0")
_MGH_MAGIC = b"\0\0\0\1"
_GZIP_MAGIC = b"\x1f\x8b"


def _check_compression(path: Path) -> None:
    """A file whose name says the opposite of its compression gets the name it needs:
    nibabel picks gzip or not by the suffix and would only say "corrupt" or
    "cannot work out file type"."""
    where, name = str(path), path.name
    with open(path, "rb") as handle:
        head = handle.read(348)
    gzipped = head[:2] == _GZIP_MAGIC
    if has_suffix(path, (".gz", ".mgz")) and not gzipped:
        if has_suffix(path, (".gz",)) and head[344:348] in _NIFTI_MAGIC:
            raise VolumeError(f"{where}: named .gz but not gzip-compressed (an uncompressed NIfTI file); "
                              f"rename it to {name[:-3]}")
        if has_suffix(path, (".mgz",)) and head[:4] == _MGH_MAGIC:
            raise VolumeError(f"{where}: named .mgz but not gzip-compressed (an uncompressed MGH file); "
                              f"rename it to {name[:-4]}.mgh")
    if has_suffix(path, (".nii", ".mgh")) and gzipped:
        try:
            with gzip.open(path, "rb") as handle:
                inner = handle.read(348)
        except (OSError, EOFError, zlib.error):
            return  # a broken gzip stream: nibabel's reading says it is corrupt
        if has_suffix(path, (".nii",)) and inner[344:348] in _NIFTI_MAGIC:
            raise VolumeError(f"{where}: gzip-compressed but named .nii (a NIfTI file); rename it to {name}.gz")
        if has_suffix(path, (".mgh",)) and inner[:4] == _MGH_MAGIC:
            raise VolumeError(f"{where}: gzip-compressed but named .mgh (an MGZ file); "
                              f"rename it to {name[:-4]}.mgz")


def _check_voxel_type(where: str, dtype: np.dtype) -> None:
    """RGB and complex voxels hold no single intensity to read as a T1 scan."""
    if dtype.fields is not None or dtype.kind == "c":
        kind = "RGB" if dtype.fields is not None else f"complex ({dtype})"
        raise VolumeError(f"{where}: {kind} voxels are not an MRI intensity image; "
                          "give the grey-scale (magnitude) scan.")


def _read_voxels(image) -> np.ndarray:
    """Voxels in their stored dtype, or float32 when the header scales them."""
    proxy = image.dataobj
    slope = getattr(proxy, "slope", 1.0)
    inter = getattr(proxy, "inter", 0.0)
    if slope == 1.0 and inter == 0.0 and hasattr(proxy, "get_unscaled"):
        data = np.asarray(proxy.get_unscaled())
    else:
        data = np.asarray(image.get_fdata(dtype=np.float32))
    if data.dtype == np.float16 or data.dtype.kind == "b":
        data = data.astype(np.float32)
    if not data.dtype.isnative:
        # Big-endian files (ANALYZE and old NIfTI) come as ">i2"/">f4": what numpy and
        # ``info`` then show, and what torch cannot take. The values are the same.
        data = data.astype(data.dtype.newbyteorder("="))
    return data


def _check_shape(where: str, shape: tuple[int, ...], max_voxels: int) -> tuple[int, int, int]:
    # Trailing singleton dimensions (X, Y, Z, 1) are a common way to store 3D.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if any(n == 0 for n in shape):
        raise VolumeError(f"{where}: the image is empty (shape {shape}).")
    if len(shape) < 3 or sum(n > 1 for n in shape) < 3:
        raise VolumeError(
            f"{where}: the image is 2D (shape {shape}); brain age needs a 3D volume."
        )
    if len(shape) == 4:
        raise VolumeError(
            f"{where}: the image is 4D with {shape[3]} volumes (shape {shape}); "
            "brain age needs a single 3D T1 volume: extract one first (e.g. fslroi)."
        )
    if len(shape) > 4:
        raise VolumeError(
            f"{where}: the image is {len(shape)}D (shape {shape}); brain age needs a 3D volume."
        )
    n_voxels = int(np.prod(shape, dtype=np.int64))
    if n_voxels > max_voxels:
        raise VolumeError(
            f"{where}: the image is too large ({shape}, {n_voxels:,} voxels; "
            f"the limit is {max_voxels:,}). Resample it to about 1 mm first."
        )
    return shape  # type: ignore[return-value]


def _check_affine(where: str, affine: np.ndarray, shape: tuple[int, int, int]) -> None:
    problem = affine_problem(affine, shape)
    if problem:
        raise VolumeError(f"{where}: the header's affine is unusable: {problem}.")


def affine_problem(affine: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """Why ``affine`` cannot describe a brain scan of ``shape``, or None if it can."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        return f"it is not 4x4 (shape {affine.shape})"
    if not np.all(np.isfinite(affine)):
        return "it contains NaN or infinite values"
    if not np.allclose(affine[3], [0, 0, 0, 1]):
        return f"its last row is {affine[3].tolist()}, not [0, 0, 0, 1]"
    sizes = voxel_sizes(affine)
    if np.any(sizes < MIN_VOXEL_MM) or np.any(sizes > MAX_VOXEL_MM):
        return (f"voxel sizes {np.round(sizes, 4).tolist()} mm are outside "
                f"{MIN_VOXEL_MM}-{MAX_VOXEL_MM} mm")
    # Columns of a proper scan affine are (close to) independent directions.
    unit_columns = affine[:3, :3] / sizes
    if abs(np.linalg.det(unit_columns)) < 1e-3:
        return "it is singular (two voxel axes point the same way)"
    fov = sizes * np.asarray(shape[:3])
    if np.any(fov > MAX_FIELD_OF_VIEW_MM):
        return f"the field of view {np.round(fov).tolist()} mm is larger than any head"
    if np.any(np.abs(affine[:3, 3]) > MAX_ORIGIN_MM):
        return f"the origin {np.round(affine[:3, 3]).tolist()} mm is more than 10 m away"
    return None


def _check_values(where: str, data: np.ndarray) -> None:
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.any():
            raise VolumeError(f"{where}: every voxel is NaN or infinite; there is no image.")
        values = data[finite] if not finite.all() else data
    else:
        values = data
    low, high = values.min(), values.max()
    if low == high:
        damaged = data.size - values.size
        also = f" and {damaged} are NaN or infinite" if damaged else ""
        raise VolumeError(f"{where}: every {'finite ' if damaged else ''}voxel has the value {low}{also}; "
                          "there is no image.")


# --------------------------------------------------------------------- writing
def save_volume(
    volume: Volume,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    description: str | None = None,
) -> Path:
    """Write ``volume`` to a NIfTI file (.nii or .nii.gz), atomically.

    The affine is written to both sform and qform (sform holds it exactly,
    shears included; qform is nibabel's closest rigid+zoom approximation); codes
    come from the source header when there is one, else "aligned" (2). Data keep
    their dtype, so write -> read returns identical voxels and affine.
    ``description`` goes in the header's descrip, folded to fit its 80 ASCII
    bytes (:func:`header_description`): metadata never fails a write.

    Raises FileExistsError when ``path`` exists and ``overwrite`` is False;
    ``VolumeError`` for a name that is not .nii/.nii.gz or an unusable affine.
    """
    path = Path(path)
    if not has_suffix(path, WRITABLE_SUFFIXES):
        raise VolumeError(f"{path}: can only write NIfTI files ending in .nii.gz or .nii.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; not replacing it (pass overwrite=True).")
    problem = affine_problem(volume.affine, volume.shape)
    if problem:
        raise VolumeError(f"{path}: refusing to write an unusable affine: {problem}.")
    image = to_nifti(volume)
    if description is not None:
        image.header["descrip"] = header_description(description).encode("ascii")
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return path


#: The NIfTI-1 header's descrip field: 80 bytes, read as ASCII by every tool.
DESCRIP_BYTES = 80


#: Latin letters NFKD does not split into a letter and an accent.
_NO_DECOMPOSITION = str.maketrans({"ø": "o", "Ø": "O", "ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE",
                                   "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "Th"})


def header_description(text: str, limit: int = DESCRIP_BYTES) -> str:
    """``text`` made to fit a NIfTI descrip: accents folded ("é" -> "e"), other
    non-ASCII characters as "?", control characters as spaces, and cut to ``limit``
    characters with "..." at the end. A description is a note for people; a file
    name in it (long BIDS names, "sujet_é") must never cost the scan its output."""
    folded = unicodedata.normalize("NFKD", text.translate(_NO_DECOMPOSITION))
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    folded = "".join(c if " " <= c <= "~" else (" " if c.isascii() or not c.isprintable() else "?")
                     for c in folded)
    return folded if len(folded) <= limit else folded[:limit - 3] + "..."


def to_nifti(volume: Volume) -> nib.Nifti1Image:
    """A Nifti1Image of ``volume`` reusing its header's fields where it has one."""
    data = np.asarray(volume.data)
    if data.dtype == np.float64:
        # float64 maps are twice the size for no gain in precision that matters.
        data = data.astype(np.float32)
    source = volume.header if isinstance(volume.header, nib.Nifti1Header) else None  # NIfTI-2 too
    # A NIfTI-1 header is reused whole; a NIfTI-2 one lends its codes and units only (converting
    # it whole makes nibabel print "sizeof_hdr should be 348" to the user's terminal).
    header = source.copy() if type(source) is nib.Nifti1Header else None
    image = nib.Nifti1Image(data, volume.affine, header=header)
    image.header.set_data_dtype(data.dtype)
    # The data are written as they are: no rescaling on the way out.
    image.header.set_slope_inter(1.0, 0.0)
    if header is None:
        image.header.set_xyzt_units(*(source.get_xyzt_units() if source is not None else ("mm",)))
    sform_code = int(source["sform_code"]) if source is not None else 0
    qform_code = int(source["qform_code"]) if source is not None else 0
    analyze = isinstance(volume.header, nib.AnalyzeHeader) and source is None  # stores no orientation
    if analyze or (source is not None and not (sform_code or qform_code)):
        # The source claims no orientation: its map claims none either, so every viewer
        # places both with the same fallback (nibabel's, FSLeyes', Slicer's) and they overlap.
        image.set_sform(volume.affine, code=0)
        image.set_qform(volume.affine, code=0)
        return image
    image.set_sform(volume.affine, code=sform_code or 2)
    image.set_qform(volume.affine, code=qform_code or 2)
    return image


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` if it exists, else the nearest folder above it that does: where an
    output that is not made yet would be made, and whose permissions decide whether
    it can be (checked before any work: ``cli._common.refuse_unwritable``,
    ``training.loop.check_out``)."""
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    return where


def modified_after(scan: str | os.PathLike, result: str | os.PathLike) -> bool:
    """Whether the scan file (both files of an ANALYZE/NIfTI pair) was modified after
    ``result`` was written, as ``make`` decides: a resumed run redoes such a scan.
    False when ``result`` does not exist (nothing to compare)."""
    result = Path(result)
    if not result.exists():
        return False
    scan = Path(scan)
    sources = [scan, pair_partner(scan)] if has_suffix(scan, PAIR_SUFFIXES) else [scan]
    stamp = max((source.stat().st_mtime_ns for source in sources if source.exists()), default=0)
    return stamp > result.stat().st_mtime_ns


class atomic_path:
    """Context manager giving a temporary path that replaces ``target`` on success.

    The temporary file sits in the target's folder (so the final rename is
    atomic on the same file system) and keeps the target's suffix (so writers
    that pick a format from the suffix, like nibabel's, do the right thing).
    On any error the temporary file is removed and ``target`` is untouched.
    """

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        suffix = "".join(self.target.suffixes[-2:]) if has_suffix(self.target, (".nii.gz",)) \
            else self.target.suffix
        try:
            fd, name = tempfile.mkstemp(
                prefix=f".{self.target.name}.", suffix=f".partial{suffix}", dir=self.target.parent
            )
        except PermissionError:  # name what the user asked for, not our hidden temporary file
            raise PermissionError(f"cannot write {self.target}: no permission to write in "
                                  f"{self.target.parent}") from None
        except FileNotFoundError:
            raise FileNotFoundError(f"cannot write {self.target}: the folder {self.target.parent} "
                                    "does not exist") from None
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        if exc_type is None:
            try:
                with open(self.tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                os.chmod(self.tmp, 0o666 & ~_UMASK)
                os.replace(self.tmp, self.target)
            except BaseException:
                self.tmp.unlink(missing_ok=True)
                raise
        else:
            self.tmp.unlink(missing_ok=True)
        return False
