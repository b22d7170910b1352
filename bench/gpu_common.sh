# Shared start of the one-GPU benchmark scripts (bench/gpu_*.sh), sourced by them:
#     gpu_bench_start SCRIPT_NAME "module module ..." "$@"
# parses --dry-run (DEVICE=cpu), prints the device (and nvidia-smi's line on a GPU), and sets
# PY to a Python that imports the named modules, running `make install` when .venv cannot.
gpu_bench_start() {
  local name=$1 modules=$2
  shift 2
  BUDGET_S=${BUDGET_S:-480}
  DEVICE=${DEVICE:-cuda}
  for arg in "$@"; do
    case "$arg" in
      --dry-run) DEVICE=cpu ;;
      *) echo "usage: bash bench/$name [--dry-run]" >&2; exit 2 ;;
    esac
  done
  PY=${PYTHON:-.venv/bin/python}
  echo "== device: $DEVICE (repo $(pwd))"
  if [ "$DEVICE" != cpu ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  fi
  local imports=${modules// /, }
  if ! { [ -x "$PY" ] && "$PY" -c "import $imports" 2>/dev/null; }; then
    echo "== $PY cannot import $imports: make install"
    make install
    PY=.venv/bin/python
  fi
}
