"""docs/synthetic_ageing.png: the same synthetic subject at brain age 50 and 80.

    .venv/bin/pip install matplotlib
    .venv/bin/python scripts/figure_synthetic.py

Same seed, so the same nuisance (pose, elastic field, bias, contrast, noise):
the difference shows ageing alone, and the ground-truth outline shows where the
generator put it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_brainage.synthetic.cohort import subject_rng  # noqa: E402
from napari_brainage.synthetic.config import CohortConfig  # noqa: E402
from napari_brainage.synthetic.model import ageing_model  # noqa: E402

AGES = (50.0, 80.0)
SEED, SUBJECT = 7, 0
#: MNI coordinates (mm) of the slices: axial through the ventricles' bodies,
#: coronal through the hippocampi and the ventricles' temporal horns.
AXIAL_Z_MM, CORONAL_Y_MM = 16.0, -22.0


def main() -> None:
    model = ageing_model(CohortConfig())
    kit = model.kit
    young, old = (model.synthesize(age, subject_rng(SEED, SUBJECT)).data.astype(np.float32) for age in AGES)
    truth = model.ground_truth()["union"]
    inverse = np.linalg.inv(kit.affine)
    k = int(round((inverse @ [0, 0, AXIAL_Z_MM, 1])[2]))
    j = int(round((inverse @ [0, CORONAL_Y_MM, 0, 1])[1]))

    def axial(v):  # rows: anterior up; columns: patient's right on the right
        return np.flipud(v[::-1, :, k].T)

    def coronal(v):  # rows: superior up
        return np.flipud(v[::-1, j, :].T)

    difference = old - young
    limit = np.percentile(np.abs(difference), 99.9)
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.6), facecolor="black")
    for row, (view, name) in enumerate([(axial, f"axial z = {AXIAL_Z_MM:g} mm"),
                                         (coronal, f"coronal y = {CORONAL_Y_MM:g} mm")]):
        for col, (image, title) in enumerate([(young, f"brain age {AGES[0]:g}"),
                                              (old, f"brain age {AGES[1]:g}")]):
            axes[row, col].imshow(view(image), cmap="gray", vmin=0, vmax=np.percentile(young, 99.5))
            axes[row, col].set_title(f"{title} ({name})", color="white", fontsize=10)
        axes[row, 2].imshow(view(difference), cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[row, 2].contour(view(truth.astype(float)), levels=[0.5], colors="gold", linewidths=0.7)
        axes[row, 2].set_title("80 minus 50 (gold: ground truth)", color="white", fontsize=10)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle("Synthetic ageing: same subject and nuisance, brain age 50 vs 80",
                 color="white", fontsize=12)
    fig.tight_layout()
    out = ROOT / "docs" / "synthetic_ageing.png"
    fig.savefig(out, dpi=110, facecolor="black")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
