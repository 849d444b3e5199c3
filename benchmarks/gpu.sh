#!/usr/bin/env bash
# GPU figures in one go, on a CUDA machine where `python3 -m btcli` imports:
#   tests:        the GPU-only tests (CUDA-graph updates against eager ones, the lookup gradient);
#   throughput:   whole-loop steps/s on ALE/Breakout-v5 beside the textbook serial loop (both on the
#                 GPU): btcli fp32 eager, and fp32/bf16 as a CUDA graph (agent.cuda_graph), 4 and 16 copies;
#   determinism:  the same short run twice on the GPU must log the same numbers (eager, graph, grid torso);
#   learning:     does bf16 change learning? experiments/breakout_precision.yaml (4 seeds x fp32/bf16,
#                 200k steps each, 8 runs at once), stopped cleanly at the time budget if unfinished.
# usage: bash benchmarks/gpu.sh OUT_DIR [BUDGET_SECONDS]      (default budget 540 s)
#   STAGES="tests throughput determinism learning" (the default) picks stages;
#   DEVICE=cpu MEASURE=1000 STAGES=determinism bash benchmarks/gpu.sh /tmp/x   tries the script on a CPU.
# OUT_DIR gets tests.txt, throughput.txt, determinism.txt and precision.tar.gz (runs without checkpoints).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-540}
mkdir -p "$out"
deadline=$(( $(date +%s) + budget ))
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
MEASURE=${MEASURE:-3000}
STAGES=${STAGES:-tests throughput determinism learning}
want() { [[ " $STAGES " == *" $1 "* ]]; }
export PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
nvidia-smi -L || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

if want tests; then
  echo "== GPU tests"
  timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_dqn.py -k "cuda_graph or lookup" 2>&1 | tee "$out/tests.txt"
fi

if want throughput; then
  echo "== throughput"
  {
    timeout 150 $PY benchmarks/train_throughput.py --env ALE/Breakout-v5 --device "$DEVICE" --threads 2 \
      --num-envs 4 --measure "$MEASURE" --variants textbook,btcli-fp32,btcli-fp32-graph,btcli-bf16-graph
    timeout 100 $PY benchmarks/train_throughput.py --env ALE/Breakout-v5 --device "$DEVICE" --threads 2 \
      --num-envs 16 --measure "$MEASURE" --variants btcli-fp32,btcli-fp32-graph,btcli-bf16-graph
  } 2>&1 | tee "$out/throughput.txt"
fi

compare_runs() {  # the logs of two runs, wall-clock columns aside
  $PY - "$1" "$2" <<'EOF'
import os
import sys

import pandas as pd

a, b = sys.argv[1:]
for d in (a, b):
    if not os.path.exists(f"{d}/summary.json"):
        print(f"{os.path.basename(d)}: did not finish (no summary.json)")
for name in ("metrics.csv", "train.csv", "eval.csv"):
    if not os.path.exists(f"{a}/{name}") or os.path.getsize(f"{a}/{name}") == 0:
        continue
    x, y = (pd.read_csv(f"{d}/{name}").drop(columns=["time", "sps"], errors="ignore") for d in (a, b))
    same = x.shape == y.shape and x.equals(y)
    print(f"{os.path.basename(a)[:-2]} {name}: {len(x)} rows, identical across two runs: {same}")
EOF
}

if want determinism; then
  echo "== determinism"
  det=$(mktemp -d)
  {
    for variant in breakout breakout-graph gridego; do
      case $variant in
        # no evaluation on Breakout: a barely trained greedy agent may never serve and wait out the 108k-frame cap
        breakout) args=(--env ALE/Breakout-v5 --set eval_episodes=0 --set agent.learning_starts=1000) ;;
        breakout-graph) args=(--env ALE/Breakout-v5 --set eval_episodes=0 --set agent.learning_starts=1000
                              --set agent.cuda_graph=true) ;;
        gridego) args=(--env MiniGrid-DoorKey-5x5-v0 --set eval_episodes=4 --set agent.torso=gridego
                       --set agent.learning_starts=500) ;;
      esac
      for k in a b; do
        timeout 60 $PY -m btcli transfer "${args[@]}" --steps 4000 --seed 3 --device "$DEVICE" --quiet \
          --set agent.target_update=1000 --out "$det/$variant-$k" || echo "run $variant-$k failed"
      done
      compare_runs "$det/$variant-a" "$det/$variant-b"
    done
  } 2>&1 | tee "$out/determinism.txt"
fi

if want learning; then
  echo "== bf16 against fp32, learning"
  left=$(( deadline - $(date +%s) - 30 ))
  echo "learning sweep budget: ${left}s"
  if (( left > 60 )); then
    timeout -s TERM -k 30 "$left" $PY -m btcli sweep experiments/breakout_precision.yaml --jobs 8
    echo "sweep exit code $?"
  fi
  tar czf "$out/precision.tar.gz" --exclude=checkpoints --exclude=.lock runs/breakout_precision 2>/dev/null
fi
ls -la "$out"
