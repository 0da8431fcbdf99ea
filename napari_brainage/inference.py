"""Brain age and importance maps for scans: the calls the CLI and the widgets make.

Brain-age gap = predicted age - chronological age. Predictions regress toward
the training cohort's mean age (old subjects under-predicted, young ones
over-predicted), so we also report an age-bias-corrected gap, following
de Lange & Cole 2020 (NeuroImage: Clinical 26:102229): with
predicted = slope x age + intercept fitted on the model's validation subjects,

    corrected gap = predicted - (slope x age + intercept)
    corrected age = age + corrected gap

The uncorrected gap is always reported beside it; for group statistics, use age
as a covariate as well.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .io import READABLE_SUFFIXES, Volume, atomic_path, has_suffix, load_volume, strip_suffix
from .model.bundle import BrainAgeModel, bundled_model_dir, pick_device
from .model.card import NOISE_MODEL_FILE, PREDICTOR_FILE, ModelCard
from .preprocess import Prepared, prepare
from .quality import FAIL, T1_ONLY, WARN, QualityError, age_range
from .space.grid import uncrop
from .uncertainty import DEFAULT_LEVEL


@dataclass(frozen=True)
class ScanInput:
    """One scan of a run: its subject name, file, chronological age (years, if
    known) and group (see ``collect_inputs``)."""

    subject: str
    path: Path
    age: float | None = None
    group: str | None = None  #: the value of the CSV column chosen for group comparisons


@dataclass
class AgeResult:
    """One scan's brain age, gaps (years) and quality-control verdict: a row of a results CSV.

    ``qc_status`` is "pass", "warn" (age kept; ``qc`` says why to be careful)
    or "fail" (no age: ``predicted_age`` is None and ``error`` says why);
    ``preprocessing`` says how the scan reached the model's grid; ``contrast``
    the contrast QC saw (T1, T2, PD, FLAIR, other; empty when it could not tell).
    With a calibrated model (``ModelCard.calibration``), ``interval_low`` and
    ``interval_high`` bound the ``interval_level`` prediction interval (split
    conformal; ``uncertainty``) and ``gap_centile`` places the corrected gap
    among held-out subjects' (0-100).
    """

    subject: str
    path: str
    predicted_age: float | None = None
    interval_low: float | None = None
    interval_high: float | None = None
    interval_level: float | None = None
    age: float | None = None
    gap: float | None = None
    corrected_gap: float | None = None
    corrected_age: float | None = None
    gap_centile: float | None = None
    error: str = ""
    qc: str = ""  #: "ok", or every reason found (see quality.QualityReport)
    qc_status: str = ""  #: pass | warn | fail
    preprocessing: str = ""
    contrast: str = ""
    model: str = ""  #: the predictor's sha256, first 12 digits: which model made the age

    FIELDS = ("subject", "path", "predicted_age", "interval_low", "interval_high", "interval_level", "age", "gap",
              "corrected_gap", "corrected_age", "gap_centile", "qc_status", "error", "qc", "contrast", "preprocessing",
              "model")

    def __post_init__(self) -> None:
        if self.error and self.predicted_age is None:
            self.qc_status = FAIL  # no age, whatever the reason

    @classmethod
    def failed(cls, subject: str, path: str | Path, age: float | None, err: Exception) -> AgeResult:
        """The row of a scan that could not be analysed: no age, the reason in ``error``."""
        from .errors import describe_error

        result = cls(subject=subject, path=str(path), age=age, error=describe_error(err))
        if isinstance(err, QualityError):
            result.qc, result.preprocessing = err.quality.summary(), err.quality.route
            result.contrast = err.quality.contrast
        return result

    @classmethod
    def from_row(cls, row: dict[str, str]) -> AgeResult:
        """A results CSV row (``FIELDS``) read back; empty cells are None."""
        numbers = {"predicted_age", "interval_low", "interval_high", "interval_level", "age", "gap",
                   "corrected_gap", "corrected_age", "gap_centile"}
        values = {name: (float(row[name]) if row.get(name) else None) if name in numbers else row.get(name, "")
                  for name in cls.FIELDS}
        return cls(**values)

    def verdict(self) -> str:
        """One line for people: "QC pass", "QC warning: <reasons>" or "QC failed: <reason>"."""
        if self.qc_status == FAIL:
            if "QC failed" in self.error:
                return self.error
            # QC ran (its summary is kept) or the scan never reached it (unreadable, missing).
            return f"QC failed: {self.error}" if self.qc else f"not analysed: {self.error}"
        if self.qc_status == WARN:
            return f"QC warning: {self.qc}"
        return "QC pass"

    def row(self) -> list[str]:
        """The CSV cells, in ``FIELDS`` order (numbers to 3 decimals, None empty)."""
        def fmt(value):
            return "" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

        return [fmt(getattr(self, name)) for name in self.FIELDS]


def model_id(card: ModelCard) -> str:
    """The first 12 digits of the predictor's sha256: names the model in results tables."""
    return card.weights.get(PREDICTOR_FILE, "")[:12]


