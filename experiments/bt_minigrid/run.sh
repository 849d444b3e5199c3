#!/usr/bin/env bash
# The paper's comparison at laptop scale: pre-train once per seed, transfer in five modes on
# three tasks, then compare the modes per task and over all tasks (experiments/bt_minigrid/).
#   bash experiments/bt_minigrid/run.sh            # JOBS=2 parallel runs; rerun to finish a killed sweep
# Results: runs/bt_minigrid/compare-<task>-<metric>/ (compare.md, CSVs, PNGs).
set -euo pipefail
cd "$(dirname "$0")/../.."
BTCLI=${BTCLI:-.venv/bin/btcli}
JOBS=${JOBS:-2}
root=runs/bt_minigrid
start=$(date +%s)
$BTCLI sweep experiments/bt_minigrid/sweep.yaml --jobs "$JOBS"
sweep_s=$(( $(date +%s) - start ))
for task in SmallFourRoomsFar SmallFourRooms SmallFourRoomsNear all; do
  if [ "$task" = all ]; then pattern="MiniGrid-*"; else pattern="MiniGrid-$task-v0"; fi
  for metric in final auc eval; do
    $BTCLI compare $root/baseline-$pattern-s* $root/transfer-$pattern-s* --by mode --metric "$metric" \
      --out "$root/compare-$task-$metric" > "$root/compare-$task-$metric.txt"
  done
done
echo "bt_minigrid: sweep ${sweep_s} s, total $(( $(date +%s) - start )) s wall"
