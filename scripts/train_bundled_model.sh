#!/usr/bin/env bash
# Reproduce the bundled model (napari_brainage/bundled_model/): about 6 hours on 2 CPU cores, half of it
# the noise model (minutes on a GPU: training uses CUDA when present):
# a 1,000-subject synthetic training cohort at 2 mm and the predictor trained on it; 400 subjects
# at 1 mm, used as they are and registered to the template (the two ways users' scans reach the
# model), and the predictor fine-tuned on all three; the noise model (42 epochs, lambda 0.5,
# noise only in the brain); a held-out evaluation (figures go into the model card) and the
# held-out population map. The model is built in WORKDIR/model and copied into the package at
# the end, so an interrupted run leaves the bundled model as it was.
# Usage: scripts/train_bundled_model.sh [WORKDIR]   (default: ./build/bundled-model-data)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/build/bundled-model-data}"
MODEL="$WORK/model"
BUNDLED="$ROOT/napari_brainage/bundled_model"
PATH="$ROOT/.venv/bin:$PATH"

napari-brainage synth "$WORK/train" --n 1000 --seed 1000 --workers 2
napari-brainage train predictor --data "$WORK/train/participants.csv" --out "$WORK/predictor-2mm" \
    --epochs 12 --seed 0

# Scans made at 1 mm read older to a predictor trained on 2 mm ones (+4.4 y), and registering
# them changes the answer again: fine-tune on both paths a 1 mm scan takes.
napari-brainage synth "$WORK/train1mm" --n 400 --seed 3000 --res 1 --workers 2
napari-brainage preprocess "$WORK/train1mm/participants.csv" --out "$WORK/train1mm-registered" \
    --preprocess register --workers 2
python - "$WORK" <<'PY'
# One table: the 2 mm cohort, then each 1 mm subject as it is and registered (one id, so
# both copies fall on the same side of the train/validation split).
import csv, sys
from pathlib import Path
work = Path(sys.argv[1])
rows = [(r["subject"], str(work / "train" / r["path"]), r["age"])
        for r in csv.DictReader(open(work / "train" / "participants.csv"))]
for r in csv.DictReader(open(work / "train1mm" / "participants.csv")):
    rows.append(("mm1-" + r["subject"], str(work / "train1mm" / r["path"]), r["age"]))
    rows.append(("mm1-" + r["subject"], str(work / "train1mm-registered" / f"{r['subject']}.nii.gz"), r["age"]))
with open(work / "combined.csv", "w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["subject", "path", "age"])
    writer.writerows(rows)
PY
napari-brainage train predictor --data "$WORK/combined.csv" --init "$WORK/predictor-2mm" --out "$MODEL" \
    --epochs 5 --lr 3e-4 --seed 0 --workers 2

# The noise model: lambda 0.5, noise only in the brain, 42 epochs on the first 800 training subjects.
# The bundled one was trained on an H200 GPU (about 10 s an epoch, shared with four other runs); on 2 CPU
# cores an epoch of this size takes about 4-5 minutes, so this step alone is about 3 hours there.
napari-brainage train noise-model --data "$WORK/train/participants.csv" --limit 800 --predictor "$MODEL" \
    --out "$MODEL" --epochs 42 --batch-size 2 --lr 3e-3 --seed 0 --lam 0.5 --max-sd 0.3 --brain-only \
    --target prediction
napari-brainage synth "$WORK/heldout" --n 200 --seed 9999 --workers 2   # seed never used in training
python "$ROOT/benchmarks/evaluate_model.py" --cohort "$WORK/heldout" --model "$MODEL" --update-card
napari-brainage population "$WORK/heldout/participants.csv" --model "$MODEL" \
    --out "$MODEL/population_map.nii.gz" --regions "$MODEL/population_regions.csv" --overwrite
# Prediction intervals and gap centiles: 300 more subjects of a seed no training used.
napari-brainage synth "$WORK/calib" --n 300 --seed 2121 --workers 2
napari-brainage calibrate "$WORK/calib/participants.csv" --model "$MODEL" \
    --source "napari-brainage synth CALIB --n 300 --seed 2121 (2 mm, ages 45-80, gap sd 3; a seed no training used)"
rm -rf "$MODEL/checkpoints"
cp "$MODEL"/{model_card.json,predictor.pt,noise_model.pt,population_map.nii.gz,population_regions.csv} "$BUNDLED/"
