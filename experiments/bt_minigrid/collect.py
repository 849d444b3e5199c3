"""One row per finished run of a sweep folder: the learner-only scores and π_p's zero-shot score.

    python experiments/bt_minigrid/collect.py runs/bt_transfer experiments/bt_minigrid/results/runs.csv

Columns: run, tag (arm), env_id, seed, steps_budget, eval_last_mean (mean of the last 3
evaluations, 20 episodes each), eval_auc, pretrained_eval_mean (π_p zero-shot, all its
evaluation episodes pooled), return_last_mean (training episodes; include π_p's flights in bt
and bt+ft). Unfinished runs are left out and counted on stderr.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from btcli.analysis import find_run_dirs, load_run, summarize_run

COLUMNS = ["run", "tag", "env_id", "seed", "steps_budget", "eval_last_mean", "eval_auc", "pretrained_eval_mean",
           "return_last_mean"]


def main(root: str, out: str) -> None:
    rows, unfinished = [], 0
    for path in find_run_dirs(root):
        run = load_run(path)
        if run.config.get("command") != "transfer":
            continue
        s = summarize_run(run)
        if s["status"] != "complete":
            unfinished += 1
            continue
        rows.append({"run": path.name, "tag": run.config.get("tag") or run.config.get("mode"),
                     **{k: s.get(k) for k in COLUMNS if k not in ("run", "tag")}})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} finished transfer runs -> {out}; {unfinished} unfinished left out", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:3])
