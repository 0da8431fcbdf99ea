"""Quality control of a scan on its way into the model: what is wrong, in words.

Every prepared scan carries a :class:`QualityReport` with a verdict:

* ``pass``: nothing found;
* ``warn``: an age and a map are still made, with the reasons beside them
  (e.g. thick slices, a small part of the brain outside the field of view,
  non-finite voxels that were filled in);
* ``fail``: the scan is not what the model can read (not T1-weighted, not an
  anatomical image, a failed registration, most of the brain missing); no age
  or map is made, and :class:`QualityError` carries the reasons.

The checks here look at the scan on the template grid (after registration)
with the template's tissue maps, so they name the problem rather than a
symptom: "CSF is brighter than white matter" rather than "low correlation".
Thresholds were set on held-out synthetic scans and their real-world variants
(``benchmarks/input_robustness.py``; figures in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .errors import InputError

#: Verdicts, in order of severity.
PASS, WARN, FAIL = "pass", "warn", "fail"

#: Correlation with the template inside its brain after registration: a T1
#: brain correlates at about 0.9 (held-out synthetic scans: 0.88-0.95; the ICBM
#: template registered from a 40-degree tilt 0.96). Below the first, the result
#: is flagged; below the second, registration failed.
MIN_TEMPLATE_CORRELATION = 0.75
MIN_REGISTERED_CORRELATION = 0.5
#: The same for a scan used as it is (on the MNI grid, or with preprocessing
#: "none"): held-out synthetic scans in MNI space correlate at 0.40-0.80 (52
#: subjects; they keep a residual misregistration and their ageing).
MIN_ALIGNED_CORRELATION = 0.35
MIN_ALIGNED_CORRELATION_TO_USE = 0.25
#: Share of the template brain inside the scan's field of view.
MIN_BRAIN_COVERAGE = 0.95        #: below: warning (part of the brain missing)
MIN_BRAIN_COVERAGE_TO_USE = 0.80  #: below: failure (too much missing to read)
#: Share of the template brain that may be empty (0) after preprocessing. Held-out
#: synthetic scans, whose head size and pose vary (+-2 %, +-2 mm), leave a median
#: 4.5 % empty, 12 % at the 99th percentile and 16 % at most (200 subjects).
MAX_EMPTY_BRAIN_SHARE = 0.25
MAX_EMPTY_BRAIN_SHARE_TO_USE = 0.5
#: T1 contrast: white matter brighter than grey matter, grey matter brighter
#: than CSF (medians over the template's tissue cores). Held-out synthetic
#: scans: WM/GM 1.28-1.33; the ICBM T1 1.33. T2, PD and FLAIR scans invert one
#: of the two orderings.
MIN_WM_GM_RATIO = 1.08
#: Far above any T1 (a white-matter probability map reads about 12).
MAX_WM_GM_RATIO = 3.0
MIN_GM_CSF_RATIO = 1.1
#: Fewest brain voxels for the contrast check to speak, and the least share of
#: their variance a mixture of the template's tissues must explain for the scan
#: to count as lined up with it (see ``tissue_contrast``).
MIN_TISSUE_VOXELS = 1000
MIN_TISSUE_FIT = 0.15
#: Gaussian sd (voxels of the 2 mm grid) applied to scan and tissue maps before the fit.
TISSUE_FIT_SMOOTHING = 1.0
#: Slices thicker than this (mm) were never seen in training (1 and 2 mm scans).
MAX_SLICE_MM = 2.5
#: ... and thicker than this (mm) it cannot read at all: QC fails.
MAX_SLICE_MM_TO_USE = 6.0
#: Sharpness of an axis (see ``interpolated_slices``) against the scan's median
#: axis, below which the axis looks interpolated from thicker slices. Held-out
#: synthetic 1 mm scans and their moved, tilted and head variants: 0.85-1.0; the
#: ICBM152 template 0.88; nipy's real anatomical scan 0.93; 5 mm slices linearly
#: interpolated onto 1 mm: 0.50-0.62 (docs/benchmarks.md).
MIN_AXIS_SHARPNESS = 0.75
#: ``fine_detail`` (median over the axes) below which the scan's content is
#: coarser than its voxels (a warning), and below which QC fails. Held-out
#: synthetic scans acquired at 1 mm and their geometry, storage, intensity and
#: head variants: 1.2-2.1; at 2 mm 0.9-1.0; nipy's real scan 2.2; the ICBM152
#: template 0.79 (1 mm), 0.98 (2 mm). Read young, and measured: a 1 mm scan
#: upsampled to 0.5 mm 0.27-0.49 (2-4 y young), a 2 mm scan upsampled to 1 mm
#: 0.20-0.31 (5-13 y), smoothed with sd 1 voxel 0.17-0.27 (5-11 y), a 3 mm scan
#: upsampled to 1 mm 0.15-0.17 and a 2 mm one to 0.5 mm 0.10-0.11 (10-19 y);
#: docs/benchmarks.md, "Content coarser than its voxels". The same value means
#: different biases at different voxel sizes, so only the far end (about 10 y
#: young) is refused.
MIN_FINE_DETAIL = 0.5
MIN_FINE_DETAIL_TO_USE = 0.2
#: ``anatomical_detail`` of the model's 2 mm input above which the anatomy is
#: sharper than anything the predictor was trained on (a warning). Read well
#: (held-out synthetic scans, 2026-12-02): 2 mm scans made by the generator
#: 0.3-0.6, 1 mm scans anti-aliased onto the grid by ``prepare`` 0.7-1.0, the
#: ICBM152 template 0.98. Read 3-10 y old: 1 mm scans sampled at every second
#: voxel (trilinear resampling into MNI 2 mm, as FSL, ANTs or SPM write it)
#: 0.8-1.3, the same low-passed to the 2 mm band (an acquisition at 2 mm)
#: 1.1-1.3; docs/benchmarks.md, "Sharper than the training's 2 mm scans".
MAX_ANATOMICAL_DETAIL = 1.05
#: Predicted ages beyond the training mean +- this many standard deviations are
#: flagged (the bundled model: 37-87 y, trained on ages 45-80).
AGE_RANGE_SDS = 2.5
#: The band outside the template brain where a head's scalp lies (2 mm voxels:
#: 10-16 mm out) and the share of it with signal (above a fifth of the brain's
#: median) beyond which the scan is a head, not skull-stripped. Held-out
#: skull-stripped synthetic scans: under 2 %; heads: 40-70 %.
SCALP_BAND_VOXELS = (5, 8)
MAX_SCALP_SIGNAL = 0.15
#: At most this many distinct whole numbers, in flat patches: a label map.
MAX_LABEL_VALUES = 512


@dataclass
class QualityReport:
    """What quality control found for one scan.

    ``route`` says how the scan reached the model's grid ("on the 2 mm MNI
    grid", "registered to the template", ...); the figures are NaN where a
    check could not run (e.g. the scan failed before registration).
    """

    route: str = ""
    registered: bool = False
    template_correlation: float = float("nan")  #: Pearson r with the template, in its brain
    brain_coverage: float = float("nan")        #: share of the template brain in the field of view
    wm_gm_ratio: float = float("nan")           #: WM / GM intensity from the tissue fit (T1: about 1.3)
    tissue_fit: float = float("nan")            #: R^2 of the scan as a mixture of the template's tissues
    contrast: str = ""                          #: the contrast QC saw (``CONTRASTS``, "other", "" unknown)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``"pass"``, ``"warn"`` (age kept, flagged) or ``"fail"`` (no age)."""
        return FAIL if self.failures else WARN if self.warnings else PASS

    @property
    def ok(self) -> bool:
        """True when nothing was found (status ``pass``)."""
        return self.status == PASS

    def summary(self) -> str:
        """"ok", or every reason, failures first, joined by "; "."""
        reasons = self.failures + self.warnings
        return "; ".join(reasons) if reasons else "ok"


