"""Widgets driven in a real viewer."""

from __future__ import annotations

import numpy as np

from napari_brainage._widgets.scan_info import ScanInfoWidget

from conftest import make_affine, phantom, write_nifti


def test_scan_info_follows_the_selected_layer(make_napari_viewer, oblique_scan, tmp_path):
    viewer = make_napari_viewer()
    widget = ScanInfoWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert "Open a 3D scan" in widget.info.value
    assert tuple(viewer.scene.camera.orientation2d) == ("up", "right")

    viewer.open_sample("napari-brainage", "icbm152_t1_2mm")
    text = widget.info.value
    assert "icbm152_2009a_t1_2mm.nii.gz" in text
    assert "2 x 2 x 2 mm" in text and "LAS" in text and "91 x 109 x 91" in text

    viewer.open(str(oblique_scan), plugin="napari-brainage")
    text = widget.info.value
    assert widget.layer.value.name == "oblique_psl"
    assert "PSL" in text and "oblique by" in text
    assert "0.9 x 1.2 x 2.5 mm" in text
    assert widget.info.tooltip == str(oblique_scan)

    # Picking a layer in the combo box switches the description.
    widget.layer.value = viewer.layers["icbm152_t1_2mm"]
    assert "LAS" in widget.info.value
    viewer.layers.clear()
    assert "Open a 3D scan" in widget.info.value


def test_scan_info_ignores_2d_and_rgb_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = ScanInfoWidget(viewer)
    viewer.add_image(np.zeros((10, 10)), name="2d")
    viewer.add_image(np.zeros((10, 10, 3), np.uint8), rgb=True, name="rgb")
    assert widget.layer.choices == ()
