"""Cohort runs: streamed statistics, group maps, interruption and resume, Dask."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from napari_brainage.cohort import population_stats
from napari_brainage.inference import collect_inputs, importance_in_model_space, load_model
from napari_brainage.io import load_volume
from napari_brainage.options import RunOptions
from napari_brainage.space.grid import uncrop
from napari_brainage.stats import RunningStats, effect_size

SCRIPT = Path(sys.executable).with_name("napari-brainage")


def test_running_stats_match_numpy_and_merge_exactly():
    rng = np.random.default_rng(0)
    maps = rng.normal(3.0, 2.0, size=(9, 4, 5, 6))
    whole = RunningStats((4, 5, 6))
    for m in maps:
        whole.add(m)
    np.testing.assert_allclose(whole.mean, maps.mean(0), atol=1e-12)
    np.testing.assert_allclose(whole.variance, maps.var(0, ddof=1), atol=1e-12)
    a, b = RunningStats((4, 5, 6)), RunningStats((4, 5, 6))
    for m in maps[:4]:
        a.add(m)
    for m in maps[4:]:
        b.add(m)
    merged = RunningStats.from_state(a.state()).merge(b)
    np.testing.assert_allclose(merged.mean, whole.mean, atol=1e-12)
    np.testing.assert_allclose(merged.variance, whole.variance, atol=1e-12)
    assert merged.count == 9
    d = effect_size(a, b)
    pooled = np.sqrt((3 * maps[:4].var(0, ddof=1) + 4 * maps[4:].var(0, ddof=1)) / 7)
    np.testing.assert_allclose(d, (maps[4:].mean(0) - maps[:4].mean(0)) / pooled, atol=1e-10)
    with pytest.raises(ValueError, match="shape"):
        whole.add(np.zeros((2, 2, 2)))


def _run(*args, **kwargs):
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "napari_brainage.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, **kwargs)


def _start(*args):
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "napari_brainage.cli"]
    return subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {row["subject"]: row for row in csv.DictReader(handle)}


def _kill_when(process, condition, timeout=180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the run finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_predict_killed_midway_resumes_to_the_same_results(tiny_cohort, tiny_model, tmp_path):
    model = ["--model", str(tiny_model), "--device", "cpu"]
    reference = tmp_path / "reference.csv"
    assert _run("predict", str(tiny_cohort), "--out", str(reference), *model).returncode == 0

    out = tmp_path / "results.csv"
    process = _start("predict", str(tiny_cohort), "--out", str(out), *model)
    _kill_when(process, lambda: out.exists() and out.read_text().count("\n") >= 4)
    finished = _rows(out)
    assert 3 <= len(finished) < 12
    with open(out, "a") as handle:
        handle.write("sub-9999,/half/written")  # a row torn by the kill

    again = _run("predict", str(tiny_cohort), "--out", str(out), *model)
    assert again.returncode == 2 and "already exists" in again.stderr  # no silent overwrite
    resumed = _run("predict", str(tiny_cohort), "--out", str(out), "--resume", *model)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{12 - len(finished)} of {12 - len(finished)} scans this run" in resumed.stdout
    got, expected = _rows(out), _rows(reference)
    assert sorted(got) == sorted(expected)  # the torn row is gone, nobody is missing or doubled
    for subject, row in expected.items():
        assert float(got[subject]["predicted_age"]) == pytest.approx(float(row["predicted_age"]), abs=1e-3)
        assert got[subject]["qc"] == row["qc"]


def test_population_killed_midway_resumes_and_groups(tiny_cohort, tiny_model, tmp_path):
    # A CSV with a grouping column: younger and older than 62.
    grouped = tmp_path / "grouped.csv"
    with open(tiny_cohort, newline="") as source, open(grouped, "w", newline="") as target:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(target, fieldnames=[*reader.fieldnames, "band"])
        writer.writeheader()
        for row in reader:
            row["path"] = str((tiny_cohort.parent / row["path"]).resolve())
            writer.writerow({**row, "band": "old" if float(row["age"]) >= 62 else "young"})
    model = ["--model", str(tiny_model), "--device", "cpu"]

    out = tmp_path / "pop.nii.gz"
    checkpoint = tmp_path / ".pop.checkpoint.npz"
    process = _start("population", str(grouped), "--out", str(out), "--group-by", "band", *model)
    _kill_when(process, checkpoint.exists)
    assert not out.exists()
    resumed = _run("population", str(grouped), "--out", str(out), "--group-by", "band", "--resume", *model)
    assert resumed.returncode == 0, resumed.stderr
    assert not checkpoint.exists()

    loaded, device = load_model(tiny_model, "cpu", need_noise_model=True)
    inputs = collect_inputs([grouped], group_by="band")
    maps = {item.subject: uncrop(importance_in_model_space(load_volume(item.path), loaded, device),
                                 loaded.card.input) for item in inputs}
    by_group = {g: np.array([maps[i.subject] for i in inputs if i.group == g]) for g in ("old", "young")}
    np.testing.assert_allclose(load_volume(out).data, np.mean(list(maps.values()), axis=0), atol=1e-5)
    for group, stack in by_group.items():
        np.testing.assert_allclose(load_volume(tmp_path / f"pop_{group}.nii.gz").data, stack.mean(0), atol=1e-5)
    difference = load_volume(tmp_path / "pop_difference.nii.gz").data  # young - old (sorted names)
    np.testing.assert_allclose(difference, by_group["young"].mean(0) - by_group["old"].mean(0), atol=1e-5)
    d = load_volume(tmp_path / "pop_effect_size.nii.gz").data
    assert np.isfinite(d).all() and np.abs(d).max() > 0
    assert "groups old (n=" in resumed.stdout


def test_population_resume_refuses_subjects_regrouped_since_the_checkpoint(tiny_cohort, tiny_model, tmp_path):
    """A resume with another --group-by summed subjects already in one group's mean into
    another's (third break test): each subject's group is kept in the checkpoint."""
    from napari_brainage.cohort import iter_population
    from napari_brainage.errors import InputError

    inputs = collect_inputs([tiny_cohort])
    options = RunOptions(model_dir=tiny_model, device="cpu")
    checkpoint = tmp_path / "pop.npz"
    run = iter_population(inputs, options, checkpoint, chunk=4)
    assert next(run).done == 4  # interrupted after the first chunk
    run.close()
    regrouped = [replace(item, group="old" if i % 2 else "young") for i, item in enumerate(inputs)]
    with pytest.raises(InputError, match=r"other groups: 4 subject\(s\) changed group .*with --overwrite"):
        population_stats(regrouped, options, checkpoint, resume=True, chunk=4)
    # The same groups resume and finish.
    assert population_stats(inputs, options, checkpoint, resume=True, chunk=4).groups[""].count == 12


def test_population_on_a_two_worker_local_cluster(tiny_cohort, tiny_model, tmp_path):
    pytest.importorskip("distributed")
    inputs = collect_inputs([tiny_cohort])
    options = RunOptions(model_dir=tiny_model, device="cpu")
    local = population_stats(inputs, options, tmp_path / "a.npz", chunk=4)
    seen = []
    cluster = population_stats(inputs, options, tmp_path / "b.npz", chunk=4, workers=2,
                               progress=lambda done, total: seen.append((done, total)))
    assert cluster.groups[""].count == local.groups[""].count == 12
    np.testing.assert_allclose(cluster.groups[""].mean, local.groups[""].mean, atol=1e-6)
    np.testing.assert_allclose(cluster.groups[""].variance, local.groups[""].variance, atol=1e-6)
    assert seen[-1] == (12, 12) and len(seen) == 3


def test_local_cluster_workers_start_without_dasks_malloc_trim(monkeypatch):
    # Dask's default MALLOC_TRIM_THRESHOLD_=65536 made each worker's 3D
    # convolutions 1.6x slower (docs/benchmarks.md, cohort runs).
    pytest.importorskip("distributed")
    from dask.distributed import Client

    from napari_brainage.parallel import local_cluster

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with local_cluster(1) as cluster, Client(cluster) as client:
        (seen,) = client.run(lambda: (os.getpid(), dict(os.environ))).values()
    pid, environ = seen
    assert pid != os.getpid()  # read in the worker, not in this process
    assert "MALLOC_TRIM_THRESHOLD_" not in environ
    assert environ["OMP_NUM_THREADS"] == "1"


def test_an_existing_cluster_with_dasks_malloc_trim_gets_a_warning(tiny_cohort, tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from dask.distributed import LocalCluster

    # Absent at the start; monkeypatch removes it again afterwards (Dask's nanny
    # also sets it in the process that starts the cluster).
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    inputs = collect_inputs([tiny_cohort])[:2]
    # A cluster started with Dask's defaults, as a user's own would be.
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        # Only the worker may have it: the nanny also put it into this process.
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
        with pytest.warns(UserWarning, match="MALLOC_TRIM_THRESHOLD_=65536"):
            run = population_stats(inputs, RunOptions(model_dir=tiny_model, device="cpu"), tmp_path / "c.npz",
                                   scheduler=cluster.scheduler_address)
    assert run.groups[""].count == 2


def test_explain_resume_writes_only_the_missing_maps(tiny_cohort, tiny_model, tmp_path):
    model = ["--model", str(tiny_model), "--device", "cpu"]
    out = tmp_path / "maps"
    assert _run("explain", str(tiny_cohort), "--out", str(out), *model).returncode == 0
    maps = sorted(out.glob("*_importance.nii.gz"))
    assert len(maps) == 12
    for gone in maps[:2]:
        gone.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in maps[2:]}
    refused = _run("explain", str(tiny_cohort), "--out", str(out), *model)
    assert refused.returncode == 2 and "already exists" in refused.stderr
    resumed = _run("explain", str(tiny_cohort), "--out", str(out), "--resume", *model)
    assert resumed.returncode == 0, resumed.stderr
    assert "explain: resuming, 10 of 12 scans already done" in resumed.stderr and "2 of 2 maps" in resumed.stdout
    assert all(p.exists() for p in maps)
    assert {p: p.stat().st_mtime_ns for p in maps[2:]} == stamps


def test_batched_noise_maps_equal_one_at_a_time(tiny_cohort, tiny_model):
    """The GPU path's batching (run here on the CPU) gives the per-subject maps."""
    from napari_brainage.cohort import batched_noise_maps

    model, device = load_model(tiny_model, "cpu", need_noise_model=True)
    inputs = collect_inputs([tiny_cohort])[:5]
    failed = []
    batched = dict((item.subject, values) for item, values in
                   batched_noise_maps(inputs, model, device, "auto", failed, batch_size=3))
    assert not failed and len(batched) == 5
    for item in inputs:
        single = uncrop(importance_in_model_space(load_volume(item.path), model, device), model.card.input)
        np.testing.assert_allclose(batched[item.subject], single, atol=1e-5)


