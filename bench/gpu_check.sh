#!/usr/bin/env bash
# The one-call GPU check: `bash bench/gpu_check.sh [OUT_JSON]` on a CUDA machine runs the tests
# marked `cuda` (tests/test_cuda.py: fp16 + GradScaler, bf16 autocast, channels_last, pinned
# loaders, torch.compile with inductor, one-rank NCCL DDP) and the training-step benchmarks of
# both models on the GPU, then writes one JSON summary (default bench/gpu_check.json) via
# bench/gpu_summary.py. Without a CUDA GPU it stops at once with one line and exit status 1.
# Exit status 0 means every CUDA test that ran passed and both benchmarks ran.
set -uo pipefail     # no -e: a failing test or benchmark must still reach the summary

case "${1:-}" in
    "") OUT="" ;;
    /*) OUT=$1 ;;
    *) OUT=$PWD/$1 ;;          # relative to where the caller stands, not to the repository
esac
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench/gpu_check.json}
PY=${PYTHON:-python}
REPEAT=${GPU_CHECK_REPEAT:-10}  # timed steps per configuration (median), after one warm-up step

# (captured, not piped into grep -q: with pipefail an early-exiting grep would fail the pipe)
GPUS=$(nvidia-smi -L 2>/dev/null || true)
if [[ "$GPUS" != GPU* ]]; then
    echo "gpu_check.sh: no CUDA GPU on this machine (nvidia-smi is missing or lists no GPU); run it on a CUDA machine" >&2
    exit 1
fi
# The same set-up as tools/run_tests.sh: the project with its test extras, once.
if ! "$PY" -m pip show -q detkit >/dev/null 2>&1 || ! "$PY" -c "import pytest" >/dev/null 2>&1; then
    echo "gpu_check.sh: installing the project with its test extras (pip install -e '.[test]')"
    "$PY" -m pip install -q -e ".[test]" || { echo "gpu_check.sh: pip install -e '.[test]' failed" >&2; exit 1; }
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    echo "gpu_check.sh: nvidia-smi sees a GPU but torch.cuda.is_available() is False (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'missing') without CUDA, or a driver mismatch)" >&2
    exit 1
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# bf16 autocast needs Ampere or later; older GPUs time fp32 and fp16 only
MODES=$("$PY" -c "import torch; print('fp32,bf16,fp16' if torch.cuda.is_bf16_supported() else 'fp32,fp16')")

echo "== CUDA tests (pytest -m cuda tests/test_cuda.py)"
"$PY" -m pytest -m cuda tests/test_cuda.py -q -rs -p no:cacheprovider --junitxml="$WORK/junit.xml"
PYTEST_RC=$?

BENCH_ARGS=()
bench() {   # bench NAME SCRIPT ARGS...: JSON lines to the console and to $WORK/NAME.out
    local name=$1
    shift
    echo "== $name: $PY $* --device cuda --modes $MODES --repeat $REPEAT"
    "$PY" "$@" --device cuda --modes "$MODES" --repeat "$REPEAT" 2>"$WORK/$name.err" | tee "$WORK/$name.out"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || tail -n 5 "$WORK/$name.err" >&2
    BENCH_ARGS+=(--bench "$name" "$WORK/$name.out" "$WORK/$name.err" "$rc")
}
bench yolox_step bench/yolox_step.py
bench ssd_step bench/ssd_step.py

"$PY" bench/gpu_summary.py --out "$OUT" --junit "$WORK/junit.xml" --pytest-rc "$PYTEST_RC" "${BENCH_ARGS[@]}"
