"""Any scan onto the model's 2 mm MNI grid, one path for all, and maps back.

``prepare`` takes every scan through the same steps, so the predictor always
sees the kind of input it was trained on, whatever file the scan came in:

1. intensities standardised (``intensity``): finite, background at 0;
   label images and signed maps refused;
2. onto the grid: a scan exactly on FSL's 1 or 2 mm MNI grid (UK Biobank's
   ``T1_brain_to_MNI``, our synthetic cohorts) that matches the template is
   used as it is; every other scan is registered to the bundled template with
   SimpleITK:

   a. the scan is low-passed and resampled to 2 mm in its own orientation (the
      template's resolution: registering 1 mm voxels to a 2 mm template only
      costs time);
   b. centres of mass are aligned (moments initialisation), then a similarity
      transform (rotation, translation, isotropic scale) and then a full affine
      are fitted by Mattes mutual information, multi-resolution (4, 2, 1), on
      the template's (dilated) brain mask;
   c. the scan is resampled onto the 2 mm MNI grid (cubic B-spline) with
      anti-aliasing that matches ``template.downsample``. A scan whose voxels
      already sit on the MNI lattice (padded, cropped, axes reordered) and
      that registration finds aligned is instead resliced by copying voxels,
      so it gets exactly the age of the same scan on the grid;

3. masked with the dilated template brain (8 mm margin); a scan with skull and
   scalp (signal 10-16 mm outside the brain) has its brain extracted on its own
   grid first (deepbet, ``space.skullstrip``, when installed) and goes through
   steps 2-3 again; without deepbet, or when its mask is implausible, the head
   is registered whatever its grid and keeps a 4 mm margin, with a QC warning
   (``space.grid.BRAIN_MASK_DILATION``);
4. quality control (``quality``): the verdict pass / warn / fail, with reasons.

Maps computed on the MNI grid go back through the inverse transform (or the
affine) onto the scan's own voxels.

ITK works in LPS millimetres; NIfTI affines are RAS: ``to_itk`` converts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import quality as qc
from .errors import meaningful_part
from .intensity import standardise
from .io import WARNING, Volume
from .options import Preprocessing
from .quality import QualityError, QualityReport, require_pass
from .space.grid import brain_mask
from .space.registration import from_itk, register, resample_to_template, to_itk
from .space.template import TemplateKit, load_template, mni_grid

#: How a scan reaches the model's grid: "auto" (use it as it is when it lies on
#: FSL's 1 or 2 mm MNI grid and matches the template there, or when it lies on
#: those grids' voxel lattice, padded, cropped or reordered, and registration
#: confirms it is aligned; register it otherwise), "register" (always) or
#: "none" (trust the affine: resample through it, no registration).
PREPROCESSING_MODES = Preprocessing.values()


#: A scan on the MNI grid is used as it is only if it correlates with the
#: template through its affine at least this well (in the brain, where it has
#: signal): held-out synthetic scans in MNI space (aged, with residual
#: misregistration) do at 0.40-0.80 (52 subjects, median 0.63; a gate at 0.4
#: sent one in fifty to registration); a head that merely shares the grid's
#: shape and affine does not. Between this and ``quality.MIN_ALIGNED_CORRELATION``
#: the scan is used as it is, with a warning.
MIN_ON_GRID_CORRELATION = 0.3
#: An on-grid scan that matches less well than this is registered as a check:
#: the same held-out scans 0.44-0.77 (1 in 16 below), scans on the grid but
#: tilted 10-25 degrees 0.31-0.50 (docs/benchmarks.md, "On the grid, but tilted").
CHECK_ALIGNMENT_BELOW = 0.5
#: ... and is used registered when registration moves its brain by more than
#: this (root mean square, mm): the residual misregistration of the training
#: scans (rotations to 5 degrees, shifts to 5 mm) moves held-out scans in MNI
#: space 3.0-6.8 mm; a 10-degree tilt 10.6-10.8 mm, 25 degrees 24 mm.
MAX_ALIGNED_RMS_MM = 9.0


@dataclass
class Prepared:
    """A scan on the model's 2 mm MNI grid, and how to map results back."""

    data: np.ndarray                           #: intensities on the full 2 mm MNI grid, brain-masked, >= 0
    source: Volume                             #: the scan as given
    transform: sitk.Transform | None           #: template (LPS mm) -> scan (LPS mm); None: through the affine
    quality: QualityReport

    def model_input(self, spec) -> np.ndarray:
        """Cropped and normalised as ``spec`` says: what the networks are given, in
        inference and in training alike."""
        from .space.grid import model_input

        return model_input(self.data, spec)

    def to_scan_grid(self, template_map: np.ndarray, order: int = 1) -> np.ndarray:
        """A map on the 2 mm MNI grid resampled onto the source scan's voxels."""
        shape, affine = mni_grid(2)
        if self.transform is None:
            from .space.grid import on_mni_grid, resample

            if on_mni_grid(self.source, 2):
                return np.asarray(template_map, dtype=np.float32)
            return resample(template_map, affine, self.source.shape, self.source.affine, order=order)
        moving = to_itk(np.asarray(template_map, dtype=np.float32), affine)
        reference = to_itk(np.zeros(self.source.shape, np.float32), self.source.affine)
        interpolator = sitk.sitkLinear if order == 1 else sitk.sitkNearestNeighbor
        inverse = self.transform.GetInverse()  # scan point -> template point
        return from_itk(sitk.Resample(moving, reference, inverse, interpolator, 0.0, sitk.sitkFloat32))


