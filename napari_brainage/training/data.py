"""The training cohort: a participants table read, each scan brought onto the model's
input grid as inference does, and the split by subject.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, OptionError
from ..io import load_volume
from ..model.card import (
    InputSpec,
)
from ..options import Preprocessing
from ..parallel import ordered_map
from ..participants import read_participants
from .loop import Progress


@dataclass
class Cohort:
    """A training cohort in memory: each subject's model input and age."""

    subjects: list[str]
    scans: np.ndarray        #: (N, X, Y, Z) float32, cropped and normalised model input
    ages: np.ndarray         #: chronological ages
    source: str
    #: (subject, why) of the participants whose scan could not be loaded; left out of the arrays
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: the tables read, absolute and resolved (the card keeps them for ``calibrate``)
    tables: tuple[str, ...] = ()


def load_cohort(csv_path: str | Path | Sequence[str | Path], spec: InputSpec = InputSpec(),
                limit: int | None = None, progress: Progress | None = None, preprocessing: str = "auto",
                workers: int = 1) -> Cohort:
    """Every participant's scan as model input, prepared exactly as inference prepares it.

    ``csv_path``: one participants CSV, or several (cohorts trained on together).
    Tables are read as inference reads them (``inference.collect_inputs``), with
    its rules: an age must be a finite number of years in ``inference.AGE_RANGE``;
    one scan named twice (the same row twice, the same table twice, or one file
    under two subject ids) is trained on once, under the first name, with a
    warning for a second name, so that it can never sit on both sides of the
    split; several files under one subject id are one person's scans (sessions,
    or one scan prepared two ways), kept together on one side of the split.

    ``preprocessing`` is inference's choice ("auto": scans already on an MNI grid are
    used as they are, others registered to the template; "register"; "none"), so a
    model trained on raw scans sees what it will be given. Registration takes a few
    seconds a scan: ``workers`` processes share the work. Scans that QC warns
    about are reported through ``progress`` and kept. A scan that fails QC or
    cannot be loaded or prepared at all, whatever the error, is reported through
    ``progress`` (starting with its path as the table gives it), listed in
    ``Cohort.failed`` and left out; only a cohort with no scan left is an error.
    ``Cohort.source`` names the tables by absolute, resolved path (the model card
    keeps it: ``calibrate`` reads it from any working folder).

    Raises
    ------
    InputError
        before any scan is loaded: a table without an 'age' column, an age that is
        missing, not a number or outside ``inference.AGE_RANGE``, one file with two
        ages, ``limit`` below 1 (``OptionError``) or an unknown
        ``preprocessing``; after loading, when no scan could be loaded.
    FileNotFoundError
        when a table does not exist.
    """
    if limit is not None and limit < 1:
        raise OptionError("limit", f"must be at least 1, got {limit}")
    tables = [csv_path] if isinstance(csv_path, (str, Path)) else list(csv_path)
    rows = training_inputs(tables)[:limit]

    Preprocessing.parse(preprocessing)  # before any worker starts
    scans = np.empty((len(rows), *spec.crop_shape), dtype=np.float32)
    jobs = [(row.path, spec, preprocessing) for row in rows]
    flagged, kept, failed, other_contrast = 0, [], [], []
    for i, (scan, warnings, error, contrast) in enumerate(ordered_map(_model_input, jobs, workers)):
        subject = rows[i].subject
        if contrast not in ("", "T1"):
            other_contrast.append(f"{subject} ({contrast})")
        if error:
            failed.append((subject, error))
            if progress:
                progress(f"{subject}: error: {error}")
        else:
            scans[len(kept)] = scan  # packed in input order: failed scans leave no gap
            kept.append(rows[i])
        if warnings:
            flagged += 1
            if progress:
                progress(f"{subject}: {'; '.join(warnings)}")
        if progress and ((i + 1) % 200 == 0 or i + 1 == len(rows)):
            progress(f"prepared {i + 1}/{len(rows)} scans" + (f", {len(failed)} failed" if failed else ""))
    if flagged and progress:
        progress(f"quality control flagged {flagged} of {len(rows)} scans (listed above); they are kept")
    if other_contrast and progress:  # on purpose for a model meant to read any contrast; a slip otherwise
        progress(f"quality control reads {len(other_contrast)} of {len(rows)} scans as not T1-weighted: "
                 f"{', '.join(other_contrast[:5])}{' ...' if len(other_contrast) > 5 else ''}; they are kept "
                 "(leave them out of the table for a T1-only model)")
    if not kept:
        raise InputError(f"none of the {len(rows)} scans could be loaded"
                         + (f" (first error: {failed[0][0]}: {failed[0][1]})" if failed else ""))
    if failed and progress:
        progress(f"{len(failed)} of {len(rows)} scans failed (listed above) and are left out: "
                 f"{', '.join(subject for subject, _ in failed)}")
    return Cohort([r.subject for r in kept], scans[:len(kept)], np.array([r.age for r in kept], dtype=float),
                  table_names(tables), failed, tuple(str(Path(t).resolve()) for t in tables))


