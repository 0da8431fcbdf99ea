"""The napari-brainage command, run as a user runs it (the installed console script)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import phantom, write_nifti

import napari_brainage
from napari_brainage.samples import sample_path

SCRIPT = Path(sys.executable).with_name("napari-brainage")


def run(*args, env=None, timeout=180):
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "napari_brainage.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_version():
    from napari_brainage.cli import PREPROCESSING_MODES
    from napari_brainage.preprocess import PREPROCESSING_MODES as CORE_MODES

    assert PREPROCESSING_MODES == CORE_MODES  # the CLI spells them out to start without SimpleITK
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"napari-brainage {napari_brainage.__version__}"


def test_info_describes_the_sample():
    result = run("info", str(sample_path("icbm152_t1_2mm")))
    assert result.returncode == 0, result.stderr
    assert "91 x 109 x 91 voxels" in result.stdout
    assert "orientation     LAS" in result.stdout


def test_info_reports_bad_files_without_traceback(tmp_path):
    fmri = write_nifti(tmp_path / "fmri.nii.gz", phantom((6, 6, 6, 4)), np.eye(4))
    result = run("info", str(fmri), str(sample_path("icbm152_t1_2mm")))
    assert result.returncode == 2
    assert "fmri.nii.gz: the image is 4D with 4 volumes" in result.stderr
    assert "Traceback" not in result.stderr
    assert "LAS" in result.stdout  # the good file after the bad one is still described


@pytest.mark.parametrize("args, message", [
    ((), "required: COMMAND"),
    (("bogus",), "invalid choice"),
    (("train",), "required: PART"),
    (("demo", "--screenshot", "view.jpg"), "must be a .png file"),
    (("demo", "--sample", "nope", "--screenshot", "x.png"), "unknown sample 'nope'"),
])
def test_bad_arguments_are_rejected_clearly(args, message, tmp_path):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def _png_pixels(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


@pytest.mark.skipif(not (os.environ.get("DISPLAY") or shutil.which("xvfb-run")),
                    reason="needs a display or xvfb-run")
def test_demo_renders_a_non_blank_screenshot(tmp_path):
    target = tmp_path / "demo.png"
    result = run("demo", "--screenshot", str(target))
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout
    pixels = _png_pixels(target)[..., :3].astype(float)
    height, width = pixels.shape[:2]
    assert width >= 1000 and height >= 600
    # The canvas (the window's centre) shows a brain: many mid-to-bright grey pixels.
    centre = pixels[height // 4: 3 * height // 4, width // 3: 2 * width // 3].mean(axis=2)
    assert (centre > 80).mean() > 0.2
    assert centre.std() > 30

    # A second run does not silently replace the user's file.
    again = run("demo", "--screenshot", str(target))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert list(tmp_path.iterdir()) == [target]  # and leaves no partial file behind


def test_preprocess_writes_registered_scans_and_a_qc_table_that_training_reads(tmp_path):
    """Raw scans in; scans on the 2 mm MNI grid and a participants CSV with QC out.
    A broken file is reported and left out; nothing is overwritten without asking;
    --resume redoes only what is missing."""
    import csv

    from test_preprocess import _moved

    from napari_brainage.io import load_volume, save_volume
    from napari_brainage.space.grid import to_mni_grid
    from napari_brainage.space.template import mni_grid
    from napari_brainage.training.data import load_cohort

    aligned = load_volume(sample_path("synthetic_age80"))
    save_volume(_moved(aligned)[0], tmp_path / "moved.nii.gz")
    shutil.copy(sample_path("synthetic_age80"), tmp_path / "aligned.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a scan")
    (tmp_path / "cohort.csv").write_text(
        "subject,path,age\nmoved,moved.nii.gz,80\naligned,aligned.nii.gz,80\nbroken,broken.nii.gz,70\n")
    out = tmp_path / "mni"

    first = run("preprocess", str(tmp_path / "cohort.csv"), "--out", str(out))
    assert first.returncode == 1, first.stderr              # one scan failed
    assert "broken: error:" in first.stderr and "Traceback" not in first.stderr
    with open(out / "participants.csv", newline="") as handle:
        rows = {row["subject"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"moved", "aligned"}
    assert rows["moved"]["registered"] == "1" and rows["aligned"]["registered"] == "0"
    # The moved copy is the 2 mm scan interpolated onto 1.5 mm voxels: QC names only that.
    assert rows["moved"]["qc"] in ("ok", "") or rows["moved"]["qc"].startswith("the image looks coarser")
    assert rows["moved"]["qc_status"] in ("pass", "warn") and float(rows["moved"]["template_correlation"]) > 0.85
    written = load_volume(out / "moved.nii.gz")
    shape, affine = mni_grid(2)
    assert written.shape == shape and np.allclose(written.affine, affine)
    reference = to_mni_grid(aligned, 2)
    brain = reference > 0
    assert np.corrcoef(written.data[brain], reference[brain])[0, 1] > 0.85

    cohort = load_cohort(out / "participants.csv")   # the table is a training CSV
    assert cohort.subjects == ["moved", "aligned"] and list(cohort.ages) == [80.0, 80.0]

    again = run("preprocess", str(tmp_path / "cohort.csv"), "--out", str(out))
    assert again.returncode == 2 and "already exists; pass --overwrite" in again.stderr
    (out / "moved.nii.gz").unlink()
    resumed = run("preprocess", str(tmp_path / "cohort.csv"), "--out", str(out), "--resume")
    assert "preprocess: resuming, 1 of 3 scans already done" in resumed.stderr
    assert (out / "moved.nii.gz").exists()
    with open(out / "participants.csv", newline="") as handle:
        assert [row["subject"] for row in csv.DictReader(handle)] == ["moved", "aligned"]


def _scan_lines(err: str, prefix: str) -> dict[str, str]:
    """{subject: message} of the "<prefix> <subject>: error: <message>" lines."""
    found = {}
    for line in err.splitlines():
        if line.startswith(prefix) and ": error: " in line:
            subject, message = line.split(": error: ", 1)
            found[subject.split()[-1]] = message
    return found


def test_explain_logs_any_failure_of_one_scan_and_maps_the_others(tiny_cohort, tiny_model, tmp_path, monkeypatch,
                                                                  capsys):
    from test_cohort import assert_readable_errors, mixed_scans

    from napari_brainage.cli import main

    folder = mixed_scans(tiny_cohort, tmp_path / "scans", monkeypatch)
    out = tmp_path / "maps"
    code = main(["explain", str(folder), "--out", str(out), "--model", str(tiny_model), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a_good_importance.nii.gz",
                                                                                    "d_good_importance.nii.gz"]
    assert_readable_errors(_scan_lines(captured.err, "explain"))
    import nibabel as nib  # each map says which QC verdict its scan had

    assert nib.load(out / "a_good_importance.nii.gz").header["descrip"].tobytes().startswith(
        b"napari-brainage importance (noise); QC ")
    assert "2 of 4 maps" in captured.out and "2 failed" in captured.out


def test_preprocess_logs_any_failure_of_one_scan_and_exports_the_others(tiny_cohort, tmp_path, monkeypatch,
                                                                       capsys):
    import csv

    from test_cohort import assert_readable_errors, mixed_scans

    from napari_brainage.cli import main

    folder = mixed_scans(tiny_cohort, tmp_path / "scans", monkeypatch)
    out = tmp_path / "mni"
    code = main(["preprocess", str(folder), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    with open(out / "participants.csv", newline="") as handle:
        assert [row["subject"] for row in csv.DictReader(handle)] == ["a_good", "d_good"]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a_good.nii.gz", "d_good.nii.gz"]
    assert_readable_errors(_scan_lines(captured.err, "preprocess"), folder)
    assert "2 of 4 scans" in captured.out and "2 failed" in captured.out
    # The failures keep their reasons in a table of their own.
    with open(out / "failed.csv", newline="") as handle:
        failures = {row["subject"]: row["error"] for row in csv.DictReader(handle)}
    assert failures == _scan_lines(captured.err, "preprocess")


def test_help_and_version_start_without_torch():
    """The CLI builds every command's parser without loading torch or SimpleITK (a
    command imports them when it runs): ``--help`` answers at once."""
    code = ("import sys\n"
            "from napari_brainage.cli import build_parser\n"
            "parser = build_parser()\n"
            "parser.format_help()\n"
            "for command in ('predict', 'explain', 'population', 'train', 'synth', 'preprocess'):\n"
            "    try:\n"
            "        parser.parse_args([command, '--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in ('torch', 'SimpleITK', 'napari', 'captum') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_a_users_error_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    from napari_brainage import cli
    from napari_brainage.errors import InputError

    def user_error(args, parser):
        raise InputError("scan.nii.gz: not a 3D volume")

    monkeypatch.setattr(cli.COMMANDS["info"], "run", user_error)
    assert cli.main(["info", "scan.nii.gz"]) == 2
    assert capsys.readouterr().err == "napari-brainage info: error: scan.nii.gz: not a 3D volume\n"

    def bug(args, parser):
        return {}["missing"]

    monkeypatch.setattr(cli.COMMANDS["info"], "run", bug)
    with pytest.raises(KeyError, match="missing"):  # not turned into "error: 'missing'", exit 2
        cli.main(["info", "scan.nii.gz"])


def test_outputs_go_into_a_folder_that_does_not_exist_yet(tiny_model, tmp_path):
    out = tmp_path / "new" / "results.csv"
    result = run("predict", str(sample_path("synthetic_age80")), "--out", str(out), "--model", str(tiny_model),
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert out.exists()


def test_ctrl_c_ends_with_one_line_and_the_resume_hint(cli_in_process, monkeypatch, tmp_path):
    """A Ctrl-C printed a SimpleITK traceback; the README says a traceback is a bug."""
    from napari_brainage.cli import COMMANDS

    def interrupted(args, parser):
        raise KeyboardInterrupt

    monkeypatch.setattr(COMMANDS["explain"], "run", interrupted)
    stopped = cli_in_process("explain", tmp_path, "--out", tmp_path / "maps")
    assert stopped.returncode == 130
    assert stopped.stderr.strip() == ("napari-brainage explain: interrupted; finished work is kept "
                                      "(run it again with --resume to go on)")
    assert "Traceback" not in stopped.stderr


def test_files_named_for_what_they_are_not_are_refused_with_the_fix(tmp_path, cli_in_process):
    import nibabel as nib
    import numpy as np

    from napari_brainage.io import VolumeError, load_volume

    plain = tmp_path / "scan.nii"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8), np.float32), np.eye(4)), plain)
    misnamed = tmp_path / "scan.nii.gz"
    plain.rename(misnamed)
    with pytest.raises(VolumeError, match=r"named \.gz but not gzip-compressed .*; rename it to scan\.nii$"):
        load_volume(misnamed)
    refused = cli_in_process("predict", misnamed, "--out", tmp_path / "res.nii.gz")
    assert refused.returncode == 2 and "predict writes a CSV table; give a name ending in .csv" in refused.stderr
    assert not (tmp_path / "res.nii.gz").exists()


# ------------------------------------------------------------------ a resumed run is one run (break report, 2026-12)
def _two_scans(tiny_cohort: Path, folder: Path) -> Path:
    """A folder holding the first two scans of the tiny cohort."""
    folder.mkdir()
    for source in sorted(tiny_cohort.parent.glob("sub-*.nii.gz"))[:2]:
        shutil.copy(source, folder / source.name)
    return folder


def test_resume_with_another_preprocess_or_model_is_refused(tiny_cohort, tiny_model, tmp_path, cli_in_process):
    """A resumed table mixed two preprocessing routes (ages 1.5 y apart for one scan), as a
    changed --interval-level or --method was already refused."""
    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    table = tmp_path / "ages.csv"
    model = ["--model", tiny_model, "--device", "cpu"]
    assert cli_in_process("predict", folder, "--out", table, "--preprocess", "none", *model).returncode == 0
    before = table.read_text()

    other_route = cli_in_process("predict", folder, "--out", table, "--resume", *model)
    assert other_route.returncode == 2
    assert "the earlier run used --preprocess none, not auto; resume with the same --preprocess" \
        in other_route.stderr
    other_model = cli_in_process("predict", folder, "--out", table, "--resume", "--preprocess", "none",
                                 "--device", "cpu")  # the bundled model
    assert other_model.returncode == 2 and "resume with the same --model" in other_model.stderr
    assert table.read_text() == before  # nothing redone, nothing appended
    same = cli_in_process("predict", folder, "--out", table, "--resume", "--preprocess", "none", *model)
    assert same.returncode == 0, same.stderr
    assert "0 of 0 scans this run" in same.stdout

    maps = tmp_path / "maps"  # explain's folder of maps: the same check
    assert cli_in_process("explain", folder, "--out", maps, "--preprocess", "none", *model).returncode == 0
    next(maps.glob("*_importance.nii.gz")).unlink()
    refused = cli_in_process("explain", folder, "--out", maps, "--resume", "--method", "saliency",
                             "--preprocess", "none", *model)
    assert refused.returncode == 2 and "used --method noise, not saliency" in refused.stderr
    assert len(list(maps.glob("*_importance.nii.gz"))) == 1


def test_population_resume_with_another_preprocess_or_model_is_refused(tiny_cohort, tiny_model, tmp_path,
                                                                       cli_in_process):
    from napari_brainage.cohort import iter_population
    from napari_brainage.inference import collect_inputs
    from napari_brainage.options import RunOptions

    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    out, checkpoint = tmp_path / "pop.nii.gz", tmp_path / ".pop.checkpoint.npz"
    # An interrupted run: its first chunk (one scan) checkpointed, then stopped.
    run = iter_population(collect_inputs([folder]), RunOptions(model_dir=tiny_model, device="cpu",
                                                               preprocessing="register"), checkpoint, chunk=1)
    next(run)
    run.close()
    assert checkpoint.exists()
    stamp = checkpoint.stat().st_mtime_ns

    other_route = cli_in_process("population", folder, "--out", out, "--resume", "--model", tiny_model,
                                 "--device", "cpu")
    assert other_route.returncode == 2
    assert f"{checkpoint}: the earlier run used --preprocess register, not auto" in other_route.stderr
    other_model = cli_in_process("population", folder, "--out", out, "--resume", "--preprocess", "register",
                                 "--device", "cpu")  # the bundled model
    assert other_model.returncode == 2
    assert "the earlier run used another model (predictor " in other_model.stderr
    assert "resume with the same --model" in other_model.stderr
    assert checkpoint.stat().st_mtime_ns == stamp and not out.exists()


def test_two_runs_cannot_write_one_output_at_once(tiny_cohort, tiny_model, tmp_path, cli_in_process):
    """The second run's atomic rewrites left the first appending to a deleted file: rows lost,
    both runs "done". A lock beside the output refuses the second; a dead run's lock is taken over."""
    import os

    from napari_brainage.cohort import output_lock

    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    model = ["--model", tiny_model, "--device", "cpu"]
    table, pop = tmp_path / "ages.csv", tmp_path / "pop.nii.gz"
    with output_lock(table), output_lock(pop):  # another run writing them (this process: alive)
        busy = cli_in_process("predict", folder, "--out", table, "--resume", *model)
        assert busy.returncode == 2
        assert f"{table} is being written by another run (pid {os.getpid()})" in busy.stderr
        busy = cli_in_process("population", folder, "--out", pop, *model)
        assert busy.returncode == 2 and f"{pop} is being written by another run" in busy.stderr
        assert not table.exists() and not (tmp_path / ".pop.checkpoint.npz").exists()

    # A run killed while it held the lock (its pid is gone): the next run goes on.
    code = (f"import os\nfrom napari_brainage.cohort import output_lock\n"
            f"held = output_lock({str(table)!r})\nheld.__enter__()\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    lock = tmp_path / ".ages.csv.lock"
    assert lock.exists()
    done = cli_in_process("predict", folder, "--out", table, *model)
    assert done.returncode == 0, done.stderr
    assert not lock.exists()  # released when the run ended


def test_a_missing_gpu_is_refused_before_any_output_is_made(tiny_cohort, tiny_model, tmp_path, cli_in_process,
                                                            monkeypatch):
    """It was said after predict had started its CSV (the next run: "already exists"), explain
    had made its folder and population had read every scan and left a checkpoint."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    out = tmp_path / "out"
    out.mkdir()
    model = ["--model", tiny_model, "--device", "gpu"]
    for command, target in [("predict", out / "ages.csv"), ("explain", out / "maps"), ("report", out / "reports"),
                            ("population", out / "pop.nii.gz")]:
        refused = cli_in_process(command, folder, "--out", target, *model)
        assert refused.returncode == 2, (command, refused.stderr)
        assert "--device gpu: torch sees no CUDA device on this machine; use --device cpu" in refused.stderr
        assert list(out.iterdir()) == [], command
    refused = cli_in_process("train", "predictor", "--data", tiny_cohort, "--out", out / "model", "--device", "gpu")
    assert refused.returncode == 2 and "torch sees no CUDA device" in refused.stderr
    assert list(out.iterdir()) == []
    # calibrate runs the model too (it had no --device at all).
    refused = cli_in_process("calibrate", folder, "--model", tiny_model, "--out", out / "cal.csv", "--device", "gpu")
    assert refused.returncode == 2 and "torch sees no CUDA device" in refused.stderr
    assert list(out.iterdir()) == []


def test_explain_out_must_be_a_folder(tiny_cohort, tmp_path, cli_in_process):
    scan = sorted(tiny_cohort.parent.glob("sub-*.nii.gz"))[0]
    existing = tmp_path / "old_importance.nii.gz"
    existing.write_bytes(b"a map")
    refused = cli_in_process("explain", scan, "--out", existing)
    assert refused.returncode == 2 and "Errno" not in refused.stderr
    assert f"{existing} is a file; --out needs a folder" in refused.stderr
    new = tmp_path / "newmap.nii.gz"
    refused = cli_in_process("explain", scan, "--out", new)
    assert refused.returncode == 2
    assert f"--out {new}: --out is a folder" in refused.stderr and str(tmp_path / "newmap") in refused.stderr
    assert not new.exists()  # no folder named like a map


def test_the_error_column_keeps_the_whole_message_from_the_path(tiny_cohort, tiny_model, tmp_path, monkeypatch,
                                                                  capsys):
    """It was cut at 300 characters ("... not a brai..."), and a QC failure began with the file's
    name where every other row began with its path."""
    from test_cohort import crash_on

    from napari_brainage.cli import main

    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    first, second = sorted(folder.iterdir())
    reason = "QC failed: " + "; ".join(f"reason number {i} of many, each said in words" for i in range(12))
    crash_on(monkeypatch, first.name, ValueError(f"{first.name}: {reason}"))  # as QualityError names it
    (folder / "broken.nii.gz").write_bytes(b"not a scan")
    out = tmp_path / "ages.csv"
    assert main(["predict", str(folder), "--out", str(out), "--model", str(tiny_model), "--device", "cpu"]) == 1
    import csv

    with open(out, newline="") as handle:
        errors = {row["subject"]: row["error"] for row in csv.DictReader(handle) if row["error"]}
    assert len(reason) > 400 and errors[first.name[:-7]] == f"{first}: {reason}"
    assert errors["broken"].startswith(f"{folder / 'broken.nii.gz'}: ")
    assert not any(error.endswith("...") for error in errors.values())
    assert f"{first}: {reason}" in capsys.readouterr().err  # the terminal line too
    assert second.name[:-7] not in errors


@pytest.mark.parametrize("command", ["predict", "explain", "population", "report", "preprocess"])
def test_resume_with_overwrite_is_refused_as_contradictory(command, tiny_cohort, tmp_path, cli_in_process):
    out = tmp_path / ("out.csv" if command == "predict" else "out.nii.gz" if command == "population" else "out")
    refused = cli_in_process(command, tiny_cohort, "--out", out, "--resume", "--overwrite")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"napari-brainage {command}: error: --resume continues the outputs of an "
                                      "interrupted run and --overwrite replaces them; choose one")
    assert list(tmp_path.iterdir()) == []


def test_info_on_a_folder_says_it_takes_files(tmp_path, cli_in_process):
    shutil.copy(sample_path("icbm152_t1_2mm"), tmp_path / "scan.nii.gz")
    result = cli_in_process("info", tmp_path)
    assert result.returncode == 2
    assert (f"{tmp_path}: a folder; info describes one scan file at a time (name the files, e.g. "
            f"{tmp_path / '*.nii.gz'}), while predict, explain and report take folders") in result.stderr
    assert "not a NIfTI" not in result.stderr


def test_a_warning_about_the_inputs_is_one_sentence_not_a_source_location(tmp_path):
    """One scan under two subject names is analysed once; the CLI says so in one
    line (Python's default format printed the module, line number and source line)."""
    import csv

    shutil.copy(sample_path("synthetic_age80"), tmp_path / "scan.nii.gz")
    (tmp_path / "table.csv").write_text("subject,path,age\nfirst,scan.nii.gz,80\nsecond,scan.nii.gz,80\n")
    result = run("predict", str(tmp_path / "table.csv"), "--out", str(tmp_path / "ages.csv"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "same scan" in line]
    assert len(lines) == 1 and lines[0].startswith("napari-brainage: warning: subjects 'first' and 'second'")
    assert "UserWarning" not in result.stderr and ".py:" not in result.stderr
    with open(tmp_path / "ages.csv", newline="") as handle:
        assert [row["subject"] for row in csv.DictReader(handle)] == ["first"]


def test_an_option_error_shows_the_commands_usage_and_every_argument_has_help():
    result = run("predict", "scan.nii.gz", "--out", "ages.csv", "--workers", "0")
    assert result.returncode == 2
    assert "usage: napari-brainage predict" in result.stderr and "--workers must be at least 1" in result.stderr
    for command in ("predict", "explain", "population", "preprocess"):
        text = run(command, "--help").stdout
        # argparse lists each argument then its help; none is left bare.
        for name in ("INPUT", "--out"):
            line = next(line for line in text.splitlines() if line.strip().startswith(name))
            assert len(line.split()) > 2 or "  " in line.strip(), (command, line)
    # Only the commands that report ages offer an interval level (explain listed one it never used).
    for command, offered in (("predict", True), ("report", True), ("explain", False), ("population", False)):
        assert ("--interval-level" in run(command, "--help").stdout) == offered, command


def test_ctrl_c_with_workers_stops_in_one_line_and_keeps_the_rows(tiny_cohort, tmp_path):
    """Ctrl-C reaches every process of the terminal's group. With --workers 2, Dask's
    workers, scheduler and nannies each logged the shutdown (cancelled tasks, "still
    alive after 4.0 seconds, killing", a CancelledError traceback) before our line."""
    import csv
    import os
    import signal
    import time

    out = tmp_path / "ages.csv"
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "napari_brainage.cli"]
    process = subprocess.Popen([*command, "predict", str(tiny_cohort), "--out", str(out), "--workers", "2",
                                "--preprocess", "register"], stderr=subprocess.PIPE, text=True,
                               start_new_session=True,  # a group of its own, as a terminal's job
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        lines.append(line)
        if line.startswith("predict 1/"):
            break
    os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, rest
    said = [line for line in rest.strip().splitlines() if line and not line.startswith("predict ")]  # progress
    assert said == ["napari-brainage predict: interrupted; finished work is kept (run it again with --resume "
                    "to go on)"], rest
    gone = time.monotonic() + 15  # no worker left behind (the resource tracker ends just after)
    while time.monotonic() < gone:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        left = subprocess.run(["ps", "-o", "pid,cmd", "-g", str(process.pid)], capture_output=True, text=True)
        pytest.fail(f"processes left in the group: {left.stdout}")
    with open(out, newline="") as handle:
        assert len(list(csv.DictReader(handle))) >= 1  # the finished row is kept


# ------------------------------------------------------------------ third break test (2027-01)
def test_preprocess_keeps_scans_with_long_or_non_ascii_names(tiny_cohort, tmp_path, cli_in_process):
    """B3: the file name went into the 80-byte ASCII descrip, which refused it: every
    ordinary BIDS name (sub-X_ses-Y_acq-Z_run-1_T1w) and every accented one failed."""
    import nibabel as nib

    source = sorted(tiny_cohort.parent.glob("sub-*.nii.gz"))[0]
    folder = tmp_path / "scans"
    folder.mkdir()
    names = ["sub-ADNI002S0295_ses-M00_acq-MPRAGE_run-1_T1w", "sujet_é"]
    for name in names:
        shutil.copy(source, folder / f"{name}.nii.gz")
    out = tmp_path / "mni"
    done = cli_in_process("preprocess", folder, "--out", out)
    assert done.returncode == 0, done.stderr
    assert "2 of 2 scans" in done.stdout
    descrip = nib.load(out / f"{names[1]}.nii.gz").header["descrip"].tobytes().rstrip(b"\0")
    assert descrip == b"napari-brainage preprocess (auto) of sujet_e.nii.gz"


def _predictor_only(tiny_model: Path, folder: Path) -> Path:
    """A copy of the tiny model without its noise model, as `train predictor` leaves one."""
    import json

    from napari_brainage.model.card import CARD_FILE, NOISE_MODEL_FILE, PREDICTOR_FILE

    folder.mkdir()
    shutil.copy(tiny_model / PREDICTOR_FILE, folder / PREDICTOR_FILE)
    card = json.loads((tiny_model / CARD_FILE).read_text())
    del card["weights"][NOISE_MODEL_FILE]
    (folder / CARD_FILE).write_text(json.dumps(card))
    return folder


def test_captum_methods_need_only_the_predictor_and_the_noise_method_is_refused_first(
        tiny_cohort, tiny_model, tmp_path, cli_in_process):
    """B8: explain, report and population refused --method saliency of a predictor-only model,
    and the noise method was refused only after explain had written its run record and
    population had read every scan and left a checkpoint."""
    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    model = ["--model", _predictor_only(tiny_model, tmp_path / "m1"), "--device", "cpu"]
    out = tmp_path / "out"
    out.mkdir()
    for command, target in [("explain", out / "maps"), ("report", out / "reports"),
                            ("population", out / "pop.nii.gz")]:
        refused = cli_in_process(command, folder, "--out", target, *model)
        assert refused.returncode == 2, (command, refused.stderr)
        assert "no noise model, which --method noise (the default) needs" in refused.stderr
        assert "--method saliency (or integrated_gradients" in refused.stderr
        assert list(out.iterdir()) == [], command
    maps = cli_in_process("explain", folder, "--out", out / "maps", "--method", "saliency", *model)
    assert maps.returncode == 0, maps.stderr
    assert len(list((out / "maps").glob("*_importance.nii.gz"))) == 2
    population = cli_in_process("population", folder, "--out", out / "pop.nii.gz", "--method", "gradcam", *model)
    assert population.returncode == 0, population.stderr
    assert (out / "pop.nii.gz").exists() and (out / "pop_regions.csv").exists()
    report = cli_in_process("report", folder, "--out", out / "reports", "--method", "saliency", *model)
    assert report.returncode == 0, report.stderr
    assert len(list((out / "reports").glob("*_report.pdf"))) == 2


def test_a_read_only_output_folder_is_named_in_one_sentence_before_any_work(tiny_cohort, tiny_model, tmp_path,
                                                                            cli_in_process, monkeypatch):
    """Each command said "[Errno 13] Permission denied: 'ro_out/.p.csv.lock'" (a lock file
    the user never asked for), some only after reading every scan. The tests run as root,
    which may write anywhere: the folder is made read-only through ``os.access``."""
    import os

    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    read_only = tmp_path / "ro_out"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != read_only and real_access(
        path, mode, **kw))
    model = ["--model", tiny_model, "--device", "cpu"]
    for command, target, options in [("predict", read_only / "ages.csv", model),
                                     ("explain", read_only / "maps", model),
                                     ("report", read_only / "reports", model),
                                     ("population", read_only / "pop.nii.gz", model),
                                     ("preprocess", read_only, [])]:
        refused = cli_in_process(command, folder, "--out", target, *options)
        assert refused.returncode == 2, (command, refused.stderr)
        assert refused.stderr == f"napari-brainage {command}: error: cannot write in {read_only}: permission denied\n"
        assert list(read_only.iterdir()) == [], command
    refused = cli_in_process("synth", read_only / "cohort", "--n", "1", "--seed", "5")
    assert refused.returncode == 2 and list(read_only.iterdir()) == []
    assert refused.stderr == f"napari-brainage synth: error: cannot write in {read_only}: permission denied\n"


def test_population_groups_with_awkward_names_are_written_apart_and_a_failed_end_is_finished_by_resume(
        tiny_cohort, tiny_model, tmp_path, cli_in_process, monkeypatch):
    """B4: a group "difference" and the difference map were one file; long or non-ASCII
    group names failed the run after every map was made (in the description, or the file
    name), leaving outputs that blocked --resume; "3" and "3.0" were two groups."""
    import csv

    import nibabel as nib

    from napari_brainage import cohort
    from napari_brainage.population import PopulationResult

    scans = sorted(tiny_cohort.parent.glob("sub-*.nii.gz"))[:4]
    long = "mild cognitive impairment, amyloid positive, APOE e4 carriers – Ünïcødé 控制 " * 4
    table = tmp_path / "grouped.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "path", "group", "site", "age"])
        for i, (scan, group) in enumerate(zip(scans, ["difference", long, "difference", long])):
            writer.writerow([scan.name[:8], scan, group, ["3", "3.0", "4", "4.00"][i], 60 + i * 0.5 + i % 2])
    model = ["--model", tiny_model, "--device", "cpu"]
    out = tmp_path / "pop" / "pop.nii.gz"

    # 12 ages, each a group of one: refused before any scan is read.
    measured = cli_in_process("population", tiny_cohort, "--out", out, "--group-by", "age", *model)
    assert measured.returncode == 2 and "--group-by 'age': the column holds numbers with 12 different" \
        in measured.stderr
    assert not out.parent.exists()
    sites = cli_in_process("population", table, "--out", tmp_path / "site.nii.gz", "--group-by", "site", *model)
    assert sites.returncode == 0, sites.stderr
    assert "groups 3 (n=2), 4 (n=2)" in sites.stdout
    each = cli_in_process("population", table, "--out", tmp_path / "each.nii.gz", "--group-by", "subject", *model)
    assert each.returncode == 0, each.stderr
    assert "warning: every one of the 4 groups of 'subject' holds one subject" in each.stderr

    # The run fails while writing its outputs (a full disk, say): the maps are kept.
    real_save = PopulationResult.save

    def full_disk(self, outputs, overwrite=False, say=print):
        real_save(self, outputs, overwrite=overwrite, say=say)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PopulationResult, "save", full_disk)
    failed = cli_in_process("population", table, "--out", out, "--group-by", "group", *model)
    assert failed.returncode == 2
    assert "No space left on device; the 4 maps are kept in" in failed.stderr
    assert "run the same command with --resume" in failed.stderr
    monkeypatch.setattr(PopulationResult, "save", real_save)
    monkeypatch.setattr(cohort, "map_chunk", lambda *a: pytest.fail("a map was made again"))
    finished = cli_in_process("population", table, "--out", out, "--group-by", "group", "--resume", *model)
    assert finished.returncode == 0, finished.stderr
    assert "groups " in finished.stdout and not (out.parent / ".pop.checkpoint.npz").exists()

    files = {path.name: nib.load(path).header["descrip"].tobytes().rstrip(b"\0").decode()
             for path in out.parent.glob("*.nii.gz")}
    assert len(files) == 5  # the mean, two groups, their difference and effect size: five files
    assert files["pop_difference.nii.gz"].startswith("importance difference: mild cognitive")
    group_file = next(name for name in files if name.startswith("pop_difference_"))
    assert files[group_file] == "importance mean of group difference (n=2)"
    long_file = next(name for name in files if name.startswith("pop_mild"))
    assert len(long_file.encode()) < 100 and files[long_file].startswith("importance mean of group mild")
    assert "-> pop_difference_" in finished.stderr  # the renamed group's file is named


# ------------------------------------------------------------------ fifth break test: a new user (2027-02)
def _left_in(folder: Path) -> list[str]:
    """Every name in ``folder`` (hidden ones too), sorted; [] when it does not exist."""
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_a_bad_or_unreachable_scheduler_is_refused_in_one_line_before_any_output(tiny_cohort, tmp_path,
                                                                                 cli_in_process):
    """A malformed address ended in Dask's "ValueError: missing port number", an unreachable
    scheduler in "OSError: Timed out trying to connect" (tracebacks), both after predict had
    started its table and record: the next plain run was refused ("already exists")."""
    import dask

    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    out = tmp_path / "out"
    out.mkdir()
    for address in ("notanaddress", "tcp://host", "tcp://host:port", "host:99999"):
        refused = cli_in_process("predict", folder, "--out", out / "ages.csv", "--scheduler", address)
        assert refused.returncode == 2, address
        assert f"error: argument --scheduler: {address!r} is not a scheduler address; give PROTOCOL://HOST:PORT" \
            in refused.stderr and "Traceback" not in refused.stderr
    both = cli_in_process("population", folder, "--out", out / "pop.nii.gz", "--workers", "2",
                          "--scheduler", "tcp://127.0.0.1:8786")
    assert both.returncode == 2 and "argument --scheduler: not allowed with argument --workers" in both.stderr
    assert "[--workers N | --scheduler ADDRESS]" in " ".join(run("calibrate", "--help").stdout.split())
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):  # nothing listens on port 1
        for command, target in [("predict", out / "ages.csv"), ("population", out / "pop.nii.gz")]:
            refused = cli_in_process(command, folder, "--out", target, "--scheduler", "tcp://127.0.0.1:1")
            assert refused.returncode == 2, refused.stderr
            assert refused.stderr.startswith(f"napari-brainage {command}: error: cannot reach the Dask scheduler at "
                                             "tcp://127.0.0.1:1: Timed out trying to connect")
            assert len(refused.stderr.splitlines()) == 1 and _left_in(out) == [], command
    assert cli_in_process("predict", folder, "--out", out / "ages.csv", "--preprocess", "none").returncode == 0


