"""A PNG snapshot of the view with the numbers written under it.

A screenshot alone loses what it showed; the caption (scan, predicted age,
gaps, model) travels with the picture into reports and slides.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError
from .io import atomic_path

CAPTION_FONT_PX = 18
_MARGIN_PX = 10


def captioned(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``image`` (H x W x 3 or 4, uint8) with ``lines`` of text in a black band below it."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"an RGB(A) uint8 image is needed, got {image.shape} {image.dtype}")
    picture = Image.fromarray(image[..., :3])
    font = ImageFont.load_default(size=CAPTION_FONT_PX)
    line_px = CAPTION_FONT_PX + 6
    band = _MARGIN_PX * 2 + line_px * len(lines)
    canvas = Image.new("RGB", (picture.width, picture.height + band), "black")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((_MARGIN_PX, picture.height + _MARGIN_PX + i * line_px), line, fill="white", font=font)
    return np.asarray(canvas)


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
