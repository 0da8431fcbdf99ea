"""The napari side: manifest, reader, writer and sample data in a real viewer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import phantom, write_nifti
from napari.utils.notifications import notification_manager

from napari_brainage._napari import reader as _reader
from napari_brainage.io import load_volume
from napari_brainage.samples import SAMPLES, sample_path
from napari_brainage.space.display import RAS_TO_WORLD

PLUGIN = "napari-brainage"


@pytest.fixture
def notifications():
    """Messages napari shows to the user during the test."""
    seen: list[str] = []

    def record(notification):
        seen.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def test_manifest_is_valid():
    npe2 = Path(sys.executable).with_name("npe2")
    command = [str(npe2)] if npe2.exists() else [shutil.which("npe2") or "npe2"]
    result = subprocess.run([*command, "validate", "napari_brainage"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_contributions_are_discovered():
    from npe2 import PluginManager

    manager = PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest(PLUGIN)
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Brain age", "Scan info", "Population", "Slices", "Threshold", "Regions"}
    assert {s.key for s in manifest.contributions.sample_data} == set(SAMPLES)
    for command in manifest.contributions.commands:
        # Importing each callable catches a python_name that points nowhere.
        assert callable(manager.commands.get(command.id))


@pytest.mark.parametrize("path", ["scan.png", "scan.nii.txt", "notes.csv", "folder/", ["a.nii", "b.tif"], []])
def test_reader_ignores_what_it_does_not_claim(path):
    assert _reader.get_reader(path) is None


@pytest.mark.parametrize("path", ["a.nii", "a.nii.gz", "A.NII.GZ", "a.mgz", ["a.nii", "b.nii.gz"]])
def test_reader_claims_nifti_and_mgz(path):
    assert callable(_reader.get_reader(path))


def test_oblique_scan_opens_in_world_space_and_saves_back_exactly(make_napari_viewer, oblique_scan, tmp_path):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(oblique_scan), plugin=PLUGIN)
    source = load_volume(oblique_scan)

    # Data are laid out (S, A, R): for a PSL scan that means axes reordered.
    assert layer.data.shape == (30, 24, 20)  # (S: 30, A: 24, R: 20)
    # Every source voxel appears at its scanner position (napari world = z, y, x mm).
    for ijk in [(0, 0, 0), (23, 29, 19), (5, 17, 11)]:
        world_zyx = (RAS_TO_WORLD @ source.affine @ np.append(ijk, 1))[:3]
        display_index = np.rint(layer.world_to_data(world_zyx)).astype(int)
        assert layer.data[tuple(display_index)] == source.data[ijk]
    np.testing.assert_array_equal(layer.metadata["source_affine"], source.affine)
    assert layer.metadata["source_path"] == str(oblique_scan)

    written = viewer.layers.save(str(tmp_path / "saved.nii.gz"), plugin=PLUGIN)
    again = load_volume(written[0])
    np.testing.assert_array_equal(again.data, source.data)
    np.testing.assert_array_equal(again.affine, source.affine)


def test_writer_appends_nifti_suffix_and_writes_labels_on_source_grid(make_napari_viewer, oblique_scan, tmp_path):
    viewer = make_napari_viewer()
    [image] = viewer.open(str(oblique_scan), plugin=PLUGIN)
    mask = (image.data > 120).astype(np.uint8)
    viewer.add_labels(mask, affine=image.affine, metadata=image.metadata, name="bright")

    [written] = viewer.layers["bright"].save(str(tmp_path / "bright"), plugin=PLUGIN)

    assert written.endswith("bright.nii.gz")
    saved = load_volume(written)
    source = load_volume(oblique_scan)
    np.testing.assert_array_equal(saved.affine, source.affine)
    np.testing.assert_array_equal(saved.data, (source.data > 120).astype(np.uint8))

    # Nobody was asked about "bright.nii.gz" when the name given to the writer was
    # "bright": an existing file there is refused, not replaced (third break
    # test); the full name (what File > Save confirms) replaces it. (napari's
    # layers.save appends the extension itself, through npe2, before the writer
    # sees the path: that route is napari's, like its built-in writers.)
    from napari_brainage._napari.writer import write_volume_layer

    before = (tmp_path / "bright.nii.gz").read_bytes()
    layer = viewer.layers["bright"]
    attributes = layer.as_layer_data_tuple()[1]
    with pytest.raises(FileExistsError, match=r"bright\.nii\.gz already exists .*had no \.nii\.gz"):
        write_volume_layer(str(tmp_path / "bright"), 1 - mask, attributes)
    assert (tmp_path / "bright.nii.gz").read_bytes() == before
    [replaced] = write_volume_layer(str(tmp_path / "bright.nii.gz"), 1 - mask, attributes)
    np.testing.assert_array_equal(load_volume(replaced).data, (source.data <= 120).astype(np.uint8))


def test_layer_made_in_napari_is_written_with_its_world_geometry(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = phantom((10, 12, 14))
    layer = viewer.add_image(data, scale=(2.0, 1.5, 1.0), translate=(-10.0, 4.0, 7.0))
    [written] = layer.save(str(tmp_path / "plain.nii.gz"), plugin=PLUGIN)
    saved = load_volume(written)
    # napari world (z, y, x) = scale * index + translate; NIfTI gives the same point in RAS.
    index = np.array([3, 5, 7])
    expected_zyx = np.array([2.0, 1.5, 1.0]) * index + [-10.0, 4.0, 7.0]
    np.testing.assert_allclose((RAS_TO_WORLD @ saved.affine @ np.append(index, 1))[:3], expected_zyx)
    np.testing.assert_array_equal(saved.data, data)


@pytest.mark.parametrize("content, problem", [
    (b"\x1f\x8b\x08\x00garbage" * 20, "corrupt"),
    (None, "4D with 3 volumes"),
])
def test_unreadable_file_shows_the_problem_and_napari_keeps_running(
    make_napari_viewer, tmp_path, notifications, content, problem
):
    viewer = make_napari_viewer()
    path = tmp_path / "bad.nii.gz"
    if content is None:
        write_nifti(path, phantom((8, 8, 8, 3)), np.eye(4))
    else:
        path.write_bytes(content)

    added = viewer.open(str(path), plugin=PLUGIN)

    assert added == [] and len(viewer.layers) == 0
    assert any(problem in message and "bad.nii.gz" in message for message in notifications), notifications
    # The viewer still works: a good file opens afterwards.
    good = write_nifti(tmp_path / "good.nii.gz", phantom(), np.eye(4))
    assert len(viewer.open(str(good), plugin=PLUGIN)) == 1


def test_sample_scan_loads_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    [layer] = viewer.open_sample(PLUGIN, "icbm152_t1_2mm")
    volume = load_volume(sample_path("icbm152_t1_2mm"))
    assert volume.shape == (91, 109, 91) and volume.axcodes == ("L", "A", "S")
    assert layer.data.shape == (91, 109, 91)  # (S, A, R)
    # The MNI origin (0, 0, 0) mm is inside the brain: bright tissue, not background.
    centre_index = np.rint(layer.world_to_data((0.0, 0.0, 0.0))).astype(int)
    assert layer.data[tuple(centre_index)] > 0.3 * layer.data.max()
    # Patient's left is display column 0: the LAS file's x axis was flipped for display.
    np.testing.assert_array_equal(layer.data[:, :, ::-1], volume.data.transpose(2, 1, 0))
    low, high = layer.contrast_limits
    assert 0 < low < high <= volume.data.max()


def test_manifest_sample_entries_match_the_registry():
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    entries = {s.key: s.display_name for s in manifest.contributions.sample_data}
    assert entries == {key: sample.display_name for key, sample in SAMPLES.items()}


def test_synthetic_samples_carry_ages_and_show_ageing(make_napari_viewer):
    import napari

    viewer = make_napari_viewer()
    layers = {key: viewer.open_sample(PLUGIN, key)[0] for key in
              ["synthetic_age50", "synthetic_age80", "synthetic_age50_accelerated", "synthetic_ground_truth"]}
    assert layers["synthetic_age50_accelerated"].metadata["age"] == 50.0
    assert layers["synthetic_age50_accelerated"].metadata["brain_age"] == 60.0
    truth = layers["synthetic_ground_truth"]
    assert isinstance(truth, napari.layers.Labels)
    np.testing.assert_array_equal(truth.affine.affine_matrix, layers["synthetic_age50"].affine.affine_matrix)

    # Inside the ageing regions the 80-year-old has more CSF-dark voxels.
    region = truth.data > 0
    def dark_voxels(key):
        data = layers[key].data.astype(float)
        return int((data[region] < 0.5 * np.percentile(data[data > 0], 90)).sum())
    assert dark_voxels("synthetic_age80") > 1.3 * dark_voxels("synthetic_age50")
    assert dark_voxels("synthetic_age80") > dark_voxels("synthetic_age50_accelerated") > dark_voxels("synthetic_age50")


def test_every_widget_docks_from_the_plugins_menu_with_tooltips(make_napari_viewer):
    """What Plugins > napari brainage > <widget> does; every input explains itself."""
    from magicgui.widgets.bases import ButtonWidget, ValueWidget
    from npe2 import PluginManager

    viewer = make_napari_viewer()
    manifest = PluginManager.instance().get_manifest(PLUGIN)
    for contribution in manifest.contributions.widgets:
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, contribution.display_name)
        inputs = [w for w in widget if isinstance(w, (ButtonWidget, ValueWidget))
                  and w.widget_type not in ("Label", "ProgressBar")]
        assert inputs, contribution.display_name
        untipped = [w.label or w.text for w in inputs if not (w.tooltip or "").strip()]
        assert not untipped, f"{contribution.display_name}: no tooltip on {untipped}"


@pytest.mark.parametrize("convention", ["neurological", "radiological"])
def test_an_opened_scan_shows_upright_in_every_plane(make_napari_viewer, tmp_path, convention):
    """File > Open alone (no widget of ours): a marker right, anterior and superior of
    the centre appears in the upper half of every plane, on the right in
    neurological and on the left in radiological axial and coronal views; the
    canvas says which way is which."""
    import nibabel as nib

    from napari_brainage._napari.viewer import show_anatomically, text_overlay

    affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # stored LAS, as FSL's MNI grid
    affine[:3, 3] = (40, -40, -40)
    data = np.full((41, 41, 41), 10, np.float32)
    data[4:10, 28:34, 28:34] = 100  # x = 40 - 2i > 0: the patient's right; anterior; superior
    path = tmp_path / "marker.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    assert viewer.dims.axis_labels == ("S", "A", "R")
    if convention == "radiological":
        show_anatomically(viewer, convention)
    layer.contrast_limits = (0, 100)
    viewer.dims.point = (22, 22, 26)  # through the marker (mm)
    right = convention == "neurological"
    for plane, order, across in (("axial", (0, 1, 2), "patient's right"), ("coronal", (1, 0, 2), "patient's right"),
                                 ("sagittal", (2, 0, 1), "anterior")):
        viewer.dims.order = order
        viewer.reset_view()
        assert text_overlay(viewer).text.startswith(f"{plane}: ")
        assert f"{across} on the {'right' if right else 'left'}\n({convention})" in text_overlay(viewer).text
        text_overlay(viewer).visible = False
        picture = viewer.screenshot(canvas_only=True, flash=False)[..., 0]
        rows, columns = np.nonzero(picture > 200)
        assert rows.size, f"{plane}: the marker is not on the canvas"
        assert rows.mean() < picture.shape[0] / 2, f"{plane}: upside down"
        assert (columns.mean() > picture.shape[1] / 2) == right, f"{plane}: left and right swapped"
    assert "guessed" not in text_overlay(viewer).text

    # The same voxels in a file that stores no orientation: the canvas says left/right is a guess.
    bare = nib.Nifti1Image(data, None)
    bare.header.set_zooms((2.0, 2.0, 2.0))
    nib.save(bare, tmp_path / "bare.nii.gz")
    [guessed] = viewer.open(str(tmp_path / "bare.nii.gz"), plugin=PLUGIN)
    assert text_overlay(viewer).text.endswith("\nleft/right guessed: not in the file")
    guessed.visible = False  # hidden: the scans shown store their orientation (a second user's report)
    assert "guessed" not in text_overlay(viewer).text
    guessed.visible = True
    assert "guessed" in text_overlay(viewer).text
    viewer.layers.remove(guessed)
    assert "guessed" not in text_overlay(viewer).text


def test_a_layer_from_the_console_is_said_to_carry_no_orientation(make_napari_viewer, oblique_scan):
    """A scan added with viewer.add_image(nib.load(f).get_fdata()) failed QC as "partial
    field of view": its axes were read as (S, A, R) without a word (fourth break test)."""
    from napari_brainage._napari.layers import CONSOLE_LAYER_WARNING
    from napari_brainage._napari.widgets._common import layer_volume
    from napari_brainage.io import WARNING
    from napari_brainage.preprocess import prepare

    viewer = make_napari_viewer()
    [opened] = viewer.open(str(oblique_scan), plugin=PLUGIN)
    assert WARNING not in layer_volume(opened).metadata
    sample = load_volume(sample_path("synthetic_age50"))
    console = viewer.add_image(np.asarray(sample.data, dtype=np.float32), scale=(2.0, 2.0, 2.0))
    volume = layer_volume(console)
    assert volume.metadata[WARNING] == CONSOLE_LAYER_WARNING
    try:
        quality = prepare(volume).quality
        said = quality.warnings
    except Exception as err:  # QC may fail such a layer; the reason must name the layer's orientation
        said = [str(err)]
    assert any("carries no file orientation" in line for line in said), said