class QualityError(InputError):
    """A scan failed quality control; ``quality`` holds the report. The message
    starts with "QC failed:" and names every reason."""

    def __init__(self, quality: QualityReport, name: str = ""):
        self.quality = quality
        where = f"{name}: " if name else ""
        super().__init__(f"{where}QC failed: {'; '.join(quality.failures)}")


def require_pass(quality: QualityReport, name: str = "") -> QualityReport:
    """``quality`` unchanged, or :class:`QualityError` when it failed."""
    if quality.failures:
        raise QualityError(quality, name)
    return quality


# ------------------------------------------------------------------ checks
def slice_thickness(voxel_sizes_mm) -> tuple[list[str], list[str]]:
    """(warnings, failures) from the voxel size in the header: a warning when the
    thickest voxel edge exceeds ``MAX_SLICE_MM``, a failure beyond
    ``MAX_SLICE_MM_TO_USE`` (what the bundled predictor made of such scans is in
    docs/benchmarks.md, "Input robustness": 3 mm slices 2.2 y young on average, 5 mm
    slices 6.4 y, 3 mm voxels on every side 4.6 y; an 8 mm copy of a 2 mm scan read 15 y young)."""
    sizes = np.asarray(voxel_sizes_mm, dtype=float)
    if sizes.max() <= MAX_SLICE_MM:
        return [], []
    where = (f"slices {sizes.max():.1f} mm thick along the {'xyz'[int(np.argmax(sizes))]} axis"
             if np.ptp(sizes) > 0.1 else f"voxels {sizes.max():.1f} mm on every side")
    voxels = f"voxels {' x '.join(f'{s:.2g}' for s in sizes)} mm; the model was trained on 1-2 mm scans"
    if sizes.max() > MAX_SLICE_MM_TO_USE:
        return [], [f"{where} ({voxels}): too coarse for this model to read (over {MAX_SLICE_MM_TO_USE:g} mm); "
                    "give a scan with thinner slices"]
    return [f"{where} ({voxels}): such scans read younger, by 2-6 y on average for 3-5 mm slices in "
            "docs/benchmarks.md"], []


