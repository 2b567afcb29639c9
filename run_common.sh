#!/usr/bin/env bash
# Shared body of run_asp_oc.sh, run_base_oc.sh, run_pyramid_oc.sh and run_baseline.sh (sourced
# by them with METHOD set): train, evaluate on val, write the test submission (Cityscapes).
# Every setting is an environment variable with the original OCNet recipe as its default, e.g.
#   GPUS=0,1 BATCHSIZE=8 USE_OHEM=True OHEM_SINGLE=True sh run_asp_oc.sh
# DATASET=ade20k|lip|pascal_context|coco_stuff picks that dataset's recipe (below); DATASET=custom
# DATA_DIR=DIR trains on your own data (images/, labels/, classes.csv).
# Re-running after a crash continues from the newest checkpoint (RESUME=True).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ -x .venv/bin/python ]; then PYTHON=${PYTHON:-.venv/bin/python}; else PYTHON=${PYTHON:-python3}; fi
# What starts train.py, evaluate.py and generate_submit.py: nothing (they start their own
# processes from GPUS), or e.g. LAUNCH=srun inside a SLURM job (run_slurm.sh).
LAUNCH=${LAUNCH:-}

# Model
NETWORK=${NETWORK:-resnet101}
METHOD=${METHOD:?set METHOD (baseline, base_oc_dsn, pyramid_oc_dsn, asp_oc_dsn, isa_oc_dsn, ocr_dsn)}
# Input normalisation the weights expect: caffe (original OCNet), openseg, imagenet (HRNet).
NORMALIZE=${NORMALIZE:-caffe}
DATASET=${DATASET:-cityscapes}
case "$DATASET" in cityscapes_train | cityscapes_test | cityscapes_train_w_path) DATASET=cityscapes ;; esac

# Recipe of each dataset: data folder, crop, total batch, lr, weight decay, iterations. Cityscapes
# is the original OCNet's run_resnet101_asp_oc.sh; the others are openseg.pytorch's ResNet-101
# (dilated 8) recipes, read from its configs/<dataset>/R_101_D_8.json (crop, batch, base_lr, SGD
# weight decay) and the MAX_ITERS of its ResNet-101 scripts. openseg also runs the heads at 10x
# the backbone lr (--nbb_mult 10) on PASCAL-Context and COCO-Stuff; train.py has one lr.
case "$DATASET" in
  cityscapes) R_DIR=./dataset/cityscapes R_SIZE=769,769 R_BATCH=8 R_LR=1e-2 R_WD=5e-4 R_ITERS=40000 ;;
  # configs/ade20k/R_101_D_8.json; scripts/ade20k/ocnet/run_res101d8_aspocnet_ade20k_seg.sh
  ade20k) R_DIR=./dataset/ADEChallengeData2016 R_SIZE=520,520 R_BATCH=16 R_LR=2e-2 R_WD=1e-4 R_ITERS=150000 ;;
  # configs/lip/R_101_D_8.json; scripts/lip/run_r_101_d_16_ce2p_ocr_train.sh (MAX_ITERS=100000)
  lip) R_DIR=./dataset/LIP R_SIZE=473,473 R_BATCH=32 R_LR=7e-3 R_WD=5e-4 R_ITERS=100000 ;;
  # configs/pascal_context/R_101_D_8.json; scripts/pascal_context/run_r_101_d_8_baseoc_train.sh
  pascal_context) R_DIR=./dataset/VOCdevkit R_SIZE=520,520 R_BATCH=16 R_LR=1e-3 R_WD=1e-4 R_ITERS=30000 ;;
  # configs/coco_stuff/R_101_D_8.json; scripts/coco_stuff/run_r_101_d_8_ocr_train.sh (MAX_ITERS=60000)
  coco_stuff) R_DIR=./dataset/cocostuff-10k R_SIZE=520,520 R_BATCH=16 R_LR=1e-3 R_WD=1e-4 R_ITERS=60000 ;;
  # Your own data: the Cityscapes schedule at ADE20K's crop size, a starting point only.
  custom) R_DIR=${DATA_DIR:?DATASET=custom needs DATA_DIR (images/, labels/, classes.csv)}
    R_SIZE=520,520 R_BATCH=8 R_LR=1e-2 R_WD=5e-4 R_ITERS=40000 ;;
  *) echo "unknown DATASET=$DATASET (cityscapes, ade20k, lip, pascal_context, coco_stuff, custom)" >&2
    exit 2 ;;
