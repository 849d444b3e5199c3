#!/bin/bash
# Kill a MiniGrid run with SIGKILL right after a checkpoint, resume it, and compare it with the
# same run uninterrupted: with save_replay=true every log row and weight should be equal.
#   bash scripts/check_exact_resume.sh [OUT]      # ~4 min on 2 CPU cores; OUT default /tmp/btcli-exact-resume
set -u
OUT=${1:-/tmp/btcli-exact-resume}
PY=${PY:-.venv/bin/python}
rm -rf "$OUT" && mkdir -p "$OUT"
ARGS=(--env MiniGrid-FourRooms-v0 --mode ez-greedy --steps 24000 --seed 5 --set save_replay=true
      --set checkpoint_every=4000 --set keep_checkpoints=10 --set threads=1 --set eval_every=8000
      --set eval_episodes=8 --quiet)
"$PY" -m btcli transfer "${ARGS[@]}" --out "$OUT/whole" || exit 1
"$PY" -m btcli transfer "${ARGS[@]}" --out "$OUT/killed" &
pid=$!
until [ -f "$OUT/killed/checkpoints/step_000000012000/COMPLETE" ]; do sleep 0.2; done
sleep 1.5
kill -9 $pid; wait $pid 2>/dev/null
echo "killed after the checkpoints $(ls "$OUT/killed/checkpoints" | tr '\n' ' ')"
"$PY" -m btcli transfer --resume --out "$OUT/killed" || exit 1
"$PY" - "$OUT" <<'PYEOF'
import sys
import pandas as pd
import torch
from btcli.runs import RunDir, load_checkpoint
a, b = RunDir(sys.argv[1] + "/whole"), RunDir(sys.argv[1] + "/killed")
equal = {
    "metrics.csv": pd.read_csv(a.metrics_path).drop(columns="time").equals(pd.read_csv(b.metrics_path).drop(columns="time")),
    "train.csv": pd.read_csv(a.train_path).drop(columns=["time", "sps"]).equals(
        pd.read_csv(b.train_path).drop(columns=["time", "sps"])),
    "eval.csv": pd.read_csv(a.eval_path).equals(pd.read_csv(b.eval_path)),
}
wa, wb = (load_checkpoint(r.latest_checkpoint())["learner"]["online"] for r in (a, b))
equal["weights"] = all(torch.equal(wa[k], wb[k]) for k in wa)
print("equal to the uninterrupted run:", ", ".join(f"{k} {v}" for k, v in equal.items()))
sys.exit(0 if all(equal.values()) else 1)
PYEOF