def fine_detail(data: np.ndarray) -> np.ndarray:
    """Per voxel axis, mean squared second difference over mean squared first
    difference inside the head (voxels above a tenth of the 90th percentile).

    Scale-free; white noise reads 3, content smoother than its voxels reads
    less (interpolation and smoothing remove the finest detail, which the second
    difference weights most). A scan acquired at its voxel size reads 0.6-2.2
    (``MIN_FINE_DETAIL``); one resampled from voxels twice as large 0.1-0.3.
    Shape (3,); NaN where the scan is too small or empty to say.
    """
    data = np.asarray(data, dtype=np.float32)
    positive = data[data > 0]
    if positive.size < MIN_TISSUE_VOXELS:
        return np.full(3, np.nan)
    level = float(np.percentile(positive, 90))
    inside = data > 0.1 * level
    data = data / np.float32(level)  # scale-free: the squares neither overflow nor vanish (1e18 or 1e-18 scans)
    detail = []
    for axis in range(3):
        # Every second line across the axis is plenty for a ratio of means (4x less work).
        lines = tuple(slice(None) if a == axis else slice(None, None, 2) for a in range(3))
        x, m = np.moveaxis(data[lines], axis, 0), np.moveaxis(inside[lines], axis, 0)
        if x.shape[0] < 3:
            return np.full(3, np.nan)
        first, second = x[2:] - x[1:-1], x[2:] - 2 * x[1:-1] + x[:-2]
        keep = m[2:] & m[1:-1] & m[:-2]
        if np.count_nonzero(keep) < MIN_TISSUE_VOXELS:  # too thin along this axis to say
            return np.full(3, np.nan)
        detail.append(float(np.mean(second[keep] ** 2)) / max(float(np.mean(first[keep] ** 2)), 1e-12))
    return np.asarray(detail)


