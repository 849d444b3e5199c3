#!/bin/bash
# What `btcli report` and `btcli compare` print and write for a set of run directories, recorded
# so that a change to the reporting code can be shown to change none of it (byte for byte).
#   bash scripts/report_snapshot.sh RUNS_DIR OUT      # RUNS_DIR: a folder of runs (e.g. a behaviour_snapshot record)
#   diff -r OUT_BEFORE OUT_AFTER                      # record before and after the change, then compare
# The runs are copied (without checkpoints) to one fixed place, so paths inside the outputs agree.
set -euo pipefail
PY=${PY:-.venv/bin/python}
src=$1 out=$2
work=${TMPDIR:-/tmp}/btcli-report-snapshot
rm -rf "$work" "$out"
mkdir -p "$work" "$out"
for run in "$src"/*/; do
  name=$(basename "$run")
  [ -f "$run/config.yaml" ] || continue
  mkdir -p "$work/$name"
  find "$run" -maxdepth 1 -type f -exec cp {} "$work/$name/" \;
  rm -f "$work/$name/report.png" "$work/$name/report.md"
  $PY -m btcli report "$work/$name" --json > "$out/$name.report.json"
  cp "$work/$name/report.md" "$out/$name.report.md"
  cp "$work/$name/report.png" "$out/$name.report.png"
done
$PY -m btcli report "$work" > "$out/folder.txt"
transfers=("$work"/transfer-*)
for metric in eval-last eval-auc final auc; do
  $PY -m btcli compare "${transfers[@]}" --by mode --metric "$metric" --allow-mixed --reps 300 \
    --out "$work/compare-$metric" --json > "$out/compare-$metric.json"
  for f in "$work/compare-$metric"/*; do cp "$f" "$out/compare-$metric.$(basename "$f")"; done
done
echo "recorded $(ls "$out" | wc -l) files in $out"