esac

# Data: Cityscapes is read through list files, written by dataset.make_lists when missing
# (trainval.lst joins train and val; train_extra.lst lists the coarse set). The other datasets
# scan their folders (lists "none") unless DATA_LIST / VAL_LIST name list files.
DATA_DIR=${DATA_DIR:-$R_DIR}
if [ "$DATASET" = cityscapes ]; then
  LIST_DIR=${LIST_DIR:-./dataset/list/cityscapes}
  DATA_LIST=${DATA_LIST:-$LIST_DIR/train.lst}
  VAL_LIST=${VAL_LIST:-$LIST_DIR/val.lst}
  TEST_LIST=${TEST_LIST:-$LIST_DIR/test.lst}
  EXTRA_LIST=${EXTRA_LIST:-$LIST_DIR/train_extra.lst}
else
  LIST_DIR=${LIST_DIR:-}
  DATA_LIST=${DATA_LIST:-none}
  VAL_LIST=${VAL_LIST:-none}
  TEST_LIST=${TEST_LIST:-none}
  EXTRA_LIST=${EXTRA_LIST:-none}
fi
RESTORE_FROM=${RESTORE_FROM:-./pretrained_model/resnet101-imagenet.pth}

# Training (the original: 4 GPUs x 2 images, 769 crops, 40k steps, lr 0.01, class weights)
GPUS=${GPUS-0,1,2,3}  # GPUS= (empty) uses DEVICE instead
DEVICE=${DEVICE:-auto}
LR=${LR:-${LEARNING_RATE:-$R_LR}}
WEIGHT_DECAY=${WEIGHT_DECAY:-$R_WD}
START_ITERS=${START_ITERS:-0}
MAX_ITERS=${MAX_ITERS:-$R_ITERS}
BATCHSIZE=${BATCHSIZE:-$R_BATCH}
INPUT_SIZE=${INPUT_SIZE:-$R_SIZE}
# Train on train + val (USE_VAL, its list VAL_LIST) and add Cityscapes' coarse train_extra
# (USE_EXTRA, its list EXTRA_LIST); the paper's 81.2 test result used fine data only.
USE_VAL=${USE_VAL:-False}
USE_EXTRA=${USE_EXTRA:-False}
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

# Testing (single scale, whole image, as the original's reported numbers). Images of the other
# datasets differ in size, so they go one per batch.
if [ "$DATASET" = cityscapes ]; then TEST_BATCHSIZE=${TEST_BATCHSIZE:-4}; fi
TEST_BATCHSIZE=${TEST_BATCHSIZE:-1}
TEST_STORE_RESULT=${TEST_STORE_RESULT:-False}  # colour pictures beside the results
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
  --normalize "$NORMALIZE" --workers "$WORKERS" --amp "$AMP" "${DEVICE_ARGS[@]}")

NEEDED_LISTS=("$DATA_LIST" "$VAL_LIST")
if [ "$USE_EXTRA" = True ]; then NEEDED_LISTS+=("$EXTRA_LIST"); fi
for list in "${NEEDED_LISTS[@]}"; do
  if [ "$DATASET" = cityscapes ] && [ ! -f "$list" ]; then
    echo "==> writing list files for $DATA_DIR into $LIST_DIR"
    "$PYTHON" -m dataset.make_lists --data-dir "$DATA_DIR" --out "$LIST_DIR"
    break
  fi
done

