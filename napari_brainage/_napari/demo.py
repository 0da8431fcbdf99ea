"""``napari-brainage demo``: napari with a sample scan and the plugin's widgets.

With a display it opens the viewer and blocks until the window is closed.
Without one it renders the same view off-screen and prints where the PNG is:
under Xvfb when ``xvfb-run`` is installed (re-running itself inside it), since
napari needs OpenGL, which Qt's "offscreen" platform does not provide.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import BrainAgeError, InputError
from ..io import atomic_path

#: Widgets docked by the demo (display names from napari.yaml).
DEMO_WIDGETS = ("Brain age", "Scan info")
DEFAULT_SAMPLE = "synthetic_age50_accelerated"
#: How long a headless demo waits for the analysis before taking the screenshot.
ANALYSIS_TIMEOUT_S = 300
WINDOW_SIZE = (1400, 860)
_UNDER_XVFB = "NAPARI_BRAINAGE_UNDER_XVFB"


def default_screenshot_path() -> Path:
    """A PNG path in a fresh folder of its own: each run's picture is kept (a fixed shared
    /tmp/napari-brainage/demo.png was replaced by every run, another user's included)."""
    return Path(tempfile.mkdtemp(prefix="napari-brainage-demo-")) / "demo.png"


def check_screenshot_target(target: Path, overwrite: bool) -> None:
    """The errors writing ``target`` would end in, said before the demo starts (it
    takes seconds) instead of after: a folder that does not exist or cannot be
    written, a folder named as the file, an existing file without ``overwrite``."""
    folder = target.parent
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {target}: it is a folder; give a file name such as "
                                f"{target / 'demo.png'}")
    if not folder.exists():
        raise FileNotFoundError(f"cannot write {target}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {target}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {target}: no permission to write in {folder}")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(sample: str, screenshot: str | None = None, overwrite: bool = False) -> int:
    from ..samples import SAMPLES

    if sample not in SAMPLES:
        raise InputError(f"unknown sample {sample!r}; choose from {', '.join(sorted(SAMPLES))}")
    if screenshot is not None:
        check_screenshot_target(Path(screenshot), overwrite)
    if screenshot is None and has_display():
        viewer, _ = build_demo_viewer(sample, show=True)
        import napari

        napari.run()
        del viewer
        return 0

    if screenshot is None:  # no display: a picture of its own, where the last line says
        target = default_screenshot_path()
        try:
            return _rerun_under_xvfb(sample, target)
        finally:
            if not target.exists():  # no xvfb-run, or the rendering failed: no empty folder left
                shutil.rmtree(target.parent, ignore_errors=True)
    target = Path(screenshot)
    if not has_display():
        return _rerun_under_xvfb(sample, target)
    render_screenshot(sample, target)
    print(f"napari-brainage demo: screenshot written to {target.resolve()}")
    return 0


def _rerun_under_xvfb(sample: str, target: Path) -> int:
    xvfb_run = shutil.which("xvfb-run")
    if os.environ.get(_UNDER_XVFB) or xvfb_run is None:
        raise BrainAgeError(
            "no display found and xvfb-run is not installed: napari needs OpenGL. "
            "Install Xvfb (Debian/Ubuntu: apt-get install xvfb xauth libgl1 libgl1-mesa-dri) "
            "or run on a machine with a display."
        )
    command = [
        xvfb_run, "-a", "-s", "-screen 0 1600x1000x24",
        sys.executable, "-m", "napari_brainage.cli", "demo",
        "--sample", sample, "--screenshot", str(target), "--overwrite",
    ]
    return subprocess.call(command, env={**os.environ, _UNDER_XVFB: "1"})


def build_demo_viewer(sample: str, show: bool):
    """A viewer with ``sample`` opened, the demo widgets docked and the analysis started.

    Returns (viewer, brain-age widget); the widget is busy until the analysis is
    done, and idle at once when there is no bundled model to run.
    """
    import napari

    from ..model.bundle import bundled_model_dir
    from ..model.card import CARD_FILE

    viewer = napari.Viewer(title="napari-brainage demo", show=show)
    viewer.window.resize(*WINDOW_SIZE)
    viewer.open_sample("napari-brainage", sample)
    widgets = {name: viewer.window.add_plugin_dock_widget("napari-brainage", name)[1]
               for name in DEMO_WIDGETS}
    if (bundled_model_dir() / CARD_FILE).exists():
        widgets["Brain age"].start()
    return viewer, widgets["Brain age"]


def render_screenshot(sample: str, target: Path) -> Path:
    """Render the demo view (window included) to ``target``, atomically."""
    from qtpy.QtWidgets import QApplication

    viewer, widget = build_demo_viewer(sample, show=True)
    try:
        deadline = time.monotonic() + ANALYSIS_TIMEOUT_S
        while widget is not None and widget.busy and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.05)
        QApplication.processEvents()
        with atomic_path(target) as tmp:
            viewer.screenshot(str(tmp), canvas_only=False, flash=False)
    finally:
        viewer.close()
    return target