def _tampered(model: Path, folder: Path) -> Path:
    """A copy of ``model`` whose predictor has one byte changed (the card's checksum no longer holds)."""
    shutil.copytree(model, folder)
    data = bytearray((folder / "predictor.pt").read_bytes())
    data[1000] ^= 0xFF
    (folder / "predictor.pt").write_bytes(bytes(data))
    return folder


def test_a_tampered_model_is_refused_before_any_output_is_started(tiny_cohort, tiny_model, tmp_path,
                                                                  cli_in_process):
    """predict refused it (checksum mismatch) but left a header-only table and its record, so
    the next run with a good model was refused; population said "no scan could be mapped
    (first error: ...)" after trying every scan, and left a checkpoint."""
    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    tampered = _tampered(tiny_model, tmp_path / "tampered")
    out = tmp_path / "out"
    out.mkdir()
    for command, target in [("predict", out / "ages.csv"), ("population", out / "pop.nii.gz"),
                            ("explain", out / "maps"), ("report", out / "reports")]:
        refused = cli_in_process(command, folder, "--out", target, "--model", tampered, "--device", "cpu")
        assert refused.returncode == 2, (command, refused.stderr)
        assert refused.stderr == (f"napari-brainage {command}: error: {tampered / 'predictor.pt'}: checksum mismatch "
                                  f"(sha256 {refused.stderr.split('sha256 ')[1][:12]}..., card says "
                                  f"{refused.stderr.split('card says ')[1][:12]}...); the file is corrupt or was "
                                  "modified: refusing to load it\n"), command
        assert _left_in(out) == [], command
    refused = cli_in_process("calibrate", folder, "--model", tampered, "--out", out / "cal.csv")
    assert refused.returncode == 2 and "checksum mismatch" in refused.stderr and _left_in(out) == []
    good = cli_in_process("predict", folder, "--out", out / "ages.csv", "--model", tiny_model, "--device", "cpu",
                          "--preprocess", "none")
    assert good.returncode == 0, good.stderr


