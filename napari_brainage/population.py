"""Population maps: subjects' importance maps averaged in template space, and
atlas regions ranked by mean importance.

Averaging is streamed (``cohort.RunningStats``, one subject at a time), so
memory does not grow with the number of subjects.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import Volume, atomic_path
from .template import TemplateKit, load_template, mni_grid


def structure_name(label_name: str) -> str:
    """'Left_Hippocampus' -> 'Hippocampus': left and right are ranked together."""
    return re.sub(r"^(Left|Right)_", "", label_name)


@dataclass(frozen=True)
class RegionScore:
    region: str
    mean_importance: float
    voxels: int


def rank_regions(importance: np.ndarray, kit: TemplateKit | None = None, min_voxels: int = 10) -> list[RegionScore]:
    """Atlas structures (left+right merged) by mean importance, highest first."""
    kit = kit or load_template(2)
    if importance.shape != kit.shape:
        raise ValueError(f"the map {importance.shape} is not on the template grid {kit.shape}")
    # One pass over the brain: per-label sums and counts (fast enough to re-rank
    # a map whenever the user picks another layer).
    labels = kit.labels[kit.brain].astype(np.intp)
    sums = np.bincount(labels, weights=importance[kit.brain], minlength=256)
    counts = np.bincount(labels, minlength=256)
    groups: dict[str, list[int]] = {}
    for label, name in kit.label_names.items():
        groups.setdefault(structure_name(name), []).append(label)
    scores = []
    for region, members in groups.items():
        voxels = int(counts[members].sum())
        if voxels >= min_voxels:
            scores.append(RegionScore(region, float(sums[members].sum() / voxels), voxels))
    return sorted(scores, key=lambda s: s.mean_importance, reverse=True)


def rank_regions_of(volume: Volume, resolution_mm: int = 2) -> list[RegionScore]:
    """:func:`rank_regions` for a map on any grid aligned to MNI space (e.g. a
    subject's map on its scan's grid), taken onto the template grid first."""
    from .compare import on_grid

    shape, affine = mni_grid(resolution_mm)
    return rank_regions(on_grid(volume, shape, affine), load_template(resolution_mm))


def region_peak(volume: Volume, region: str, resolution_mm: int = 2) -> np.ndarray:
    """RAS millimetres of ``volume``'s most important voxel inside atlas ``region``
    (left and right merged), for "go to region" navigation."""
    from .compare import on_grid

    kit = load_template(resolution_mm)
    labels = [label for label, name in kit.label_names.items() if structure_name(name) == region]
    if not labels:
        raise KeyError(f"unknown atlas region {region!r}")
    mask = np.isin(kit.labels, labels) & kit.brain
    values = np.where(mask, on_grid(volume, kit.shape, kit.affine), -np.inf)
    voxel = np.unravel_index(int(np.argmax(values)), values.shape)
    return (kit.affine @ np.array([*voxel, 1.0]))[:3]


def read_region_table(path: str | Path) -> list[RegionScore]:
    """A table written by :func:`write_region_table`."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"region", "mean_importance", "voxels"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: not a region table (missing columns {', '.join(sorted(missing))})")
    return [RegionScore(row["region"], float(row["mean_importance"]), int(row["voxels"])) for row in rows]


def write_region_table(scores: Iterable[RegionScore], path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "region", "mean_importance", "voxels"])
        for rank, score in enumerate(scores, 1):
            writer.writerow([rank, score.region, f"{score.mean_importance:.5f}", score.voxels])
    return path


def subject_maps(inputs, model, device, on_skip: Callable[[str, Exception], None] | None = None,
                 preprocessing: str = "auto", method: str = "noise"):
    """Importance maps of ``inputs`` (ScanInputs) on the full template grid, one
    at a time; a scan that cannot be read or mapped, whatever the error, is
    reported to ``on_skip`` (see ``errors.describe_error``) and skipped."""
    from .inference import importance_in_model_space
    from .io import load_volume
    from .spaces import uncrop

    for item in inputs:
        try:
            yield uncrop(importance_in_model_space(load_volume(item.path), model, device, preprocessing,
                                                   method=method), model.card.input)
        except Exception as err:  # one scan's failure never stops the others (Ctrl-C still does)
            if on_skip:
                on_skip(item.subject, err)


def template_volume(data: np.ndarray, resolution_mm: int = 2) -> Volume:
    """A map on the MNI grid as a Volume, ready to save."""
    return Volume(data=data.astype(np.float32), affine=mni_grid(resolution_mm)[1])