def map_model_id(card: ModelCard, method: str = "noise") -> str:
    """Names the model behind an importance map (``options.map_description``): the
    first 8 digits of the predictor's sha256 and, for the noise model's maps, "+"
    and its own (two noise models trained for one predictor make different maps)."""
    predictor = card.weights.get(PREDICTOR_FILE, "")[:8]
    noise = card.weights.get(NOISE_MODEL_FILE, "")[:8] if method == "noise" else ""
    return f"{predictor}+{noise}" if noise else predictor


def corrected_gap(predicted: float, age: float, card: ModelCard) -> float:
    """de Lange & Cole 2020: predicted - (slope x age + intercept)."""
    return float(predicted - (card.bias_slope * age + card.bias_intercept))


def load_model(folder: str | Path | None = None, device: str | torch.device | None = "auto",
               need_noise_model: bool = False) -> tuple[BrainAgeModel, torch.device]:
    """The model folder ``folder`` (default: the bundled model), on ``device``:
    "auto" (or None: a GPU when torch sees one), "cpu", "gpu"/"cuda", "cuda:N" or a
    ``torch.device``.

    Raises
    ------
    ModelError
        when the folder is not a model (no card), a weight file fails its checksum,
        the noise model is needed and missing, or the device is unknown or absent.
    """
    model = BrainAgeModel.load(folder or bundled_model_dir(), need_noise_model=need_noise_model)
    torch_device = torch_device_of(device)
    return model.to(torch_device), torch_device