def test_cli_input_mistakes_print_one_line_not_a_traceback(tiny_cohort, tmp_path):
    result = _run("population", str(tiny_cohort), "--out", str(tmp_path / "p.nii.gz"), "--group-by", "nope")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{tiny_cohort}: no column 'nope' to group by" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written


# ------------------------------------------------------------------ one bad scan never stops a run
#: What preparing the ``c_crash`` scan raises (monkeypatched): shaped like
#: SimpleITK's messages (a source path on the first line, the reason on the last).
CRASH = ("Exception thrown in SimpleITK ImageRegistrationMethod_Execute: /build/ITK/itkMetric.hxx:307:\n"
         "ITK ERROR: MattesMutualInformationImageToImageMetricv4(0x55d0c0a8b2f0): simulated crash.\n")


def write_statistical_map(path: Path) -> Path:
    """A signed statistical map (smoothed N(0, 1), 3 mm voxels, zeros outside a
    sphere): a real file that is no T1 scan (registering it to the template
    makes SimpleITK raise RuntimeError: all samples map outside the moving image)."""
    import nibabel as nib
    from scipy import ndimage

    shape = (53, 63, 52)
    data = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=shape), 2)
    data /= data.std()
    offsets = np.moveaxis(np.indices(shape), 0, -1) - (np.array(shape) - 1) / 2
    data[np.linalg.norm(offsets, axis=-1) > 22] = 0
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = -1.5 * np.array(shape)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return path


