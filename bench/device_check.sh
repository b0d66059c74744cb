#!/usr/bin/env bash
# Checks for a machine with NVIDIA GPUs, run from the repo root (under 8 minutes): the tiny
# DeepSeek-V3 with fp8 weights on one GPU; then, with two GPUs or more, all-reduce bandwidth
# over every GPU and tensor-parallel serving throughput.
# Results go to OUT_DIR (default ${OUT:-bench/results}). Skips, exit 0, without a GPU.
# A failing step is reported and the next one still runs; the exit status is 1 if any failed.
set -euo pipefail

OUT_DIR="${OUT_DIR:-${OUT:-bench/results}}"
PYTHON="${PYTHON:-python}"
STEP_TIMEOUT_S="${STEP_TIMEOUT_S:-150}"
mkdir -p "$OUT_DIR"

if command -v nvidia-smi >/dev/null; then
    nvidia-smi -L || true
fi

NGPU="$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")"
if ((NGPU < 1)); then
    echo "device_check: skipped: no GPU visible"
    exit 0
fi

failed=()
step() {
    local name="$1"
    shift
    echo "device_check: $name: $*"
    local status=0
    timeout --kill-after=10 "$STEP_TIMEOUT_S" "$@" || status=$?
    if ((status != 0)); then
        [[ $status == 124 ]] && echo "device_check: $name timed out after ${STEP_TIMEOUT_S}s"
        echo "device_check: $name FAILED (exit $status)"
        failed+=("$name")
    fi
}

step deepseek_v3 env PYTHONPATH=runtime "$PYTHON" bench/deepseek_v3_device.py \
    --out "$OUT_DIR/deepseek_v3_device.json"
if ((NGPU < 2)); then
    echo "device_check: skipped the multi-GPU steps: $NGPU GPU visible; tensor parallelism needs 2 or more"
else
    step allreduce "$PYTHON" bench/allreduce_bandwidth.py --device cuda \
        --out "$OUT_DIR/allreduce_bandwidth.json"
    step parallel env PYTHONPATH=runtime "$PYTHON" bench/parallel.py --device cuda \
        --tensor-parallel-size "$NGPU" --out "$OUT_DIR/parallel_cuda.json"
fi

if ((${#failed[@]} > 0)); then
    echo "device_check: failed: ${failed[*]}"
    exit 1
fi
echo "device_check: all steps passed; results in $OUT_DIR"