@pytest.fixture
def no_demo_rendering(monkeypatch):
    """The demo's rendering replaced: a test that reaches it started the demo's work."""
    from napari_brainage._napari import demo

    def started(*_, **__):
        raise AssertionError("the demo started")

    monkeypatch.setattr(demo, "build_demo_viewer", started)
    monkeypatch.setattr(demo, "_rerun_under_xvfb", started)
    return demo


def test_demo_refuses_a_screenshot_it_cannot_write_before_starting(tmp_path, no_demo_rendering, cli_in_process):
    """--screenshot nodir/v.png ran the whole demo (8 s) and only then failed (fifth break test)."""
    missing = cli_in_process("demo", "--screenshot", tmp_path / "nodir" / "v.png")
    assert missing.returncode == 2
    assert f"cannot write {tmp_path / 'nodir' / 'v.png'}: the folder {tmp_path / 'nodir'} does not exist" \
        in missing.stderr
    (tmp_path / "view.png").mkdir()
    folder = cli_in_process("demo", "--screenshot", tmp_path / "view.png")
    assert folder.returncode == 2 and "it is a folder" in folder.stderr
    (tmp_path / "old.png").write_bytes(b"mine")
    existing = cli_in_process("demo", "--screenshot", tmp_path / "old.png")
    assert existing.returncode == 2 and "old.png already exists; pass --overwrite" in existing.stderr
    assert (tmp_path / "old.png").read_bytes() == b"mine"
    # --overwrite alone replaced nothing, silently.
    alone = cli_in_process("demo", "--overwrite")
    assert alone.returncode == 2 and "--overwrite replaces the --screenshot file" in alone.stderr


def test_a_headless_demo_writes_a_new_file_each_run(monkeypatch):
    """Without --screenshot every run replaced one shared /tmp/napari-brainage/demo.png."""
    from napari_brainage._napari import demo

    targets: list[Path] = []

    def render(sample, target):
        targets.append(target)
        target.write_bytes(b"png")
        return 0

    monkeypatch.setattr(demo, "has_display", lambda: False)
    monkeypatch.setattr(demo, "_rerun_under_xvfb", render)
    try:
        assert demo.run_demo(demo.DEFAULT_SAMPLE) == demo.run_demo(demo.DEFAULT_SAMPLE) == 0
        first, second = targets
        assert first != second and first.read_bytes() == second.read_bytes() == b"png"
    finally:
        for target in targets:  # only folders of our own (the old shared one may hold others' files)
            if target.parent.name.startswith("napari-brainage-demo-"):
                shutil.rmtree(target.parent)

    def fail(sample, target):  # no xvfb-run, or the rendering failed
        targets.append(target)
        return 2

    monkeypatch.setattr(demo, "_rerun_under_xvfb", fail)
    assert demo.run_demo(demo.DEFAULT_SAMPLE) == 2
    assert not targets[-1].parent.exists()  # no empty folder left behind
