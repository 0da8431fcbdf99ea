"""Raw scans into the model's space and maps back, with quality control.

A scan as it comes off the scanner (any orientation, any voxel size, not
aligned to MNI) is registered to the bundled template with SimpleITK:

1. the scan is low-passed and resampled to 2 mm in its own orientation (the
   template's resolution: registering 1 mm voxels to a 2 mm template only
   costs time);
2. centres of mass are aligned (moments initialisation), then a similarity
   transform (rotation, translation, isotropic scale) and then a full affine
   are fitted by Mattes mutual information, multi-resolution (4, 2, 1), on
   the template's (dilated) brain mask;
3. the scan is resampled onto the 2 mm MNI grid (cubic B-spline) with
   anti-aliasing that matches ``template.downsample``, masked with the dilated
   template brain.

Maps computed on the MNI grid go back through the inverse transform onto the
scan's own voxels. Scans already on an MNI grid (e.g. UK Biobank's
``T1_brain_to_MNI``) skip registration (``needs_registration``).

Quality control (``QualityReport``): the correlation between the registered
scan and the template inside the brain, the share of the template brain the
scan's field of view covers, and an intensity check; any failure becomes a
plain-language warning carried with the result, so a number is never given
silently for a scan that did not register.

ITK works in LPS millimetres; NIfTI affines are RAS: ``to_itk`` converts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .io import Volume
from .template import TemplateKit, load_template, mni_grid

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])

#: QC thresholds: below these, the result carries a warning. A registered T1 brain
#: correlates with the template at about 0.9; one used as it is (already in MNI
#: space, with the residual misregistration such data keep) at about 0.6.
MIN_TEMPLATE_CORRELATION = 0.75
MIN_ALIGNED_CORRELATION = 0.4
MIN_BRAIN_COVERAGE = 0.95
#: Share of the template brain that may be empty (0) after preprocessing. Held-out
#: synthetic scans, whose head size and pose vary (+-2 %, +-2 mm), leave a median
#: 4.5 % empty, 12 % at the 99th percentile and 16 % at most (200 subjects); 10 %
#: flagged one healthy scan in twelve. A missing lobe or a failed skull strip
#: empties far more.
MAX_EMPTY_BRAIN_SHARE = 0.25
#: How a scan reaches the model's grid: register unless already in MNI space,
#: always register, or trust the affine.
PREPROCESSING_MODES = ("auto", "register", "none")
#: Registration's working resolution (mm) and its random sampling share.
WORKING_RESOLUTION_MM = 2.0
SAMPLING_PERCENTAGE = 0.25


@dataclass
class QualityReport:
    template_correlation: float     #: Pearson r of the registered scan and the template, in the brain
    brain_coverage: float           #: share of the template brain inside the scan's field of view
    registered: bool                #: False when the scan was used as it is (already on an MNI grid)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.warnings

    def summary(self) -> str:
        return "; ".join(self.warnings) if self.warnings else "ok"


@dataclass
class Prepared:
    """A scan on the model's 2 mm MNI grid, and how to map results back."""

    data: np.ndarray                           #: intensities on the full 2 mm MNI grid
    source: Volume                             #: the scan as given
    transform: sitk.Transform | None           #: template (LPS mm) -> scan (LPS mm); None: used as is
    quality: QualityReport

    def model_input(self, spec) -> np.ndarray:
        """Cropped and normalised as ``spec`` says: what the networks are given, in
        inference and in training alike."""
        from .spaces import model_input

        return model_input(self.data, spec)

    def to_scan_grid(self, template_map: np.ndarray, order: int = 1) -> np.ndarray:
        """A map on the 2 mm MNI grid resampled onto the source scan's voxels."""
        shape, affine = mni_grid(2)
        if self.transform is None:
            from .spaces import on_mni_grid, resample

            if on_mni_grid(self.source, 2):
                return np.asarray(template_map, dtype=np.float32)
            return resample(template_map, affine, self.source.shape, self.source.affine, order=order)
        moving = to_itk(np.asarray(template_map, dtype=np.float32), affine)
        reference = to_itk(np.zeros(self.source.shape, np.float32), self.source.affine)
        interpolator = sitk.sitkLinear if order == 1 else sitk.sitkNearestNeighbor
        inverse = self.transform.GetInverse()  # scan point -> template point
        return from_itk(sitk.Resample(moving, reference, inverse, interpolator, 0.0, sitk.sitkFloat32))


