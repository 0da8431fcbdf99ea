"""Population maps: subjects' importance maps averaged in template space, and
atlas regions ranked by mean importance.

Averaging is streamed (a running sum and count, one subject at a time), so
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


class RunningMean:
    """Voxelwise mean of maps added one at a time, in constant memory."""

    def __init__(self, shape: tuple[int, ...]):
        self.total = np.zeros(shape, dtype=np.float64)
        self.count = 0

    def add(self, values: np.ndarray) -> None:
        if values.shape != self.total.shape:
            raise ValueError(f"map shape {values.shape} differs from {self.total.shape}")
        self.total += values
        self.count += 1

    @property
    def mean(self) -> np.ndarray:
        if not self.count:
            raise ValueError("no maps were added")
        return (self.total / self.count).astype(np.float32)


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
    groups: dict[str, list[int]] = {}
    for label, name in kit.label_names.items():
        groups.setdefault(structure_name(name), []).append(label)
    scores = []
    for region, labels in groups.items():
        mask = np.isin(kit.labels, labels) & kit.brain
        if mask.sum() >= min_voxels:
            scores.append(RegionScore(region, float(importance[mask].mean()), int(mask.sum())))
    return sorted(scores, key=lambda s: s.mean_importance, reverse=True)


def write_region_table(scores: Iterable[RegionScore], path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "region", "mean_importance", "voxels"])
        for rank, score in enumerate(scores, 1):
            writer.writerow([rank, score.region, f"{score.mean_importance:.5f}", score.voxels])
    return path


def population_map(maps: Iterable[np.ndarray], shape: tuple[int, ...],
                   progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """Mean of template-space maps streamed from ``maps``; returns (mean, count)."""
    running = RunningMean(shape)
    for values in maps:
        running.add(values)
        if progress:
            progress(running.count)
    return running.mean, running.count


def template_volume(data: np.ndarray, resolution_mm: int = 2) -> Volume:
    """A map on the MNI grid as a Volume, ready to save."""
    return Volume(data=data.astype(np.float32), affine=mni_grid(resolution_mm)[1])