def table_names(tables: Sequence[str | Path]) -> str:
    """The training tables as the model card records them: absolute, resolved paths
    joined by " + " (``calibrate`` finds them from any working folder)."""
    return " + ".join(str(Path(t).resolve()) for t in tables)


def tables_digest(tables: Sequence[str | Path]) -> str:
    """SHA-256 of the tables' bytes, in order: a resumed training must read the same rows."""
    digest = hashlib.sha256()
    for table in tables:
        digest.update(Path(table).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def training_inputs(tables: Sequence[str | Path]) -> list:
    """The scans of ``tables`` (``inference.ScanInput``: subject, path, age), read and
    de-duplicated as inference reads them, every one with an age; nothing is loaded.

    Raises
    ------
    InputError
        naming the table and subjects: no 'age' column, an age missing, not a
        number or outside ``inference.AGE_RANGE``, one file with two ages.
    FileNotFoundError
        when a table does not exist.
    """
    # Inference's own reading: one rule for ages and for what counts as one scan.
    from ..inference import _table_inputs, _unique

    found = []
    for table in tables:
        if "age" not in read_participants(table)[0]:
            raise InputError(f"{table}: training needs an 'age' column")
        table_inputs = _table_inputs(Path(table), None)
        _refuse_missing_ages(table, table_inputs)  # before any scan is loaded (registration takes minutes)
        found += table_inputs
    return _unique(found, one_scan_per_subject=False)  # a subject is a person: sessions stay together


def _refuse_missing_ages(table: str | Path, inputs: list) -> None:
    """``InputError`` naming the subjects of ``inputs`` without an age (a ``preprocess``
    table keeps subjects without an age; training cannot use them)."""
    bad = [item.subject for item in inputs if item.age is None]
    if bad:
        raise InputError(f"{table}: training needs every subject's age; none (or not a number) for "
                         f"{', '.join(repr(s) for s in bad[:5])}{' ...' if len(bad) > 5 else ''}: give their "
                         "ages or leave them out of the table")


def _model_input(job) -> tuple[np.ndarray | None, list[str], str, str]:
    """(model input, QC warnings, "", the contrast QC saw) of one scan, or (None, [], why it failed, "").

    Runs in worker processes: any failure of the scan comes back as words
    (``errors.describe_error``) starting with the path as the table gives it,
    instead of stopping the pool.
    """
    from ..errors import describe_error
    from ..preprocess import prepare
    from ..quality import ANY_CONTRAST

    path, spec, preprocessing = job
    try:
        # Training reads every contrast QC can name: what the model learns to read
        # is the training's business (``ModelCard.contrasts``), not QC's.
        prepared = prepare(load_volume(path), preprocessing, reads=ANY_CONTRAST)
        return prepared.model_input(spec), prepared.quality.warnings, "", prepared.quality.contrast
    except Exception as err:  # Ctrl-C (not an Exception) still stops the run
        return None, [], _from_table_path(describe_error(err), path), ""


def _from_table_path(message: str, path: str | Path) -> str:
    """``message`` as "<path>: <reason>", ``path`` as the table gives it: QC names
    only the file, and a symbolic link's messages name its target, so training's
    failure lines named scans three ways."""
    from ..cohort import from_path

    target = f"{Path(path).resolve()}: "
    if str(Path(path).resolve()) != str(path) and message.startswith(target):
        message = message[len(target):]
    return from_path(message, path)


def split_by_subject(subjects: list[str], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split: a subject's side depends only on its id and the seed."""
    if not 0 < val_fraction < 1:
        raise InputError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    keys = [hashlib.sha256(f"{seed}:{s}".encode()).digest() for s in subjects]
    order = np.argsort(keys, kind="stable")
    n_val = max(1, int(round(val_fraction * len(subjects))))
    if n_val >= len(subjects):
        raise InputError(f"{len(subjects)} subjects are too few to split off a validation set")
    return np.sort(order[n_val:]), np.sort(order[:n_val])