def anatomical_detail(data: np.ndarray, kit) -> float:
    """``fine_detail`` of the anatomy alone on the model's grid: the median over
    the axes of (E[d2^2] - 6 s^2) / (E[d1^2] - 2 s^2) inside the brain, where d1
    and d2 are the first and second differences and s^2 the noise variance.

    White noise adds 2 s^2 to E[d1^2] and 6 s^2 to E[d2^2]; s^2 is estimated in
    the template's white-matter core, where the anatomy is flat (median of d1^2
    over 2 x 0.455, the median of a chi-square with one degree of freedom), so
    a noisy scan and a sharp one, which ``fine_detail`` confuses, read apart.
    ``data``: the model input (``kit``'s grid, brain-masked). NaN when the scan
    is too empty or too noisy to say.
    """
    from .space.grid import eroded_brain

    data = np.asarray(data, dtype=np.float32)
    core = eroded_brain(kit.resolution_mm) & (kit.wm >= CORE_PROBABILITY) & (data > 0)
    if np.count_nonzero(core) < MIN_TISSUE_VOXELS:
        return float("nan")
    data = data / np.float32(np.median(data[core]))  # scale-free
    inside = kit.brain & (data > 0.1)
    detail = []
    for axis in range(3):
        x, m, c = (np.moveaxis(a, axis, 0) for a in (data, inside, core))
        first = x[1:] - x[:-1]
        noise = float(np.median(first[c[1:] & c[:-1]] ** 2)) / (2 * 0.455)
        second, first = x[2:] - 2 * x[1:-1] + x[:-2], first[1:]
        keep = m[2:] & m[1:-1] & m[:-2]
        signal = float(np.mean(first[keep] ** 2)) - 2 * noise
        if signal <= 0.1 * float(np.mean(first[keep] ** 2)):  # mostly noise: nothing to say
            return float("nan")
        detail.append((float(np.mean(second[keep] ** 2)) - 6 * noise) / signal)
    return float(np.median(detail))


def sharp_content(detail: float) -> list[str]:
    """A warning when the model input's ``anatomical_detail`` is above
    ``MAX_ANATOMICAL_DETAIL``: a 2 mm image sharper than the predictor's training
    scans (resampled to 2 mm without anti-aliasing, or acquired at 2 mm), which
    it reads as age. The header cannot show it; a 1 mm scan is anti-aliased by
    ``prepare`` and stays below.
    """
    if not np.isfinite(detail) or detail <= MAX_ANATOMICAL_DETAIL:
        return []
    return [f"the image is sharper on the model's 2 mm grid than its training scans (anatomical fine detail "
            f"{detail:.2f}, trained up to about 1.0): 2 mm scans resampled without anti-aliasing (FSL, ANTs or SPM "
            "trilinear into MNI 2 mm) or acquired at 2 mm read 3-10 y old in docs/benchmarks.md; give the scan at "
            "the resolution it was acquired if that is finer (1 mm: it is anti-aliased here)"]


def axis_sharpness(data: np.ndarray, detail: np.ndarray | None = None) -> np.ndarray:
    """``fine_detail`` of each axis over its median over the three axes: about 1
    for each axis of a scan acquired at its voxel size, lower along an axis
    whose content was interpolated from thicker slices. Shape (3,); ones for an
    empty scan. Pass ``detail`` when it is already measured.
    """
    detail = fine_detail(data) if detail is None else np.asarray(detail, dtype=float)
    if not np.all(np.isfinite(detail)):
        return np.ones(3)
    return detail / max(float(np.median(detail)), 1e-12)


def interpolated_slices(data: np.ndarray, voxel_sizes_mm, detail: np.ndarray | None = None) -> list[str]:
    """A warning when one axis of the scan looks interpolated from thicker slices
    (``axis_sharpness`` under ``MIN_AXIS_SHARPNESS``): thick slices resampled
    onto thin voxels by an earlier pipeline, which the header cannot show.

    Only axes whose voxels are at least nine tenths of the median voxel edge are
    judged: a finer axis is smoother per voxel whatever the acquisition (a 0.8 mm
    axis beside 1.3 mm ones reads 0.6-0.7), and thicker voxels in the header are
    ``slice_thickness``'s to name.
    """
    sizes = np.asarray(voxel_sizes_mm, dtype=float)
    if sizes.max() > MAX_SLICE_MM:
        return []
    sharpness = np.where(sizes >= 0.9 * np.median(sizes), axis_sharpness(data, detail), np.inf)
    axis = int(np.argmin(sharpness))
    if sharpness[axis] >= MIN_AXIS_SHARPNESS:
        return []
    return [f"the {'xyz'[axis]} axis looks interpolated from thicker slices (fine detail {sharpness[axis]:.2f} of the "
            f"other axes', expected >= {MIN_AXIS_SHARPNESS}; voxels {' x '.join(f'{s:.2g}' for s in sizes)} mm): "
            "thick slices resampled to thin voxels read several years young in docs/benchmarks.md"]


