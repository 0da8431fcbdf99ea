"""Screenshots of the widgets in use, for the README (docs/widget_*.png).

Usage: xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/widget_screenshots.py [OUT_DIR]
Uses the bundled model on the bundled sample "age 50, brain age 60".
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

SAMPLE = "synthetic_age50_accelerated"


def settle(seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def viewer_with(widgets: list[str]):
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 960)  # room for two docked widgets with every row shown
    viewer.open_sample("napari-brainage", SAMPLE)
    docks = {name: viewer.window.add_plugin_dock_widget("napari-brainage", name)[1]
             for name in ["Brain age", *widgets]}
    docks["Brain age"].start()
    while docks["Brain age"].busy:
        settle(0.1)
    return viewer, docks


def shoot(viewer, path: Path) -> None:
    settle()
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    viewer.close()
    print(path)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)

    viewer, docks = viewer_with(["Population"])
    docks["Population"].load_map()
    docks["Population"].run_comparison()
    docks["Population"].side_by_side.value = True
    shoot(viewer, out / "widget_population.png")

    viewer, docks = viewer_with(["Slices", "Threshold"])
    docks["Slices"].plane.value = "coronal"
    docks["Slices"].go_to_peak()
    docks["Threshold"].percent.value = 3.0
    shoot(viewer, out / "widget_slices_threshold.png")

    viewer, docks = viewer_with(["Population", "Regions"])
    docks["Population"].load_map().visible = False  # ranked in the table; the subject's map is shown
    docks["Regions"].rank_regions()
    docks["Regions"].go_to_region("Hippocampus")
    viewer.window.remove_dock_widget(docks["Population"].native.parent())
    shoot(viewer, out / "widget_regions.png")

    viewer, docks = viewer_with(["Slices"])
    docks["Slices"].toggle_3d()
    shoot(viewer, out / "widget_3d.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs")
