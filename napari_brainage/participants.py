"""The participants table (BIDS ``participants.tsv``'s CSV cousin): one row per
scan with ``subject``, ``path`` (relative to the table) and optional ``age`` and
other columns (groups, covariates).
"""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import InputError


def read_participants(path: str | Path) -> list[dict]:
    """Rows of a participants CSV (needs ``subject``, ``path``; ``age`` for training)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such participants file")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise InputError(f"{path}: no participants")
    missing = {"subject", "path"} - set(rows[0])
    if missing:
        raise InputError(f"{path}: missing column(s) {sorted(missing)}")
    for row in rows:
        row["path"] = str((path.parent / row["path"]).resolve())
    return rows


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