def torch_device_of(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` (``model.bundle.pick_device`` for strings;
    None is "auto"), so the API takes what a user types as well as what torch makes."""
    return device if isinstance(device, torch.device) else pick_device("auto" if device is None else str(device))


def as_volume(scan) -> Volume:
    """``scan`` as a ``Volume``: a Volume as it is, a file path read (``io.load_volume``),
    a nibabel image taken with its affine and header. Raises ``InputError`` for
    anything else (a bare array has no geometry: wrap it as ``Volume(data, affine)``)."""
    if isinstance(scan, Volume):
        return scan
    if isinstance(scan, (str, os.PathLike)):
        return load_volume(scan)
    if hasattr(scan, "dataobj") and hasattr(scan, "affine") and scan.affine is not None:  # nibabel
        return Volume(np.asanyarray(scan.dataobj), np.asarray(scan.affine, dtype=float), scan.header)
    raise InputError(f"a scan must be a napari_brainage.io.Volume, a file path or a nibabel image, not "
                     f"{type(scan).__module__}.{type(scan).__name__}; wrap an array as Volume(data, affine)")


def prepare_input(volume: Volume | str | Path, preprocessing: str = "auto",
                  reads: tuple[str, ...] = T1_ONLY) -> Prepared:
    """The scan on the model's MNI grid (registered unless already in MNI space; see
    ``preprocess.prepare``), with its quality report and the way back to its grid;
    ``reads``: the contrasts the model reads (``ModelCard.contrasts``), others fail QC.
    ``volume``: anything ``as_volume`` takes."""
    return prepare(as_volume(volume), preprocessing, reads=reads)


def _same_scan(a: Volume, b: Volume) -> bool:
    """Whether two volumes hold the same voxels on the same grid (the same object, or equal copies)."""
    return a is b or (a.shape == b.shape and np.allclose(a.affine, b.affine)
                      and np.array_equal(np.asarray(a.data), np.asarray(b.data), equal_nan=True))


def _prepared_for(volume: Volume, prepared: Prepared | None, preprocessing: str, model: BrainAgeModel) -> Prepared:
    """``prepared`` when it was made from ``volume``, else ``volume`` prepared now.

    Raises ``InputError`` when ``prepared`` comes from another scan: its age or
    map would be reported under this scan's name.
    """
    if prepared is None:
        return prepare_input(volume, preprocessing, model.card.contrasts)
    if not _same_scan(prepared.source, volume):
        made_from = prepared.source.path or "another scan"
        raise InputError(f"prepared= was made from {made_from}, not from {volume.path or 'this scan'}: "
                         "prepare this scan with prepare_input(scan) or leave prepared out")
    return prepared


def check_age(age, subject: str = "scan") -> float | None:
    """``age`` as years: None stays None; ``InputError`` naming ``subject`` for
    anything but a finite number in ``AGE_RANGE`` (the one rule for ages from
    tables, the CLI, the widgets and the Python API)."""
    if age is None:
        return None
    if isinstance(age, bool):  # float(True) is 1.0: a flag passed by mistake read as a 1-year-old
        raise InputError(f"{subject} has age {age!r}, not a number of years")
    try:
        years = float(age)
    except (TypeError, ValueError):
        raise InputError(f"{subject} has age {age!r}, not a number of years") from None
    if not AGE_RANGE[0] < years < AGE_RANGE[1]:  # also false for nan
        raise InputError(f"{subject} has age {age!r}; ages must lie between {AGE_RANGE[0]:g} and "
                         f"{AGE_RANGE[1]:g} years, both excluded")
    return years


def _input_tensor(prepared: Prepared, model: BrainAgeModel, device: torch.device) -> tuple[np.ndarray, torch.Tensor]:
    x = prepared.model_input(model.card.input)
    return x, torch.from_numpy(x)[None, None].to(device)


@torch.no_grad()
def predict_age(volume: Volume, model: BrainAgeModel, device: torch.device | None = None,
                age: float | None = None, preprocessing: str = "auto",
                prepared: Prepared | None = None, interval_level: float = DEFAULT_LEVEL) -> AgeResult:
    """Predicted age (and gaps when ``age`` is known) for one scan, years.

    ``preprocessing``: "auto", "register" or "none" (``preprocess.PREPROCESSING_MODES``);
    pass ``prepared`` to reuse a registration. A calibrated model also gives the
    ``interval_level`` prediction interval and, with ``age``, the corrected gap's
    centile (``uncertainty.Calibration``). Raises ``quality.QualityError``
    when the scan fails quality control (no age is made), ``InputError`` for an
    age that is not a finite number of years in ``AGE_RANGE`` or a ``prepared``
    made from another scan.
    """
    volume, device = as_volume(volume), torch_device_of(device or "cpu")
    age = check_age(age, strip_suffix(volume.path) if volume.path else "the scan")
    prepared = _prepared_for(volume, prepared, preprocessing, model)
    _, x = _input_tensor(prepared, model, device)
    predicted = float(model.predictor(x).item() * model.card.age_sd + model.card.age_mean)
    outside = age_range(predicted, model.card.age_mean, model.card.age_sd)
    age_outside = [] if age is None else age_range(age, model.card.age_mean, model.card.age_sd, chronological=True)
    # A copy: the same preparation may be reused with another age (the widget).
    quality = replace(prepared.quality, warnings=[*prepared.quality.warnings,
                                                  *(w for w in outside + age_outside
                                                    if w not in prepared.quality.warnings)])
    result = AgeResult(subject=strip_suffix(volume.path) if volume.path else "scan",
                       path=str(volume.path or ""), predicted_age=predicted, age=age,
                       qc=quality.summary(), qc_status=quality.status, preprocessing=quality.route,
                       contrast=quality.contrast, model=model_id(model.card))
    if age is not None:
        result.gap = predicted - age
        result.corrected_gap = corrected_gap(predicted, age, model.card)
        result.corrected_age = age + result.corrected_gap
    return apply_calibration(result, model.card, interval_level)


def apply_calibration(result: AgeResult, card: ModelCard, level: float = DEFAULT_LEVEL) -> AgeResult:
    """``result``'s ``level`` prediction interval and gap centile from ``card``'s
    calibration, the rules in one place (``predict_age``, and ``calibrate --out``,
    whose rows were predicted before the calibration they must show): no interval
    where the level asks for more subjects than were calibrated, no centile for an
    age outside the model's ages; both empty without a calibration or an age."""
    result.interval_low = result.interval_high = result.interval_level = result.gap_centile = None
    calibration = card.calibration
    if calibration is None or result.predicted_age is None:
        return result
    low, high = calibration.interval(result.predicted_age, level)
    if np.isfinite(high):  # too few calibration subjects for this level: no interval
        result.interval_low, result.interval_high, result.interval_level = low, high, level
    if result.age is not None and not age_range(result.age, card.age_mean, card.age_sd, chronological=True):
        # No normative centile outside the ages it was made on.
        result.gap_centile = calibration.centile(result.corrected_gap, card.bias_slope, card.bias_intercept)
    return result


def importance_in_model_space(volume: Volume, model: BrainAgeModel, device: torch.device | None = None,
                              preprocessing: str = "auto", prepared: Prepared | None = None,
                              method: str = "noise") -> np.ndarray:
    """Importance on the cropped 2 mm MNI grid, in [0, 1]; 0 outside the scan (background).

    ``method``: "noise" (1 - the noise model's mask B) or a baseline from
    ``explain.METHODS`` (Captum).
    """
    from .explain import attribution

    volume = as_volume(volume)
    prepared = _prepared_for(volume, prepared, preprocessing, model)
    _, tensor = _input_tensor(prepared, model, torch_device_of(device or "cpu"))
    return attribution(tensor, model, method)


def importance_map(volume: Volume, model: BrainAgeModel, device: torch.device | None = None,
                   preprocessing: str = "auto", prepared: Prepared | None = None, method: str = "noise") -> Volume:
    """Voxel importance (default: 1 - noise mask) on the scan's own grid: float32 in
    [0, 1], the scan's shape and affine, and its header's geometry (codes, units;
    not its description or display range, which were the scan's: a map saved with
    the scan's cal_max of 3000 opened black in viewers that honour it)."""
    volume = as_volume(volume)
    prepared = _prepared_for(volume, prepared, preprocessing, model)
    model_map = importance_in_model_space(volume, model, device, prepared=prepared, method=method)
    data = prepared.to_scan_grid(uncrop(model_map, model.card.input))
    return Volume(data=np.clip(data, 0, 1).astype(np.float32), affine=volume.affine, header=_map_header(volume.header))


def _map_header(header):
    """The scan's header for a map of values in [0, 1]: geometry kept, its display
    range and description not (nibabel headers that have them; others as they are)."""
    if header is None or not hasattr(header, "copy"):
        return header
    header = header.copy()
    for key, value in (("cal_min", 0.0), ("cal_max", 1.0), ("descrip", b"")):
        try:
            header[key] = value
        except (KeyError, ValueError, TypeError):  # an MGH or other header without the field
            pass
    return header


# ------------------------------------------------------------------ inputs
def collect_inputs(inputs: Iterable[str | Path], group_by: str | None = None) -> list[ScanInput]:
    """Scans named by files, folders or participants tables (CSV, or BIDS-style TSV).

    A folder gives its NIfTI, MGZ and ANALYZE/NIfTI-pair files, hidden ones left out
    (macOS's ``._`` copies, editors' backups); a pair ``a.hdr`` + ``a.img`` is one
    scan, listed by its ``.hdr``; an ``.img`` without its ``.hdr`` is listed too, so
    that its row says what is missing. A BIDS folder (no scans at its top, ``sub-*``
    folders) gives its T1-weighted scans (``sub-*/[ses-*/]anat/*_T1w``), named by
    their file, with the ages of its ``sub-*/sub-*_sessions.tsv`` or else of its
    ``participants.tsv``. The same file named twice is one scan (a warning says which
    subject name it keeps when it was given two). ``group_by`` names a table column whose value becomes each scan's
    group (a blank cell: no group, ``ScanInput.group`` ""). Raises ``InputError``
    when two different files would get the same subject name (outputs are named by
    it), naming the files.
    """
    from .io import READABLE_FORMATS, pair_partner

    found: list[ScanInput] = []
    if isinstance(inputs, (str, os.PathLike)):  # one path, not a list: not read one character at a time
        inputs = [inputs]
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if has_suffix(p, READABLE_SUFFIXES) and not p.name.startswith(".")
                           and not (p.suffix.lower() == ".img" and pair_partner(p).exists()))
            if files:
                found += [ScanInput(strip_suffix(p), p) for p in files]
            elif any(path.glob("sub-*")):
                found += _bids_inputs(path)
            else:
                raise FileNotFoundError(f"{path}: no {READABLE_FORMATS} files in this folder (nor a BIDS "
                                        "dataset's sub-*/anat/*_T1w files)")
        elif path.suffix.lower() in (".csv", ".tsv"):
            found += _table_inputs(path, group_by)
        elif path.exists():
            found.append(ScanInput(strip_suffix(path), path))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if group_by is not None and any(item.group is None for item in found):
        raise InputError(f"grouping by {group_by!r} needs every input to come from a participants table")
    return _unique(found)


def _table_inputs(path: Path, group_by: str | None) -> list[ScanInput]:
    from .participants import read_participants

    found = []
    for row in read_participants(path):
        if group_by is not None and group_by not in row:
            raise InputError(f"{path}: no column {group_by!r} to group by")
        group = (row[group_by] or "").strip() if group_by is not None else None
        found.append(ScanInput(_subject_name(row["subject"], path), Path(row["path"]),
                               _age(row.get("age"), row["subject"], path), group))
    return found


def _bids_inputs(root: Path) -> list[ScanInput]:
    """The T1-weighted scans of a BIDS dataset, each with its session's age
    (``sub-<label>/sub-<label>_sessions.tsv``) or else its subject's (``participants.tsv``).
    Warns about subjects of ``participants.tsv`` without a T1w scan (left out), and
    about one subject-level age given to several sessions (their gaps would be wrong)."""
    from .participants import read_ages_by_participant, read_ages_by_session

    files = sorted(p for pattern in ("sub-*/anat/*_T1w.nii*", "sub-*/ses-*/anat/*_T1w.nii*")
                   for p in root.glob(pattern) if has_suffix(p, (".nii", ".nii.gz")) and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{root}: sub-* folders but no sub-*/[ses-*/]anat/*_T1w.nii[.gz] scans")
    participants = root / "participants.tsv"
    ages = read_ages_by_participant(participants)
    found, aged_by_subject = [], {}  # subject -> its sessions aged by participants.tsv
    for p in files:
        subject, *session = p.relative_to(root).parts[:-2]  # sub-01[/ses-1]/anat/<file>
        table = root / subject / f"{subject}_sessions.tsv"
        age = read_ages_by_session(table).get(session[0]) if session else None
        if not age:  # no session age: the subject's
            table, age = participants, ages.get(subject)
            if session and age:
                aged_by_subject.setdefault(subject, set()).add(session[0])
        found.append(ScanInput(strip_suffix(p), p, _age(age, strip_suffix(p), table)))
    scanned = {p.relative_to(root).parts[0] for p in files}
    _warn_bids_gaps(root, participants, sorted(set(ages) - scanned - {""}),
                    sorted(subject for subject, sessions in aged_by_subject.items() if len(sessions) > 1))
    return found


def _warn_bids_gaps(root: Path, participants: Path, unscanned: list[str], one_age: list[str]) -> None:
    """Say what a BIDS folder's scans leave out or may get wrong (nothing dropped silently)."""
    def listed(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    if unscanned:
        warnings.warn(f"{participants}: {len(unscanned)} subject(s) have no sub-*/[ses-*/]anat/*_T1w.nii[.gz] "
                      f"scan and are left out: {listed(unscanned)}", stacklevel=4)
    if one_age:
        warnings.warn(f"{root}: {listed(one_age)} have several sessions but one age (participants.tsv's) for all, "
                      "so the later sessions' gaps are wrong; give each session's age in "
                      "sub-<label>/sub-<label>_sessions.tsv (column 'age')", stacklevel=4)


def _unique(found: list[ScanInput], one_scan_per_subject: bool = True) -> list[ScanInput]:
    """``found`` with a file named twice kept once (under the name that comes with an
    age, a table's); ``InputError`` when one file is given two different ages, or,
    with ``one_scan_per_subject`` (inference: outputs are named by subject), two
    different files share a subject name. Training passes False: a subject is a
    person, and several scans of one person (sessions, or one scan prepared two
    ways) are kept together on one side of the split."""
    kept: dict[Path, ScanInput] = {}     # resolved file -> the entry it is kept as (in input order)
    file_of: dict[str, Path] = {}        # subject -> its first file
    clashes: dict[str, list[Path]] = {}
    for item in found:  # linear: cohorts are large
        where = Path(item.path).resolve()
        earlier = kept.get(where)
        if earlier is not None:  # this file again, under this name or another
            if None not in (earlier.age, item.age) and earlier.age != item.age:
                raise InputError(f"subjects {earlier.subject!r} ({earlier.age:g} y) and {item.subject!r} "
                                 f"({item.age:g} y) are the same scan ({item.path}) with different ages; "
                                 "one scan is one person")
            if earlier.age is not None or item.age is None:
                _warn_renamed(earlier, item)
                continue
            _warn_renamed(item, earlier)
            del kept[where]  # the table's entry, with its age, replaces the bare file
            if file_of.get(earlier.subject) == where:
                del file_of[earlier.subject]
        if one_scan_per_subject and item.subject in file_of:  # another file under this name
            clashes.setdefault(item.subject, [Path(kept[file_of[item.subject]].path)]).append(Path(item.path))
            continue
        kept[where] = item
        file_of.setdefault(item.subject, where)
    if clashes:
        listed = "; ".join(f"{name}: {', '.join(str(p) for p in paths[:3])}"
                           for name, paths in list(clashes.items())[:3])
        raise InputError(f"subject names appear more than once ({listed}); outputs are named by subject, so "
                         "rename the files or give a participants CSV with distinct subject names")
    return list(kept.values())


def _warn_renamed(kept: ScanInput, dropped: ScanInput) -> None:
    """Say which name a scan given under two subject names keeps (it is one person: one row)."""
    if kept.subject != dropped.subject:
        same = str(kept.path) if Path(kept.path) == Path(dropped.path) else f"{kept.path} and {dropped.path}"
        warnings.warn(f"subjects {kept.subject!r} and {dropped.subject!r} are the same scan ({same}); analysed "
                      f"once, as {kept.subject!r}", stacklevel=4)


#: The ages a participants table may give (years): what a brain-age model can mean.
AGE_RANGE = (0.0, 120.0)


def _age(text: str | None, subject: str, table: Path) -> float | None:
    """A participants table's age cell as years; None when empty; ``InputError``
    naming the subject for anything else than a finite age in ``AGE_RANGE`` (a
    "nan" age gave a gap of nan and a centile of 100)."""
    if text is None or not text.strip():
        return None
    return check_age(text.strip(), f"{table}: subject {subject!r}")


def _subject_name(subject: str, table: Path) -> str:
    """``subject`` when it can name output files (``<subject>_report.pdf``, maps);
    ``InputError`` for an empty name or one with path parts ("../x" wrote outside
    the output folder)."""
    name = subject.strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise InputError(f"{table}: subject name {subject!r} cannot name a file; use a plain name "
                         "(letters, digits, '-', '_', '.')")
    return name


def write_results(results: Iterable[AgeResult], path: str | Path) -> Path:
    """Write ``results`` as a CSV (``AgeResult.FIELDS``, ages in years to 3
    decimals), atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(AgeResult.FIELDS)
        for result in results:
            writer.writerow(result.row())
    return path
