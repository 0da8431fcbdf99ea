"""Brain extraction for scans that still have skull, scalp and neck (deepbet).

The predictor was trained on skull-stripped brains. A raw head used to reach it
cut out by the template's brain mask after registration, which keeps a rim of
skull and CSF where a subject's brain is smaller than the template's and cuts
brain where it is larger: such scans read 1.5-1.8 y young on average (3.5 y at
most; ``benchmarks/input_robustness.py``, head kinds). Brain extraction is not
what this project exists for, so it uses a well-kept tool: deepbet (Fisch et al.
2024, "deepbet: Fast brain extraction of T1-weighted MRI using Convolutional
Neural Networks", Computers in Biology and Medicine 179:108845; MIT licence),
whose two small networks ship inside its wheel (no download at run time).

Optional: ``pip install napari-brainage[skullstrip]`` (in ``[all]``). Without it,
heads keep the template-mask path and its warning. The networks are TorchScript
archives; they are loaded only after their SHA-256 matches the release pinned
here (the project's rule for weights), and always on the CPU, so a scan's mask
does not depend on the machine.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np

from ..io import Volume
from ..model.weights import sha256

#: deepbet 1.0.2's networks (``data/models`` beside the package), by file name.
DEEPBET_MODELS = {
    "model.pt": "de8ee7c69654d0dd3935dc4a5d84571d8ecf4637a6bfc01df399c4c2bc86e0fd",
    "bbox_model.pt": "39a7b2b5f799faa1391ea97bfcdc0b9299f20d84f2316a4ff8918dc4685e40aa",
}

#: A brain mask outside this volume (ml) is not a brain extraction to trust:
#: adult brains (cerebrum, cerebellum, brainstem) are about 1,000-1,700 ml
#: (total intracranial volume 1,200-1,900 ml); wide, so only gross failures
#: (a mask of the whole head, or of a fragment) fall outside.
PLAUSIBLE_BRAIN_ML = (600.0, 2600.0)

_lock = threading.Lock()
_extractor = None


class SkullStripError(RuntimeError):
    """Brain extraction was not possible or not plausible; the message says why."""


def models_dir() -> Path | None:
    """Where deepbet's networks are installed; None when deepbet is not installed."""
    try:
        from deepbet.utils import DATA_PATH
    except ImportError:
        return None
    return Path(DATA_PATH) / "models"


def available() -> bool:
    """True when deepbet (and its dependencies) can be imported."""
    try:
        import cc3d  # noqa: F401
        import fill_voids  # noqa: F401
        from deepbet.bet import BrainExtraction  # noqa: F401
    except ImportError:
        return False
    return True


def _load():
    """deepbet's extractor, checksummed and loaded once per process."""
    global _extractor
    with _lock:
        if _extractor is None:
            from deepbet.bet import BrainExtraction

            folder = models_dir()
            for name, expected in DEEPBET_MODELS.items():
                path = folder / name
                if not path.is_file():
                    raise SkullStripError(f"deepbet's network {path} is missing; reinstall deepbet==1.0.2")
                if sha256(path) != expected:
                    raise SkullStripError(f"deepbet's network {path} does not match the pinned release "
                                          "(checksum); reinstall deepbet==1.0.2")
            with warnings.catch_warnings():  # deepbet loads TorchScript, which torch deprecates but still reads
                warnings.filterwarnings("ignore", ".*torch.jit.load.* is deprecated", DeprecationWarning)
                _extractor = BrainExtraction(no_gpu=True, model_path=str(folder / "model.pt"),
                                             bbox_model_path=str(folder / "bbox_model.pt"))
    return _extractor


def check_brain_volume(brain_ml: float) -> None:
    """:class:`SkullStripError` when a brain mask of ``brain_ml`` ml is outside ``PLAUSIBLE_BRAIN_ML``."""
    low, high = PLAUSIBLE_BRAIN_ML
    if not low <= brain_ml <= high:
        raise SkullStripError(f"deepbet's brain mask is {brain_ml:.0f} ml, outside {low:.0f}-{high:.0f} ml")


def extract_brain(volume: Volume) -> tuple[Volume, float]:
    """The scan with everything outside deepbet's brain mask set to 0, on its own grid.

    ``volume``: a T1-weighted head, intensities already standardised (finite,
    background 0). Returns (the brain, the mask's volume in ml).

    Raises
    ------
    SkullStripError
        when deepbet is not installed or its networks do not match the pinned
        release, or when the mask's volume is outside ``PLAUSIBLE_BRAIN_ML``.
    """
    import nibabel as nib

    if not available():
        raise SkullStripError("deepbet is not installed (pip install napari-brainage[skullstrip])")
    extractor = _load()
    data = np.asarray(volume.data, dtype=np.float32)
    image = nib.Nifti1Image(data, np.asarray(volume.affine, dtype=np.float64))
    try:
        with _lock:  # one extraction at a time: the networks are shared and not thread-safe
            _, mask_image, _ = extractor.run(image)
    except (AssertionError, RuntimeError, ValueError) as err:  # deepbet asserts on empty inputs
        raise SkullStripError(f"deepbet could not extract the brain ({err or type(err).__name__})") from err
    # deepbet returns its mask in the input's orientation and on its grid.
    mask = np.asarray(mask_image.get_fdata(), dtype=np.float32) > 0.5
    if mask.shape != data.shape:
        raise SkullStripError(f"deepbet's mask has shape {mask.shape}, the scan {data.shape}")
    voxel_ml = float(abs(np.linalg.det(np.asarray(volume.affine)[:3, :3]))) / 1000.0
    brain_ml = float(mask.sum()) * voxel_ml
    check_brain_volume(brain_ml)
    return Volume(np.where(mask, data, 0.0).astype(np.float32), volume.affine, volume.header, volume.path,
                  volume.metadata), brain_ml
