"""A cohort on disk: participants drawn, scans made in parallel and written,
``participants.csv`` and the ground-truth masks; deterministic for a seed.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import MAX_VOXEL_MM, Volume, atomic_path, load_volume, save_volume
from ..parallel import ordered_map
from .config import CohortConfig
from .model import AgeingModel, SyntheticScan, ageing_model
from .render import Contrast, contrast_named, random_contrast, thick_slices


@dataclass(frozen=True)
class Participant:
    """One synthetic subject: name, chronological age and brain age (years) and, with
    heterogeneous ageing, each region's own age."""

    subject: str
    age: float
    brain_age: float
    region_ages: tuple[tuple[str, float], ...] = ()   #: (region, its own age) when ageing is heterogeneous


def draw_participants(n: int, seed: int, config: CohortConfig) -> list[Participant]:
    """Ages uniform over ``age_range``; gap ~ N(0, gap_sd); rounded to 0.01 year.
    With ``region_age_sd`` each focal region also gets its own age around brain_age.

    Ages, gaps and regional deviations come from separate streams, so the first
    k participants of a cohort of n are those of a cohort of k with the same seed.
    """
    ages = np.random.default_rng(np.random.SeedSequence([seed, 0])).uniform(*config.age_range, size=n)
    gaps = np.random.default_rng(np.random.SeedSequence([seed, 2])).normal(0.0, config.gap_sd, size=n)
    names = [r.name for r in config.regions]
    # One row per subject (rows are drawn in order), so prefixes stay prefixes.
    deviations = (np.random.default_rng(np.random.SeedSequence([seed, 3])).normal(0.0, config.region_age_sd,
                                                                                   size=(n, len(names)))
                  if config.region_age_sd else np.zeros((n, 0)))
    width = max(4, len(str(n)))
    participants = []
    for i, (a, g) in enumerate(zip(ages, gaps)):
        brain_age = round(float(a + g), 2)
        own = tuple((name, round(brain_age + float(d), 2)) for name, d in zip(names, deviations[i]))
        participants.append(Participant(f"sub-{i + 1:0{width}d}", round(float(a), 2), brain_age, own))
    return participants


def subject_rng(seed: int, index: int) -> np.random.Generator:
    """Each subject's own stream: independent of cohort size and worker count."""
    return np.random.default_rng(np.random.SeedSequence([seed, 1, index]))


