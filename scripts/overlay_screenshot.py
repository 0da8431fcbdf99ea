"""Screenshot of the default importance overlay on any scan with any model folder
(docs/cortical_subject.png was made this way).

Usage: xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/overlay_screenshot.py \
           SCAN MODEL_DIR AGE OUT.png [axial|coronal|sagittal]
Opens the scan through the plugin's reader, runs the Brain age widget with the
model, moves the Slices widget to the map's peak in the given plane and saves
the whole window.
"""

from __future__ import annotations

import sys

import napari
from widget_screenshots import settle


def main(scan: str, model: str, age: str, out: str, plane: str = "axial") -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.open(scan, plugin="napari-brainage")
    _, widget = viewer.window.add_plugin_dock_widget("napari-brainage", "Brain age")
    widget.model.value = model
    widget.age.value = age
    widget.start()
    while widget.busy:
        settle(0.1)
    _, slices = viewer.window.add_plugin_dock_widget("napari-brainage", "Slices")
    slices.plane.value = plane
    slices.go_to_peak()
    settle(1.0)
    viewer.screenshot(out, canvas_only=False, flash=False)
    viewer.close()
    print(out)


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    main(*sys.argv[1:])
