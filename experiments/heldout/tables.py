"""The transfer tables of experiments/RESULTS.md, from the comparisons run.sh wrote.

    python experiments/heldout/tables.py runs/heldout            # markdown on stdout
    python experiments/heldout/tables.py runs/bt_transfer SmallFourRoomsMisaligned   # the experiment's tasks

Per task: every arm's mean over its 5 seeds [95% stratified-bootstrap CI] on eval-last (the
learner's greedy evaluations at 70k, 75k and 80k; scratch+pt-budget: 150k-160k) and eval-auc,
then P(X > Y) [95% CI] for the pre-registered claims.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

TASKS = ("SimpleCrossingS9N1", "DoorKey-6x6", "LavaGapS6")
ARMS = ("π_p zero-shot", "scratch", "scratch+pt-budget", "ez-greedy", "ft", "ft+random-flights", "bt", "bt+ft",
        "bt+ft+ks")
CLAIMS = (("bt+ft+ks", "π_p zero-shot"), ("bt+ft+ks", "scratch"), ("bt+ft+ks", "scratch+pt-budget"),
          ("bt+ft", "bt"), ("bt+ft", "ft"), ("bt+ft+ks", "bt"), ("bt+ft+ks", "ft"), ("bt", "scratch"),
          ("bt+ft", "ft+random-flights"), ("bt+ft", "π_p zero-shot"), ("bt", "π_p zero-shot"))


def cell(agg: pd.DataFrame, group: str) -> str:
    row = agg[(agg.group == group) & (agg.statistic == "mean")]
    if row.empty:
        return "–"
    r = row.iloc[0]
    return f"{r.point:.3f} [{r.lo:.3f}, {r.hi:.3f}]"


def main(root: str, tasks: tuple[str, ...] = TASKS) -> None:
    base = Path(root)
    for task in tasks:
        last = pd.read_csv(base / f"compare-{task}-eval-last" / "aggregates.csv")
        auc = pd.read_csv(base / f"compare-{task}-eval-auc" / "aggregates.csv")
        runs = last[last.statistic == "mean"].set_index("group")["runs"]
        print(f"\n**MiniGrid-{task}-v0**\n")
        print("| arm | runs | eval-last | eval-auc |\n|---|---|---|---|")
        for arm in ARMS:
            n = int(runs.get(arm, 0))
            if n == 0 and arm == "ft+random-flights":
                continue  # an arm of the experiment's sweep only
            print(f"| {arm} | {n} | {cell(last, arm)} | {cell(auc, arm) if arm != 'scratch+pt-budget' else 'n/a'} |")
        poi = pd.read_csv(base / f"compare-{task}-eval-last" / "poi.csv")
        pairs = []
        for x, y in CLAIMS:
            row = poi[(poi.x == x) & (poi.y == y)]
            back = poi[(poi.x == y) & (poi.y == x)]  # P(X > Y) = 1 - P(Y > X) (ties count half)
            if not row.empty:
                r = row.iloc[0]
                pairs.append(f"{x} > {y}: {r.probability:.2f} [{r.lo:.2f}, {r.hi:.2f}]")
            elif not back.empty:
                r = back.iloc[0]
                pairs.append(f"{x} > {y}: {1 - r.probability:.2f} [{1 - r.hi:.2f}, {1 - r.lo:.2f}]")
        print("\nP(X > Y) on eval-last: " + "; ".join(pairs))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/heldout", tuple(sys.argv[2:]) or TASKS)
