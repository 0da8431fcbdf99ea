"""Rebuild sample_data/icbm152_2009a_t1_2mm.nii.gz from the template nilearn ships.

    .venv/bin/pip install nilearn scipy
    .venv/bin/python scripts/build_sample_data.py

The 1 mm ICBM152 2009a symmetric T1 (197x233x189, in nilearn's wheel under
nilearn/datasets/data/) is low-pass filtered (Gaussian, FWHM sqrt(2^2 - 1^2) mm,
so that the 2 mm grid does not alias) and resampled with trilinear
interpolation onto the standard 2 mm MNI grid used by FSL (91x109x91,
x flipped: LAS). Deterministic: the same inputs give the same file.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from scipy.ndimage import gaussian_filter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_brainage.io import Volume, save_volume  # noqa: E402

#: FSL's MNI152 2 mm grid.
MNI_2MM_SHAPE = (91, 109, 91)
MNI_2MM_AFFINE = np.array(
    [[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]]
)


def nilearn_data_dir() -> Path:
    spec = find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise SystemExit("nilearn is not installed: pip install nilearn")
    return Path(spec.origin).parent / "datasets" / "data"


def main() -> None:
    source = nilearn_data_dir() / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    image = nib.load(source)
    data = image.get_fdata(dtype=np.float32)
    fwhm_mm = np.sqrt(2.0**2 - 1.0**2)
    smoothed = gaussian_filter(data, sigma=fwhm_mm / 2.3548 / nib.affines.voxel_sizes(image.affine))
    resampled = resample_from_to(
        nib.Nifti1Image(smoothed, image.affine), (MNI_2MM_SHAPE, MNI_2MM_AFFINE), order=1
    )
    # Back to the template's own 0-255 range, stored compactly as uint8.
    values = np.clip(np.rint(np.asarray(resampled.dataobj)), 0, 255).astype(np.uint8)
    out = ROOT / "sample_data" / "icbm152_2009a_t1_2mm.nii.gz"
    save_volume(Volume(values, MNI_2MM_AFFINE), out, overwrite=True)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB), shape {values.shape}")


if __name__ == "__main__":
    main()
