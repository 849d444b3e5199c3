#!/usr/bin/env bash
# The paper's comparison at laptop scale, then the pre-registered held-out tasks:
#   experiments/bt_minigrid/sweep.yaml   pre-training + 8 arms x 4 tasks x 5 seeds (runs/bt_transfer)
#   experiments/heldout/sweep.yaml       per task pre-training + 7 arms x 3 tasks x 5 seeds (runs/heldout)
#   experiments/bt_minigrid_ngu/sweep.yaml  NGU pre-training on the recurrent learner + 6 arms x Far x 5 seeds
#                                        (runs/bt_ngu; only when asked for: `run.sh ngu`)
# then `btcli compare` per task on the learner-only metrics (eval-last: the last 3 evaluations;
# eval-auc) and on the training-episode ones (final, incl. π_p's flights), π_p zero-shot as its
# own group. Rerun to finish a killed run: finished runs are skipped.
#   bash experiments/bt_minigrid/run.sh                      # both, JOBS=2 parallel runs
#   bash experiments/bt_minigrid/run.sh heldout              # one of them: experiment | heldout | ngu | all
#   bash experiments/bt_minigrid/run.sh heldout --compare-only   # the comparisons of finished runs
#   TASKS="SmallFourRoomsFar DoorKey-6x6" bash experiments/bt_minigrid/run.sh   # a slice: those tasks' runs
#                                        (btcli sweep --only env=...) and their pre-training, then their comparisons
# Results: runs/<root>/compare-<task>-<metric>/ (compare.md, CSVs, PNGs) and .txt tables beside them;
# each sweep's wall time in runs/<root>/wall_time.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
BTCLI=${BTCLI:-.venv/bin/btcli}
JOBS=${JOBS:-2}
WHICH=${1:-all}
MODE=${2:-}
case "$WHICH" in experiment|heldout|ngu|all) ;; *) echo "run.sh: error: choose experiment, heldout, ngu or all, not '$WHICH'" >&2; exit 2;; esac
start=$(date +%s)
picked() {  # the tasks of this sweep that TASKS asks for (all of them when TASKS is unset)
  local t out=()
  for t in "$@"; do
    if [ -z "${TASKS:-}" ] || [[ " $TASKS " == *" $t "* ]]; then out+=("$t"); fi
  done
  echo "${out[@]}"
}
sweep() {  # yaml root tasks...
  local yaml=$1 root=$2; shift 2
  [ "$MODE" = "--compare-only" ] && return 0
  local t0 only=() t; t0=$(date +%s)
  if [ -n "${TASKS:-}" ]; then for t in "$@"; do only+=(--only "env=MiniGrid-$t-v0"); done; fi
  $BTCLI sweep "$yaml" --jobs "$JOBS" "${only[@]}"
  echo "$yaml${TASKS:+ ($*)}: $(( $(date +%s) - t0 )) s wall on $(nproc) cores, JOBS=$JOBS ($(date -u +%F))" >> "$root/wall_time.txt"
}
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
if [ "$WHICH" = ngu ]; then
  sweep experiments/bt_minigrid_ngu/sweep.yaml runs/bt_ngu SmallFourRoomsFar
  compare_task runs/bt_ngu SmallFourRoomsFar scratch ez-greedy scratch+pt-budget ft bt bt+ft bt+ft+ks
  echo "bt_minigrid (ngu${MODE:+ $MODE}): $(( $(date +%s) - start )) s wall"
  exit 0
fi
read -r -a EXP <<< "$(picked SmallFourRoomsFar SmallFourRooms SmallFourRoomsNear SmallFourRoomsMisaligned)"
read -r -a HELD <<< "$(picked SimpleCrossingS9N1 DoorKey-6x6 LavaGapS6)"
if [ -n "${TASKS:-}" ] && [ $(( ${#EXP[@]} + ${#HELD[@]} )) -eq 0 ]; then
  echo "run.sh: error: TASKS='$TASKS' names none of the tasks; choose among SmallFourRoomsFar SmallFourRooms" \
    "SmallFourRoomsNear SmallFourRoomsMisaligned SimpleCrossingS9N1 DoorKey-6x6 LavaGapS6" >&2
  exit 2
fi
if [ "$WHICH" != heldout ] && [ ${#EXP[@]} -gt 0 ]; then
  sweep experiments/bt_minigrid/sweep.yaml runs/bt_transfer "${EXP[@]}"
  for task in "${EXP[@]}"; do
    compare_task runs/bt_transfer "$task" "${ARMS[@]}" ft+random-flights
  done
fi
if [ "$WHICH" != experiment ] && [ ${#HELD[@]} -gt 0 ]; then
  sweep experiments/heldout/sweep.yaml runs/heldout "${HELD[@]}"
  for task in "${HELD[@]}"; do
    compare_task runs/heldout "$task" "${ARMS[@]}"
  done
fi
echo "bt_minigrid ($WHICH${MODE:+ $MODE}): $(( $(date +%s) - start )) s wall"
