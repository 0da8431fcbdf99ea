"""What `pip install napari-brainage` gets: the wheel's content and metadata."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from napari_brainage.samples import SAMPLES, sample_data_dir


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out),
         str(sample_data_dir().parent)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [path] = out.glob("napari_brainage-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_ships_manifest_and_sample_scans(wheel):
    names = set(wheel.namelist())
    assert "napari_brainage/napari.yaml" in names
    for sample in SAMPLES.values():
        assert f"napari_brainage/sample_data/{sample.filename}" in names
    assert "napari_brainage/sample_data/README.md" in names
    for name in ("model_card.json", "predictor.pt", "noise_model.pt", "population_map.nii.gz"):
        assert f"napari_brainage/bundled_model/{name}" in names
    assert "napari_brainage/sample_data/template/harvard_oxford_labels.csv" in names
    assert not any("__pycache__" in name or name.startswith("tests/") for name in names)


def test_wheel_declares_napari_entry_point_and_classifier(wheel):
    dist_info = next(n.split("/")[0] for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert "[napari.manifest]" in entry_points
    assert "napari-brainage = napari_brainage:napari.yaml" in entry_points
    assert "napari-brainage = napari_brainage.cli:main" in entry_points
    assert "Classifier: Framework :: napari" in metadata
    # No Qt binding among the base requirements (napari plugin guidelines).
    base_requirements = [line for line in metadata.splitlines()
                         if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not any(qt in line for line in base_requirements for qt in ("PyQt", "PySide", "napari[all]"))
