"""Threshold widget: time per live update on a 1 mm (182 x 218 x 182) map.

Runs a real napari viewer (needs a display: ``xvfb-run -a`` on a headless
machine). The map is the bundled population map brought onto the 1 mm MNI grid.
A "drag" moves the top-% slider through 40 positions; each update is timed from
the slider's new value to the redrawn canvas (the widget's mask + napari's
re-slice + Qt events). The baseline, measured in the same run, is the
straightforward update: ``np.percentile`` over the brain, a fresh mask array,
and ``layer.data = mask``.

Usage: xvfb-run -a python benchmarks/threshold_update.py [--positions 40]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=40, help="slider positions per drag")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_brainage._napari.widgets._common import IMPORTANCE, show_volume
    from napari_brainage._napari.widgets.population import bundled_population_map
    from napari_brainage._napari.widgets.threshold import ThresholdWidget
    from napari_brainage.compare import on_grid
    from napari_brainage.io import Volume, load_volume
    from napari_brainage.space.template import mni_grid

    shape, affine = mni_grid(1)
    values = on_grid(load_volume(bundled_population_map()), shape, affine)
    volume = Volume(values, affine)
    percents = np.linspace(1.0, 25.0, args.positions)

    viewer = napari.Viewer(show=True)
    layer = show_volume(viewer, volume, "importance (1 mm)", IMPORTANCE, colormap="inferno")
    widget = ThresholdWidget(viewer)  # picks the map and adds the live mask layer
    viewer.window.add_dock_widget(widget)
    QApplication.processEvents()
    from napari_brainage.threshold import Thresholder

    tic = time.perf_counter()
    Thresholder(values)  # what picking a map costs: one sort of the brain's values
    setup_s = time.perf_counter() - tic

    def drag(update) -> np.ndarray:
        times = []
        for percent in percents:
            tic = time.perf_counter()
            update(float(percent))
            QApplication.processEvents()
            times.append(time.perf_counter() - tic)
        return np.array(times) * 1000

    def widget_update(percent: float) -> None:
        widget.percent.value = percent

    mask_layer = viewer.layers[f"threshold ({layer.name})"]
    brain = values > 0

    def baseline_update(percent: float) -> None:
        threshold = np.percentile(values[brain], 100 - percent)
        mask_layer.data = ((values >= threshold) & brain).astype(np.uint8)

    drag(widget_update)  # warm-up (first draws compile shaders)
    ours = drag(widget_update)
    baseline = drag(baseline_update)
    core = []
    for percent in percents:
        tic = time.perf_counter()
        widget._thresholder.top_percent(float(percent))
        core.append((time.perf_counter() - tic) * 1000)
    viewer.close()

    print(f"map: {shape[0]} x {shape[1]} x {shape[2]} voxels (1 mm), {int(brain.sum())} in the brain; "
          f"{args.positions} slider positions; OMP threads {os.environ['OMP_NUM_THREADS']}")
    print()
    print("| figure | median ms | 95th percentile ms |")
    print("|---|---|---|")
    print(f"| widget update (mask + re-slice + redraw) | {np.median(ours):.1f} | {np.percentile(ours, 95):.1f} |")
    print(f"| of which the mask alone (core) | {np.median(core):.1f} | {np.percentile(core, 95):.1f} |")
    print(f"| baseline update (np.percentile + new mask + layer.data =) | {np.median(baseline):.1f} | "
          f"{np.percentile(baseline, 95):.1f} |")
    print(f"| speed-up over the baseline | {np.median(baseline) / np.median(ours):.1f}x | |")
    print(f"| one-off: picking the map (sort of the brain's values) | {setup_s * 1000:.0f} | |")


if __name__ == "__main__":
    main()
