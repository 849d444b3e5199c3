#!/usr/bin/env bash
# The paper's comparison at laptop scale, then the pre-registered held-out tasks:
#   experiments/bt_minigrid/sweep.yaml   pre-training + 8 arms x 4 tasks x 5 seeds (runs/bt_transfer)
#   experiments/heldout/sweep.yaml       per task pre-training + 7 arms x 3 tasks x 5 seeds (runs/heldout)
# then `btcli compare` per task on the learner-only metrics (eval-last: the last 3 evaluations;
# eval-auc) and on the training-episode ones (final, incl. π_p's flights), π_p zero-shot as its
# own group. Rerun to finish a killed run: finished runs are skipped.
#   bash experiments/bt_minigrid/run.sh            # JOBS=2 parallel runs
# Results: runs/<root>/compare-<task>-<metric>/ (compare.md, CSVs, PNGs) and .txt tables beside them.
set -euo pipefail
cd "$(dirname "$0")/../.."
BTCLI=${BTCLI:-.venv/bin/btcli}
JOBS=${JOBS:-2}
start=$(date +%s)
$BTCLI sweep experiments/bt_minigrid/sweep.yaml --jobs "$JOBS"
mid=$(date +%s)
$BTCLI sweep experiments/heldout/sweep.yaml --jobs "$JOBS"
sweeps=$(date +%s)
compare_task() {  # root task arms...
  local root=$1 task=$2; shift 2
  local runs=() auc_runs=()
  for arm in "$@"; do
    runs+=("$root/arm-$arm-MiniGrid-$task-v0-s*")
    [ "$arm" = "scratch+pt-budget" ] || auc_runs+=("$root/arm-$arm-MiniGrid-$task-v0-s*")
  done
  # scratch+pt-budget has twice the steps: its eval-last (150k-160k) is the fair control; its AUC
  # over another budget is not comparable, so eval-auc and final leave it out
  $BTCLI compare "${runs[@]}" --by tag --metric eval-last --allow-mixed --out "$root/compare-$task-eval-last" \
    > "$root/compare-$task-eval-last.txt"
  for metric in eval-auc final; do
    $BTCLI compare "${auc_runs[@]}" --by tag --metric "$metric" --out "$root/compare-$task-$metric" \
      > "$root/compare-$task-$metric.txt"
  done
}
ARMS=(scratch ez-greedy scratch+pt-budget ft bt bt+ft bt+ft+ks)
for task in SmallFourRoomsFar SmallFourRooms SmallFourRoomsNear SmallFourRoomsMisaligned; do
  compare_task runs/bt_transfer "$task" "${ARMS[@]}" ft+random-flights
done
for task in SimpleCrossingS9N1 DoorKey-6x6 LavaGapS6; do
  compare_task runs/heldout "$task" "${ARMS[@]}"
done
end=$(date +%s)
echo "bt_minigrid: experiment sweep $(( mid - start )) s, held-out sweep $(( sweeps - mid )) s, total $(( end - start )) s wall"