def crash_on(monkeypatch, name: str, error: Exception) -> None:
    """Preparing the scan whose file name starts with ``name`` raises ``error``
    (outside anything preprocessing itself catches); other scans are prepared."""
    import napari_brainage.inference as inference
    import napari_brainage.preprocess as preprocess

    real = preprocess.prepare

    def prepare(volume, *args, **kwargs):
        if volume.path is not None and volume.path.name.startswith(name):
            raise error
        return real(volume, *args, **kwargs)

    monkeypatch.setattr(preprocess, "prepare", prepare)   # export, training
    monkeypatch.setattr(inference, "prepare", prepare)    # predict, explain, population


def mixed_scans(tiny_cohort: Path, folder: Path, monkeypatch) -> Path:
    """A folder of four scans, the failures before the good ones: a_good, b_statmap
    (a real statistical map), c_crash (preparing it raises RuntimeError), d_good."""
    import shutil

    folder.mkdir()
    scans = [item.path for item in collect_inputs([tiny_cohort])]
    shutil.copy(scans[0], folder / "a_good.nii.gz")
    shutil.copy(scans[1], folder / "c_crash.nii.gz")
    shutil.copy(scans[2], folder / "d_good.nii.gz")
    write_statistical_map(folder / "b_statmap.nii.gz")
    crash_on(monkeypatch, "c_crash", RuntimeError(CRASH))
    return folder


