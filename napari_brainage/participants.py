"""The participants table (BIDS ``participants.tsv``'s CSV cousin): one row per
scan with ``subject``, ``path`` (relative to the table) and optional ``age`` and
other columns (groups, covariates). Read as people write them: Excel's byte-order
mark and semicolons, TSV, any case of the column names.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import InputError


#: Column names read as ours, whatever their case: BIDS calls the subject ``participant_id``.
COLUMN_ALIASES = {"subject": "subject", "participant_id": "subject", "path": "path", "age": "age"}
#: Age cells that mean "not known" (R's NA, BIDS's n/a) and are read as empty, not refused.
MISSING_AGES = ("na", "n/a")


def _dialect(path: Path, header: str) -> str:
    """The table's delimiter: a tab for .tsv (BIDS); otherwise a comma, unless the
    header has none but has semicolons (Excel in many locales) or tabs."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    if "," not in header:
        for delimiter in (";", "\t"):
            if delimiter in header:
                return delimiter
    return ","


def read_participants(path: str | Path) -> list[dict]:
    """Rows of a participants table (needs ``subject``, ``path``; ``age`` for training).

    CSV (comma, or semicolons / tabs when the header has no comma) or BIDS-style TSV,
    with or without a byte-order mark (Excel's "CSV UTF-8"); the column names
    ``subject``, ``path`` and ``age`` in any case, ``participant_id`` for
    ``subject``; ``NA`` / ``n/a`` ages read as empty; decimal commas (``70,5``) in a
    semicolon-separated table. ``path`` is made absolute
    against the table's folder. Raises ``InputError`` naming what is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such participants file")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = handle.readline()
        handle.seek(0)
        delimiter = _dialect(path, header)
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = [(name or "").strip() for name in reader.fieldnames or []]
        renamed = [COLUMN_ALIASES.get(name.lower(), name) for name in columns]
        reader.fieldnames = renamed
        rows = list(reader)
    if not rows:
        raise InputError(f"{path}: no participants")
    missing = {"subject", "path"} - set(renamed)
    if missing:
        hint = (" (a BIDS participants.tsv names no scan files: give the BIDS folder instead)"
                if missing == {"path"} and "participant_id" in [c.lower() for c in columns] else
                f" (columns found: {', '.join(repr(c) for c in columns[:6])})")
        raise InputError(f"{path}: missing column(s) {sorted(missing)}{hint}")
    for row in rows:
        row["path"] = str((path.parent / row["path"]).resolve())
        if "age" in row:
            # Excel's semicolons come with decimal commas: 70,5
            row["age"] = _age_cell(row["age"], decimal_comma=delimiter == ";")
    return rows


def _age_cell(text: str | None, decimal_comma: bool = False) -> str:
    """An age cell as written, "" for an unknown age (empty, ``MISSING_AGES``)."""
    text = (text or "").strip()
    if text.lower() in MISSING_AGES:
        return ""
    return text.replace(",", ".") if decimal_comma else text


def age_from_participants(scan_path: str | None) -> float | None:
    """The ``age`` of ``scan_path`` in a participants.csv in the same folder, if any."""
    if not scan_path:
        return None
    scan = Path(scan_path)
    table = scan.parent / "participants.csv"
    if not table.is_file():
        return None
    try:
        for row in read_participants(table):
            if Path(row["path"]).resolve() == scan.resolve() and row.get("age"):
                return float(row["age"])
    except (OSError, ValueError, KeyError):
        return None  # an unreadable table just means no pre-filled age
    return None


def read_ages_by_participant(table: Path) -> dict[str, str]:
    """``participant_id`` -> age cell of a BIDS ``participants.tsv`` (empty when there is none)."""
    if not table.is_file():
        return {}
    with open(table, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {row.get("participant_id", ""): _age_cell(row.get("age")) for row in rows}
