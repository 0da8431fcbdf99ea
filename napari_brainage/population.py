"""Population maps: subjects' importance maps averaged in template space, and
atlas regions ranked by their share in the map's top 10 %.

Averaging is streamed (``stats.RunningStats``, one subject at a time), so
memory does not grow with the number of subjects; ``cohort.population_stats``
runs a cohort and returns a :class:`PopulationResult`, which writes the maps and
the region table (:class:`PopulationOutputs`).
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import Volume, atomic_path, save_volume
from .options import population_description
from .space.template import TemplateKit, load_template, mni_grid
from .stats import RunningStats, effect_size


def structure_name(label_name: str) -> str:
    """'Left_Hippocampus' -> 'Hippocampus': left and right are ranked together."""
    return re.sub(r"^(Left|Right)_", "", label_name)


#: Regions are ranked by their share in the map's top TOP_PERCENT % (of the brain).
TOP_PERCENT = 10.0


@dataclass(frozen=True)
class RegionScore:
    """An atlas structure (left and right together), its mean importance, its size in
    voxels and ``top_share``: the fraction (0-1) of its voxels among the map's top
    ``TOP_PERCENT`` % of the brain (``threshold.top_percent_weights``: exactly that
    many voxels, those tied at the cut sharing what is left).

    Why the share ranks regions and the mean does not: a noise-model map sits
    near 1 over the whole deep brain, so deep regions' means differ in the third
    decimal; the share in the top 10 % spreads them from 0 to 1 and reads
    plainly (0.10 = what a random map gives; 1 = the whole region is in the top).
    """

    region: str
    mean_importance: float
    voxels: int
    top_share: float = float("nan")


def rank_regions(importance: np.ndarray, kit: TemplateKit | None = None, min_voxels: int = 10,
                 top_percent: float = TOP_PERCENT) -> list[RegionScore]:
    """Atlas structures (left+right merged), ranked by their share in the map's top
    ``top_percent`` % of the brain, then by mean importance; highest first.

    ``importance``: a map on the template grid ``kit.shape``. Raises ``InputError``
    for a map on another grid.
    """
    from .threshold import top_percent_weights

    kit = kit or load_template(2)
    if importance.shape != kit.shape:
        raise InputError(f"the map {importance.shape} is not on the template grid {kit.shape}")
    # One pass over the brain: per-label sums and counts (fast enough to re-rank
    # a map whenever the user picks another layer).
    labels = kit.labels[kit.brain].astype(np.intp)
    sums = np.bincount(labels, weights=importance[kit.brain], minlength=256)
    counts = np.bincount(labels, minlength=256)
    in_top = np.bincount(labels, weights=top_percent_weights(importance[kit.brain], top_percent), minlength=256)
    groups: dict[str, list[int]] = {}
    for label, name in kit.label_names.items():
        groups.setdefault(structure_name(name), []).append(label)
    scores = []
    for region, members in groups.items():
        voxels = int(counts[members].sum())
        if voxels >= min_voxels:
            scores.append(RegionScore(region, float(sums[members].sum() / voxels), voxels,
                                      float(in_top[members].sum() / voxels)))
    return sorted(scores, key=lambda s: (s.top_share, s.mean_importance), reverse=True)


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
        raise InputError(f"unknown atlas region {region!r}")
    mask = np.isin(kit.labels, labels) & kit.brain
    values = np.where(mask, on_grid(volume, kit.shape, kit.affine), -np.inf)
    voxel = np.unravel_index(int(np.argmax(values)), values.shape)
    return (kit.affine @ np.array([*voxel, 1.0]))[:3]


#: The region table's column of ``RegionScore.top_share``.
SHARE_COLUMN = f"share_in_top{TOP_PERCENT:g}"


def read_region_table(path: str | Path) -> list[RegionScore]:
    """A table written by :func:`write_region_table`."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"region", "mean_importance", "voxels"} - set(rows[0] if rows else {})
    if missing:
        raise InputError(f"{path}: not a region table (missing columns {', '.join(sorted(missing))})")
    # Tables written before the share column was added read as NaN shares.
    return [RegionScore(row["region"], float(row["mean_importance"]), int(row["voxels"]),
                        float(row.get(SHARE_COLUMN) or "nan")) for row in rows]


