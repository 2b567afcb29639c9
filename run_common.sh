#!/usr/bin/env bash
# Shared body of run_asp_oc.sh, run_base_oc.sh, run_pyramid_oc.sh and run_baseline.sh (sourced
# by them with METHOD set): train on Cityscapes, evaluate on val, write the test submission.
# Every setting is an environment variable with the original OCNet recipe as its default, e.g.
#   GPUS=0,1 BATCHSIZE=8 USE_OHEM=True OHEM_SINGLE=True sh run_asp_oc.sh
# Re-running after a crash continues from the newest checkpoint (RESUME=True).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ -x .venv/bin/python ]; then PYTHON=${PYTHON:-.venv/bin/python}; else PYTHON=${PYTHON:-python3}; fi

# Model
NETWORK=${NETWORK:-resnet101}
METHOD=${METHOD:?set METHOD (baseline, base_oc_dsn, pyramid_oc_dsn or asp_oc_dsn)}
DATASET=${DATASET:-cityscapes}

# Data: lists are written by dataset.make_lists when missing (trainval.lst joins train and val).
DATA_DIR=${DATA_DIR:-./dataset/cityscapes}
LIST_DIR=${LIST_DIR:-./dataset/list/cityscapes}
DATA_LIST=${DATA_LIST:-$LIST_DIR/train.lst}
VAL_LIST=${VAL_LIST:-$LIST_DIR/val.lst}
TEST_LIST=${TEST_LIST:-$LIST_DIR/test.lst}
RESTORE_FROM=${RESTORE_FROM:-./pretrained_model/resnet101-imagenet.pth}

# Training (the original: 4 GPUs x 2 images, 769 crops, 40k steps, lr 0.01, class weights)
GPUS=${GPUS-0,1,2,3}  # GPUS= (empty) uses DEVICE instead
DEVICE=${DEVICE:-auto}
LR=${LR:-${LEARNING_RATE:-1e-2}}
WEIGHT_DECAY=${WEIGHT_DECAY:-5e-4}
START_ITERS=${START_ITERS:-0}
MAX_ITERS=${MAX_ITERS:-40000}
BATCHSIZE=${BATCHSIZE:-8}
INPUT_SIZE=${INPUT_SIZE:-769,769}
# The original's 19 Cityscapes class weights; other datasets have none.
if [ "$DATASET" = cityscapes ]; then USE_CLASS_BALANCE=${USE_CLASS_BALANCE:-True}; fi
USE_CLASS_BALANCE=${USE_CLASS_BALANCE:-False}
USE_OHEM=${USE_OHEM:-False}
OHEM_SINGLE=${OHEM_SINGLE:-False}
OHEMTHRES=${OHEMTHRES:-0.7}
OHEMKEEP=${OHEMKEEP:-100000}
FIX_LR=${FIX_LR:-False}
SAVE_EVERY=${SAVE_EVERY:-5000}
WORKERS=${WORKERS:-4}
SEED=${SEED:-304}
AMP=${AMP:-none}
RESUME=${RESUME:-True}
TRAIN_EXTRA=${TRAIN_EXTRA:-}

# Testing (single scale, whole image, as the original's reported numbers)
TEST_BATCHSIZE=${TEST_BATCHSIZE:-4}
PREDICT_CHOICE=${PREDICT_CHOICE:-whole}
WHOLE_SCALE=${WHOLE_SCALE:-1}
TEST_USE_FLIP=${TEST_USE_FLIP:-False}
TEST_USE_MS=${TEST_USE_MS:-False}
EVAL_TRAIN=${EVAL_TRAIN:-False}
SUBMIT=${SUBMIT:-True}

TAG=${TAG:-${NETWORK}_${METHOD}_${LR}_${WEIGHT_DECAY}_${BATCHSIZE}_${MAX_ITERS}}
SNAPSHOT_DIR=${SNAPSHOT_DIR:-./checkpoint/snapshots_${TAG}}
LOG_DIR=${LOG_DIR:-./log}
OUTPUT_DIR=${OUTPUT_DIR:-./visualize/${TAG}}
CKPT=${CKPT:-$SNAPSHOT_DIR/CS_scenes_${MAX_ITERS}.pth}

