"""Registration of a scan to the bundled MNI template (SimpleITK), and resampling
onto the template's grid through the transform found.

1. the scan is low-passed and resampled to 2 mm in its own orientation (the
   template's resolution: registering 1 mm voxels to a 2 mm template only costs
   time);
2. registration starts from the centres of mass (moments) or from the scan's own
   affine, whichever Mattes mutual information prefers; a similarity transform
   (rotation, translation, isotropic scale) and then a full affine are fitted by
   Mattes mutual information, multi-resolution (4, 2, 1), on the template's
   (dilated) brain mask;
3. the scan is resampled onto the 2 mm MNI grid (cubic B-spline) with
   anti-aliasing that matches ``template.downsample``.

ITK works in LPS millimetres; NIfTI affines are RAS: ``to_itk`` converts.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..io import Volume
from .grid import brain_mask
from .template import TemplateKit, load_template, mni_grid

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


#: Registration's working resolution (mm) and its random sampling share.
WORKING_RESOLUTION_MM = 2.0


SAMPLING_PERCENTAGE = 0.25


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
    """An ITK image's voxels as an (X, Y, Z) array (ITK stores Z, Y, X)."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).T)


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
    # ITK reads a seed of 0 as "from the wall clock" (sitkWallClock): the same scan then
    # registered differently on every run (ages 0.01 y apart). Shift the seed off it.
    method.SetMetricSamplingPercentage(SAMPLING_PERCENTAGE, seed + 1)
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


def _starting_point(fixed, moving, mask, kit: TemplateKit) -> sitk.Similarity3DTransform:
    """Where registration starts: the centres of mass aligned (moments), or the
    scan's own affine (identity), whichever the metric prefers. Moments suit a
    raw scan far from MNI space; a head already near it (a neck and scalp pull
    its centre of mass 20-30 mm down) converged from there to a wrong optimum in
    3 of 7 held-out heads."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    moments = sitk.Similarity3DTransform(sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS))
    identity = sitk.Similarity3DTransform()
    centre = np.argwhere(kit.brain).mean(axis=0)
    identity.SetCenter((_RAS_TO_LPS @ (kit.affine @ [*centre, 1])[:3]).tolist())
    scores = []
    for candidate in (moments, identity):
        method.SetInitialTransform(candidate, inPlace=False)
        try:
            scores.append(method.MetricEvaluate(fixed, moving))
        except RuntimeError:  # no overlap at all from there
            scores.append(np.inf)
    return (moments, identity)[int(np.argmin(scores))]


def register(volume: Volume, kit: TemplateKit | None = None, seed: int = 0) -> sitk.AffineTransform:
    """Affine transform mapping template points to scan points (LPS mm)."""
    kit = kit or load_template(2)
    fixed = to_itk(kit.t1.astype(np.float32), kit.affine)
    mask = to_itk(brain_mask(kit, head=True).astype(np.uint8), kit.affine)  # the template brain + 4 mm
    moving = _working_image(volume)
    similarity = _fit(fixed, moving, mask, _starting_point(fixed, moving, mask, kit), 100, seed)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(similarity.GetCenter())
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    return _fit(fixed, moving, mask, affine, 100, seed)


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
