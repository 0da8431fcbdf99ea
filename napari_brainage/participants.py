"""The participants table (BIDS ``participants.tsv``'s CSV cousin): one row per
scan with ``subject``, ``path`` (relative to the table) and optional ``age`` and
other columns (groups, covariates). Read as people write them: Excel's byte-order
mark and semicolons, Windows Excel's cp1252 "CSV", TSV, any case of the column names.
"""

from __future__ import annotations

import csv
import io
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


def read_table_text(path: Path) -> str:
    """The text of a table file: UTF-8 (with or without Excel's byte-order mark), UTF-16
    with a byte-order mark (Excel's "Unicode Text"), else cp1252 (what Excel on Windows
    saves as plain "CSV"). ``InputError`` naming the line and byte when it is none of these."""
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as err:
            raise _not_text(path, data, err.start) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        first_bad = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
    if b"\0" in data:  # a binary file (a spreadsheet, an image), not a table saved as text
        raise _not_text(path, data, data.index(b"\0"))
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        raise _not_text(path, data, first_bad) from None


def _not_text(path: Path, data: bytes, at: int) -> InputError:
    line = data.count(b"\n", 0, at) + 1
    return InputError(f"{path}: not UTF-8 text (byte 0x{data[at]:02x} on line {line}); save it from your "
                      "spreadsheet as 'CSV UTF-8'")


def read_participants(path: str | Path) -> list[dict]:
    """Rows of a participants table (needs ``subject``, ``path``; ``age`` for training).

    CSV (comma, or semicolons / tabs when the header has no comma) or BIDS-style TSV,
    in UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8") or cp1252 (its
    plain "CSV" on Windows; see ``read_table_text``); the column names
    ``subject``, ``path`` and ``age`` in any case, ``participant_id`` for
    ``subject``; ``NA`` / ``n/a`` ages read as empty; decimal commas (``70,5``) in a
    semicolon-separated table. ``path`` is made absolute
    against the table's folder. Raises ``InputError`` naming what is missing, a
    column given twice, a row longer than the header or a row with no path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such participants file")
    text = read_table_text(path)
    delimiter = _dialect(path, next(iter(text.splitlines()), ""))
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = [(name or "").strip() for name in reader.fieldnames or []]
    renamed = [COLUMN_ALIASES.get(name.lower(), name) for name in columns]
    _refuse_duplicate_columns(path, columns, renamed)
    reader.fieldnames = renamed
    rows, lines = [], []
    for row in reader:
        rows.append(row)
        lines.append(reader.line_num)  # the row's last line (a quoted cell may span lines)
    if not rows:
        raise InputError(f"{path}: no participants")
    missing = {"subject", "path"} - set(renamed)
    if missing:
        hint = (" (a BIDS participants.tsv names no scan files: give the BIDS folder instead)"
                if missing == {"path"} and "participant_id" in [c.lower() for c in columns] else
                f" (columns found: {', '.join(repr(c) for c in columns[:6])})")
        raise InputError(f"{path}: missing column(s) {sorted(missing)}{hint}")
    for row, line in zip(rows, lines):
        _check_row(path, row, line)
        row["path"] = str((path.parent / row["path"]).resolve())
        if "age" in row:
            # Excel's semicolons come with decimal commas: 70,5
            row["age"] = _age_cell(row["age"], decimal_comma=delimiter == ";")
    return rows


def _refuse_duplicate_columns(path: Path, columns: list[str], renamed: list[str]) -> None:
    """``InputError`` when two columns mean one of ours (``Age,Age``, ``age,AGE``,
    ``subject,participant_id``): the csv module would silently keep the last one."""
    for ours in ("subject", "path", "age"):
        named = [column for column, meaning in zip(columns, renamed) if meaning == ours]
        if len(named) > 1:
            raise InputError(f"{path}: the column {ours!r} is given more than once "
                             f"({', '.join(repr(c) for c in named)}); keep one")


def _check_row(path: Path, row: dict, line: int) -> None:
    """``InputError`` naming the line for a row with more cells than the header has
    columns (a shifted row: its age may be another cell) or without a path (an empty
    cell read as the table's own folder)."""
    extra = [cell for cell in row.get(None) or [] if cell.strip()]  # trailing empty cells are harmless
    if extra:
        raise InputError(f"{path}: line {line} has more cells than the header has columns "
                         f"(extra: {', '.join(repr(c) for c in extra[:3])}); remove them or name their columns")
    if not (row.get("path") or "").strip():
        raise InputError(f"{path}: subject {(row.get('subject') or '').strip()!r} has no path (line {line}); "
                         "give its scan file")


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
    return _bids_ages(table, "participant_id")


def read_ages_by_session(table: Path) -> dict[str, str]:
    """``session_id`` (``ses-1``) -> age cell of a BIDS ``sub-<label>_sessions.tsv``
    (empty when there is none); {} without the file."""
    ages = _bids_ages(table, "session_id")
    # BIDS writes the ids with their prefix; a bare "1" means ses-1 all the same.
    return {(key if key.startswith("ses-") else f"ses-{key}"): age for key, age in ages.items()}


def _bids_ages(table: Path, id_column: str) -> dict[str, str]:
    """``id_column`` -> age cell of a BIDS TSV (column names in any case; every cell
    empty without an ``age`` column); {} without the file."""
    if not table.is_file():
        return {}
    reader = csv.DictReader(io.StringIO(read_table_text(table), newline=""), delimiter="\t")
    reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames or []]
    return {(row.get(id_column) or "").strip(): _age_cell(row.get("age")) for row in reader}
