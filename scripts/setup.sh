#!/usr/bin/env bash
# Set up btcli in ./.venv and (unless --install-only) run the quick-start job.
#   bash scripts/setup.sh                 # install, then train + report a small MiniGrid run
#   bash scripts/setup.sh --install-only  # install only (what CI does)
# Torch: on a machine without an NVIDIA GPU the CPU build is installed first, so pip never
# pulls the multi-GB CUDA build. Set BTCLI_TORCH_INDEX to a wheel index URL to choose where
# torch comes from (for example PyTorch's CPU wheel index on machines whose default index
# only serves CUDA builds).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
install_only=0
[ "${1:-}" = "--install-only" ] && install_only=1

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
$PY -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true

if ! $PY -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found; installing torch==$TORCH_VERSION (CUDA build)"
    $PY -m pip install --quiet "torch==$TORCH_VERSION"
  else
    echo "setup: no NVIDIA GPU; installing the CPU build of torch==$TORCH_VERSION"
    if [ -n "${BTCLI_TORCH_INDEX:-}" ]; then
      $PY -m pip install --quiet "torch==$TORCH_VERSION" --index-url "$BTCLI_TORCH_INDEX"
    else
      $PY -m pip install --quiet "torch==$TORCH_VERSION"
    fi
  fi
fi
$PY -m pip install --quiet -e ".[test]"
$PY -c "import torch, btcli; print(f'setup: btcli {btcli.__version__}, torch {torch.__version__}, cuda={torch.cuda.is_available()}')"

if [ "$install_only" = 1 ]; then
  exit 0
fi
# The quick-start job: DQN from scratch on a small MiniGrid task, then its report.
out=runs/quickstart-scratch-s0
if [ -e "$out/summary.json" ]; then
  echo "setup: $out already complete; reporting it"
else
  resume=()
  [ -e "$out/config.yaml" ] && resume=(--resume)
  .venv/bin/btcli transfer --config experiments/quickstart.yaml --out "$out" "${resume[@]}"
fi
.venv/bin/btcli report "$out"
