"""A result in words for people: the result panel, the one-line notification, and
a PNG snapshot of the view with the numbers written under it.

Every place that shows a brain age (the Brain age widget, its exports, the
notifications) takes its text from here, so they say the same thing. A
screenshot alone loses what it showed; the caption (scan, predicted age, gaps,
map, model) travels with the picture into reports and slides.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError
from .io import atomic_path
from .options import Method
from .quality import FAIL, PASS, WARN, only_about_the_age
from .uncertainty import interval_text

if TYPE_CHECKING:  # (importing inference loads torch)
    from .inference import AgeResult

CAPTION_FONT_PX = 18
_MARGIN_PX = 10


def captioned(image: np.ndarray, lines: Sequence[str], colour_bar: ColourBar | None = None) -> np.ndarray:
    """``image`` (H x W x 3 or 4, uint8) with ``lines`` of text in a black band below it,
    each wrapped to the image's width (nothing is cut off), and ``colour_bar`` (what
    the overlay's colours mean) drawn under the text when given."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"an RGB(A) uint8 image is needed, got {image.shape} {image.dtype}")
    picture = Image.fromarray(image[..., :3])
    font = ImageFont.load_default(size=CAPTION_FONT_PX)
    line_px = CAPTION_FONT_PX + 6
    # PIL's built-in font has no dashes beyond the hyphen.
    lines = [line.replace("\N{EN DASH}", "-").replace("\N{EM DASH}", "-") for line in lines]
    if colour_bar is not None:  # what the colours are, on the line above their strip
        lines.append(f"colours: {colour_bar.label}")
    wrapped = [part for line in lines for part in _wrap(line, font, picture.width - 2 * _MARGIN_PX)]
    bar_px = 2 * line_px + _MARGIN_PX if colour_bar is not None else 0
    band = _MARGIN_PX * 2 + line_px * len(wrapped) + bar_px
    canvas = Image.new("RGB", (picture.width, picture.height + band), "black")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(wrapped):
        draw.text((_MARGIN_PX, picture.height + _MARGIN_PX + i * line_px), line, fill="white", font=font)
    if colour_bar is not None:
        top = picture.height + _MARGIN_PX + line_px * len(wrapped) + _MARGIN_PX // 2
        _draw_colour_bar(canvas, draw, font, colour_bar, top, line_px)
    return np.asarray(canvas)


class ColourBar(NamedTuple):
    """An overlay's colours for a caption: ``colours`` (N x 3 or 4, floats 0-1, low to
    high) spread from ``low`` to ``high``, and what the values are (``label``)."""

    colours: np.ndarray
    low: float
    high: float
    label: str


def _draw_colour_bar(canvas, draw, font, bar: ColourBar, top: int, line_px: int) -> None:
    width = max(canvas.width // 2, 10)
    left = _MARGIN_PX
    colours = (np.clip(np.asarray(bar.colours, float)[:, :3], 0, 1) * 255).astype(np.uint8)
    strip = colours[np.linspace(0, len(colours) - 1, width).astype(int)][None].repeat(line_px // 2, axis=0)
    canvas.paste(Image.fromarray(strip), (left, top))
    below = top + line_px // 2 + 2
    draw.text((left, below), f"{bar.low:.3g}", fill="white", font=font)
    high = f"{bar.high:.3g}"
    draw.text((left + width - draw.textlength(high, font=font), below), high, fill="white", font=font)


def _wrap(line: str, font, width_px: int) -> list[str]:
    """``line`` broken at spaces into pieces no wider than ``width_px`` (a word
    longer than that stays whole)."""
    words, out, current = line.split(" "), [], ""
    for word in words:
        trial = f"{current} {word}" if current else word
        if current and font.getlength(trial) > width_px:
            out.append(current)
            current = word
        else:
            current = trial
    return [*out, current]


def save_png(image: np.ndarray, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``image`` as a PNG atomically; refuse to replace a file unless ``overwrite``."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: a snapshot must be a .png file")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image)).save(tmp, format="PNG")
    return path


# ------------------------------------------------------------------ text
def qc_verdict(result: AgeResult) -> str:
    """"QC pass", "QC warning: <reasons>" or "QC failed: <reason> \N{EM DASH} no age"."""
    text = result.verdict()
    return f"{text} \N{EM DASH} no age" if result.qc_status == FAIL else text


