#!/bin/sh
# The GPU check: the CUDA tests (pytest -m cuda) and the GPU benchmark (python -m bench --only gpu)
# on one GPU in at most 8 minutes, written to one markdown report.
#
#   sh bench/gpu_check.sh            on a GPU machine
#   sh bench/gpu_check.sh --dry-run  the same steps on the CPU at small sizes (CUDA tests skip)
#
# Report: $GPU_CHECK_DIR/report.md (default bench/gpu_check/report.md); its path is printed last.
# A failing step is reported and the next one still runs; the exit status is 1 if anything failed.
#
# Python: $PYTHON if set; else .venv/bin/python if it imports torch; else a python3 that already
# imports torch (with CUDA, unless --dry-run), as on GPU machines without internet access; else
# .venv is created and filled from requirements.txt + requirements-dev.txt (the README's install;
# the CPU constraints only in a dry run, so a GPU machine gets a CUDA build of torch). A pip
# failure is fatal only when torch still cannot be imported afterwards.
set -u
cd "$(dirname "$0")/.." || exit 2

DRY_RUN=0
for arg in "$@"; do
    case $arg in
        --dry-run) DRY_RUN=1 ;;
        *) echo "gpu_check.sh: unknown argument $arg (usage: sh bench/gpu_check.sh [--dry-run])" >&2; exit 2 ;;
    esac
done
DIR=${GPU_CHECK_DIR:-bench/gpu_check}
mkdir -p "$DIR" || exit 2
REPORT=$DIR/report.md
FAILED=""

fail() { # record a failed step and say so loudly; the script goes on
    FAILED="$FAILED $1"
    echo "gpu_check.sh: FAILED: $1" >&2
}

has_torch() { # has_torch PYTHON: torch imports (and sees a GPU, unless a dry run)
    if [ "$DRY_RUN" = 1 ]; then
        "$1" -c "import torch" >/dev/null 2>&1
    else
        "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1
    fi
}

CONSTRAINTS=""
[ "$DRY_RUN" = 1 ] && CONSTRAINTS="-c constraints-cpu.txt"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ] && has_torch .venv/bin/python; then
        PYTHON=.venv/bin/python
    elif command -v python3 >/dev/null 2>&1 && has_torch python3; then
        PYTHON=python3
    else
        [ -x .venv/bin/python ] || python3 -m venv .venv || { echo "gpu_check.sh: cannot create .venv" >&2; exit 2; }
        PYTHON=.venv/bin/python
        # shellcheck disable=SC2086 # CONSTRAINTS is empty or two words
        "$PYTHON" -m pip install -q -r requirements.txt -r requirements-dev.txt $CONSTRAINTS ||
            echo "gpu_check.sh: pip install failed; going on if torch imports" >&2
    fi
fi
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "gpu_check.sh: $PYTHON cannot import torch; install requirements.txt first" >&2
    exit 2
fi
# The test dependencies (pytest, onnx, onnxruntime) may be missing from an interpreter found
# ready; a failed install here only shows up as failing tests.
"$PYTHON" -c "import pytest, onnx, onnxruntime" >/dev/null 2>&1 ||
    "$PYTHON" -m pip install -q -r requirements-dev.txt $CONSTRAINTS ||
    echo "gpu_check.sh: could not install requirements-dev.txt" >&2

if [ "$DRY_RUN" = 1 ]; then
    MODE="dry run (CPU, small sizes)"
    BENCH_ARGS="--quick --device cpu"
    TEST_TIMEOUT=120
    BENCH_TIMEOUT=120
else
    MODE="GPU"
    BENCH_ARGS="--device cuda --repeats 2"
    # 8 minutes in all: the tests, then the benchmark (fewer repeats, every row).
    TEST_TIMEOUT=270
    BENCH_TIMEOUT=190
fi
STARTED=$(date +%s)

echo "==> CUDA tests (pytest -m cuda, at most ${TEST_TIMEOUT} s)"
timeout "$TEST_TIMEOUT" "$PYTHON" -m pytest -m cuda -q -rA -p no:cacheprovider tests/test_cuda.py \
    >"$DIR/tests.log" 2>&1
STATUS=$?
tail -n 40 "$DIR/tests.log"
[ $STATUS = 124 ] && fail "CUDA tests: timed out after ${TEST_TIMEOUT} s"
[ $STATUS != 0 ] && [ $STATUS != 124 ] && fail "CUDA tests (pytest exit status $STATUS)"

echo "==> python -m bench --only gpu $BENCH_ARGS (at most ${BENCH_TIMEOUT} s)"
# shellcheck disable=SC2086 # BENCH_ARGS is a list of words
timeout "$BENCH_TIMEOUT" "$PYTHON" -m bench --only gpu $BENCH_ARGS --out "$DIR/bench.md" \
    >"$DIR/bench.log" 2>&1
STATUS=$?
tail -n 60 "$DIR/bench.log"
[ $STATUS = 124 ] && fail "GPU benchmark: timed out after ${BENCH_TIMEOUT} s"
[ $STATUS != 0 ] && [ $STATUS != 124 ] && fail "GPU benchmark (exit status $STATUS)"
ELAPSED=$(($(date +%s) - STARTED))

{
    echo "# GPU check"
    echo
    echo "Mode: $MODE; $(date -u '+%Y-%m-%d %H:%M UTC'); $ELAPSED s for tests and benchmark."
    echo "Python: $PYTHON, $("$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' 2>&1)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n 1)"
    else
        echo "GPU: none (no nvidia-smi)"
    fi
    echo
    echo "## Failures"
    echo
    if [ -z "$FAILED" ]; then
        echo "none"
    else
        echo "$FAILED" | tr -s ' ' '\n' | sed '/^$/d' | sed 's/^/- /'
        grep -E '^(FAILED|ERROR) ' "$DIR/tests.log" | sed 's/^/- /'
    fi
    echo
    echo "## CUDA tests (pytest -m cuda)"
    echo
    echo '```'
    grep -E '^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) |passed|failed|skipped|error' "$DIR/tests.log"
    echo '```'
    echo
    echo "Numbers the tests print (attention kernel per head and dtype, Base-OC's whole-frame"
    echo "memory, the resume difference):"
    echo
    echo '```'
    grep -E '^(resume on CUDA:|Base-OC whole-frame|resnet18_[a-z_]+ torch\.)' "$DIR/tests.log" | sort -u
    echo '```'
    echo
    echo "## GPU benchmark (python -m bench --only gpu $BENCH_ARGS)"
    echo
    if [ -s "$DIR/bench.md" ]; then
        sed -n '/^### gpu/,$p' "$DIR/bench.md"
    else
        echo "no table: see $DIR/bench.log"
    fi
} >"$REPORT"

echo "gpu_check.sh: report: $REPORT"
if [ -n "$FAILED" ]; then
    echo "gpu_check.sh: FAILED:$FAILED" >&2
    exit 1
fi