echo "==> $(date +%H:%M:%S) training $TAG (log: $LOG_DIR/log_train/log_$TAG)"
# shellcheck disable=SC2086  # LAUNCH and TRAIN_EXTRA are lists of words
$LAUNCH "$PYTHON" -u train.py "${COMMON[@]}" --data-list "$DATA_LIST" --restore-from "$RESTORE_FROM" \
  --input-size "$INPUT_SIZE" --batch-size "$BATCHSIZE" --learning-rate "$LR" \
  --weight-decay "$WEIGHT_DECAY" --start-iters "$START_ITERS" --num-steps "$MAX_ITERS" \
  --random-mirror --random-scale --use-weight "$USE_CLASS_BALANCE" --ohem "$USE_OHEM" \
  --ohem-single "$OHEM_SINGLE" --ohem-thres "$OHEMTHRES" --ohem-keep "$OHEMKEEP" \
  --fix-lr "$FIX_LR" --save-pred-every "$SAVE_EVERY" --seed "$SEED" --resume "$RESUME" \
  --use-val "$USE_VAL" --val-list "$VAL_LIST" --use-extra "$USE_EXTRA" --extra-list "$EXTRA_LIST" \
  --snapshot-dir "$SNAPSHOT_DIR" $TRAIN_EXTRA 2>&1 | tee "$LOG_DIR/log_train/log_$TAG"

evaluate() {  # evaluate <split name> <list>
  echo "==> $(date +%H:%M:%S) evaluating on $1 (log: $LOG_DIR/log_test/log_result_${TAG}_$1)"
  $LAUNCH "$PYTHON" -u evaluate.py "${COMMON[@]}" --ckpt "$CKPT" --data-list "$2" \
    --batch-size "$TEST_BATCHSIZE" --input-size "$INPUT_SIZE" --predict-choice "$PREDICT_CHOICE" \
    --whole-scale "$WHOLE_SCALE" --use-flip "$TEST_USE_FLIP" --use-ms "$TEST_USE_MS" \
    --store-output "$TEST_STORE_RESULT" --output-path "$OUTPUT_DIR/$1" 2>&1 \
    | tee "$LOG_DIR/log_test/log_result_${TAG}_$1"
}

evaluate val "$VAL_LIST"
# Evaluating the training images needs their list (scanned datasets have none: DATA_LIST=none).
if [ "$EVAL_TRAIN" = True ] && [ "$DATA_LIST" != none ]; then evaluate train "$DATA_LIST"; fi

# Test predictions: the Cityscapes submission, or a custom dataset's images/test/ if it has one.
if [ "$DATASET" = cityscapes ] || { [ "$DATASET" = custom ] && [ -d "$DATA_DIR/images/test" ]; }; then
  HAS_TEST=True
else
  HAS_TEST=False
fi
if [ "$SUBMIT" = True ] && [ "$HAS_TEST" = True ]; then
  echo "==> $(date +%H:%M:%S) test submission (log: $LOG_DIR/log_test/log_result_${TAG}_test)"
  if [ "$DATASET" = cityscapes ] && [ ! -f "$TEST_LIST" ]; then
    "$PYTHON" -m dataset.make_lists --data-dir "$DATA_DIR" --out "$LIST_DIR"
  fi
  $LAUNCH "$PYTHON" -u generate_submit.py "${COMMON[@]}" --ckpt "$CKPT" --data-list "$TEST_LIST" \
    --batch-size "$TEST_BATCHSIZE" --input-size "$INPUT_SIZE" --predict-choice "$PREDICT_CHOICE" \
    --whole-scale "$WHOLE_SCALE" --use-flip "$TEST_USE_FLIP" --use-ms "$TEST_USE_MS" \
    --store-output "$TEST_STORE_RESULT" --output-path "$OUTPUT_DIR/test" 2>&1 \
    | tee "$LOG_DIR/log_test/log_result_${TAG}_test"
fi
echo "==> $(date +%H:%M:%S) done: $CKPT, results in $OUTPUT_DIR"