def test_population_keeps_an_earlier_runs_checkpoint_unless_told_and_says_when_it_resumes(
        tiny_cohort, tiny_model, tmp_path, cli_in_process):
    """Without --resume, population silently started again from 0 and replaced the checkpoint
    of an interrupted run; with it, it said nothing of what it kept, and counted it as done."""
    from napari_brainage.cohort import iter_population
    from napari_brainage.inference import collect_inputs
    from napari_brainage.options import RunOptions

    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    out, checkpoint = tmp_path / "pop.nii.gz", tmp_path / ".pop.checkpoint.npz"
    options = RunOptions(model_dir=tiny_model, device="cpu", preprocessing="none")
    run = iter_population(collect_inputs([folder]), options, checkpoint, chunk=1)
    next(run)  # one scan mapped and checkpointed, then stopped
    run.close()
    stamp = checkpoint.stat().st_mtime_ns
    model = ["--model", tiny_model, "--device", "cpu", "--preprocess", "none"]

    again = cli_in_process("population", folder, "--out", out, *model)
    assert again.returncode == 2
    assert again.stderr == (f"napari-brainage population: error: {checkpoint} holds the maps of an earlier run of "
                            f"{out} that did not finish; pass --resume to continue it or --overwrite to start "
                            "again\n")
    assert checkpoint.stat().st_mtime_ns == stamp and not out.exists()
    other = cli_in_process("population", folder, "--out", out, "--resume", "--model", tiny_model, "--device", "cpu")
    assert "the earlier run used --preprocess none, not auto" in other.stderr
    assert "(or start again with --overwrite)" in other.stderr

    resumed = cli_in_process("population", folder, "--out", out, "--resume", *model)
    assert resumed.returncode == 0, resumed.stderr
    assert "population: resuming, 1 of 2 scans already done" in resumed.stderr
    assert "population 1/1 " in resumed.stderr and "population 2/2" not in resumed.stderr
    assert "mean of 2 maps" in resumed.stdout and not checkpoint.exists()