def assert_readable_errors(messages: dict[str, str], folder: Path | None = None) -> None:
    """Each failed scan's message: one line, short, no source paths, saying what happened;
    with ``folder``, each begins with its scan's path there (as a results table's do)."""
    assert sorted(messages) == ["b_statmap", "c_crash"]
    if folder is not None:
        for subject, message in messages.items():
            assert message.startswith(f"{folder / subject}.nii.gz: "), message
        messages = {s: m.removeprefix(f"{folder / s}.nii.gz: ") for s, m in messages.items()}
    assert messages["c_crash"] == "preprocessing failed (RuntimeError: Exception thrown in SimpleITK " \
                                  "ImageRegistrationMethod_Execute: simulated crash.)"
    for message in messages.values():
        assert message and "\n" not in message and len(message) <= 300, message
        assert ".hxx" not in message and "Traceback" not in message, message


def test_predict_records_any_failure_of_one_scan_in_its_row_and_goes_on(tiny_cohort, tiny_model, tmp_path,
                                                                          monkeypatch, capsys):
    from napari_brainage.cli import main

    folder = mixed_scans(tiny_cohort, tmp_path / "scans", monkeypatch)
    out = tmp_path / "results.csv"
    code = main(["predict", str(folder), "--out", str(out), "--model", str(tiny_model), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    rows = _rows(out)
    assert sorted(rows) == ["a_good", "b_statmap", "c_crash", "d_good"]
    for good in ("a_good", "d_good"):
        assert rows[good]["predicted_age"] and not rows[good]["error"]
    for bad in ("b_statmap", "c_crash"):
        assert rows[bad]["predicted_age"] == "" and rows[bad]["error"]
    assert_readable_errors({s: rows[s]["error"] for s in ("b_statmap", "c_crash")}, folder)
    assert "b_statmap" in captured.err and "c_crash" in captured.err  # and said on the terminal
    assert "2 of 4 scans this run" in captured.out and "2 failed" in captured.out
    assert "Traceback" not in captured.err


def test_population_leaves_out_scans_that_fail_in_any_way(tiny_cohort, tiny_model, tmp_path, monkeypatch, capsys):
    from napari_brainage.cli import main

    folder = mixed_scans(tiny_cohort, tmp_path / "scans", monkeypatch)
    out = tmp_path / "pop.nii.gz"
    code = main(["population", str(folder), "--out", str(out), "--model", str(tiny_model), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    skipped = dict(line.removeprefix("population: skipped ").split(": ", 1)
                   for line in captured.err.splitlines() if line.startswith("population: skipped "))
    assert_readable_errors(skipped)
    assert "mean of 2 maps" in captured.out and "2 failed" in captured.out

    model, device = load_model(tiny_model, "cpu", need_noise_model=True)
    good = [uncrop(importance_in_model_space(load_volume(folder / f"{s}.nii.gz"), model, device), model.card.input)
            for s in ("a_good", "d_good")]
    np.testing.assert_allclose(load_volume(out).data, np.mean(good, axis=0), atol=1e-5)


def test_batched_noise_maps_record_failed_scans_and_batches(tiny_cohort, tiny_model, monkeypatch):
    """The GPU path (run here on the CPU): a scan that fails to prepare, or a batch
    the network cannot map, is listed as failed; the other scans are mapped."""
    import napari_brainage.explain as explain
    import napari_brainage.inference as inference
    from napari_brainage.cohort import batched_noise_maps

    model, device = load_model(tiny_model, "cpu", need_noise_model=True)
    inputs = collect_inputs([tiny_cohort])[:4]
    real_prepare, real_noise_importance = inference.prepare, explain.noise_importance

    def prepare(volume, mode, **options):
        if volume.path.name == inputs[1].path.name:
            raise MemoryError()
        return real_prepare(volume, mode, **options)

    batches = []

    def noise_importance(x, noise_model):
        batches.append(len(x))
        if len(batches) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")
        return real_noise_importance(x, noise_model)

    monkeypatch.setattr(inference, "prepare", prepare)
    monkeypatch.setattr(explain, "noise_importance", noise_importance)
    failed = []
    mapped = [item.subject for item, _ in batched_noise_maps(inputs, model, device, "auto", failed, batch_size=2)]
    assert mapped == [inputs[0].subject, inputs[2].subject] and batches == [2, 1]
    reasons = dict(failed)
    assert sorted(reasons) == sorted([inputs[1].subject, inputs[3].subject])
    assert reasons[inputs[1].subject] == "preprocessing failed (MemoryError)"
    assert reasons[inputs[3].subject] == "processing failed (RuntimeError: CUDA out of memory. " \
                                         "Tried to allocate 2.00 GiB)"


def test_a_results_file_of_an_earlier_version_resumes_with_todays_columns(tmp_path):
    """A CSV written before the interval and contrast columns existed: --resume keeps
    its finished rows, adds the new columns empty, and goes on (it used to refuse)."""
    from napari_brainage.cohort import ResultsLog
    from napari_brainage.errors import InputError
    from napari_brainage.inference import AgeResult

    old = tmp_path / "old.csv"
    old.write_text("subject,path,predicted_age,age,gap,corrected_gap,corrected_age,qc_status,error,qc,preprocessing\n"
                   "a,a.nii.gz,61.000,60.000,1.000,0.500,60.500,pass,,ok,as it is\n"
                   "b,b.nii.gz,,,,,,fail,corrupt file,,\n")
    log = ResultsLog(old)
    assert log.finished() == {"a"}  # b failed: retried
    rows = list(csv.DictReader(open(old)))
    assert list(rows[0]) == list(AgeResult.FIELDS)
    assert rows[0]["predicted_age"] == "61.000" and rows[0]["interval_low"] == "" and rows[1]["error"] == "corrupt file"
    other = tmp_path / "other.csv"
    other.write_text("name,value\nx,1\n")
    with pytest.raises(InputError, match="not a results file"):
        ResultsLog(other).finished()


def _newer_than(path: Path, reference: Path) -> None:
    """Mark ``path`` as modified after ``reference`` (a file replaced since)."""
    stamp = reference.stat().st_mtime_ns + 2_000_000_000
    os.utime(path, ns=(stamp, stamp))


def test_resume_redoes_a_scan_replaced_since_its_result(tiny_cohort, tiny_model, tmp_path, cli_in_process):
    """A user swaps a file after a run: --resume must not keep the old file's age or map (helper's
    report, 2026-12-01: a replaced scan kept its old age in predict, report and explain)."""
    import shutil

    folder = tmp_path / "scans"
    folder.mkdir()
    sources = sorted(tiny_cohort.parent.glob("sub-*.nii.gz"))[:3]
    for source in sources:
        shutil.copy(source, folder / source.name)
    model = ["--model", tiny_model, "--device", "cpu"]
    table, maps = tmp_path / "ages.csv", tmp_path / "maps"
    assert cli_in_process("predict", folder, "--out", table, *model).returncode == 0
    assert cli_in_process("explain", folder, "--out", maps, *model).returncode == 0
    before = _rows(table)
    swapped = folder / sources[0].name
    shutil.copy(sources[1], swapped)  # another brain under the first name
    _newer_than(swapped, table)
    _newer_than(swapped, maps / f"{sources[0].name[:-7]}_importance.nii.gz")
    kept = {p: p.stat().st_mtime_ns for p in maps.glob("*.nii.gz") if not p.name.startswith(sources[0].name[:-7])}

    resumed = cli_in_process("predict", folder, "--out", table, "--resume", *model)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 of 1 scans this run" in resumed.stdout
    after = _rows(table)
    subject, twin = sources[0].name[:-7], sources[1].name[:-7]
    assert after[subject]["predicted_age"] == before[twin]["predicted_age"] != before[subject]["predicted_age"]
    assert sorted(after) == sorted(before)

    again = cli_in_process("explain", folder, "--out", maps, "--resume", *model)
    assert again.returncode == 0, again.stderr
    assert "1 redone (their scan changed since)" in again.stderr and "1 of 1 maps" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the unchanged maps are untouched
    new_map = load_volume(maps / f"{subject}_importance.nii.gz").data
    np.testing.assert_allclose(new_map, load_volume(maps / f"{twin}_importance.nii.gz").data, atol=1e-6)


def test_explain_says_at_once_when_it_cannot_write(tiny_cohort, tiny_model, tmp_path, cli_in_process,
                                                  monkeypatch):
    """Before any scan is mapped (it used to map every scan, then fail each on its write); the
    permission is faked because the suite may run as root, who may write anywhere."""
    import tempfile

    from napari_brainage.io import atomic_path

    out = tmp_path / "maps"
    out.mkdir()  # an existing folder that cannot be written (one not made yet is judged by its parent)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == out
                        else real_access(path, mode, **kw))
    refused = cli_in_process("explain", tiny_cohort, "--out", out, "--model", tiny_model, "--device", "cpu")
    assert refused.returncode == 2
    assert f"cannot write in {out}" in refused.stderr and "explain 1/" not in refused.stderr

    def no_permission(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".hidden.partial"))

    monkeypatch.setattr(tempfile, "mkstemp", no_permission)
    with pytest.raises(PermissionError, match=f"cannot write {tmp_path / 'ages.csv'}: no permission") as err:
        with atomic_path(tmp_path / "ages.csv"):
            pass
    assert ".partial" not in str(err.value)  # the user's file is named, not our temporary one
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match=f"cannot write {tmp_path / 'gone' / 'm.nii.gz'}: the folder "):
        with atomic_path(tmp_path / "gone" / "m.nii.gz"):
            pass


def test_a_blank_group_cell_is_a_missing_value_not_a_third_group(tiny_cohort, tiny_model, tmp_path, cli_in_process):
    """One blank --group-by cell made a group "" and the difference and effect-size maps vanished."""
    table = tmp_path / "grouped.csv"
    rows = list(csv.DictReader(open(tiny_cohort)))[:5]
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", "path", "age", "arm"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({"subject": row["subject"], "path": str(tiny_cohort.parent / row["path"]),
                             "age": row["age"], "arm": ["control", "patient", " ", "control", "patient"][i]})
    out = tmp_path / "pop.nii.gz"
    done = cli_in_process("population", table, "--out", out, "--group-by", "arm", "--model", tiny_model,
                          "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert f"left out 1 subject(s) with no 'arm': {rows[2]['subject']}" in done.stderr
    assert "groups control (n=2), patient (n=2)" in done.stdout and "mean of 4 maps" in done.stdout
    assert (tmp_path / "pop_difference.nii.gz").exists() and (tmp_path / "pop_effect_size.nii.gz").exists()
    assert not list(tmp_path.glob("pop_.nii.gz"))


def test_resume_redoes_a_subject_whose_age_was_corrected_in_the_table(tiny_cohort, tiny_model, tmp_path,
                                                                     cli_in_process):
    """An age corrected in the participants table after a run: --resume kept the old age
    and its gaps (a second break test: the gap stayed 24.6 y wrong, without a word)."""
    import shutil

    sources = sorted(tiny_cohort.parent.glob("sub-*.nii.gz"))[:2]
    for source in sources:
        shutil.copy(source, tmp_path / source.name)
    names = [source.name for source in sources]
    table = tmp_path / "participants.csv"
    table.write_text(f"subject,path,age\na,{names[0]},69.59\nb,{names[1]},55\n")
    model = ["--model", tiny_model, "--device", "cpu"]
    ages = tmp_path / "ages.csv"
    assert cli_in_process("predict", table, "--out", ages, *model).returncode == 0
    before = _rows(ages)
    table.write_text(f"subject,path,age\na,{names[0]},45\nb,{names[1]},55\n")
    resumed = cli_in_process("predict", table, "--out", ages, "--resume", *model)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 of 1 scans this run" in resumed.stdout  # only the corrected subject
    after = _rows(ages)
    assert float(after["a"]["age"]) == 45.0 and after["a"]["predicted_age"] == before["a"]["predicted_age"]
    assert float(after["a"]["gap"]) == pytest.approx(float(after["a"]["predicted_age"]) - 45.0, abs=2e-3)
    assert after["b"] == before["b"]


def test_a_population_resumed_after_a_failure_still_names_the_failed_scan(tiny_cohort, tiny_model, tmp_path):
    """A scan that failed before the interruption is not redone on --resume; it was
    dropped from the failures, and the resumed run ended "0 failed" although it was
    never mapped (fifth break test). The checkpoint keeps the failures and why."""
    import shutil

    from napari_brainage.cohort import iter_population

    folder = tmp_path / "scans"
    folder.mkdir()
    scans = [item.path for item in collect_inputs([tiny_cohort])][:3]
    write_statistical_map(folder / "a_statmap.nii.gz")  # fails, in the first chunk
    for i, scan in enumerate(scans):
        shutil.copy(scan, folder / f"b{i}.nii.gz")
    inputs = collect_inputs([folder])
    options = RunOptions(model_dir=tiny_model, device="cpu")
    checkpoint = tmp_path / "pop.checkpoint.npz"
    run = iter_population(inputs, options, checkpoint=checkpoint, chunk=1)
    first = [next(run), next(run)]  # two chunks, then interrupted (the widget's Cancel, Ctrl-C)
    run.close()
    assert [s for s, _ in first[-1].failed] == ["a_statmap"] and first[-1].done == 2
    *_, last = iter_population(inputs, options, checkpoint=checkpoint, resume=True, chunk=1)
    assert last.result is not None and last.result.total.count == 3
    [(subject, reason)] = last.failed
    assert subject == "a_statmap" and "statistical map" in reason, reason


def test_a_run_that_cannot_use_its_model_says_so_before_any_output(tiny_cohort, tiny_model, tmp_path):
    """A GPU torch does not see left a header-only table behind; a model with no
    noise model failed every scan of a population run, then "no scan could be
    mapped" (a new user's API test). Said once, before anything is written."""
    import torch

    from napari_brainage.cohort import predict_cohort
    from napari_brainage.model.card import ModelError, read_card, write_card

    inputs = collect_inputs([tiny_cohort])[:2]
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="torch sees no CUDA device"):
            predict_cohort(inputs, tmp_path / "ages.csv", RunOptions(model_dir=tiny_model, device="gpu"))
        assert not (tmp_path / "ages.csv").exists()
    predictor_only = tmp_path / "predictor_only"
    predictor_only.mkdir()
    card = read_card(tiny_model)
    (predictor_only / "predictor.pt").write_bytes((tiny_model / "predictor.pt").read_bytes())
    card.weights.pop("noise_model.pt")
    write_card(card, predictor_only)
    checkpoint = tmp_path / "pop.checkpoint.npz"
    with pytest.raises(ModelError, match="has no noise model .* or choose a Captum method"):
        population_stats(inputs, RunOptions(model_dir=predictor_only, device="cpu"), checkpoint=checkpoint)
    assert not checkpoint.exists()


