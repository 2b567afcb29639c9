#!/usr/bin/env bash
# OCR (object-contextual representations, arXiv 1909.11065) on Cityscapes with openseg.pytorch's
# recipe: scripts/cityscapes/ocrnet/run_r_101_d_8_ocrnet_train.sh and configs/cityscapes/R_101_D_8.json
# there: deep-base ResNet-101 (dilated 8), 40k iterations, batch 8 (its MODEL_ZOO), 512x1024
# crops, lr 0.01, weight decay 5e-4, auxiliary loss 0.4, class-weighted CE, BGR mean normalisation.
# openseg reports 79.63 val mIoU single scale (not reproduced here). Settings: see run_common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
METHOD=${METHOD:-ocr_dsn}
INPUT_SIZE=${INPUT_SIZE:-512,1024}
NORMALIZE=${NORMALIZE:-openseg}
# shellcheck source=run_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/run_common.sh"
