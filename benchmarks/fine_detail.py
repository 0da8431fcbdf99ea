"""What QC's fine-detail measure reads on real-world kinds of files, and which it flags.

A scan upsampled from larger voxels, or smoothed, has a header that looks fine;
``quality.fine_detail`` measures the detail itself (per axis, mean squared
second over first difference inside the head). This script writes every variant
kind of ``napari_brainage.variants`` (except the non-anatomical ones) for held-out
1 mm subjects, plus optional outside files given with ``--files``, and prints per
kind the median fine detail over the axes (min-max over subjects) and QC's
verdict on it (``quality.coarse_content``: "-" passes, "warn", "fail"). The null
is the check that reads only the header (``quality.slice_thickness``): what it
flags is printed beside. The last two columns are the opposite check, on the
model's 2 mm input after preprocessing: the anatomy's fine detail with the
noise's share taken out (``quality.anatomical_detail``) and whether it is
sharper than the training's (``quality.sharp_content``). Ages are the robustness benchmark's
(``benchmarks/input_robustness.py --kinds resolution``).

Usage: python benchmarks/fine_detail.py --cohort DIR [--limit 4] [--files F.nii.gz ...]
(DIR from ``napari-brainage synth DIR --n 8 --seed 34001 --res 1``, a seed no training used.)
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_brainage import quality as qc  # noqa: E402
from napari_brainage.intensity import standardise  # noqa: E402
from napari_brainage.io import load_volume  # noqa: E402
from napari_brainage.preprocess import prepare  # noqa: E402
from napari_brainage.space.template import load_template  # noqa: E402
from napari_brainage.variants import KINDS, write_variants  # noqa: E402


def judge(volume) -> tuple[float, str, str, float, str]:
    """(median fine detail, coarse_content verdict, header-only verdict, the model
    input's anatomical detail, sharp_content verdict) of one volume."""
    intensities = standardise(volume.data)
    if intensities.failures:
        return float("nan"), "refused earlier", "-", float("nan"), "-"
    detail = qc.fine_detail(intensities.data)
    warnings, failures = qc.coarse_content(detail, volume.voxel_sizes)
    thick_warnings, thick_failures = qc.slice_thickness(volume.voxel_sizes)
    header = "fail" if thick_failures else "warn" if thick_warnings else "-"
    try:  # the anatomy's detail is judged on the model's input: after preprocessing
        anatomy = qc.anatomical_detail(prepare(volume).data, load_template(2))
    except qc.QualityError:
        anatomy = float("nan")
    sharp = "warn" if qc.sharp_content(anatomy) else "-"
    return float(np.median(detail)), "fail" if failures else "warn" if warnings else "-", header, anatomy, sharp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--files", nargs="*", default=[], type=Path, help="outside files to judge as they are")
    args = parser.parse_args()
    rows = list(csv.DictReader(open(args.cohort / "participants.csv", newline="")))[: args.limit]
    kinds = [name for name, kind in KINDS.items() if kind.group != "not-anatomical"]
    found: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    for i, row in enumerate(rows):
        clean = load_volume(args.cohort / row["path"])
        found["clean"].append(judge(clean))
        folder = tempfile.mkdtemp(prefix="fine_detail_")
        try:
            for variant in write_variants(clean, folder, seed=i, kinds=kinds):
                found[variant.name].append(judge(load_volume(variant.path)))
        finally:
            shutil.rmtree(folder)
        print(f"  {row['subject']} done", flush=True)
    for path in args.files:
        found[f"outside: {path.name}"].append(judge(load_volume(path)))

    print(f"\n{len(rows)} held-out subjects; coarse: warn below {qc.MIN_FINE_DETAIL}, fail below "
          f"{qc.MIN_FINE_DETAIL_TO_USE}; sharp: warn above {qc.MAX_ANATOMICAL_DETAIL}\n")
    print("| file kind | group | fine detail, median over axes (min-max) | coarse-content QC | null: header-only QC "
          "| anatomical detail on the model grid (min-max) | sharp-content QC |")
    print("|---|---|---|---|---|---|---|")

    def span(values) -> str:
        values = np.array(values, dtype=float)
        return f"{np.nanmin(values):.2f}-{np.nanmax(values):.2f}" if np.isfinite(values).any() else "-"

    for name, values in found.items():
        group = KINDS[name].group if name in KINDS else ""

        def share(column: int) -> str:
            counts = {verdict: sum(v[column] == verdict for v in values) for verdict in ("warn", "fail")}
            said = [f"{k} {n}/{len(values)}" for k, n in counts.items() if n]
            return ", ".join(said) or "pass"
        print(f"| {name} | {group} | {span([v[0] for v in values])} | {share(1)} | {share(2)} "
              f"| {span([v[3] for v in values])} | {share(4)} |")


if __name__ == "__main__":
    main()
