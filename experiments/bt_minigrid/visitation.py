"""Where does π_p *not* go? Its zero-shot return for a goal on each cell of the small four-room layout.

For every walkable cell X (not the start), the task "start top-left facing right, goal at X, 200
steps" is played by each pre-trained greedy policy given (epsilon ``--epsilon``, as `btcli
evaluate`), ``--episodes`` episodes each. π_p never saw a reward, so its return there is the
chance that its coverage walk steps onto X early. The misaligned task
(``MiniGrid-SmallFourRoomsMisaligned-v0``, btcli/envs/tasks.py) puts its goal on the cell with the
lowest mean return over the policies: measured here, before any transfer run.

    .venv/bin/python experiments/bt_minigrid/visitation.py runs/bt_minigrid/pretrain-* --json OUT.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from btcli.config import from_dict
from btcli.envs import make_vec_env
from btcli.envs.tasks import DOORWAYS, MID, SIZE, START
from btcli.evaluation import actor_for, evaluate
from btcli.pretrained import load_pretrained
from btcli.runs import RunDir


def walkable_cells() -> list[tuple[int, int]]:
    """Every cell inside the outer wall that is not a room wall (doorways included), but the start."""
    cells = [(x, y) for y in range(1, SIZE - 1) for x in range(1, SIZE - 1)
             if (x != MID and y != MID) or (x, y) in DOORWAYS]
    return [c for c in cells if c != START]


def probe_id(cell: tuple[int, int]) -> str:
    env_id = f"MiniGrid-SmallFourRoomsProbe-x{cell[0]}y{cell[1]}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point="btcli.envs.tasks:SmallFourRooms",
                     kwargs={"agent_pos": START, "goal_pos": cell})
    return env_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--epsilon", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=20_000)
    parser.add_argument("--json", type=Path, default=None, help="also write the per-cell table here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cells = walkable_cells()
    ids = [probe_id(cell) for cell in cells]  # registered before btcli first lists (and caches) the ids
    table = np.zeros((len(args.runs), len(cells)))
    success = np.zeros_like(table)
    for r, run in enumerate(args.runs):
        cfg = from_dict(RunDir(run).read_config())
        pre = load_pretrained(run)
        net = pre.network(tuple(pre.state["obs_shape"]), int(pre.state["num_actions"]), torch.device("cpu"))
        for c in range(len(cells)):
            env = make_vec_env(replace(cfg.env, id=ids[c]), seed=args.seed)
            # fresh recurrent states per goal cell (and, with agent.prev_inputs, fresh NGU memories)
            act = actor_for(net, torch.device("cpu"), env.num_envs, intrinsic=pre.reward_source(net, torch.device("cpu")))
            results = evaluate(act, env, args.episodes, args.epsilon, seed=args.seed)
            env.close()
            table[r, c] = np.mean([x.ret for x in results])
            success[r, c] = np.mean([x.ret > 0 for x in results])
    mean = table.mean(axis=0)
    order = np.argsort(mean, kind="stable")
    print(f"{len(args.runs)} policies x {len(cells)} goal cells x {args.episodes} episodes; lowest mean return first")
    print(f"{'cell (x, y)':12s} {'mean return':>11s} {'success':>8s}  per policy")
    for c in order[:10]:
        per = " ".join(f"{v:.2f}" for v in table[:, c])
        print(f"{str(cells[c]):12s} {mean[c]:11.3f} {success[:, c].mean():8.2f}  {per}")
    print(f"highest: {cells[order[-1]]} {mean[order[-1]]:.3f}; all cells: mean {mean.mean():.3f}")
    if args.json:
        rows = [{"cell": list(cells[c]), "mean_return": float(mean[c]), "success": float(success[:, c].mean()),
                 "per_policy": [float(v) for v in table[:, c]]} for c in order]
        args.json.write_text(json.dumps({"runs": [str(r) for r in args.runs], "episodes": args.episodes,
                                         "epsilon": args.epsilon, "seed": args.seed, "cells": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