mkdir -p "$LOG_DIR/log_train" "$LOG_DIR/log_test"
if [ -n "$GPUS" ]; then DEVICE_ARGS=(--gpu "$GPUS"); else DEVICE_ARGS=(--device "$DEVICE"); fi
COMMON=(--network "$NETWORK" --method "$METHOD" --dataset "$DATASET" --data-dir "$DATA_DIR"
  --workers "$WORKERS" --amp "$AMP" "${DEVICE_ARGS[@]}")

for list in "$DATA_LIST" "$VAL_LIST"; do
  if [ ! -f "$list" ]; then
    echo "==> writing list files for $DATA_DIR into $LIST_DIR"
    "$PYTHON" -m dataset.make_lists --data-dir "$DATA_DIR" --out "$LIST_DIR"
    break
  fi
done

echo "==> $(date +%H:%M:%S) training $TAG (log: $LOG_DIR/log_train/log_$TAG)"
# shellcheck disable=SC2086  # TRAIN_EXTRA is a list of extra flags
"$PYTHON" -u train.py "${COMMON[@]}" --data-list "$DATA_LIST" --restore-from "$RESTORE_FROM" \
  --input-size "$INPUT_SIZE" --batch-size "$BATCHSIZE" --learning-rate "$LR" \
  --weight-decay "$WEIGHT_DECAY" --start-iters "$START_ITERS" --num-steps "$MAX_ITERS" \
  --random-mirror --random-scale --use-weight "$USE_CLASS_BALANCE" --ohem "$USE_OHEM" \
  --ohem-single "$OHEM_SINGLE" --ohem-thres "$OHEMTHRES" --ohem-keep "$OHEMKEEP" \
  --fix-lr "$FIX_LR" --save-pred-every "$SAVE_EVERY" --seed "$SEED" --resume "$RESUME" \
  --snapshot-dir "$SNAPSHOT_DIR" $TRAIN_EXTRA 2>&1 | tee "$LOG_DIR/log_train/log_$TAG"

evaluate() {  # evaluate <split name> <list>
  echo "==> $(date +%H:%M:%S) evaluating on $1 (log: $LOG_DIR/log_test/log_result_${TAG}_$1)"
  "$PYTHON" -u evaluate.py "${COMMON[@]}" --ckpt "$CKPT" --data-list "$2" \
    --batch-size "$TEST_BATCHSIZE" --input-size "$INPUT_SIZE" --predict-choice "$PREDICT_CHOICE" \
    --whole-scale "$WHOLE_SCALE" --use-flip "$TEST_USE_FLIP" --use-ms "$TEST_USE_MS" \
    --output-path "$OUTPUT_DIR/$1" 2>&1 | tee "$LOG_DIR/log_test/log_result_${TAG}_$1"
}

evaluate val "$VAL_LIST"
if [ "$EVAL_TRAIN" = True ]; then evaluate train "$DATA_LIST"; fi

if [ "$SUBMIT" = True ] && [ "$DATASET" = cityscapes ]; then
  echo "==> $(date +%H:%M:%S) test submission (log: $LOG_DIR/log_test/log_result_${TAG}_test)"
  if [ ! -f "$TEST_LIST" ]; then
    "$PYTHON" -m dataset.make_lists --data-dir "$DATA_DIR" --out "$LIST_DIR"
  fi
  "$PYTHON" -u generate_submit.py "${COMMON[@]}" --ckpt "$CKPT" --data-list "$TEST_LIST" \
    --batch-size "$TEST_BATCHSIZE" --input-size "$INPUT_SIZE" --predict-choice "$PREDICT_CHOICE" \
    --whole-scale "$WHOLE_SCALE" --use-flip "$TEST_USE_FLIP" --use-ms "$TEST_USE_MS" \
    --output-path "$OUTPUT_DIR/test" 2>&1 | tee "$LOG_DIR/log_test/log_result_${TAG}_test"
fi
echo "==> $(date +%H:%M:%S) done: $CKPT, results in $OUTPUT_DIR"