def scan_line(name: str) -> str:
    """The first line of the result panel: the scan the numbers belong to."""
    return f"scan: {name}"  # short: the panel is narrow, long names stay on one line


def interval_of(result: AgeResult) -> str:
    """"90 % interval 55.8-64.1 y" for a calibrated model's result, else ""."""
    return interval_text(result.interval_low, result.interval_high, result.interval_level)


def interval_caveat(result: AgeResult) -> str:
    """" (QC warning: may not hold)" when QC warned: the interval is calibrated on
    scans like the held-out subjects, and a warned scan is not one of them (5 mm
    slices: 31 % of 90 % intervals held the age, docs/benchmarks.md)."""
    return " (QC warning: may not hold)" if result.qc_status == WARN and not only_about_the_age(result.qc) else ""


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 22nd, ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def centile_of(result: AgeResult) -> str:
    """" (92nd centile)" of the corrected gap among held-out subjects', else ""."""
    if result.gap_centile is None:
        return ""
    if result.gap_centile < 1:  # beyond every held-out subject's gap: not "the 1st"
        return " (below the 1st centile)"
    if result.gap_centile > 99:
        return " (above the 99th centile)"
    return f" ({ordinal(int(round(result.gap_centile)))} centile)"


def format_result(result: AgeResult, name: str | None = None) -> str:
    """The result panel: the scan these numbers belong to, the age with its QC verdict, the gaps."""
    lines = [scan_line(name or result.subject)]
    if result.predicted_age is None:
        return "\n".join([*lines, qc_verdict(result)])
    # A no-break space: a narrow panel wrapped "72.3 / y" between number and unit.
    lines.append(f"predicted age   {result.predicted_age:.1f}\N{NO-BREAK SPACE}y  {qc_verdict(result)}")
    interval = interval_of(result)
    if interval:
        lines.append(f"                {interval}{interval_caveat(result)}")
    if result.contrast not in ("", "T1"):  # said only when it is not what most scans are
        lines.append(f"read as         {result.contrast}-weighted")
    if result.age is not None:
        lines += [f"age             {result.age:.1f} y",
                  f"brain-age gap   {result.gap:+.1f} y",
                  f"corrected gap   {result.corrected_gap:+.1f} y{centile_of(result)}"]
    return "\n".join(lines)


def notification(result: AgeResult, name: str) -> str:
    """One line, numbers first: napari's notification shows about 45 characters of
    its first line (the rest is behind the expand arrow), so "Brain age of <long
    scan name>:" left no room for the age."""
    if result.predicted_age is None:
        return f"Brain age: {qc_verdict(result)} ({name})"
    numbers = f"Brain age {result.predicted_age:.1f} y"  # the interval is in the panel: no room here
    if result.age is not None:
        numbers += f", gap {result.gap:+.1f} y"
    status = result.qc_status
    text = f"{numbers}, QC {'warning' if status == 'warn' else status}: {name}"
    text += f" (age {result.age:g})" if result.age is not None else " (age not given)"
    if status == "warn":
        text += f": {result.qc}"
    return text


def caption_lines(result: AgeResult, model_dir, method: str = "noise", view: str = "") -> list[str]:
    """Caption of an exported snapshot: what was analysed, the numbers, which map, which
    model, and (``view``) which slice the picture is and which way is which."""
    numbers = f"predicted age {result.predicted_age:.1f} y"
    if result.interval_low is not None:
        numbers += f" ({interval_of(result)}{'; may not hold' if interval_caveat(result) else ''})"
    if result.age is not None:
        numbers += (f"   age {result.age:.1f} y   gap {result.gap:+.1f} y"
                    f"   corrected gap {result.corrected_gap:+.1f} y{centile_of(result)}")
    model = f"model: {model_dir}" if model_dir else "model: bundled (synthetic training data, not for clinical use)"
    # The figure travels without the panel: it carries the QC verdict too ("QC pass" is not worth a line).
    verdict = [qc_verdict(result)] if result.qc_status != PASS else []
    return [f"{result.subject}: {numbers}", *verdict,
            f"{Method.parse(method).definition} (napari-brainage); {model}", *([view] if view else [])]
