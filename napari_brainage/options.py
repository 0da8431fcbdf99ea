"""The choices a run is made of, in one place: the CLI, the widgets and the core
read them from here, so a new choice appears everywhere at once.

Importing this module is cheap (no torch, no SimpleITK): the CLI builds its
``--help`` from it before any command needs the model.

* :class:`Device`, :class:`Preprocessing`, :class:`Method`: the choice lists,
  as ``str`` enums (``Device.CPU == "cpu"``), each member with the words a user
  sees (``label``) and what it does (``help``).
* :class:`RunOptions`: the options of one analysis (which model, where, how
  scans are prepared, which importance method), frozen, checked when made.
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .errors import InputError
from .uncertainty import DEFAULT_LEVEL, check_level


class _Choice(str, Enum):
    """A ``str`` enum whose members compare equal to their values."""

    def __str__(self) -> str:  # argparse and f-strings show the value, not "Device.CPU"
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)

    @classmethod
    def parse(cls, value) -> _Choice:
        """``value`` (a member or its string, any case) as a member; :class:`InputError` otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InputError(f"unknown {cls.__name__.lower()} {value!r}; choose from "
                             f"{', '.join(cls.values())}") from None


class Device(_Choice):
    """Where the networks run. ``auto``: CUDA when torch sees it, else the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"

    @classmethod
    def _missing_(cls, value):
        return cls.GPU if str(value).lower() == "cuda" else None  # torch's word for it


class Preprocessing(_Choice):
    """How a scan reaches the model's 2 mm MNI grid (``preprocess.prepare``)."""

    AUTO = "auto"
    REGISTER = "register"
    NONE = "none"


PREPROCESSING_HELP = ("auto (default): use a scan on the 1 or 2 mm MNI grid, or on its voxel lattice with another "
                      "field of view or axis order, as it is when it matches the template there, and register "
                      "every other scan; register: always; none: resample through the affine. Every route "
                      "ends with the same intensity clean-up, brain mask and quality control")


class Method(_Choice):
    """How voxel importance is computed (``explain.attribution``)."""

    NOISE = "noise"
    SALIENCY = "saliency"
    INTEGRATED_GRADIENTS = "integrated_gradients"
    SMOOTHGRAD = "smoothgrad"
    OCCLUSION = "occlusion"
    GRADCAM = "gradcam"

    @property
    def label(self) -> str:
        """The method's name as the field writes it."""
        return _METHOD_LABELS[self]

    @property
    def definition(self) -> str:
        """What the map's values are, for captions, NIfTI descriptions and tables."""
        if self is Method.NOISE:
            return "importance = 1 - noise mask (U-Noise)"
        return f"importance = {self.label} attribution, scaled to [0, 1] (Captum)"


_METHOD_LABELS = {Method.NOISE: "noise model (U-Noise)", Method.SALIENCY: "Saliency",
                  Method.INTEGRATED_GRADIENTS: "Integrated Gradients", Method.SMOOTHGRAD: "SmoothGrad",
                  Method.OCCLUSION: "Occlusion", Method.GRADCAM: "Grad-CAM"}


@dataclass(frozen=True)
class RunOptions:
    """The options of one analysis, shared by every scan of a run.

    Parameters
    ----------
    model_dir
        Model folder (``predictor.pt``, ``noise_model.pt``, ``model_card.json``);
        ``None``: the bundled model.
    device, preprocessing, method
        Members of :class:`Device`, :class:`Preprocessing`, :class:`Method`, or
        their strings (converted when the options are made).
    interval_level
        The prediction interval's level, in (0, 1) (``uncertainty``; 0.9: the
        interval holds 9 in 10 subjects' ages). Used when the model is calibrated.

    Raises
    ------
    InputError
        for a choice that is not one of the lists above, or a level outside (0, 1).
    """

    model_dir: Path | None = None
    device: Device = Device.AUTO
    preprocessing: Preprocessing = Preprocessing.AUTO
    method: Method = Method.NOISE
    interval_level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        # Frozen: the conversions go through object.__setattr__, once, here.
        if self.model_dir is not None and not isinstance(self.model_dir, Path):
            object.__setattr__(self, "model_dir", Path(self.model_dir))
        object.__setattr__(self, "device", Device.parse(self.device))
        object.__setattr__(self, "preprocessing", Preprocessing.parse(self.preprocessing))
        object.__setattr__(self, "method", Method.parse(self.method))
        object.__setattr__(self, "interval_level", check_level(self.interval_level))


def map_description(method: Method | str, qc_status: str | None = None, model: str = "") -> str:
    """The NIfTI description (at most 80 characters) of an importance map made
    with ``method`` by ``model`` (``inference.map_model_id``), e.g.
    "napari-brainage importance (gradcam); QC pass; model 275d5e45": every writer
    of maps (CLI, widgets) names its origin the same way, and ``map_origin`` reads it."""
    parts = [f"napari-brainage importance ({Method.parse(method).value})"]
    parts += [f"QC {qc_status}"] if qc_status else []
    parts += [f"model {model}"] if model else []
    return "; ".join(parts)


def population_description(method: Method | str, count: int, model: str = "") -> str:
    """The NIfTI description of a population (mean importance) map of ``count``
    scans, e.g. "napari-brainage population (noise); n=200; model 275d5e45+62e299c0"."""
    text = f"napari-brainage population ({Method.parse(method).value}); n={count}"
    return f"{text}; model {model}" if model else text


@dataclass(frozen=True)
class MapOrigin:
    """What made a map: its method (a ``Method`` value) and model (``inference.map_model_id``);
    "" where unknown (a map from another tool, or written before maps said it)."""

    method: str = ""
    model: str = ""


_ORIGIN_METHOD = re.compile(r"napari-brainage (?:importance|population) \(([a-z_]+)\)")
_ORIGIN_MODEL = re.compile(r"\bmodel ([0-9a-f]{8}(?:\+[0-9a-f]{8})?)\b")


def map_origin(description: str | bytes | None) -> MapOrigin:
    """The ``MapOrigin`` a map's NIfTI description states (``map_description``,
    ``population_description``); empty fields for any other description."""
    if isinstance(description, bytes):
        description = description.decode("ascii", errors="replace")
    text = description or ""
    method, model = _ORIGIN_METHOD.search(text), _ORIGIN_MODEL.search(text)
    return MapOrigin(method.group(1) if method else "", model.group(1) if model else "")
