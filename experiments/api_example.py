"""btcli from Python, as in a notebook: train small runs, load them into pandas, compare, export.

    .venv/bin/python experiments/api_example.py                  # four 6 000-step MiniGrid runs
    .venv/bin/python experiments/api_example.py --steps 600 --out /tmp/api-demo

Each cell below is what you would type into a notebook. Rerunning it continues or reuses the
runs already in --out (train(..., resume=True) returns a finished run as it is).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import btcli


def main(out: Path, steps: int) -> dict:
    # --- 1. train: a config is a dict (nested or dotted keys), a RunConfig, or a YAML path --------
    base = {"command": "transfer", "steps": steps, "eval_episodes": 4,
            "env": {"id": "MiniGrid-Empty-5x5-v0", "num_envs": 2},
            "agent": {"learning_starts": min(500, steps // 2), "target_update": 500}}
    for mode in ("scratch", "ez-greedy"):
        for seed in (0, 1):
            path = out / f"{mode}-s{seed}"
            run = btcli.train(base | {"mode": mode, "seed": seed}, path, resume=(path / "config.yaml").exists())
            print(f"{path.name}: final return {run.summary['final_return_mean']:.3f}, "
                  f"eval {run.summary['eval_return_mean']:.3f}")

    # --- 2. load: one long DataFrame, one row per training episode, config keys as columns ------
    episodes = btcli.load_runs(out)
    per_mode = episodes.groupby("mode")["return"].agg(["count", "mean"])
    print(per_mode)
    evals = btcli.load_runs(out, table="eval")
    print(evals.groupby(["mode", "seed"])["return"].mean().unstack())

    # --- 3. compare: the same object `btcli compare --json` prints ----------------------------
    result = btcli.compare_groups(out, by="mode", metric="auc", reps=500)
    for group in result["groups"]:
        iqm = group["iqm"]
        print(f"{group['name']}: IQM {iqm['point']:.3f} [{iqm['lo']:.3f}, {iqm['hi']:.3f}] over {group['runs']} runs")

    # --- 4. share a policy: export it, load it, act with it ----------------------------------
    exported = out / "export-scratch-s0"
    if not exported.exists():
        btcli.export_policy(out / "scratch-s0", exported)
    policy = btcli.load_policy(exported)
    env = policy.make_env(num_envs=2, seed=0)
    actions, q_values = policy(env.reset())
    env.close()
    print(f"policy {policy.sha256[:12]}: actions {actions.tolist()} ({[policy.action_meanings[a] for a in actions]})")
    return {"episodes": episodes, "compare": result, "actions": actions, "q_values": q_values}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/api_example"))
    parser.add_argument("--steps", type=int, default=6000)
    args = parser.parse_args()
    main(args.out, args.steps)
