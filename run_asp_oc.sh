#!/usr/bin/env bash
# ASP-OC (paper Sec. 3.3): ~79.5 val / ~78.3 test mIoU single scale with the defaults.
# Train on Cityscapes train, evaluate on val, write the test submission; settings come from the
# environment (see run_common.sh), e.g. GPUS=0,1 MAX_ITERS=20000 sh run_asp_oc.sh
# DATASET=ade20k, lip, pascal_context or coco_stuff runs that dataset's recipe instead (from
# openseg.pytorch's configs), DATASET=custom DATA_DIR=DIR your own data.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
METHOD=${METHOD:-asp_oc_dsn}
# shellcheck source=run_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/run_common.sh"
