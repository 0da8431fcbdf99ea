"""Participants tables and BIDS folders as people have them (break-test report: #3, #4, #11, #16)."""

from __future__ import annotations

import re
import warnings

import pytest

from napari_brainage.errors import InputError
from napari_brainage.inference import collect_inputs
from napari_brainage.participants import read_participants


@pytest.fixture
def scans(tmp_path):
    """Two scan files beside the tables (their content is not read here)."""
    for name in ("sub-0001.nii.gz", "sub-0002.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def _table(folder, name, content: bytes):
    path = folder / name
    path.write_bytes(content)
    return path


def test_a_table_saved_by_excel_on_windows_is_read(scans):
    """cp1252 "CSV" (Excel on Windows) crashed with a UnicodeDecodeError traceback (#3)."""
    table = _table(scans, "latin1.csv", b"subject,path,age\r\nJos\xe9,sub-0001.nii.gz,57\r\n")
    assert [(s.subject, s.age) for s in collect_inputs([table])] == [("Jos\u00e9", 57.0)]
    # Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-separated.
    table = _table(scans, "unicode.tsv", "subject\tpath\tage\r\nZo\u00eb\tsub-0002.nii.gz\t61\r\n".encode("utf-16"))
    assert [(s.subject, s.age) for s in collect_inputs([table])] == [("Zo\u00eb", 61.0)]
    # UTF-8 with its byte-order mark is still UTF-8, not cp1252 mojibake.
    table = _table(scans, "utf8.csv", "\ufeffsubject,path,age\nJos\u00e9,sub-0001.nii.gz,57\n".encode())
    assert [s.subject for s in collect_inputs([table])] == ["Jos\u00e9"]


def test_a_table_in_no_known_encoding_is_refused_naming_line_and_byte(scans):
    # 0x81 is neither UTF-8 nor cp1252.
    table = _table(scans, "odd.csv", b"subject,path,age\nA,sub-0001.nii.gz,57\nB\x81,sub-0002.nii.gz,60\n")
    with pytest.raises(InputError, match=r"odd\.csv: not UTF-8 text \(byte 0x81 on line 3\); .*'CSV UTF-8'"):
        read_participants(table)
    table = _table(scans, "book.csv", b"PK\x03\x04\x00\x00\xff" * 20)  # an .xlsx renamed .csv
    with pytest.raises(InputError, match=r"book\.csv: not UTF-8 text \(byte 0x00 on line 1\)"):
        read_participants(table)


@pytest.mark.parametrize(("header", "named"), [("Subject,PATH,Age,Age", "'age' is given more than once ('Age', 'Age')"),
                                               ("subject,path,age,AGE", "'age' is given more than once ('age', 'AGE')"),
                                               ("subject,participant_id,path", "'subject' is given more than once"),
                                               ("subject,path,Path,age", "'path' is given more than once")])
def test_a_column_given_twice_is_refused_naming_it(scans, header, named):
    """``Age,Age`` silently used the last column's age (#11)."""
    table = _table(scans, "dup.csv", f"{header}\nA,sub-0001.nii.gz,57,99\n".encode())
    with pytest.raises(InputError, match=r"dup\.csv: the column " + re.escape(named)):
        collect_inputs([table])


def test_rows_longer_than_the_header_or_without_a_path_are_refused_naming_them(scans):
    """Extra cells were dropped silently; an empty path became the table's folder, "not a NIfTI" (#16)."""
    table = _table(scans, "long.csv", b"subject,path,age\nA,sub-0001.nii.gz,57\nB,sub-0002.nii.gz,61,extra\n")
    with pytest.raises(InputError, match=r"long\.csv: line 3 has more cells than the header has columns "
                                         r"\(extra: 'extra'\)"):
        collect_inputs([table])
    for content in (b"subject,path,age\nA,,57\n", b"subject,path,age\nA\n"):
        table = _table(scans, "no_path.csv", content)
        with pytest.raises(InputError, match=r"no_path\.csv: subject 'A' has no path \(line 2\)"):
            collect_inputs([table])
    # Empty trailing cells (spreadsheets write them) and a short row without an age are fine.
    table = _table(scans, "trailing.csv", b"subject,path,age\nA,sub-0001.nii.gz,57,,\nB,sub-0002.nii.gz\n")
    assert [(s.subject, s.age) for s in collect_inputs([table])] == [("A", 57.0), ("B", None)]


def test_one_scan_under_two_subject_names_says_which_name_it_keeps(scans):
    """One subject disappeared without a note (#16); one scan is still analysed once."""
    table = _table(scans, "two.csv", b"subject,path,age\nA,sub-0001.nii.gz,57\nB,sub-0001.nii.gz,57\n")
    with pytest.warns(UserWarning, match=r"subjects 'A' and 'B' are the same scan \(.*sub-0001\.nii\.gz\); "
                                         r"analysed once, as 'A'"):
        found = collect_inputs([table])
    assert [(s.subject, s.age) for s in found] == [("A", 57.0)]
    # A symbolic link is the same scan too; both names are given.
    (scans / "link.nii.gz").symlink_to(scans / "sub-0002.nii.gz")
    with pytest.warns(UserWarning, match=r"subjects 'sub-0002' and 'link' are the same scan \(.*sub-0002\.nii\.gz "
                                         r"and .*link\.nii\.gz\); analysed once, as 'sub-0002'"):
        assert [s.subject for s in collect_inputs([scans / "sub-0002.nii.gz", scans / "link.nii.gz"])] == ["sub-0002"]
    # The same file under the same name twice is no news.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(collect_inputs([scans / "sub-0001.nii.gz", scans / "sub-0001.nii.gz"])) == 1


def _bids(root, sessions_tsv: str | None):
    """sub-01 with ses-1 (two runs) and ses-2; sub-02 without sessions; sub-04 listed, unscanned."""
    for part in ("sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w", "sub-01/ses-1/anat/sub-01_ses-1_run-2_T1w",
                 "sub-01/ses-2/anat/sub-01_ses-2_T1w", "sub-02/anat/sub-02_T1w"):
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        (root / f"{part}.nii.gz").write_bytes(b"")
    (root / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t57\tM\nsub-02\t40\tF\n"
                                           "sub-04\t70\tM\n")
    if sessions_tsv is not None:
        (root / "sub-01" / "sub-01_sessions.tsv").write_text(sessions_tsv)
    return root


def test_bids_sessions_take_their_own_age(tmp_path):
    """Every session got participants.tsv's age: a 4-year-later session read 4 years 'older' (#4)."""
    bids = _bids(tmp_path / "bids", "session_id\tacq_time\tAGE\nses-1\t2020-01-01\t57\n2\tn/a\t61.5\n")
    with pytest.warns(UserWarning, match=r"participants\.tsv: 1 subject\(s\) have no .*T1w.* left out: sub-04"):
        found = collect_inputs([bids])
    assert [(s.subject, s.age) for s in found] == [
        ("sub-01_ses-1_run-1_T1w", 57.0), ("sub-01_ses-1_run-2_T1w", 57.0), ("sub-01_ses-2_T1w", 61.5),
        ("sub-02_T1w", 40.0)]
    bad = _bids(tmp_path / "bad", "session_id\tage\nses-1\t57\nses-2\tsixty\n")
    with pytest.raises(InputError, match=r"sub-01_sessions\.tsv: subject 'sub-01_ses-2_T1w' has age 'sixty'"):
        collect_inputs([bad])


def test_bids_sessions_without_their_age_take_the_subjects_and_say_so(tmp_path):
    no_ages = (None, "session_id\tacq_time\nses-1\t2020\nses-2\t2024\n", "session_id\tage\nses-1\tn/a\n")
    for i, sessions_tsv in enumerate(no_ages):
        bids = _bids(tmp_path / f"bids{i}", sessions_tsv)
        with pytest.warns(UserWarning) as caught:
            found = collect_inputs([bids])
        assert [s.age for s in found] == [57.0, 57.0, 57.0, 40.0]
        said = [str(w.message) for w in caught]
        assert any("sub-01 have several sessions but one age (participants.tsv's)" in m and
                   "_sessions.tsv (column 'age')" in m for m in said), said