def coarse_content(detail: np.ndarray, voxel_sizes_mm) -> tuple[list[str], list[str]]:
    """(warnings, failures) for a scan whose content is coarser than its voxels
    in every direction (the median ``fine_detail`` over the axes): a scan
    upsampled from larger voxels (a 2 mm scan stored at 1 mm) or smoothed, which
    the header cannot show and the predictor reads as youth. Below
    ``MIN_FINE_DETAIL_TO_USE`` QC fails; below ``MIN_FINE_DETAIL`` it warns.
    Thick slices along one axis are ``interpolated_slices``'s to name.
    """
    detail = np.asarray(detail, dtype=float)
    if not np.all(np.isfinite(detail)):
        return [], []
    median = float(np.median(detail))
    sizes = " x ".join(f"{s:.2g}" for s in np.asarray(voxel_sizes_mm, dtype=float))
    measured = (f"fine detail {median:.2f}, where scans acquired at their voxel size measure 0.6 or more; "
                f"voxels {sizes} mm")
    if median < MIN_FINE_DETAIL_TO_USE:
        return [], [f"the image is much coarser than its voxels ({measured}): it was resampled from larger voxels "
                    "or smoothed, and such scans read about 10-19 y young in docs/benchmarks.md; give the scan at the "
                    "resolution it was acquired"]
    if median < MIN_FINE_DETAIL:
        return [f"the image looks coarser than its voxels ({measured}): upsampled or smoothed scans read 2-13 y "
                "young in docs/benchmarks.md"], []
    return [], []


#: The contrasts QC tells apart (``tissue_contrast``), by the ordering of the
#: fitted tissue intensities. PD and T2 both have CSF brightest; a PD scan's CSF
#: is at most ``MAX_PD_CSF_GM`` x its grey matter (fits of held-out synthetic
#: renders: PD 1.02, T2 1.35; the fit blurs CSF with the tissue around it).
CONTRASTS = ("T1", "T2", "PD", "FLAIR")
#: What a predictor trained on random tissue intensities reads: every ordering.
ANY_CONTRAST = (*CONTRASTS, "other")
#: What a model card that does not say reads: the bundled predictor's training data.
T1_ONLY = ("T1",)
MAX_PD_CSF_GM = 1.2


