#!/usr/bin/env bash
# The embedded default: synthetic Cityscapes-format scenes, a small backbone, CPU, minutes.
# Same train.py / evaluate.py / generate_submit.py as run_asp_oc.sh; every setting below can be
# overridden from the environment (e.g. STEPS=50 sh run_demo.sh).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
cd "$(dirname "$0")"

OUT=${OUT:-./demo_run}
DATA_DIR=${DATA_DIR:-$OUT/data}
NETWORK=${NETWORK:-resnet18}
METHOD=${METHOD:-asp_oc_dsn}
TRAIN_IMAGES=${TRAIN_IMAGES:-96}
VAL_IMAGES=${VAL_IMAGES:-16}
TEST_IMAGES=${TEST_IMAGES:-8}
SCENE_SIZE=${SCENE_SIZE:-256,512}
INPUT_SIZE=${INPUT_SIZE:-129,129}
BATCHSIZE=${BATCHSIZE:-8}
STEPS=${STEPS:-500}
LR=${LR:-0.01}
WORKERS=${WORKERS:-2}
SEED=${SEED:-0}
DEVICE=${DEVICE:-cpu}

STEP="set-up"
trap 'echo "run_demo.sh: FAILED during step: $STEP" >&2' ERR
step() { STEP=$1; echo; echo "==> $(date +%H:%M:%S) $STEP"; }

step "set-up (.venv)"
if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
  CONSTRAINTS="-c constraints-cpu.txt"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then CONSTRAINTS=""; fi
  # shellcheck disable=SC2086
  .venv/bin/pip install -q -r requirements.txt $CONSTRAINTS
  PYTHON=.venv/bin/python
fi

SNAPSHOT_DIR=$OUT/snapshots
H=${SCENE_SIZE%,*}
W=${SCENE_SIZE#*,}

step "generate synthetic scenes ($TRAIN_IMAGES train / $VAL_IMAGES val / $TEST_IMAGES test, ${H}x${W})"
"$PYTHON" -m dataset.synthetic --out "$DATA_DIR" --train "$TRAIN_IMAGES" --val "$VAL_IMAGES" \
  --test "$TEST_IMAGES" --height "$H" --width "$W" --seed "$SEED"

step "train ${NETWORK}_${METHOD} for $STEPS steps on $DEVICE"
"$PYTHON" train.py --network "$NETWORK" --method "$METHOD" --dataset cityscapes \
  --data-dir "$DATA_DIR" --data-list "$DATA_DIR/train.lst" --val-list "$DATA_DIR/val.lst" \
  --input-size "$INPUT_SIZE" --batch-size "$BATCHSIZE" --num-steps "$STEPS" --learning-rate "$LR" \
  --random-mirror --random-scale --normalize imagenet --device "$DEVICE" --workers "$WORKERS" \
  --seed "$SEED" --snapshot-dir "$SNAPSHOT_DIR" --save-pred-every 100 --val-every 100

CKPT=$SNAPSHOT_DIR/CS_scenes_${STEPS}.pth

# The checkpoint records its network, method, classes and normalisation: --ckpt alone is enough.
step "evaluate on val (per-class IoU, colour predictions, panels)"
"$PYTHON" evaluate.py --ckpt "$CKPT" \
  --data-dir "$DATA_DIR" --data-list "$DATA_DIR/val.lst" --device "$DEVICE" \
  --workers "$WORKERS" --store-output --output-path "$OUT/eval"

step "draw the loss / mIoU curve"
"$PYTHON" -m utils.curve --metrics "$SNAPSHOT_DIR/metrics.jsonl" --out "$OUT/curve.png"

step "predict the test split into a Cityscapes submission zip"
"$PYTHON" generate_submit.py --ckpt "$CKPT" \
  --data-dir "$DATA_DIR" --data-list "$DATA_DIR/test.lst" --device "$DEVICE" \
  --workers "$WORKERS" --output-path "$OUT/submit"

step "predict.py on a few test scenes as your own images (overlays), and one attention picture"
"$PYTHON" predict.py --ckpt "$CKPT" --output-dir "$OUT/predict" --overlay --device "$DEVICE" \
  --workers "$WORKERS" "$DATA_DIR/leftImg8bit/test/b*/*.png"
FIRST_TEST=$DATA_DIR/$(head -n 1 "$DATA_DIR/test.lst" | cut -d ' ' -f 1)
# A pixel a little right of the centre, at the height of the cars in the synthetic scenes.
AT_X=$((W * 57 / 100))
AT_Y=$((H * 44 / 100))
ATTENTION="none (the baseline has no attention)"
if [ "$METHOD" != baseline ]; then
  "$PYTHON" predict.py --ckpt "$CKPT" --output-dir "$OUT/attention" --attention-at "$AT_X,$AT_Y" \
    --device "$DEVICE" --workers 0 "$FIRST_TEST"
  ATTENTION=$(find "$OUT/attention" -name "*_attention_${AT_X}_${AT_Y}.png" | head -n 1)
fi

trap - ERR
echo
echo "Done. Results in $OUT: eval/ (metrics.json, per-class table, colour predictions, panels),"
echo "curve.png, submit/ (labelId PNGs and the zip), snapshots/ (checkpoints, train.log, tensorboard)."
echo "predict.py outputs: $OUT/predict/ (*_trainIds.png and *_overlay.png of the test scenes)"
echo "attention picture (where pixel $AT_X,$AT_Y looks): $ATTENTION"