def test_a_resumed_predict_says_what_it_keeps_and_counts_what_it_does(tiny_cohort, tiny_model, tmp_path,
                                                                      cli_in_process):
    """Redoing 1 of 2 scans showed "predict 2/2"; the refusals called a finished run "interrupted"."""
    import os

    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    table = tmp_path / "ages.csv"
    model = ["--model", tiny_model, "--device", "cpu", "--preprocess", "none"]
    assert cli_in_process("predict", folder, "--out", table, *model).returncode == 0
    scan = sorted(folder.iterdir())[0]
    later = table.stat().st_mtime_ns + 2_000_000_000
    os.utime(scan, ns=(later, later))  # replaced since its row
    resumed = cli_in_process("predict", folder, "--out", table, "--resume", *model)
    assert resumed.returncode == 0, resumed.stderr
    assert ("predict: resuming, 1 of 2 scans already done; 1 redone (their scan, path or age changed since)"
            in resumed.stderr)
    assert "predict 1/1 " in resumed.stderr and "predict 2/2" not in resumed.stderr
    refused = cli_in_process("predict", folder, "--out", table, "--resume", "--model", tiny_model, "--device", "cpu")
    assert refused.returncode == 2 and "the earlier run used --preprocess none, not auto" in refused.stderr
    assert "interrupted" not in refused.stderr


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_an_output_where_no_file_can_be_made_is_named_not_its_hidden_lock(tiny_cohort, tmp_path, cli_in_process):
    """--out /proc/x.csv said "[Errno 2] No such file or directory: '/proc/.x.csv.lock'"."""
    from napari_brainage.cohort import output_lock
    from napari_brainage.errors import InputError

    scan = sorted(tiny_cohort.parent.glob("sub-*.nii.gz"))[0]
    for command, target in [("predict", "/proc/x.csv"), ("population", "/proc/x.nii.gz"), ("report", "/proc/x"),
                            ("explain", "/proc/x")]:
        refused = cli_in_process(command, scan, "--out", target)
        assert refused.returncode == 2, command
        assert refused.stderr == (f"napari-brainage {command}: error: cannot write {target}: no file can be made "
                                  "in /proc (no such file or directory)\n")
    with pytest.raises(InputError, match=r"^cannot write /proc/y\.csv: no file can be made in /proc \(no such"):
        with output_lock("/proc/y.csv"):
            pass