def on_any_mni_grid(volume: Volume) -> bool:
    """Whether ``volume`` lies exactly on FSL's 1 or 2 mm MNI grid (shape and affine)."""
    from .space.grid import on_mni_grid

    return any(on_mni_grid(volume, resolution, atol=1e-3) for resolution in (1, 2))


def mni_lattice(volume: Volume) -> int | None:
    """The resolution (1 or 2 mm) of the FSL MNI grid whose voxel centres
    ``volume``'s voxels fall on, up to an axis permutation, flips, padding or
    cropping; None when they do not (oblique, other voxel size, fractional shift).

    Such a scan can be resliced onto the MNI grid by copying voxels, with no
    interpolation; whether its contents are aligned is a separate question.
    """
    for resolution in (1, 2):
        _, grid = mni_grid(resolution)
        voxel_map = np.linalg.inv(grid) @ volume.affine  # scan voxel -> MNI grid voxel
        linear, shift = voxel_map[:3, :3], voxel_map[:3, 3]
        permutation = np.abs(np.round(linear))
        if (np.allclose(linear, np.round(linear), atol=1e-4) and np.all(permutation.sum(axis=0) == 1)
                and np.all(permutation.sum(axis=1) == 1) and np.allclose(shift, np.round(shift), atol=1e-3)):
            return resolution
    return None


def needs_registration(volume: Volume, kit: TemplateKit | None = None) -> bool:
    """Whether ``auto`` registers ``volume``: True unless its voxels lie on the 1 or
    2 mm MNI grid's lattice and it matches the template through its affine."""
    clean = Volume(standardise(volume.data).data, volume.affine)
    return _as_it_is(clean, kit or load_template(2)) is None


def _as_it_is(scan: Volume, kit: TemplateKit) -> np.ndarray | None:
    """The scan on the 2 mm grid when ``auto`` uses it as it is, else None.

    On the MNI grid, or on its voxel lattice with another field of view or axis
    order: the voxels are copied onto the grid (order 0 at whole-voxel positions
    is exact), so the scan is exactly the one on the grid; used when it matches
    the template there (``MIN_ON_GRID_CORRELATION``).
    """
    from .space.grid import resample, to_mni_grid

    lattice = mni_lattice(scan)
    if lattice is None:
        return None
    shape, affine = mni_grid(lattice)
    on_grid = scan if on_any_mni_grid(scan) else Volume(
        resample(scan.data, scan.affine, shape, affine, order=0), affine)
    data = to_mni_grid(on_grid, 2)
    masked = data * brain_mask(kit)
    match = abs(template_correlation(masked, kit, present_only=True))
    if match < MIN_ON_GRID_CORRELATION:
        # A T2 or PD scan on the grid barely correlates with the T1 template, or
        # negatively; its tissues, fitted in its own contrast, line up all the same.
        fitted = qc.fit_tissues(masked, kit)
        match = np.sqrt(max(fitted.fit, 0.0)) if fitted else 0.0
    aligned = match >= MIN_ON_GRID_CORRELATION
    return data if aligned else None


