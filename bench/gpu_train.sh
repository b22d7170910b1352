#!/usr/bin/env bash
# GPU pre-training benchmark for a machine with one NVIDIA GPU and no network, done within 8
# minutes: the real trainer (mmp-train, python -m model.trainer.train) at the paper's sizes, an
# XLM-R-large-shaped text encoder with random weights built from its config (no download),
# batch 64, 192 tokens, 128 feature rows, D 1024, bf16 autocast; what bench/gpu_train.py
# measures (its docstring says what each number is): samples/s, peak GPU memory, the
# loader's share of the step time, the GPU-hours of the paper's 16 epochs over 1.2M videos,
# and a one-process torchrun with an NCCL probe.
#
#     bash bench/gpu_train.sh              # on the GPU machine, from anywhere in the repo
#     bash bench/gpu_train.sh --dry-run    # the same python on the CPU with tiny sizes (or DEVICE=cpu)
#     STEPS=100 WORKERS=4 BUDGET_S=900 bash bench/gpu_train.sh
#
# Uses .venv (or $PYTHON); runs `make install` when it cannot import torch, transformers and
# tokenizers. Needs about 3 GB free under $TMPDIR (the random encoder's save_pretrained and the
# last checkpoint of each run, removed as it goes). BUDGET_S (default 480) bounds the whole
# script: the benchmark gets what the set-up left of it, and skips later runs that would not fit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/gpu_common.sh
. bench/gpu_common.sh
gpu_bench_start gpu_train.sh "torch transformers tokenizers" "$@"

# no network on the GPU machine: nothing may try the hub
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
if [ "$DEVICE" = cpu ]; then
  ARGS=(--device cpu --tiny)
else
  ARGS=(--device "$DEVICE")
fi
if [ -n "${STEPS:-}" ]; then ARGS+=(--steps "$STEPS"); fi
if [ -n "${WORKERS:-}" ]; then ARGS+=(--workers "$WORKERS"); fi
if [ -n "${TORCHRUN_STEPS:-}" ]; then ARGS+=(--torchrun-steps "$TORCHRUN_STEPS"); fi
LEFT=$((BUDGET_S - SECONDS - 15))
if [ "$LEFT" -lt 60 ]; then
  echo "== set-up took ${SECONDS} s of the ${BUDGET_S} s budget: too little left to run" >&2
  exit 1
fi
echo "== set-up took ${SECONDS} s; the benchmark has ${LEFT} s"
export PYTHONUNBUFFERED=1
rc=0
timeout --signal=INT --kill-after=10 "$LEFT" "$PY" bench/gpu_train.py "${ARGS[@]}" --budget "$((LEFT - 10))" || rc=$?
if [ "$rc" = 124 ]; then
  echo "== stopped at the budget (${BUDGET_S} s): the numbers above are complete, the rest did not run" >&2
fi
echo "== done in ${SECONDS} s (rc $rc)"
exit "$rc"
