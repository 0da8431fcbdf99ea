#!/usr/bin/env bash
# Reproduce the bundled model (napari_brainage/bundled_model/) on CPU, about an hour on 2 cores:
# a 1,000-subject synthetic training cohort, the predictor, the noise model, a held-out
# evaluation (figures go into the model card) and the held-out population map.
# Usage: scripts/train_bundled_model.sh [WORKDIR]   (default: ./build/bundled-model-data)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/build/bundled-model-data}"
MODEL="$ROOT/napari_brainage/bundled_model"
PATH="$ROOT/.venv/bin:$PATH"

napari-brainage synth "$WORK/train" --n 1000 --seed 1000 --workers 2
napari-brainage train predictor --data "$WORK/train/participants.csv" --out "$MODEL" \
    --epochs 12 --seed 0
napari-brainage train noise-model --data "$WORK/train/participants.csv" --predictor "$MODEL" \
    --out "$MODEL" --epochs 4 --batch-size 2 --lr 3e-3 --seed 0 --lam 0.05 --max-sd 0.3 --target prediction
napari-brainage synth "$WORK/heldout" --n 200 --seed 9999 --workers 2   # seed never used in training
python "$ROOT/benchmarks/evaluate_model.py" --cohort "$WORK/heldout" --model "$MODEL" --update-card
napari-brainage population "$WORK/heldout/participants.csv" --model "$MODEL" \
    --out "$MODEL/population_map.nii.gz" --regions "$MODEL/population_regions.csv" --overwrite
rm -rf "$MODEL/checkpoints"