def template_correlation(data: np.ndarray, kit: TemplateKit, present_only: bool = False) -> float:
    """Pearson r of ``data`` (on the template grid) and the template T1, in the template
    brain (``present_only``: where ``data`` has signal, so a cut field of view or a
    missing lobe does not lower it)."""
    where = kit.brain & (data > 0) if present_only else kit.brain
    a, b = data[where].astype(np.float64), kit.t1[where].astype(np.float64)
    if a.size < 2:
        return 0.0
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def prepare(volume: Volume, mode: str = "auto", kit: TemplateKit | None = None,
            reads: tuple[str, ...] = qc.T1_ONLY) -> Prepared:
    """``volume`` on the model's 2 mm MNI grid, brain-masked, with its quality report.

    One path for every scan, whatever file it came from:

    1. intensities standardised (``intensity.standardise``: finite, background 0,
       labels and signed maps refused);
    2. onto the grid (``mode``: see ``PREPROCESSING_MODES``): a scan on FSL's
       1 or 2 mm MNI grid, or on its lattice (padded, cropped, axes reordered),
       that matches the template there is used as it is (voxels copied, no
       interpolation), unless a poor match (``CHECK_ALIGNMENT_BELOW``) turns
       out, registered, to lie more than ``MAX_ALIGNED_RMS_MM`` off it; any
       other is registered and resampled (``resample_to_template``); 1 mm
       data are low-passed the same way on every route;
    3. masked with the dilated template brain (8 mm margin); a head with skull
       and scalp has its brain extracted first (deepbet, when installed; the
       route says so), or else is registered and keeps 4 mm, with a warning;
    4. quality control (``quality``): contrast (named in ``quality.contrast``; a
       failure unless the model ``reads`` it: ``ModelCard.contrasts``), template
       match, field of view, empty brain, slice thickness (in the header, or
       interpolated away), content coarser than the voxels (upsampled or smoothed)
       or, on the 2 mm grid, sharper than the training's (resampled without
       anti-aliasing, or acquired at 2 mm).

    Raises
    ------
    QualityError
        when the scan fails quality control (not T1, not anatomical, registration
        failed, most of the brain missing): no age or map is made from it.
    ValueError
        for an unknown ``mode``.
    """
    mode = Preprocessing.parse(mode).value
    kit = kit or load_template(2)
    tic = time.perf_counter()
    name = volume.path.name if volume.path is not None else ""
    intensities = standardise(volume.data)
    read_note = [volume.metadata[WARNING]] if volume.metadata.get(WARNING) else []  # e.g. left and right unknown
    thick, too_thick = qc.slice_thickness(volume.voxel_sizes)
    quality = QualityReport(warnings=read_note + intensities.warnings + thick,
                            failures=list(intensities.failures) + too_thick)
    notes = list(intensities.notes)
    if not quality.failures:
        # What the header cannot show: content coarser than the voxels, in one
        # direction (thick slices interpolated) or all (upsampled, smoothed).
        detail = qc.fine_detail(intensities.data)
        coarse, too_coarse = qc.coarse_content(detail, volume.voxel_sizes)
        quality.warnings += coarse or qc.interpolated_slices(intensities.data, volume.voxel_sizes, detail)
        quality.failures += too_coarse
    if quality.failures:
        quality.route = "not preprocessed"
        quality.seconds = time.perf_counter() - tic
        raise QualityError(quality, name)
    scan = Volume(intensities.data, volume.affine, volume.header, volume.path, volume.metadata)
    data, transform, route = _onto_template_grid(scan, mode, kit, quality)
    scalp = qc.scalp_signal(data, kit)
    head = scalp > qc.MAX_SCALP_SIGNAL
    if head:
        # A head with skull, scalp and neck: extract the brain on the scan's own
        # grid (deepbet), then take the stripped scan through the same route.
        stripped, note = _brain_extracted(scan)
        notes.append(note)
        if stripped is not None:
            data, transform, route = _onto_template_grid(stripped, mode, kit, quality)
            head = qc.scalp_signal(data, kit) > qc.MAX_SCALP_SIGNAL
    if head and transform is None and mode == "auto":
        # A head in MNI space: the close brain mask it needs asks for registration's alignment.
        data, transform, route = _registered(scan, kit, quality)
    if head:
        quality.warnings += qc.head_warning(scalp)
    data *= brain_mask(kit, head=head)  # strip skull, scalp and neck
    quality.route = "; ".join([route, *notes])
    quality.registered = transform is not None
    quality.template_correlation = template_correlation(data, kit, present_only=True)
    quality.brain_coverage = _field_of_view_coverage(volume, transform, kit)
    quality.wm_gm_ratio, quality.tissue_fit, quality.contrast, contrast = qc.tissue_contrast(data, kit, reads)
    quality.failures += contrast
    if quality.contrast not in ("", "T1"):
        # The T1 template says little of another contrast's alignment; the template's
        # tissues mixed in the scan's own contrast do: r = sqrt(R^2) of the tissue fit.
        quality.template_correlation = float(np.sqrt(max(quality.tissue_fit, 0.0)))
    for warnings, failures in (qc.field_of_view(quality.brain_coverage), qc.empty_brain(data, kit),
                               ([], []) if contrast else qc.template_match(quality.template_correlation,
                                                                           quality.registered)):
        quality.warnings += warnings
        quality.failures += failures
    if quality.contrast in ("", "T1") and not quality.failures:
        # What the header cannot show either: a 2 mm image sharper than the training's.
        quality.warnings += qc.sharp_content(qc.anatomical_detail(data, kit))
    quality.seconds = time.perf_counter() - tic
    if quality.failures and read_note:
        # How the file was read (no orientation stored; a console layer) is the likely
        # cause of a failed template match or coverage: the failure says it too.
        quality.failures.append(f"note: {read_note[0]}")
    require_pass(quality, name)
    return Prepared(data=data.astype(np.float32), source=volume, transform=transform, quality=quality)