def test_cohort_results_come_back_in_the_order_of_the_inputs(tiny_cohort, tiny_model, tmp_path, monkeypatch):
    """Parallel workers finish in any order; the returned results follow the inputs."""
    from contextlib import contextmanager

    from napari_brainage import cohort

    @contextmanager
    def finishing_backwards(workers, scheduler):
        yield lambda function, jobs: (function(*job) for job in reversed(list(jobs)))

    monkeypatch.setattr(cohort, "executor", finishing_backwards)
    inputs = collect_inputs([tiny_cohort])[:3]
    results = cohort.predict_cohort(inputs, tmp_path / "ages.csv", RunOptions(model_dir=tiny_model, device="cpu"))
    assert [r.subject for r in results] == [item.subject for item in inputs]


def test_a_cohort_run_loads_its_model_once(tiny_cohort, tiny_model, tmp_path, monkeypatch):
    """Each process keeps the model it loaded (``_cached_model``): a decorator moved to
    another function by an edit once made every scan load the model again."""
    from napari_brainage import cohort, inference

    loads = []
    real = inference.load_model
    monkeypatch.setattr(inference, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    cohort._cached_model.cache_clear()
    inputs = collect_inputs([tiny_cohort])[:3]
    cohort.predict_cohort(inputs, tmp_path / "ages.csv", RunOptions(model_dir=tiny_model, device="cpu"))
    assert len(loads) == 1
