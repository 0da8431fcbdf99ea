"""`napari-brainage train` and `calibrate` refusing what would spoil a model: checked
before any scan is loaded (third break test: B1, B2, B5, B6, B7, B11 and its nitpicks)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_brainage.errors import InputError
from napari_brainage.model.card import CARD_FILE, PREDICTOR_FILE, ModelError, read_card
from napari_brainage.model.weights import sha256
from napari_brainage.training.config import TrainConfig
from napari_brainage.training.data import load_cohort, training_inputs

#: A tiny training run: 4 subjects, one epoch.
TINY = ["--limit", "4", "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.5"]


@pytest.fixture(scope="module")
def cli_model(tiny_cohort, tmp_path_factory) -> Path:
    """A predictor-only model trained by the CLI from another folder than the table's,
    the table named by a relative path (as the tester did: "coh/participants.csv")."""
    from napari_brainage.cli import main

    work = tmp_path_factory.mktemp("cli_model")
    shutil.copytree(tiny_cohort.parent, work / "coh")
    here = os.getcwd()
    os.chdir(work)
    try:
        assert main(["train", "predictor", "--data", "coh/participants.csv", "--out", "model", *TINY]) == 0
    finally:
        os.chdir(here)
    return work / "model"


def _copy(model: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    return folder


# ---------------------------------------------------------------- B1: another predictor in --out
def test_noise_model_into_a_folder_holding_another_predictor_is_refused_before_loading(
        cli_model, tiny_model, tiny_cohort, tmp_path, cli_in_process):
    """It copied --predictor's predictor over the folder's own and replaced its card, rc 0."""
    from napari_brainage.training.noise_model import check_noise_model_training

    folder = _copy(cli_model, tmp_path)
    before = sha256(folder / PREDICTOR_FILE)
    result = cli_in_process("train", "noise-model", "--data", tiny_cohort, "--predictor", tiny_model,
                            "--out", folder, *TINY)
    assert result.returncode == 2
    assert (f"{folder} holds another predictor (sha256 {before[:12]}...) than --predictor {tiny_model} "
            f"({sha256(tiny_model / PREDICTOR_FILE)[:12]}...)") in result.stderr
    assert "prepared" not in result.stdout
    assert sha256(folder / PREDICTOR_FILE) == before and read_card(folder).weights[PREDICTOR_FILE] == before
    # The same predictor (a copy, or the folder itself) is fine.
    same = tmp_path / "same"
    same.mkdir()
    shutil.copy2(tiny_model / PREDICTOR_FILE, same / PREDICTOR_FILE)
    check_noise_model_training(tiny_model, same, TrainConfig())
    check_noise_model_training(folder, folder, TrainConfig())


# ---------------------------------------------------------------- B2: a resume that changes the run
def test_a_resumed_predictor_training_must_keep_its_tables_and_recipe(cli_model, tiny_cohort, tmp_path,
                                                                      cli_in_process):
    """A resume with another --data recomputed the age scale from the new table: the same
    weights read a scan 12 y younger, and the card described a run that never was."""
    folder = _copy(cli_model, tmp_path)
    record = json.loads((folder / ".train-predictor.run.json").read_text())
    table = Path(record["data"].split(" (")[0])
    assert table.is_absolute() and table.name == "participants.csv"
    assert {"lr", "batch-size", "seed", "limit", "pool", "noise-augment"} <= set(record)

    def resume(*args):
        return cli_in_process("train", "predictor", "--out", folder, "--resume", "--epochs", "2", *args)

    # Two of the same subjects (the tester's tab/two.csv), beside the table: the same scans.
    lines = table.read_text().splitlines()
    (table.parent / "two.csv").write_text("\n".join(lines[:3]) + "\n")
    other = table.parent / "two.csv"
    base = ["--limit", "4", "--batch-size", "2", "--val-fraction", "0.5"]
    changed = resume("--data", other, *base)
    assert changed.returncode == 2 and "the interrupted run used --data " in changed.stderr
    assert "resume with the same --data" in changed.stderr and "prepared" not in changed.stdout
    for flag, value in [("--lr", "0.01"), ("--seed", "3"), ("--pool", "avg"), ("--noise-augment", "0.5")]:
        refused = resume("--data", table, *base, flag, value)
        assert refused.returncode == 2, flag
        assert f"the interrupted run used {flag} " in refused.stderr and f"not {value}" in refused.stderr
        assert "prepared" not in refused.stdout
    refused = resume("--data", table, "--limit", "3", "--batch-size", "2", "--val-fraction", "0.5")
    assert refused.returncode == 2 and "used --limit 4, not 3" in refused.stderr
    # The same table's path with other rows in it: its content is recorded too.
    copied = tmp_path / "coh"
    shutil.copytree(table.parent, copied)
    record["data"] = record["data"].replace(str(table), str(copied / table.name))
    (folder / ".train-predictor.run.json").write_text(json.dumps(record))
    lines = (copied / table.name).read_text().splitlines()
    (copied / table.name).write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    reordered = resume("--data", copied / table.name, *base)
    assert reordered.returncode == 2 and "content sha256" in reordered.stderr


def test_a_resumed_noise_model_training_must_keep_its_predictor_and_recipe(cli_model, tiny_cohort, tmp_path,
                                                                           cli_in_process):
    """--resume took another --predictor (copied over the folder's), --lam 0 --target age
    (losses of two objectives compared to pick the best epoch) and --lr 0.1 silently."""
    from napari_brainage.cli.train import _check_record, _record_name, _run_record
    from napari_brainage.cohort import keep_record
    from napari_brainage.cli import build_parser

    folder = _copy(cli_model, tmp_path)
    out = tmp_path / "noise"
    common = ["--data", str(tiny_cohort), "--out", str(out), *TINY]
    parser = build_parser()
    args = parser.parse_args(["train", "noise-model", "--predictor", str(folder), *common])
    out.mkdir()
    keep_record(out / _record_name("noise-model"), _run_record(args), False, out)  # as an interrupted run left it
    _check_record(out / _record_name("noise-model"), _run_record(args))  # the same run: fine
    for change, said in [(["--lam", "0"], "--lam 0.5, not 0"), (["--target", "age"], "--target prediction, not age"),
                         (["--max-sd", "1.0"], "--max-sd 0.3, not 1"), (["--lr", "0.1"], "not 0.1"),
                         (["--no-brain-only"], "--brain-only on, not off"),
                         (["--perturbation", "intensity"], "--perturbation noise, not intensity")]:
        changed = parser.parse_args(["train", "noise-model", "--predictor", str(folder), *common, *change])
        with pytest.raises(InputError, match=said):
            _check_record(out / _record_name("noise-model"), _run_record(changed))
    # Another predictor: by its checksum, wherever its folder is.
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    (other / PREDICTOR_FILE).write_bytes((other / PREDICTOR_FILE).read_bytes() + b"\0")
    changed = parser.parse_args(["train", "noise-model", "--predictor", str(other), *common])
    with pytest.raises(InputError, match="the interrupted run used --predictor sha256 "):
        _check_record(out / _record_name("noise-model"), _run_record(changed))
    # Through the command: refused before any scan is loaded.
    result = cli_in_process("train", "noise-model", "--predictor", folder, *common, "--resume", "--lam", "0")
    assert result.returncode == 2 and "--lam 0.5, not 0" in result.stderr and "prepared" not in result.stdout


def test_a_resume_asking_fewer_epochs_than_have_run_is_refused(cli_model, tmp_path, cli_in_process):
    """The card then said "epochs: 2, epochs_run: 3"."""
    import torch

    folder = _copy(cli_model, tmp_path)
    checkpoint = folder / "checkpoints" / "predictor_last.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["epoch"] = 3
    torch.save(state, checkpoint)
    record = json.loads((folder / ".train-predictor.run.json").read_text())
    table = record["data"].split(" (")[0]
    result = cli_in_process("train", "predictor", "--data", table, "--out", folder, "--resume", *TINY[:2],
                            "--epochs", "2", *TINY[4:])
    assert result.returncode == 2
    assert "has already run 3 epochs; resume with --epochs 3 or more, not 2" in result.stderr
    assert "prepared" not in result.stdout


# ---------------------------------------------------------------- B5: calibrate finds the training tables
def test_calibrate_from_another_folder_still_refuses_the_training_scans(cli_model, tmp_path, monkeypatch,
                                                                        cli_in_process):
    """The card kept "coh/participants.csv" as typed: from another folder, calibrate said a
    one-line note and calibrated on the training scans (intervals too narrow)."""
    from napari_brainage import uncertainty

    monkeypatch.setattr(uncertainty, "MIN_CALIBRATION_SUBJECTS", 4)
    folder = _copy(cli_model, tmp_path)
    trained = read_card(folder).training["predictor"]
    [table] = trained["tables"]
    assert Path(table).is_absolute() and Path(table).is_file() and trained["data"] == table
    monkeypatch.chdir(tmp_path)
    refused = cli_in_process("calibrate", table, "--model", folder)
    # The table's 12 (--limit 4 trained on 4 of them: the check counts the whole table).
    assert refused.returncode == 2 and "12 calibration subject(s) are scans the model was trained on" \
        in refused.stderr

    # A table no longer there: refused in words, unless the user says so.
    card = read_card(folder)
    card.training["predictor"]["tables"] = [str(tmp_path / "gone.csv")]
    (folder / CARD_FILE).write_text(card.to_json())
    refused = cli_in_process("calibrate", table, "--model", folder)
    assert refused.returncode == 2
    assert (f"cannot check for training scans among the calibration subjects: {tmp_path / 'gone.csv'} not found; "
            "put the training tables and scans back") in refused.stderr
    assert "--skip-training-check" in refused.stderr and "calibrate 1/" not in refused.stderr + refused.stdout
    assert read_card(folder).calibration is None


def test_calibrate_refuses_when_the_training_scans_are_gone_and_skips_only_when_told(tiny_model, tiny_cohort,
                                                                                    tmp_path, monkeypatch):
    from napari_brainage.cli.calibrate import _training_overlap
    from napari_brainage.inference import collect_inputs

    inputs = collect_inputs([tiny_cohort])
    card = read_card(tiny_model)
    assert len(_training_overlap(inputs, card)) == 12
    # The table is there but the scans it lists are not.
    moved = tmp_path / "participants.csv"
    shutil.copy2(tiny_cohort, moved)
    card.training["predictor"]["tables"] = [str(moved)]
    with pytest.raises(InputError, match=r"12 scan\(s\) of the training tables not found"):
        _training_overlap(inputs, card)
    # A card that names no table (the bundled model's describes its data in words).
    card.training["predictor"] = {"data": "synthetic cohort TRAIN (1,000 subjects)"}
    with pytest.raises(InputError, match="cannot check for training scans"):
        _training_overlap(inputs, card)
    assert _training_overlap(inputs, card, skip_check=True) == []


# ---------------------------------------------------------------- B6: ages and a diverging loss
@pytest.mark.parametrize("age", ["nan", "inf", "-3", "0", "150", "1e9"])
def test_training_refuses_ages_predict_refuses_before_loading_any_scan(age, tiny_cohort, tmp_path, cli_in_process):
    lines = tiny_cohort.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("age")] = age
    cells[header.index("path")] = str(tiny_cohort.parent / cells[header.index("path")])
    table = tmp_path / "ages.csv"
    table.write_text("\n".join([lines[0], ",".join(cells)]) + "\n")
    result = cli_in_process("train", "predictor", "--data", table, "--out", tmp_path / "m", "--epochs", "1")
    assert result.returncode == 2
    assert (f"subject {cells[header.index('subject')]!r} has age {age!r}; ages must lie between 0 and 120 years, "
            "both excluded") \
        in result.stderr
    assert "prepared" not in result.stdout and not (tmp_path / "m").exists()


def test_a_loss_that_becomes_nan_stops_training_at_once_in_words(tiny_cohort, tmp_path):
    """Every epoch trained on NaN, then "the model card lists no checksum for predictor.pt"."""
    from napari_brainage.training.loop import TrainingDiverged
    from napari_brainage.training.predictor import train_predictor

    cohort = load_cohort(tiny_cohort, limit=4)
    cohort.ages[:] = np.nan  # what a diverging network gives: the ages' rule keeps NaN out of tables
    messages: list[str] = []
    with pytest.raises(TrainingDiverged, match="the loss became NaN in epoch 1: lower --lr, check the ages"):
        train_predictor(cohort, tmp_path / "m", TrainConfig(epochs=3, batch_size=2, val_fraction=0.5),
                        progress=messages.append)
    assert not any("predictor epoch" in m for m in messages)
    assert not (tmp_path / "m" / PREDICTOR_FILE).exists()


# ---------------------------------------------------------------- B7: one scan, once
def test_training_reads_each_scan_once_as_inference_does(tiny_cohort, tmp_path):
    """Two copies of a table trained on 24 "scans" of 12, and one file under two ids sat in
    training and in validation."""
    lines = tiny_cohort.read_text().splitlines()
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]
    for row in rows:
        row[header.index("path")] = str(tiny_cohort.parent / row[header.index("path")])
    twice = training_inputs([tiny_cohort, tiny_cohort])
    assert [item.subject for item in twice] == [row[header.index("subject")] for row in rows]
    repeated = tmp_path / "repeat.csv"
    repeated.write_text("\n".join([lines[0], *(",".join(r) for r in rows), ",".join(rows[0])]) + "\n")
    assert len(training_inputs([repeated])) == 12
    renamed = [*rows[0]]
    renamed[header.index("subject")] = "dup"
    other_id = tmp_path / "other_id.csv"
    other_id.write_text("\n".join([lines[0], *(",".join(r) for r in rows), ",".join(renamed)]) + "\n")
    with pytest.warns(UserWarning, match=f"subjects {rows[0][0]!r} and 'dup' are the same scan"):
        kept = training_inputs([other_id])
    assert "dup" not in [item.subject for item in kept] and len(kept) == 12
    clash = [*rows[1]]
    clash[header.index("subject")] = rows[0][header.index("subject")]
    clashing = tmp_path / "clash.csv"
    clashing.write_text("\n".join([lines[0], ",".join(rows[0]), ",".join(clash)]) + "\n")
    # Two files under one id are one person's scans (sessions; the bundled model's
    # training gives each 1 mm subject as it is and registered): both kept, and
    # split_by_subject keeps them on one side.
    both = training_inputs([clashing])
    assert [item.subject for item in both] == [rows[0][0], rows[0][0]] and both[0].path != both[1].path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = load_cohort([other_id], limit=3)
    assert cohort.subjects == [r[header.index("subject")] for r in rows[:3]]


# ---------------------------------------------------------------- B11: --out and --init before loading
def test_out_and_init_are_checked_before_any_scan_is_loaded(cli_model, tiny_cohort, tmp_path, monkeypatch,
                                                            cli_in_process):
    common = ["--data", str(tiny_cohort), *TINY]
    existing = cli_in_process("train", "predictor", *common, "--out", cli_model)
    assert existing.returncode == 2 and "predictor.pt already exists" in existing.stderr
    assert "prepared" not in existing.stdout
    a_file = tmp_path / "file"
    a_file.write_text("")
    as_file = cli_in_process("train", "predictor", *common, "--out", a_file / "model")
    assert as_file.returncode == 2 and "is a file, not a folder" in as_file.stderr
    assert "prepared" not in as_file.stdout
    init = cli_in_process("train", "noise-model", *common, "--predictor", cli_model, "--init", cli_model,
                          "--out", tmp_path / "n")
    assert init.returncode == 2
    assert f"--init {cli_model}: this model folder has no noise model (noise_model.pt)" in init.stderr
    assert "prepared" not in init.stdout and not (tmp_path / "n").exists()
    # A folder that cannot be written in (tested by its permission bits; root may write anywhere).
    from napari_brainage.training import loop

    monkeypatch.setattr(loop.os, "access", lambda *_: False)
    read_only = cli_in_process("train", "predictor", *common, "--out", tmp_path / "ro" / "model")
    assert read_only.returncode == 2
    assert f"cannot write in {tmp_path} (permission denied); choose another --out" in read_only.stderr
    assert "prepared" not in read_only.stdout


# ---------------------------------------------------------------- nitpicks
@pytest.mark.parametrize("limit", ["0", "-1"])
def test_limit_below_one_is_refused(limit, tiny_cohort, tmp_path, cli_in_process):
    """--limit -1 dropped the last subject (rows[:-1]); 0 said "none of the 0 scans"."""
    result = cli_in_process("train", "predictor", "--data", tiny_cohort, "--out", tmp_path / "m", "--limit", limit)
    assert result.returncode == 2 and f"--limit must be at least 1, got {limit}" in result.stderr
    with pytest.raises(InputError, match="limit"):
        load_cohort(tiny_cohort, limit=int(limit))


def test_an_interrupted_training_is_named_as_such(cli_model, tmp_path):
    """predict said only "no model_card.json; not a napari-brainage model folder"."""
    folder = _copy(cli_model, tmp_path)
    (folder / CARD_FILE).unlink()
    with pytest.raises(ModelError, match="its predictor's training was interrupted .* --resume"):
        read_card(folder)


# ---------------------------------------------------------------- fifth break test
@pytest.mark.parametrize("part, args, said", [
    ("predictor", ["--epochs", "0"], "--epochs must be at least 1, got 0"),
    ("noise-model", ["--predictor", "m", "--min-sd", "0.5"],
     "--min-sd must be at least 0 and below --max-sd (0.3), got 0.5"),  # was "below max_sd"
    ("noise-model", ["--predictor", "m", "--max-sd", "0"], "--max-sd must be positive, got 0"),  # was "--min-sd"
])
def test_an_option_error_shows_the_parts_usage_and_names_flags(part, args, said, tiny_cohort, tmp_path,
                                                               cli_in_process):
    """They showed `usage: napari-brainage train [-h] PART ...` and named the field max_sd."""
    result = cli_in_process("train", part, "--data", tiny_cohort, "--out", tmp_path / "out", *args)
    assert result.returncode == 2
    assert f"usage: napari-brainage train {part} [-h]" in result.stderr
    assert f"napari-brainage train {part}: error: {said}" in result.stderr


def test_one_file_under_two_ids_is_warned_about_once(tiny_cohort, tmp_path, monkeypatch, cli_in_process):
    """The warning was printed twice: the tables are read for the early checks, then again to load."""
    from napari_brainage.training import predictor

    lines = tiny_cohort.read_text().splitlines()
    first = lines[1].split(",")
    renamed = ",".join(["dup", *first[1:]])
    table = tmp_path / "dup.csv"
    table.write_text("\n".join([lines[0], *(line.replace(",sub-", f",{tiny_cohort.parent}/sub-", 1)
                                              for line in (lines[1], lines[2], renamed))]) + "\n")

    def stop(*_, **__):
        raise InputError("stopped before training")

    monkeypatch.setattr(predictor, "train_predictor", stop)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every one given, none merged
        result = cli_in_process("train", "predictor", "--data", table, "--out", tmp_path / "m",
                                "--preprocess", "none", "--epochs", "1")
    assert "stopped before training" in result.stderr
    same = [w for w in caught if f"subjects {first[0]!r} and 'dup' are the same scan" in str(w.message)]
    assert len(same) == 1