def _onto_template_grid(scan: Volume, mode: str, kit: TemplateKit, quality: QualityReport
                        ) -> tuple[np.ndarray, sitk.Transform | None, str]:
    """(data on the 2 mm grid, transform or None, how it got there), before masking."""
    from .space.grid import to_mni_grid

    if mode == "none":
        return to_mni_grid(scan, 2), None, "resampled through its affine (preprocessing 'none')"
    data = _as_it_is(scan, kit) if mode == "auto" else None
    if data is not None:
        how = "on the" if on_any_mni_grid(scan) else "on the voxel lattice of the"
        where = f"{how} {mni_lattice(scan)} mm MNI grid"
        match = template_correlation(data * brain_mask(kit), kit, present_only=True)
        if 0 < match < CHECK_ALIGNMENT_BELOW:
            # On the grid but a poor match: tilted or moved after it was put there, or
            # merely a subject far from the template. Registration tells them apart.
            try:
                transform = register(scan, kit)
            except RuntimeError:  # no better alignment to offer: as it is, QC judges it
                transform = None
            moved = _moved_by_mm(transform, kit) if transform is not None else 0.0
            if moved > MAX_ALIGNED_RMS_MM:
                return (resample_to_template(scan, transform), transform,
                        f"registered to the template ({where}, but {moved:.0f} mm off it)")
        return data, None, f"{where}: used as it is, not registered"
    return _registered(scan, kit, quality)


