#!/usr/bin/env bash
# GPU extraction benchmark for a machine with one NVIDIA GPU, done within 8 minutes: what
# bench/gpu_extract.py measures (its docstring says what each number is), on ~10 minutes of
# real-size video looped from the fixture videos (the full extraction goes over them PASSES=3
# times in one run).
#
#     bash bench/gpu_extract.sh              # on the GPU machine, from anywhere in the repo
#     bash bench/gpu_extract.sh --dry-run    # the same python on the CPU with tiny inputs (or DEVICE=cpu)
#     MINUTES=20 PASSES=1 BATCH_SIZE=64 DECODE_WORKERS=8 bash bench/gpu_extract.sh
#
# Uses .venv (or $PYTHON); runs `make install` when it cannot import torch, decord and av.
# On a GPU run it tries `pip install --no-deps torchcodec` (never anything else; TRY_TORCHCODEC=0
# skips it) so the CUDA decoder can be timed; it is reported absent where that fails. Fixture videos come from
# $MMP_REAL_FIXTURES/video (default ../shared/fixtures). BUDGET_S (default 480) bounds the
# whole script: the benchmark gets what the set-up left of it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/gpu_common.sh
. bench/gpu_common.sh
gpu_bench_start gpu_extract.sh "torch decord av" "$@"
export MMP_REAL_FIXTURES=${MMP_REAL_FIXTURES:-$(cd .. && pwd)/shared/fixtures}
echo "== fixtures: $MMP_REAL_FIXTURES/video"
if [ "$DEVICE" != cpu ] && [ "${TRY_TORCHCODEC:-1}" = 1 ] && ! "$PY" -c "import torchcodec" 2>/dev/null; then
  echo "== trying pip install --no-deps torchcodec (for the CUDA decoder timing; failure is reported, not fatal)"
  "$PY" -m pip install --quiet --no-deps torchcodec || true
fi

if [ "$DEVICE" = cpu ]; then
  # Tiny: 6 s of video in 2 files, batches of 2, one timed batch, 2 windows compared.
  ARGS=(--device cpu --minutes 0.1 --files 2 --batch-size 2 --decode-workers 2 --model-reps 1
        --precision-windows 2)
else
  ARGS=(--device "$DEVICE" --minutes "${MINUTES:-10}" --passes "${PASSES:-3}" --batch-size "${BATCH_SIZE:-32}")
  if [ -n "${DECODE_WORKERS:-}" ]; then ARGS+=(--decode-workers "$DECODE_WORKERS"); fi
fi
LEFT=$((BUDGET_S - SECONDS - 15))
if [ "$LEFT" -lt 60 ]; then
  echo "== set-up took ${SECONDS} s of the ${BUDGET_S} s budget: too little left to run" >&2
  exit 1
fi
echo "== set-up took ${SECONDS} s; the benchmark has ${LEFT} s"
export PYTHONUNBUFFERED=1
rc=0
timeout --signal=INT --kill-after=10 "$LEFT" "$PY" bench/gpu_extract.py "${ARGS[@]}" || rc=$?
if [ "$rc" = 124 ]; then
  echo "== stopped at the budget (${BUDGET_S} s): the numbers above are complete, the rest did not run" >&2
fi
echo "== done in ${SECONDS} s (rc $rc)"
exit "$rc"