# ------------------------------------------------------------------ ITK <-> NIfTI
def to_itk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image with the geometry of the NIfTI ``affine`` (RAS -> LPS)."""
    matrix = _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    direction = matrix / spacing
    # ITK needs an orthonormal direction; shear in a NIfTI affine is dropped here
    # (its polar decomposition keeps the nearest rotation).
    u, _, vt = np.linalg.svd(direction)
    direction = u @ vt
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).T))  # ITK arrays are (k, j, i)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in direction.reshape(-1)))
    image.SetOrigin(tuple(float(v) for v in _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)[:3, 3]))
    return image


def from_itk(image: sitk.Image) -> np.ndarray:
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).T)


# ------------------------------------------------------------------ detection
def on_any_mni_grid(volume: Volume) -> bool:
    from .spaces import on_mni_grid

    return any(on_mni_grid(volume, resolution, atol=1e-3) for resolution in (1, 2))


def needs_registration(volume: Volume, kit: TemplateKit | None = None, on_template: np.ndarray | None = None
                       ) -> bool:
    """False for scans already in MNI space: on an MNI grid, or correlating with
    the template through their affine alone (r >= ``MIN_ALIGNED_CORRELATION``).
    ``on_template``: the scan already taken onto the 2 mm grid through its affine."""
    if on_any_mni_grid(volume):
        return False
    kit = kit or load_template(2)
    if on_template is None:
        from .spaces import to_mni_grid

        on_template = to_mni_grid(volume, 2)
    return _template_correlation(on_template, kit) < MIN_ALIGNED_CORRELATION


# ------------------------------------------------------------------ registration
def _working_image(volume: Volume) -> sitk.Image:
    """The scan low-passed and resampled to ~2 mm in its own orientation."""
    image = to_itk(np.nan_to_num(np.asarray(volume.data, dtype=np.float32)), volume.affine)
    spacing = np.array(image.GetSpacing())
    factor = np.maximum(WORKING_RESOLUTION_MM / spacing, 1.0)
    if np.all(factor <= 1.01):
        return image
    sigma = np.sqrt(np.maximum(factor**2 - 1.0, 0.0)) * spacing / 2.3548  # the resolution lost, mm
    smooth = sitk.SmoothingRecursiveGaussian(image, [float(s) for s in np.maximum(sigma, 1e-3)])
    size = np.maximum(np.round(np.array(image.GetSize()) / factor), 1).astype(int)
    new_spacing = spacing * np.array(image.GetSize()) / size
    return sitk.Resample(smooth, [int(n) for n in size], sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         [float(s) for s in new_spacing], image.GetDirection(), 0.0, sitk.sitkFloat32)


def _fit(fixed, moving, mask, transform, iterations: int, seed: int) -> sitk.Transform:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING_PERCENTAGE, seed)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3,
                                                    numberOfIterations=iterations, relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([4.0, 2.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return transform


def register(volume: Volume, kit: TemplateKit | None = None, seed: int = 0) -> sitk.AffineTransform:
    """Affine transform mapping template points to scan points (LPS mm)."""
    kit = kit or load_template(2)
    fixed = to_itk(kit.t1.astype(np.float32), kit.affine)
    mask = to_itk(ndimage.binary_dilation(kit.brain, iterations=2).astype(np.uint8), kit.affine)
    moving = _working_image(volume)
    similarity = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
    similarity = _fit(fixed, moving, mask, sitk.Similarity3DTransform(similarity), 100, seed)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(similarity.GetCenter())
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    return _fit(fixed, moving, mask, affine, 100, seed)


def _template_correlation(data: np.ndarray, kit: TemplateKit) -> float:
    a, b = data[kit.brain].astype(np.float64), kit.t1[kit.brain].astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def check_preprocessing(mode: str) -> None:
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing must be auto, register or none, not {mode!r}")


def prepare(volume: Volume, mode: str = "auto", kit: TemplateKit | None = None) -> Prepared:
    """``volume`` on the 2 mm MNI grid. ``mode``: "auto" (register unless the scan
    is already in MNI space), "register" (always) or "none" (trust the affine)."""
    import time

    from .spaces import to_mni_grid

    check_preprocessing(mode)
    kit = kit or load_template(2)
    tic = time.perf_counter()
    # Through the affine alone: what "none" uses, and what "auto" judges by.
    through_affine = None if mode == "register" else to_mni_grid(volume, 2)
    do_register = mode == "register" or (mode == "auto" and needs_registration(volume, kit, through_affine))
    shape, affine = mni_grid(2)
    coverage_source = np.ones(volume.shape, np.float32)
    if not do_register:
        data, transform = through_affine, None
        coverage = 1.0 if on_any_mni_grid(volume) else _coverage(
            to_mni_grid(Volume(coverage_source, volume.affine), 2), kit)
    else:
        transform = register(volume, kit)
        data = resample_to_template(volume, transform)
        data *= ndimage.binary_dilation(kit.brain, iterations=2)  # strip skull and neck
        coverage = _coverage(from_itk(sitk.Resample(to_itk(coverage_source, volume.affine), to_itk(
            np.zeros(shape, np.float32), affine), transform, sitk.sitkNearestNeighbor, 0.0)), kit)
    data = np.where(np.isfinite(data), np.maximum(data, 0), 0).astype(np.float32)
    quality = QualityReport(_template_correlation(data, kit), coverage, do_register,
                            seconds=time.perf_counter() - tic)
    quality.warnings = _warnings(quality, data, kit)
    return Prepared(data=data, source=volume, transform=transform, quality=quality)


def resample_to_template(volume: Volume, transform: sitk.Transform) -> np.ndarray:
    """The scan on the 2 mm MNI grid through ``transform``, anti-aliased like ``template.downsample``.

    The low-pass is scipy's truncated Gaussian, as in ``template.downsample``, not
    ITK's recursive one: an infinite-support filter leaves tiny values all over
    the background, and the model's normalisation (mean of the non-zero voxels)
    would count them.
    """
    shape, affine = mni_grid(2)
    data = np.nan_to_num(np.asarray(volume.data, dtype=np.float32))
    zooms = np.linalg.norm(np.asarray(volume.affine)[:3, :3], axis=0)
    lost_voxels = np.sqrt(np.maximum((2.0 / zooms) ** 2 - 1.0, 0.0)) / 2.3548  # FWHM lost -> sigma, voxels
    if np.any(lost_voxels > 1e-3):
        data = ndimage.gaussian_filter(data, sigma=lost_voxels, mode="constant")
    reference = to_itk(np.zeros(shape, np.float32), affine)
    # Cubic B-spline, not trilinear: the predictor reads interpolation blur as
    # youth (trilinear cost about 3.8 years on registered 1 mm scans, B-spline about 2).
    resampled = sitk.Resample(to_itk(data, volume.affine), reference, transform, sitk.sitkBSpline, 0.0,
                              sitk.sitkFloat32)
    # The B-spline's prefilter has infinite support too: it rings into the empty
    # background with values around 1e-8, and the model's normalisation would
    # count every one of them (on a skull-stripped scan, half the grid), doubling
    # the intensities it sees. Keep the background exactly empty: a voxel is kept
    # only where the (linearly resampled) support of the source covers it.
    support = sitk.Resample(to_itk((data > 0).astype(np.float32), volume.affine), reference, transform,
                            sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return np.where(from_itk(support) >= 0.5, np.maximum(from_itk(resampled), 0), 0).astype(np.float32)


def _coverage(inside_fov: np.ndarray, kit: TemplateKit) -> float:
    return float((inside_fov[kit.brain] > 0.5).mean())


def _warnings(quality: QualityReport, data: np.ndarray, kit: TemplateKit) -> list[str]:
    found = []
    expected = MIN_TEMPLATE_CORRELATION if quality.registered else MIN_ALIGNED_CORRELATION
    if quality.template_correlation < expected:
        what = "registration looks failed" if quality.registered else "the scan does not look aligned to MNI space"
        found.append(f"{what}: correlation with the template {quality.template_correlation:.2f} "
                     f"(expected >= {expected}); is this a T1-weighted brain scan?")
    if quality.brain_coverage < MIN_BRAIN_COVERAGE:
        found.append(f"the field of view covers only {100 * quality.brain_coverage:.0f} % of the brain")
    brain = data[kit.brain]
    if (brain <= 0).mean() > MAX_EMPTY_BRAIN_SHARE:
        found.append(f"{100 * (brain <= 0).mean():.0f} % of the brain is empty after preprocessing")
    return found


#: Columns of the table ``export_prepared`` rows fill (``napari-brainage preprocess``).
EXPORT_FIELDS = ("subject", "path", "age", "registered", "template_correlation", "brain_coverage", "seconds", "qc")


def export_prepared(job: tuple[str, str, float | None, str, str]) -> dict:
    """Prepare one scan and write it on the 2 mm MNI grid; its row for the QC table.

    ``job``: (subject, source path, age or None, target path, preprocessing mode).
    A module-level function of one argument, so worker processes can run it.
    The written scan is what the model is given (before cropping and
    normalisation): check a registration in any viewer, or train on it.
    """
    from .io import load_volume, save_volume

    subject, source, age, target, mode = job
    prepared = prepare(load_volume(source), mode)
    _, affine = mni_grid(2)
    save_volume(Volume(prepared.data, affine), target, overwrite=True,
                description=f"napari-brainage preprocess ({mode}) of {Path(source).name}")
    quality = prepared.quality
    return {"subject": subject, "path": Path(target).name, "age": "" if age is None else f"{age:g}",
            "registered": int(quality.registered), "template_correlation": f"{quality.template_correlation:.3f}",
            "brain_coverage": f"{quality.brain_coverage:.3f}", "seconds": f"{quality.seconds:.2f}",
            "qc": quality.summary()}