def _moved_by_mm(transform: sitk.Transform, kit: TemplateKit) -> float:
    """Root mean square distance (mm) that ``transform`` moves the template brain's
    points (every 50th voxel): how far a scan lay from the template."""
    ijk = np.argwhere(kit.brain)[::50].astype(float)
    ras = ijk @ kit.affine[:3, :3].T + kit.affine[:3, 3]
    lps = ras * [-1.0, -1.0, 1.0]  # ITK's physical space
    moved = np.array([transform.TransformPoint(tuple(point)) for point in lps.tolist()])
    return float(np.sqrt(np.mean(np.sum((moved - lps) ** 2, axis=1))))


def _brain_extracted(scan: Volume) -> tuple[Volume | None, str]:
    """(the scan with its brain extracted, or None; the note for the route)."""
    from .space import skullstrip

    if not skullstrip.available():
        return None, "not skull-stripped; no brain extraction installed (napari-brainage[skullstrip])"
    try:
        stripped, brain_ml = skullstrip.extract_brain(scan)
    except skullstrip.SkullStripError as err:
        return None, f"not skull-stripped; brain extraction not used: {err}"
    return stripped, f"not skull-stripped: brain extracted with deepbet ({brain_ml:.0f} ml)"


def _registered(scan: Volume, kit: TemplateKit, quality: QualityReport) -> tuple[np.ndarray, sitk.Transform, str]:
    try:
        transform = register(scan, kit)
    except RuntimeError as err:  # ITK: e.g. "All samples map outside moving image buffer"
        quality.route = "registration failed"
        quality.failures.append(f"registration to the template failed ({meaningful_part(str(err))[:200]}); "
                                "is this a brain scan?")
        raise QualityError(quality, scan.path.name if scan.path is not None else "") from None
    return resample_to_template(scan, transform), transform, "registered to the template"


def _field_of_view_coverage(volume: Volume, transform: sitk.Transform | None, kit: TemplateKit) -> float:
    """Share of the template brain inside the scan's field of view."""
    from .space.grid import resample

    if transform is None:
        if on_any_mni_grid(volume):
            return 1.0
        inside = resample(np.ones(volume.shape, np.float32), volume.affine, kit.shape, kit.affine, order=0)
    else:
        inside = from_itk(sitk.Resample(to_itk(np.ones(volume.shape, np.float32), volume.affine),
                                        to_itk(np.zeros(kit.shape, np.float32), kit.affine), transform,
                                        sitk.sitkNearestNeighbor, 0.0))
    return float((inside[kit.brain] > 0.5).mean())


#: Columns of the table ``export_prepared`` rows fill (``napari-brainage preprocess``).
EXPORT_FIELDS = ("subject", "path", "age", "registered", "template_correlation", "brain_coverage", "seconds",
                 "qc_status", "qc", "contrast", "preprocessing")


def export_prepared(job: tuple[str, str, float | None, str, str]) -> dict:
    """Prepare one scan and write it on the 2 mm MNI grid; its row for the QC table.

    ``job``: (subject, source path, age or None, target path, preprocessing mode).
    A module-level function of one argument, so worker processes can run it.
    The written scan is what the model is given (before cropping and
    normalisation): check a registration in any viewer, or train on it.
    """
    from .io import load_volume, save_volume

    subject, source, age, target, mode = job
    # No model here: every contrast QC can name is written (the row says which);
    # whether a model reads it is checked when it predicts.
    prepared = prepare(load_volume(source), mode, reads=qc.ANY_CONTRAST)
    _, affine = mni_grid(2)
    save_volume(Volume(prepared.data, affine), target, overwrite=True,
                description=f"napari-brainage preprocess ({mode}) of {Path(source).name}")
    quality = prepared.quality
    return {"subject": subject, "path": Path(target).name, "age": "" if age is None else f"{age:g}",
            "registered": int(quality.registered), "template_correlation": f"{quality.template_correlation:.3f}",
            "brain_coverage": f"{quality.brain_coverage:.3f}", "seconds": f"{quality.seconds:.2f}",
            "qc_status": quality.status, "qc": quality.summary(), "contrast": quality.contrast,
            "preprocessing": quality.route}
