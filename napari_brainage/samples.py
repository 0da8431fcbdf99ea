"""The scans bundled in ``sample_data/``: where they are and what they hold.

Pure core (no napari): scripts and tests use :func:`sample_path`; the napari
File > Open Sample menu wraps it in ``_sample_data.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .io import Volume, load_volume


@dataclass(frozen=True)
class Sample:
    """A bundled scan: its key, file, menu name and (for synthetic subjects) ages."""

    key: str           #: identifier used in napari.yaml and the CLI
    filename: str      #: file inside sample_data/
    display_name: str  #: what the napari menu shows
    description: str
    age: float | None = None        #: chronological age (synthetic subjects)
    brain_age: float | None = None  #: the age the scan was aged to
    is_mask: bool = False           #: a label mask rather than a scan

    @property
    def metadata(self) -> dict:
        """What widgets may pre-fill from (ages), besides the geometry."""
        return {k: v for k, v in (("age", self.age), ("brain_age", self.brain_age)) if v is not None}


#: Synthetic subjects bundled for the sample menu: (key, age, brain_age).
SYNTHETIC_SAMPLE_SUBJECTS = (
    ("synthetic_age50", 50.0, 50.0),
    ("synthetic_age80", 80.0, 80.0),
    ("synthetic_age50_accelerated", 50.0, 60.0),
)
#: Seed of the bundled synthetic subjects (never used for training cohorts).
SYNTHETIC_SAMPLE_SEED = 20260101


SAMPLES: dict[str, Sample] = {
    s.key: s
    for s in [
        Sample(
            key="icbm152_t1_2mm",
            filename="icbm152_2009a_t1_2mm.nii.gz",
            display_name="ICBM152 2009a T1 template (2 mm)",
            description="MNI ICBM152 2009a symmetric T1 average of 152 young adults, "
            "resampled to the 2 mm MNI grid (91x109x91).",
        ),
        *(
            Sample(
                key=key,
                filename=f"{key}.nii.gz",
                display_name=f"Synthetic subject, age {age:g}, brain age {brain_age:g}"
                + (" (accelerated)" if brain_age > age else ""),
                description=f"Synthetic T1 (2 mm MNI grid) of a {age:g}-year-old whose brain "
                f"was aged to {brain_age:g} years.",
                age=age,
                brain_age=brain_age,
            )
            for key, age, brain_age in SYNTHETIC_SAMPLE_SUBJECTS
        ),
        Sample(
            key="synthetic_ground_truth",
            filename="synthetic_ground_truth.nii.gz",
            display_name="Synthetic ageing regions (ground truth)",
            description="Union of the voxels the synthetic generator ages (lateral "
            "ventricles and hippocampi), 2 mm MNI grid.",
            is_mask=True,
        ),
    ]
}


def sample_data_dir() -> Path:
    """Folder holding the bundled scans.

    In an installed wheel it is ``napari_brainage/sample_data`` (hatch copies
    the repository's top-level ``sample_data/`` there); in a source checkout or
    an editable install it is the top-level folder itself.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "sample_data", package.parent / "sample_data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "napari-brainage's sample_data folder is missing; reinstall the package."
    )


def sample_path(key: str) -> Path:
    """Path of the bundled sample ``key`` (see :data:`SAMPLES`)."""
    if key not in SAMPLES:
        raise InputError(f"unknown sample {key!r}; choose from {sorted(SAMPLES)}")
    return sample_data_dir() / SAMPLES[key].filename


def load_sample(key: str) -> Volume:
    """The bundled sample ``key`` as a :class:`~napari_brainage.io.Volume`."""
    volume = load_volume(sample_path(key))
    volume.metadata.update(SAMPLES[key].metadata, sample=key)
    return volume
