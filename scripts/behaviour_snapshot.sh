#!/bin/bash
# Record short runs of every command and mode on fixed seeds, or compare two such records: a
# refactor that changes no behaviour leaves metrics.csv, train.csv and eval.csv identical (but
# for the wall-clock columns time and sps).
#   bash scripts/behaviour_snapshot.sh record DIR        # ~6 min on 2 CPU cores
#   bash scripts/behaviour_snapshot.sh compare DIR_A DIR_B
# Record once on the commit before a change and once after it, then compare.
set -euo pipefail
PY=${PY:-.venv/bin/python}
COMMON=(--seed 3 --quiet --set threads=1 --set eval_every=1000 --set eval_episodes=4 --set train_log_every=500)
GRID=(--env MiniGrid-SmallFourRooms-v0 --steps 2500 --set agent.learning_starts=500 --set env.visited=true
      --set agent.torso=gridego --set explore.eps_decay_steps=1500)
ATARI=(--env ALE/Breakout-v5 --steps 1200 --num-envs 2 --set agent.learning_starts=400 --set agent.buffer_size=2000
       --set eval_every=600 --set eval_episodes=1 --set env.max_episode_frames=1600 --set agent.target_update=400)

record() {
  local out=$1
  mkdir -p "$out"
  $PY -m btcli pretrain --objective count --set intrinsic.count_scope=episode "${GRID[@]}" "${COMMON[@]}" --out "$out/pretrain-count"
  for objective in rnd ngu ngu+rnd; do
    $PY -m btcli pretrain --objective "$objective" "${GRID[@]}" "${COMMON[@]}" --out "$out/pretrain-$objective"
  done
  for mode in scratch ez-greedy; do
    $PY -m btcli transfer --mode "$mode" "${GRID[@]}" "${COMMON[@]}" --out "$out/transfer-$mode"
  done
  for mode in ft bt bt+ft; do
    $PY -m btcli transfer --mode "$mode" --pretrained "$out/pretrain-count" "${GRID[@]}" "${COMMON[@]}" \
      --out "$out/transfer-$mode"
  done
  $PY -m btcli finetune --pretrained "$out/pretrain-count" --layers torso "${GRID[@]}" "${COMMON[@]}" --out "$out/finetune"
  $PY -m btcli transfer --mode scratch "${ATARI[@]}" "${COMMON[@]}" --out "$out/atari-scratch"
  $PY -m btcli pretrain --objective rnd "${ATARI[@]}" "${COMMON[@]}" --out "$out/atari-pretrain-rnd"
  $PY -m btcli transfer --mode bt --pretrained "$out/atari-pretrain-rnd" "${ATARI[@]}" "${COMMON[@]}" --out "$out/atari-bt"
}

compare() {
  $PY - "$1" "$2" <<'PYEOF'
import sys
from pathlib import Path

import pandas as pd

a, b = Path(sys.argv[1]), Path(sys.argv[2])
runs = sorted(p.name for p in a.iterdir() if (p / "config.yaml").exists())
missing = [r for r in runs if not (b / r / "config.yaml").exists()]
bad = list(missing)
for run in runs:
    if run in missing:
        continue
    for name, wall in (("metrics.csv", ["time"]), ("train.csv", ["time", "sps"]), ("eval.csv", [])):
        x, y = (pd.read_csv(d / run / name).drop(columns=wall, errors="ignore") for d in (a, b))
        same = x.equals(y)
        if not same:
            bad.append(f"{run}/{name}")
        print(f"{run:22s} {name:12s} {'identical' if same else 'DIFFERENT'} ({len(x)} rows)")
print(f"{len(runs)} runs compared; {'all identical' if not bad else 'differences: ' + ', '.join(bad)}")
sys.exit(1 if bad else 0)
PYEOF
}

case "${1:-}" in
  record) record "$2" ;;
  compare) compare "$2" "$3" ;;
  *) echo "usage: $0 record DIR | compare DIR_A DIR_B" >&2; exit 2 ;;
esac
