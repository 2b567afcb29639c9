#!/usr/bin/env bash
# HRNetV2-W48 + OCR on Cityscapes with the official recipe: HRNet/HRNet-Semantic-Segmentation,
# branch HRNet-OCR, experiments/cityscapes/seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml:
# 512x1024 crops, batch 12 (3 per GPU x 4), SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly 0.9,
# 484 epochs = 484 x floor(2975 / 12) = 119,548 iterations, class-weighted CE without OHEM,
# auxiliary loss 0.4, ImageNet normalisation, whole-image single-scale test.
# The official model reports 81.6 val / 82.3 test mIoU (not reproduced here).
# Needs pretrained_model/hrnetv2_w48_imagenet_pretrained.pth (HRNet-Image-Classification).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
NETWORK=${NETWORK:-hrnetv2_w48}
METHOD=${METHOD:-ocr_dsn}
INPUT_SIZE=${INPUT_SIZE:-512,1024}
BATCHSIZE=${BATCHSIZE:-12}
MAX_ITERS=${MAX_ITERS:-119548}
NORMALIZE=${NORMALIZE:-imagenet}
GPUS=${GPUS-0,1,2,3}
RESTORE_FROM=${RESTORE_FROM:-./pretrained_model/hrnetv2_w48_imagenet_pretrained.pth}
# shellcheck source=run_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/run_common.sh"