def tissue_contrast(data: np.ndarray, kit, reads: tuple[str, ...] = T1_ONLY
                    ) -> tuple[float, float, str, list[str]]:
    """(WM/GM intensity ratio, R^2 of the tissue fit, contrast seen, failures) of a scan
    on the template grid, for a model that ``reads`` these contrasts (``CONTRASTS``).

    The scan's intensities in the template brain are fitted as a mixture of the
    template's grey matter, white matter and CSF probabilities (least squares):
    the coefficients are the three tissues' intensities, whatever the contrast,
    and R^2 says whether the scan lines up with the template's tissues at all.
    A scan that does (R^2 >= ``MIN_TISSUE_FIT``) is judged on its contrast;
    one that does not only when its tissues' cores clearly differ
    (``MIN_CORE_SEPARATION``) and do not look T1 (a loosely aligned T1 is
    template_match's to judge). The contrast is named by the tissues' ordering:
    T1 WM > GM > CSF; T2 CSF > GM > WM (PD: WM darkest, CSF at most
    ``MAX_PD_CSF_GM`` x GM); FLAIR GM > WM > CSF.
    "" when it cannot be told; "other" for any other ordering. A contrast the
    model does not read is a failure; so is a tissue probability map.
    """
    fitted = fit_tissues(data, kit)
    if fitted is None:
        return float("nan"), float("nan"), "", []
    (gm, wm, csf), fit = fitted.levels, fitted.fit
    ratio = wm / gm if gm > 0 else float("inf")
    weak = ""
    if fit < MIN_TISSUE_FIT:
        # Not lined up with the template's tissues, or a low-contrast scan (PD and FLAIR
        # renders of held-out subjects fit at R^2 -0.10 to 0.05). Only cores that
        # clearly differ name the contrast; a weak T1 is left to template_match,
        # whose message (alignment) is then the right one.
        cores = core_levels(data, kit, min_separation=MIN_CORE_SEPARATION)
        contrast, why = _name_contrast(*cores) if cores is not None else ("other", "")
        if contrast in ("T1", "other"):
            return ratio, fit, "", []
        weak = f" (its tissues line up only loosely with the template's: R^2 {fit:.2f})"
    else:
        measured = f"grey matter {gm:.3g}, white matter {wm:.3g}, CSF {csf:.3g} from the tissue fit"
        if min(gm, wm) <= 0.05 * max(gm, wm, csf) or ratio > MAX_WM_GM_RATIO:
            return ratio, fit, "other", [f"not an MRI scan of the brain's tissues: one tissue is almost empty "
                                         f"({measured}): a tissue probability map or segmentation?"]
        contrast, why = _name_contrast(gm, wm, csf)
        if contrast != "T1":
            # Not T1 by the voxel-wise levels (the check QC always made). Which other
            # contrast is named by the tissues' cores (``core_levels``): a least-squares
            # fit mixes thin, bright CSF into the tissues around it, and named 6 of 16
            # held-out T2 renders PD and 7 of 16 PD renders FLAIR (cores: 16 of 16 each).
            cores = core_levels(data, kit)
            contrast, why = _name_contrast(*(cores if cores is not None else fitted.smoothed_levels))
            contrast = "other" if contrast == "T1" else contrast
    if contrast in reads:
        return ratio, fit, contrast, []
    read = " or ".join(reads)
    if reads == T1_ONLY:
        return ratio, fit, contrast, [f"not a T1-weighted scan: {why}{weak}; this model reads T1 contrast only"]
    return ratio, fit, contrast, [f"a contrast this model does not read: {why}{weak}; it reads {read}"]


class TissueFit(NamedTuple):
    """A scan's intensities fitted as a mixture of the template's tissues (``fit_tissues``)."""

    levels: tuple[float, float, float]           #: GM, WM, CSF intensities, fitted voxel by voxel
    smoothed_levels: tuple[float, float, float]  #: the same, both sides smoothed
    fit: float                                   #: R^2 of the smoothed fit: does the scan line up at all?


def fit_tissues(data: np.ndarray, kit) -> TissueFit | None:
    """``data`` (template grid) fitted as a mixture of the template's tissue
    probabilities, by least squares in the template brain where ``data`` has
    signal; None with fewer than ``MIN_TISSUE_VOXELS`` such voxels.

    Fitted twice: voxel by voxel, and with both sides smoothed alike (sd
    ``TISSUE_FIT_SMOOTHING`` voxels), whose R^2 says whether the scan lines up.
    A subject's tissues sit 1-2 voxels off the template's: voxel by voxel, a
    low-contrast scan (FLAIR, PD) fell below ``MIN_TISSUE_FIT`` and went unjudged
    (a FLAIR read as a T1, 6 y off), and its CSF came out too dark to name the
    contrast; smoothed, thin CSF blurs into grey matter (a T1 read as GM = CSF).
    """
    from scipy import ndimage

    present = kit.brain & (data > 0)  # a cut field of view or an empty lobe says nothing of contrast
    if np.count_nonzero(present) < MIN_TISSUE_VOXELS:
        return None
    volumes = (kit.gm, kit.wm, kit.csf, data)
    smoothed, fit = _least_squares([ndimage.gaussian_filter(v.astype(np.float32), TISSUE_FIT_SMOOTHING)[present]
                                    for v in volumes])
    levels, _ = _least_squares([v[present] for v in volumes])
    return TissueFit(tuple(float(v) for v in levels), tuple(float(v) for v in smoothed), fit)


