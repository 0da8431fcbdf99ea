#!/usr/bin/env bash
# Issue 19's next step, sized for ONE call of the lent GPU machine (H200, 16 cores, 10 minutes a call,
# 15 minutes of device time a session): synthesise the training cohorts there, train a domain-randomised
# average-pooling predictor from scratch and its noise model, and leave the model folder in OUT, to be
# scored here on the CPU (benchmarks/contrast_resolution.py, evaluate_model.py, registration.py).
#
# Why a script: the device time is scarce and a fresh machine is bare; every minute spent on typing or
# a failed first try is a minute of training lost. Run it at tiny scale on the CPU first (below).
#
# On the device (the machine has PyTorch but no nibabel or SimpleITK; carry nibabel as a wheel, see
# /work/.library/device/README.md; SimpleITK is only needed for registration, which scans synthesised
# on the MNI grids never reach, so an empty stand-in module is put on the path when it is missing):
#   run(command="bash scripts/gpu_train_domain_randomised.sh $OUT", carry=[".whl"], timeout_s=600)
# Tiny smoke run on the CPU, as the device has it (no nibabel, no SimpleITK; 3.5 minutes on 2 busy cores):
#   N2=12 N1=4 PREDICTOR_MIN=0.5 NOISE_MIN=0.3 EPOCHS=1 WORKERS=2 scripts/gpu_train_domain_randomised.sh /tmp/dr
#
# Seeds: 1000 (2 mm) and 3100 (1 mm) are training seeds (docs/benchmarks.md); score on held-out seeds only.
set -euo pipefail
OUT="${1:?usage: gpu_train_domain_randomised.sh OUT}"
N2="${N2:-1200}"                # 2 mm training subjects (about 19 a second on 16 cores)
N1="${N1:-48}"                  # 1 mm training subjects, used as they are (1 mm synthesis is ~30x slower)
PREDICTOR_MIN="${PREDICTOR_MIN:-4}"
NOISE_MIN="${NOISE_MIN:-1.25}"
EPOCHS="${EPOCHS:-400}"         # an upper bound: --max-minutes stops each training
WORKERS="${WORKERS:-16}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-/tmp/dr-work}"
PYTHON="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/log.txt") 2>&1
SECONDS=0

if [ -d "$ROOT/.whl" ] && ! "$PYTHON" -c "import nibabel" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$ROOT"/.whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PYTHON" -c "import SimpleITK" 2>/dev/null; then
    # (its wheel, 53 MB, and the tree do not fit the 64 MiB a call carries). The worker pools set ITK's
    # thread count, so the stand-in has that one call.
    mkdir -p /tmp/no-itk
    printf 'class ProcessObject:\n    @staticmethod\n    def SetGlobalDefaultNumberOfThreads(n):\n        pass\n' \
        > /tmp/no-itk/SimpleITK.py
    export PYTHONPATH="/tmp/no-itk${PYTHONPATH:+:$PYTHONPATH}"
    echo "SimpleITK missing: a stand-in module (no registration on this machine)"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cli() { "$PYTHON" -m napari_brainage.cli "$@"; }
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

cli synth "$WORK/train" --n "$N2" --seed 1000 --workers "$WORKERS"
cli synth "$WORK/train1mm" --n "$N1" --seed 3100 --res 1 --workers "$WORKERS"
echo "synthesised in ${SECONDS} s"

# From scratch: fine-tuning the bundled max-pooling predictor kept its T1 batch-norm statistics and
# learned T2 and PD only partly in 20 CPU epochs (dr1, dr3 in docs/benchmarks.md).
cli train predictor --data "$WORK/train/participants.csv" "$WORK/train1mm/participants.csv" --out "$WORK/model" \
    --pool avg --randomise-domain --epochs "$EPOCHS" --max-minutes "$PREDICTOR_MIN" --batch-size 8 --lr 1e-3 \
    --seed 0 --workers "$WORKERS"
echo "predictor trained at ${SECONDS} s"
cli train noise-model --data "$WORK/train/participants.csv" --limit 800 --predictor "$WORK/model" \
    --out "$WORK/model" --randomise-domain --epochs "$EPOCHS" --max-minutes "$NOISE_MIN" --batch-size 2 \
    --lr 3e-3 --seed 0 --lam 0.5 --max-sd 0.3 --brain-only --target prediction --workers "$WORKERS"
echo "noise model trained at ${SECONDS} s"
cp "$WORK/model"/{model_card.json,predictor.pt,noise_model.pt} "$OUT/"
ls -l "$OUT"