def write_region_table(scores: Iterable[RegionScore], path: str | Path) -> Path:
    """Write the ranking as a CSV (rank, region, share_in_top10, mean_importance, voxels),
    atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "region", SHARE_COLUMN, "mean_importance", "voxels"])
        for rank, score in enumerate(scores, 1):
            writer.writerow([rank, score.region, f"{score.top_share:.4f}", f"{score.mean_importance:.5f}",
                             score.voxels])
    return path


def subject_maps(inputs, model, device, on_skip: Callable[[str, Exception], None] | None = None,
                 preprocessing: str = "auto", method: str = "noise"):
    """Importance maps of ``inputs`` (ScanInputs) on the full template grid, one
    at a time; a scan that cannot be read or mapped, whatever the error, is
    reported to ``on_skip`` (see ``errors.describe_error``) and skipped."""
    from .inference import importance_in_model_space
    from .io import load_volume
    from .space.grid import uncrop

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


# ------------------------------------------------------------------ a cohort's result
@dataclass(frozen=True)
class PopulationOutputs:
    """Where a population run writes: the mean map, the region table, a map per
    group, and (with exactly two groups) their difference and effect size."""

    mean: Path
    regions: Path
    groups: dict[str, Path]
    difference: Path | None = None
    effect_size: Path | None = None

    @classmethod
    def beside(cls, out: str | Path, regions: str | Path | None = None,
               group_names: Iterable[str] = ()) -> PopulationOutputs:
        """The files of a run writing its mean map to ``out`` (``.nii`` or ``.nii.gz``):
        ``<stem>_regions.csv`` (or ``regions``), ``<stem>_<group>.nii.gz`` (the group's
        part from :func:`group_file_parts`), ``<stem>_difference.nii.gz`` and
        ``<stem>_effect_size.nii.gz`` beside it.

        Raises ``InputError`` when two of the files would be one (compared as
        macOS and Windows do, ignoring case), e.g. ``regions`` naming a map:
        checked here, before any map is computed, not when the second one is written.
        """
        out = Path(out)
        stem = output_stem(out)
        parts = group_file_parts(group_names)
        two = len(parts) == 2
        outputs = cls(mean=out, regions=Path(regions) if regions else out.with_name(stem + "_regions.csv"),
                      groups={g: out.with_name(f"{stem}_{part}.nii.gz") for g, part in parts.items()},
                      difference=out.with_name(f"{stem}_difference.nii.gz") if two else None,
                      effect_size=out.with_name(f"{stem}_effect_size.nii.gz") if two else None)
        seen: dict[str, Path] = {}
        for path in outputs.all():
            other = seen.setdefault(_file_key(str(path.resolve())), path)
            if other is not path:
                raise InputError(f"{other} and {path} would be one file; choose another --out or --regions")
        return outputs

    def all(self) -> list[Path]:
        """Every file the run may write (to refuse existing ones before it starts)."""
        return [self.mean, self.regions, *self.groups.values(),
                *(p for p in (self.difference, self.effect_size) if p is not None)]


def output_stem(out: str | Path) -> str:
    """``pop`` of ``pop.nii.gz``: every output of a run writing ``out`` begins with it."""
    return Path(out).name.replace(".nii.gz", "").replace(".nii", "")


def safe_name(name: str) -> str:
    """A group value usable in a file name (NFC: macOS hands back "é" as e + accent)."""
    name = unicodedata.normalize("NFC", name)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "empty"


#: Group names whose maps would take the name of another output: with two groups,
#: a group "difference" and the difference map were one file, one replacing the other.
RESERVED_GROUP_PARTS = ("difference", "effect_size", "regions")
#: Longest group part of a map's file name, in bytes: the --out stem, "_", ".nii.gz" and
#: the temporary ".<name>.XXXXXXXX.partial.nii.gz" it is written as must fit 255 bytes.
MAX_GROUP_PART_BYTES = 80
_HASH_LENGTH = 8


def _file_key(name: str) -> str:
    """``name`` as a case-insensitive file system (macOS, Windows) compares it."""
    return unicodedata.normalize("NFKC", name).casefold()


def _group_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LENGTH]


def group_file_parts(names: Iterable[str]) -> dict[str, str]:
    """{group name: its part of the group map's file name}, in sorted order of names.

    ``safe_name``, with a short hash of the group name appended when that alone
    would not do: two groups' names alike when case is ignored ("A", "a": one file
    on macOS and Windows) or alike once made safe ("a/b", "a_b"); a name of
    another output ("difference", "effect_size", "regions"); a name longer than
    ``MAX_GROUP_PART_BYTES`` (cut first). The hash tells them apart; the map's
    description holds the group name itself.

    Raises ``InputError`` in the (unlikely) case that the names still clash.
    """
    names = sorted(set(names))
    safe = {g: safe_name(g) for g in names}
    uses: dict[str, int] = {}
    for part in safe.values():
        uses[_file_key(part)] = uses.get(_file_key(part), 0) + 1
    parts = {}
    for group, part in safe.items():
        key = _file_key(part)
        if uses[key] > 1 or key in RESERVED_GROUP_PARTS or len(part.encode()) > MAX_GROUP_PART_BYTES:
            keep = part.encode()[:MAX_GROUP_PART_BYTES - _HASH_LENGTH - 1].decode("utf-8", "ignore")
            part = f"{keep}_{_group_hash(group)}"
        parts[group] = part
    taken: dict[str, str] = {}
    for group, part in parts.items():  # a group literally named like another's hashed name
        other = taken.setdefault(_file_key(part), group)
        if other != group:
            raise InputError(f"groups {other!r} and {group!r} would be written to one file ({part}); "
                             "rename one in the table")
    return parts


#: More distinct values than this in a numeric --group-by column are refused (``group_values``).
MAX_NUMERIC_GROUPS = 10


def group_values(values: Iterable[str], column: str = "the column") -> dict[str, str]:
    """{value as written: its group}: the values themselves, or, when every value is
    a finite number, the numbers written one way ("3", "3.0" and " 3" are group "3";
    "0.50" is "0.5"): a numeric column's groups are its numbers, not their spellings.

    Raises ``InputError`` for a numeric column with more than
    ``MAX_NUMERIC_GROUPS`` distinct numbers: that is a measurement (age, a score),
    and a map per value (most of one subject) compares nothing; it is refused
    before any map is made rather than warned about after hours of them.
    """
    values = sorted(set(values))
    numbers = {}
    for value in values:
        try:
            number = float(value)
        except ValueError:
            return {value: value for value in values}  # a column of categories
        if not math.isfinite(number):
            return {value: value for value in values}
        numbers[value] = str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
    distinct = sorted(set(numbers.values()), key=float)
    if len(distinct) > MAX_NUMERIC_GROUPS:
        raise InputError(
            f"--group-by {column}: the column holds numbers with {len(distinct)} different values "
            f"({', '.join(distinct[:3])} ... {distinct[-1]}); each would be a group with a map of its own. "
            f"Group by categories: add a column that bins the numbers (e.g. age_band: young, old), or write "
            f"codes as text (e.g. site01) for more than {MAX_NUMERIC_GROUPS} groups")
    return numbers


@dataclass
class PopulationResult:
    """Per-group statistics of a cohort's importance maps on the 2 mm template grid
    (``stats.RunningStats``), the scans that failed as (subject, reason), and the
    importance method and model (``inference.map_model_id``). Groups are "" when the
    cohort is not grouped."""

    groups: dict[str, RunningStats]
    failed: list[tuple[str, str]]
    method: str = "noise"
    model: str = ""

    @cached_property
    def total(self) -> RunningStats:
        """Every group's maps together (merged once: the result is not changed after the run)."""
        shape = next(iter(self.groups.values())).mean.shape
        total = RunningStats(shape)
        for stats in self.groups.values():
            total.merge(stats)
        return total

    def mean_map(self) -> Volume:
        """The mean map of every mapped scan, on the 2 mm MNI grid."""
        return template_volume(self.total.mean)

    @property
    def description(self) -> str:
        """What made the mean map, for its file's header (``options.population_description``)."""
        return population_description(self.method, self.total.count, self.model)

    def save(self, outputs: PopulationOutputs, overwrite: bool = False,
             say: Callable[[str], None] = lambda message: None) -> list[RegionScore]:
        """Write the mean map, the region ranking, each group's map and, with two
        groups, their difference (second - first, in sorted order) and Cohen's d;
        ``say`` hears why a group map or the effect size could not be made.
        Returns the region ranking of the mean map."""
        save_volume(self.mean_map(), outputs.mean, overwrite=overwrite, description=self.description)
        scores = rank_regions(self.total.mean)
        write_region_table(scores, outputs.regions)
        for group, path in outputs.groups.items():
            if group in self.groups:  # the name in the header: the file name may be shortened or hashed
                save_volume(template_volume(self.groups[group].mean), path, overwrite=overwrite,
                            description=f"importance mean of group {group} (n={self.groups[group].count})")
            else:  # every scan of this group failed
                say(f"no map for group {group}: none of its scans could be mapped")
        counts = self.counts(outputs.groups)
        if outputs.difference is not None and min(counts.values()) >= 1:
            (first, a), (second, b) = ((g, self.groups[g]) for g in outputs.groups)
            save_volume(template_volume(b.mean - a.mean), outputs.difference, overwrite=overwrite,
                        description=f"importance difference: {second} - {first}")
            if min(counts.values()) >= 2:
                save_volume(template_volume(effect_size(a, b)), outputs.effect_size, overwrite=overwrite,
                            description=f"Cohen's d: {second} vs {first}")
        if outputs.effect_size is not None and min(counts.values()) < 2:
            say("no effect-size map: each group needs at least two mapped scans "
                f"({', '.join(f'{g}: {n}' for g, n in counts.items())})")
        return scores

    def counts(self, names: Iterable[str]) -> dict[str, int]:
        """Mapped scans per group name (0 for a group whose scans all failed)."""
        return {g: self.groups[g].count if g in self.groups else 0 for g in names}
