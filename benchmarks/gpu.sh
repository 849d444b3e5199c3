#!/usr/bin/env bash
# GPU figures in one go, on a CUDA machine where `python3 -m btcli` imports:
#   1. whole-loop throughput on ALE/Breakout-v5 beside the textbook serial loop (both on the GPU),
#      btcli in fp32 and bf16 with 4, 8 and 16 environment copies;
#   2. determinism: the same short run twice on the GPU must log the same numbers;
#   3. does bf16 change learning? experiments/breakout_precision.yaml (4 seeds x fp32/bf16,
#      200k steps each, 8 runs at once), stopped cleanly at the time budget if it has not finished.
# usage: bash benchmarks/gpu.sh OUT_DIR [BUDGET_SECONDS]   (default budget 540 s for all three)
# OUT_DIR gets throughput.txt, determinism.txt and precision.tar.gz (the runs without checkpoints).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-540}
mkdir -p "$out"
deadline=$(( $(date +%s) + budget ))
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}      # DEVICE=cpu MEASURE=200 bash benchmarks/gpu.sh /tmp/x 200: a dry run of the script
MEASURE=${MEASURE:-3000}
export PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
nvidia-smi -L || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"

echo "== 1. throughput"
{
  timeout 150 $PY benchmarks/train_throughput.py --env ALE/Breakout-v5 --device "$DEVICE" --threads 2 --num-envs 4 \
    --measure "$MEASURE" --variants textbook,btcli-fp32,btcli-bf16
  for n in 8 16; do
    timeout 60 $PY benchmarks/train_throughput.py --env ALE/Breakout-v5 --device "$DEVICE" --threads 2 --num-envs $n \
      --measure "$MEASURE" --variants btcli-fp32,btcli-bf16
  done
} 2>&1 | tee "$out/throughput.txt"

echo "== 2. determinism"
det=$(mktemp -d)
{
  for env in ALE/Breakout-v5 MiniGrid-DoorKey-5x5-v0; do
    tag=${env//\//-}
    extra=()
    # no evaluation on Breakout: a barely trained greedy agent may never serve, and wait out the 108k-frame cap
    [[ $env == ALE/* ]] && extra=(--set eval_episodes=0 --set agent.learning_starts=1000 --set agent.target_update=1000)
    [[ $env == MiniGrid* ]] && extra=(--set eval_episodes=4 --set agent.torso=gridego --set agent.learning_starts=500)
    for k in a b; do
      timeout 60 $PY -m btcli transfer --env "$env" --steps 4000 --seed 3 --device "$DEVICE" --quiet \
        "${extra[@]}" --out "$det/$tag-$k" || echo "run $tag-$k failed"
    done
    $PY - "$det/$tag-a" "$det/$tag-b" <<'EOF'
import os
import sys
import pandas as pd
a, b = sys.argv[1:]
for name in ("metrics.csv", "train.csv", "eval.csv"):
    if not os.path.exists(f"{a}/{name}") or os.path.getsize(f"{a}/{name}") == 0:
        continue
    x, y = (pd.read_csv(f"{d}/{name}").drop(columns=["time", "sps"], errors="ignore") for d in (a, b))
    same = x.shape == y.shape and x.equals(y)
    print(f"{a.rsplit('/', 1)[-1][:-2]} {name}: {len(x)} rows, identical across two runs: {same}")
EOF
  done
} 2>&1 | tee "$out/determinism.txt"

echo "== 3. bf16 against fp32, learning"
left=$(( deadline - $(date +%s) - 30 ))
echo "learning sweep budget: ${left}s"
if (( left > 60 )); then
  timeout -s TERM -k 30 "$left" $PY -m btcli sweep experiments/breakout_precision.yaml --jobs 8
  echo "sweep exit code $?"
fi
tar czf "$out/precision.tar.gz" --exclude=checkpoints --exclude=.lock runs/breakout_precision 2>/dev/null
ls -la "$out"