def test_report_says_why_only_when_some_failed_and_redraws_an_earlier_png(tiny_cohort, tiny_model, tmp_path,
                                                                          cli_in_process):
    """"0 failed (no age: QC or unreadable)" explained failures there were none of; a resumed
    run without --png redid a changed scan's PDF and left its PNG of the old page."""
    import os

    folder = _two_scans(tiny_cohort, tmp_path / "scans")
    out = tmp_path / "reports"
    model = ["--model", tiny_model, "--device", "cpu", "--preprocess", "none", "--method", "saliency"]
    first = cli_in_process("report", folder, "--out", out, "--png", *model)
    assert first.returncode == 0, first.stderr
    assert "; 0 failed; summary:" in first.stdout
    scan, other = sorted(folder.iterdir())
    subject, kept = scan.name[:-7], other.name[:-7]
    pictures = {name: out / f"{name}_report.png" for name in (subject, kept)}
    stamps = {name: path.stat().st_mtime_ns for name, path in pictures.items()}
    later = max(stamps.values()) + 2_000_000_000
    os.utime(scan, ns=(later, later))  # replaced since its page
    resumed = cli_in_process("report", folder, "--out", out, "--resume", *model)
    assert resumed.returncode == 0, resumed.stderr
    assert "report: resuming, 1 of 2 scans already done; 1 redone" in resumed.stderr
    assert (f"report: redrew the PNG of 1 page(s) an earlier --png run had made, which showed the pages replaced "
            f"now: {subject}") in resumed.stderr
    assert pictures[subject].stat().st_mtime_ns != stamps[subject]
    assert pictures[kept].stat().st_mtime_ns == stamps[kept]
    (folder / "broken.nii.gz").write_bytes(b"not a scan")
    failed = cli_in_process("report", folder, "--out", out, "--resume", *model)
    assert failed.returncode == 1 and "; 1 failed (no age: QC or unreadable); summary:" in failed.stdout