#: A tissue's core: template probability at least this, two voxels inside the brain
#: mask (away from the brain's edge), with at least ``MIN_CORE_VOXELS`` voxels of signal.
CORE_PROBABILITY = 0.9
MIN_CORE_VOXELS = 50
#: For a scan whose tissue fit is weak: the two most different cores must lie this
#: many robust standard deviations apart for the cores to name its contrast.
#: Aligned T2, PD and FLAIR renders (2 mm, 66-80 y): 1.9-10; a T1 or T2 moved 10 mm
#: or more, or flipped: 0.1-1.1 (their cores mix tissues, and their ordering is chance).
MIN_CORE_SEPARATION = 1.5


def core_levels(data: np.ndarray, kit, min_separation: float = 0.0) -> tuple[float, float, float] | None:
    """Median intensity of ``data`` (template grid) in the cores of the template's
    grey matter, white matter and CSF (``CORE_PROBABILITY``; the CSF core is the
    lateral ventricles', which ageing only widens); None when a core has fewer than
    ``MIN_CORE_VOXELS`` voxels with signal (a cut field of view), or when no two
    cores' medians differ by ``min_separation`` times their pooled robust standard
    deviation (1.4826 x median absolute deviation): cores that are not one tissue each.

    Medians over voxels that are one tissue in nearly every brain are robust to a
    subject's tissue lying 1-2 voxels off the template's and to partial volume at
    the tissues' borders, which pull a least-squares fit's levels together.
    """
    from .space.grid import eroded_brain

    inner = eroded_brain(kit.resolution_mm) & (data > 0)
    levels, spreads = [], []
    for probability in (kit.gm, kit.wm, kit.csf):
        core = data[inner & (probability >= CORE_PROBABILITY)]
        if core.size < MIN_CORE_VOXELS:
            return None
        levels.append(float(np.median(core)))
        spreads.append(1.4826 * float(np.median(np.abs(core - levels[-1]))))
    separation = max(abs(levels[i] - levels[j]) / max(np.sqrt((spreads[i] ** 2 + spreads[j] ** 2) / 2), 1e-12)
                     for i, j in ((0, 1), (0, 2), (1, 2)))
    return tuple(levels) if separation >= min_separation else None  # type: ignore[return-value]


