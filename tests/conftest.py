"""Shared fixtures: NIfTI files with awkward geometry, written with nibabel directly
(not with the code under test) so round-trip tests compare against ground truth."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def rotation(degrees_xyz) -> np.ndarray:
    """3x3 rotation from Euler angles (degrees) about x, then y, then z."""
    ax, ay, az = np.radians(degrees_xyz)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(axcodes=("P", "S", "L"), zooms=(0.9, 1.2, 2.5), tilt=(10.0, -7.0, 20.0),
                origin=(91.3, -107.7, 64.2)) -> np.ndarray:
    """An affine whose voxel axes point along ``axcodes`` (before the tilt)."""
    directions = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    axes = np.zeros((3, 3))
    for column, code in enumerate(axcodes):
        row, sign = directions[code]
        axes[row, column] = sign
    affine = np.eye(4)
    affine[:3, :3] = rotation(tilt) @ axes @ np.diag(zooms)
    affine[:3, 3] = origin
    return affine


def phantom(shape=(24, 30, 20), dtype=np.float32, seed=0) -> np.ndarray:
    """A volume where every voxel differs, so any reordering error shows."""
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 30, size=shape)
    if np.dtype(dtype).kind == "f":
        return data.astype(dtype)
    return np.rint(data).astype(dtype)


def write_nifti(path: Path, data, affine, *, header=None) -> Path:
    image = nib.Nifti1Image(np.asarray(data), affine, header=header)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, path)
    return path


@pytest.fixture
def oblique_scan(tmp_path) -> Path:
    """An oblique (tilted 10/-7/20 deg), axis-swapped (PSL), flipped, anisotropic scan."""
    return write_nifti(tmp_path / "oblique_psl.nii.gz", phantom(), make_affine())


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` run once per test run, however many xdist workers ask.

    Session fixtures run once per worker; the workers of one run share the parent
    of their temporary folders, so the first to take the lock builds there and the
    others wait and reuse it (pytest-xdist's documented recipe). Without xdist that
    parent is shared by every run, so the folder is the session's own.
    """
    from filelock import FileLock

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    folder = tmp_path_factory.getbasetemp().parent / name
    built = folder.with_name(f"{name}.built")  # beside, not in, the folder the tests read
    with FileLock(f"{folder}.lock"):
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that died half-way
            folder.mkdir()
            build(folder)
            built.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """12 synthetic subjects (2 mm): enough to smoke-test training and inference (their participants.csv)."""
    from napari_brainage.synthetic.cohort import generate_cohort

    folder = _built_once(tmp_path_factory, "tiny_cohort", lambda out: generate_cohort(out, 12, seed=4242, workers=1))
    return folder / "participants.csv"


@pytest.fixture(scope="session")
def tiny_model(tiny_cohort, tmp_path_factory) -> Path:
    """A model folder trained for one epoch on the tiny cohort (predictor + noise model)."""
    from napari_brainage.model.card import NoiseSpec
    from napari_brainage.training.config import TrainConfig
    from napari_brainage.training.data import load_cohort
    from napari_brainage.training.noise_model import train_noise_model
    from napari_brainage.training.predictor import train_predictor

    def build(out: Path) -> None:
        cohort = load_cohort(tiny_cohort)
        config = TrainConfig(epochs=1, batch_size=4, val_fraction=0.25, seed=1)
        train_predictor(cohort, out, config, progress=lambda _: None)
        train_noise_model(cohort, out, out, config, NoiseSpec(), progress=lambda _: None)

    return _built_once(tmp_path_factory, "tiny_model", build)


@pytest.fixture(scope="session")
def variant_clean():
    """The clean scan the ``variant_files`` are made from: the bundled synthetic 50-year-old
    (2 mm MNI grid, skull-stripped, int16), small enough for fast tests."""
    from napari_brainage.samples import load_sample

    return load_sample("synthetic_age50")


@pytest.fixture(scope="session")
def variant_files(variant_clean, tmp_path_factory):
    """Every kind of ``napari_brainage.variants`` variant of ``variant_clean`` (seed 0), written
    once per session: a list of ``Variant`` (name, path, group, expected, geometry, intensity)."""
    from napari_brainage.variants import write_variants

    return write_variants(variant_clean, tmp_path_factory.mktemp("variants"), seed=0)


@pytest.fixture
def analysed(make_napari_viewer, qtbot, tiny_model):
    """A viewer with the sample "age 50, brain age 60" analysed by the Brain age
    widget (tiny model): (viewer, widget, scan layer, importance layer)."""
    from napari_brainage._napari.widgets.brain_age import BrainAgeWidget

    sample = "synthetic_age50_accelerated"
    viewer = make_napari_viewer()
    brain_age = BrainAgeWidget(viewer)
    viewer.window.add_dock_widget(brain_age)
    [scan] = viewer.open_sample("napari-brainage", sample)
    brain_age.model.value = str(tiny_model)
    brain_age.start()
    qtbot.waitUntil(lambda: not brain_age.busy, timeout=120_000)
    return viewer, brain_age, scan, viewer.layers[f"importance ({sample})"]


@pytest.fixture
def cli_in_process(capsys):
    """``napari-brainage`` run in this process: ``run(*args)`` -> (returncode, stdout, stderr).

    For checks that stop at the arguments; a fresh interpreter costs about 5 s a
    call, which is what the tests of real runs (subprocesses, as a user runs
    them) pay once each.
    """
    from types import SimpleNamespace

    from napari_brainage.cli import main

    def run(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return run