@dataclass(frozen=True)
class Rendering:
    """How a cohort's scans are rendered (``render``); the default is the plain T1.

    ``contrast``: None (the template's T1 intensities), a name of
    ``render.CONTRASTS`` or "random" (each subject its own, drawn from a stream
    of its own, so the anatomy and nuisance stay those of the T1 cohort of the
    same seed). ``slice_mm`` > 1 averages the 1 mm scan into slabs that thick
    along ``slice_axis`` (0-2; 2 is axial on the MNI grid) and stores them so.
    ``random_slices``: each subject its own thickness (whole voxels from one to
    ``MAX_RANDOM_SLICE_MM``) and axis, drawn from a stream of its own, as clinical
    scans come (``slices_for``); ``slice_mm`` and ``slice_axis`` are then ignored.
    """

    contrast: str | None = None
    slice_mm: int = 1
    slice_axis: int = 2
    random_slices: bool = False

    def __post_init__(self):
        if self.contrast not in (None, "random"):
            contrast_named(self.contrast)  # InputError naming the choices
        if not 1 <= self.slice_mm <= MAX_VOXEL_MM or self.slice_axis not in (0, 1, 2):
            # Checked here, not by the writer: it refused the first scan after the truth was written.
            raise InputError(f"slices must be 1-{MAX_VOXEL_MM:g} mm thick along axis 0, 1 or 2, got "
                             f"{self.slice_mm} mm, axis {self.slice_axis}")

    def slices_for(self, seed: int, index: int, resolution_mm: int) -> tuple[int, int]:
        """(slab thickness in mm, axis) of subject ``index``: the fixed ones, or with
        ``random_slices`` a draw of its own (thickness uniform over the whole
        numbers of voxels up to ``MAX_RANDOM_SLICE_MM``, axis uniform)."""
        if not self.random_slices:
            return max(self.slice_mm, resolution_mm), self.slice_axis
        rng = np.random.default_rng(np.random.SeedSequence([seed, 5, index]))
        voxels = int(rng.integers(1, MAX_RANDOM_SLICE_MM // resolution_mm + 1))
        return voxels * resolution_mm, int(rng.integers(3))

    @property
    def thick(self) -> bool:
        """Whether the table records each scan's slices (thick or random)."""
        return self.random_slices or self.slice_mm > 1

    def contrast_for(self, seed: int, index: int) -> Contrast | None:
        if self.contrast == "random":
            return random_contrast(np.random.default_rng(np.random.SeedSequence([seed, 4, index])))
        return None if self.contrast is None else contrast_named(self.contrast)


#: The thickest slab ``Rendering.random_slices`` draws (clinical scans: 1-6 mm).
MAX_RANDOM_SLICE_MM = 6


def _make_subject(args) -> tuple[int, dict[str, float], str, tuple[int, int]]:
    config, seed, index, participant, path, rendering = args
    contrast = rendering.contrast_for(seed, index)
    scan = ageing_model(config).synthesize(participant.brain_age, subject_rng(seed, index),
                                           region_ages=dict(participant.region_ages) or None, with_truth=True,
                                           contrast=contrast)
    # The subject's own truth first: a scan on disk always has its truth beside it.
    save_volume(Volume(scan.truth.astype(np.uint8), scan.affine), subject_truth_path(path.parent, participant.subject),
                overwrite=True)
    slice_mm, slice_axis = rendering.slices_for(seed, index, config.resolution_mm)
    if slice_mm > config.resolution_mm:
        factor = slice_mm // config.resolution_mm  # whole: checked by generate_cohort, drawn so
        data, affine = thick_slices(scan.data, scan.affine, slice_axis, factor)
        scan = replace(scan, data=np.rint(data).astype(np.int16), affine=affine)
    write_scan(scan, participant, path)
    name = "" if contrast is None else (f"{contrast.name} (CSF {contrast.csf:.2f}, GM {contrast.gm:.2f}, "
                                        f"WM {contrast.wm:.2f})" if contrast.name == "random" else contrast.name)
    return index, scan.volumes_ml, name, (slice_mm, slice_axis)


def subject_truth_path(cohort: str | os.PathLike, subject: str) -> Path:
    """Where a cohort keeps ``subject``'s own ground truth (the ageing union on its scan)."""
    return Path(cohort) / "ground_truth" / "subjects" / f"{subject}.nii.gz"


def write_scan(scan: "SyntheticScan", participant: Participant, path: Path) -> Path:
    """Save a synthetic scan with its ages in the header's description field."""
    note = f"synthetic age={participant.age:.2f} brain_age={participant.brain_age:.2f}"
    return save_volume(Volume(scan.data, scan.affine), path, overwrite=True, description=note)


def generate_cohort(
    out: str | os.PathLike,
    n: int,
    seed: int,
    config: CohortConfig = CohortConfig(),
    *,
    workers: int = 1,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    rendering: Rendering = Rendering(),
) -> Path:
    """Write ``n`` synthetic subjects, participants.csv and ground_truth/ under ``out``:
    the template-space masks (each region, their ``union``, the ``cortex``) and,
    in ground_truth/subjects/, each subject's own union on its scan.

    ``rendering`` renders the scans in another contrast or with thick slices
    (the same subjects, nuisance and truths as the T1 cohort of the same seed;
    participants.csv then has a ``contrast`` column, and ``slice_mm`` and
    ``slice_axis`` columns for thick or random slices).

    Returns the path of participants.csv. Refuses to write into a folder that
    already holds a cohort unless ``overwrite``. Files are written atomically
    and participants.csv last, so a cohort with a participants.csv is complete.
    """
    if n < 1:
        raise InputError(f"the cohort needs at least 1 subject, got {n}")
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if not rendering.random_slices and rendering.slice_mm > 1 and rendering.slice_mm % config.resolution_mm:
        raise InputError(f"{rendering.slice_mm} mm slices are not a whole number of {config.resolution_mm} mm voxels")
    out = Path(out)
    table = out / "participants.csv"
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if table.exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a cohort (participants.csv); pass --overwrite "
                              "(overwrite=True in Python) to replace it")
    out.mkdir(parents=True, exist_ok=True)
    model = ageing_model(config)  # built before forking: workers inherit it

    write_ground_truth(model, out / "ground_truth")
    (out / "ground_truth" / "subjects").mkdir(exist_ok=True)
    participants = draw_participants(n, seed, config)
    jobs = [(config, seed, i, p, out / f"{p.subject}.nii.gz", rendering) for i, p in enumerate(participants)]
    volumes: dict[int, dict[str, float]] = {}
    contrasts: dict[int, str] = {}
    slices: dict[int, tuple[int, int]] = {}
    # Forked workers inherit the ageing model built above (building it takes seconds).
    for done, (index, vol, contrast, slab) in enumerate(ordered_map(_make_subject, jobs, workers, inherit=True), 1):
        volumes[index], contrasts[index], slices[index] = vol, contrast, slab
        if progress:
            progress(done, n)

    region_names = [r.name for r in config.regions]
    with atomic_path(table) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        own_ages = [f"{name}_age" for name in region_names] if config.region_age_sd else []
        rendered = ["contrast"] if rendering.contrast else []
        sliced = ["slice_mm", "slice_axis"] if rendering.thick else []
        writer.writerow(["subject", "path", "age", "brain_age", "gap",
                         *[f"{name}_ml" for name in region_names], *own_ages, *rendered, *sliced])
        for i, p in enumerate(participants):
            writer.writerow([p.subject, f"{p.subject}.nii.gz", f"{p.age:.2f}", f"{p.brain_age:.2f}",
                             f"{p.brain_age - p.age:.2f}",
                             *[f"{volumes[i][name]:.3f}" for name in region_names],
                             *[f"{age:.2f}" for _, age in p.region_ages],
                             *([contrasts[i]] if rendered else []),
                             *([slices[i][0], "xyz"[slices[i][1]]] if sliced else [])])
    return table


def read_ground_truth(cohort: str | os.PathLike) -> dict[str, np.ndarray]:
    """A cohort's template-space truth masks by name (each region, ``union``, ``cortex``;
    ``write_ground_truth``), as boolean (X, Y, Z) arrays on the cohort's grid. Raises
    FileNotFoundError when the folder holds no cohort's truth."""
    folder = Path(cohort) / "ground_truth"
    masks = {p.name.split(".")[0]: load_volume(p).data.astype(bool) for p in sorted(folder.glob("*.nii.gz"))}
    if "union" not in masks:
        raise FileNotFoundError(f"{folder}: no ground-truth union.nii.gz (not a cohort made by napari-brainage synth)")
    return masks


def write_ground_truth(model: AgeingModel, folder: Path) -> dict[str, Path]:
    """One uint8 mask per ageing region, their union, and the cortex mask."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, mask in model.ground_truth().items():
        path = folder / f"{name}.nii.gz"
        save_volume(Volume(mask.astype(np.uint8), model.kit.affine), path, overwrite=True)
        written[name] = path
    return written