def _least_squares(columns: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """(coefficients, R^2) of the last column fitted on the others, no intercept."""
    tissues = np.stack(columns[:3], axis=1).astype(np.float64)
    y = columns[3].astype(np.float64)
    levels, *_ = np.linalg.lstsq(tissues, y, rcond=None)
    return levels, 1.0 - float(((y - tissues @ levels) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12))


def _name_contrast(gm: float, wm: float, csf: float) -> tuple[str, str]:
    """(contrast, the measured ordering in words) from the fitted tissue intensities."""
    if wm >= MIN_WM_GM_RATIO * gm and gm >= MIN_GM_CSF_RATIO * csf:
        return "T1", f"white matter {wm / gm:.2f} x grey matter, grey matter {gm / max(csf, 1e-12):.2f} x CSF"
    if csf > wm and gm > wm:
        # White matter darkest: T2 if CSF is clearly brightest, else PD (whose fitted
        # CSF may even fall below grey matter: little contrast, blurred by the fit).
        name = "PD" if csf <= MAX_PD_CSF_GM * gm else "T2"
        return name, (f"white matter is darkest (WM / GM {wm / gm:.2f}; T1 about 1.3), CSF {csf / gm:.2f} x "
                      f"grey matter: {name}-like")
    if gm > wm > csf:
        return "FLAIR", (f"grey matter is brighter than white matter (WM / GM {wm / gm:.2f}; T1 about 1.3) and "
                         f"CSF darkest: FLAIR-like")
    return "other", (f"tissues ordered unlike T1, T2, PD or FLAIR (grey matter {gm:.3g}, white matter {wm:.3g}, "
                     f"CSF {csf:.3g})")


def scalp_signal(data: np.ndarray, kit) -> float:
    """Share of the band ``SCALP_BAND_VOXELS`` outside the template brain that has
    signal: about 0 for a skull-stripped scan in MNI space, high for a head."""
    from .space.grid import dilated_brain

    inner, outer = (dilated_brain(kit.resolution_mm, n) for n in SCALP_BAND_VOXELS)
    band = outer & ~inner
    tissue = data[kit.brain & (data > 0)]
    if not band.any() or tissue.size == 0:
        return 0.0
    return float((data[band] > 0.2 * np.median(tissue)).mean())


#: The end of the warning for a person's age outside the model's ages: a warning about
#: the gap, not the scan (the prediction interval, of ages given the scan, still holds).
CHRONOLOGICAL_AGE_NOTE = "the gap is extrapolated and has no centile"


def only_about_the_age(qc: str) -> bool:
    """Whether a QC summary warns of nothing but the person's age (``age_range``'s
    chronological warning): the scan itself passed."""
    return bool(re.fullmatch(r"age [0-9.]+ y lies outside the ages the model learned \([0-9]+-[0-9]+ y\): "
                             + re.escape(CHRONOLOGICAL_AGE_NOTE), qc.strip()))


def age_range(predicted: float, age_mean: float, age_sd: float, chronological: bool = False) -> list[str]:
    """A warning when ``predicted`` (years) lies outside the ages a model learned
    (its training mean +- ``AGE_RANGE_SDS`` standard deviations, from its card);
    ``chronological``: the value is the person's age, whose gap's bias correction
    and centile (fitted on those ages) would be extrapolated."""
    low, high = age_mean - AGE_RANGE_SDS * age_sd, age_mean + AGE_RANGE_SDS * age_sd
    if low <= predicted <= high:
        return []
    if chronological:
        return [f"age {predicted:.1f} y lies outside the ages the model learned ({low:.0f}-{high:.0f} y): "
                f"{CHRONOLOGICAL_AGE_NOTE}"]
    return [f"predicted age {predicted:.1f} y lies outside the ages the model learned ({low:.0f}-{high:.0f} y): "
            "is the scan what the model reads?"]


def head_warning(share: float) -> list[str]:
    """The warning for a scan that is not skull-stripped."""
    return [f"not skull-stripped ({100 * share:.0f} % of the band 10-16 mm outside the brain has signal): the "
            "brain was cut out with the template's mask after registration; unstripped heads read 1-3 y young in "
            "docs/benchmarks.md; skull-strip the scan for a surer age"]


def template_match(correlation: float, registered: bool) -> tuple[list[str], list[str]]:
    """(warnings, failures) from the correlation with the template after preprocessing."""
    warn, fail = ((MIN_TEMPLATE_CORRELATION, MIN_REGISTERED_CORRELATION) if registered
                  else (MIN_ALIGNED_CORRELATION, MIN_ALIGNED_CORRELATION_TO_USE))
    # No commas in the subject: people cut CSV columns with `cut -d,` and lost half of it.
    what = "registration to the template" if registered else "the scan as placed by its affine"
    if correlation < fail:
        return [], [f"{what} does not match the template: correlation {correlation:.2f} (below {fail} fails; "
                    f"a good match is >= {warn}); failed registration, or not a brain scan?"]
    if correlation < warn:
        return [f"{what} matches the template poorly: correlation {correlation:.2f} (expected >= {warn}); "
                "check the alignment"], []
    return [], []


def field_of_view(coverage: float) -> tuple[list[str], list[str]]:
    """(warnings, failures) from the share of the template brain inside the field of view."""
    message = f"partial field of view: the scan covers only {100 * coverage:.0f} % of the brain"
    if coverage < MIN_BRAIN_COVERAGE_TO_USE:
        return [], [message]
    if coverage < MIN_BRAIN_COVERAGE:
        return [message], []
    return [], []


def empty_brain(data: np.ndarray, kit) -> tuple[list[str], list[str]]:
    """(warnings, failures) from the share of the template brain left empty."""
    share = float((data[kit.brain] <= 0).mean())
    message = f"{100 * share:.0f} % of the brain is empty after preprocessing"
    if share > MAX_EMPTY_BRAIN_SHARE_TO_USE:
        return [], [message]
    if share > MAX_EMPTY_BRAIN_SHARE:
        return [message], []
    return [], []
