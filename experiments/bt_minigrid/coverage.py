"""Coverage of pre-trained policies against a uniform-random policy (issue: does pre-training explore?).

For each pre-training run given, plays ``--episodes`` episodes with the run's greedy policy
(epsilon ``--epsilon``, as `btcli evaluate`) and as many with uniformly random actions, on
the run's own task and observation encoding, and reports distinct cells and rooms per
episode, and the share of the policy's episodes that enter more rooms than any random episode
did (rooms random never reaches). Rooms are the four quadrants split by the walls along the grid's middle row and column
(doorways count as no room): btcli's SmallFourRooms* tasks and MiniGrid-FourRooms-v0.

    .venv/bin/python experiments/bt_minigrid/coverage.py runs/bt_minigrid/pretrain-*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from btcli.config import from_dict
from btcli.envs import make_vec_env
from btcli.evaluation import actor_for
from btcli.pretrained import load_pretrained
from btcli.runs import RunDir


def room_of(cell: int, width: int) -> int | None:
    """Quadrant 0..3 of a four-rooms cell (walls along x, y = width // 2), None for doorways."""
    y, x = divmod(cell, width)
    mid = width // 2
    if x == mid or y == mid:
        return None
    return (y > mid) * 2 + (x > mid)


def play(act, cfg, episodes: int, epsilon: float, seed: int) -> list[tuple[int, int]]:
    """(cells, rooms) visited in each of ``episodes`` episodes of one environment copy."""
    env_cfg = cfg.env
    env_cfg.num_envs = 1
    env = make_vec_env(env_cfg, seed=seed)
    rng = np.random.default_rng(seed)
    obs = env.reset(seed=seed)
    width = env.obs_shape[1]
    cells = {int(env.last_probes()["cell"][0])}
    out = []
    while len(out) < episodes:
        explore = rng.random() < epsilon
        greedy = act(obs) if act is not None else None  # a recurrent policy sees every observation
        action = rng.integers(env.num_actions, size=1) if explore or act is None else greedy
        step = env.step(action)
        if hasattr(act, "after_step"):  # a network fed its previous action and reward (agent.prev_inputs)
            act.after_step(obs, action, step)
        cells.add(int(step.probes["cell"][0]))
        if step.terminated[0] or step.truncated[0]:
            if hasattr(act, "reset"):  # a recurrent policy's state starts again with the episode
                act.reset([0])
            rooms = {room_of(c, width) for c in cells} - {None}
            out.append((len(cells), len(rooms)))
            cells = {int(env.last_probes()["cell"][0])}
        obs = step.obs
    env.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--epsilon", type=float, default=0.01)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        cfg = from_dict(RunDir(run).read_config())
        pre = load_pretrained(run)
        shape, actions, cpu = tuple(pre.state["obs_shape"]), int(pre.state["num_actions"]), torch.device("cpu")
        net = pre.network(shape, actions, cpu)
        act = actor_for(net, cpu, 1, intrinsic=pre.reward_source(net, cpu))
        greedy = play(act, cfg, args.episodes, args.epsilon, seed=10_000)
        rand = play(None, cfg, args.episodes, 1.0, seed=10_000)
        g, r = np.array(greedy), np.array(rand)
        rows.append({"run": str(run), "seed": cfg.seed, "pretrained_cells": g[:, 0].mean(), "random_cells": r[:, 0].mean(),
                     "ratio": g[:, 0].mean() / r[:, 0].mean(), "pretrained_rooms": g[:, 1].mean(),
                     "random_rooms": r[:, 1].mean(), "pretrained_all_rooms": (g[:, 1] == 4).mean(),
                     "random_all_rooms": (r[:, 1] == 4).mean(),
                     # "rooms random never reaches": episodes entering more rooms than any random one did
                     "random_max_rooms": int(r[:, 1].max()), "pretrained_beyond_random": (g[:, 1] > r[:, 1].max()).mean()})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'run':60s} cells(pre) cells(rand) ratio rooms(pre) rooms(rand) all4(pre) all4(rand) "
          "max(rand) >max(pre)")
    for row in rows:
        print(f"{row['run']:60s} {row['pretrained_cells']:10.1f} {row['random_cells']:11.1f} {row['ratio']:5.2f} "
              f"{row['pretrained_rooms']:10.2f} {row['random_rooms']:11.2f} {row['pretrained_all_rooms']:9.2f} "
              f"{row['random_all_rooms']:10.2f} {row['random_max_rooms']:9d} {row['pretrained_beyond_random']:9.2f}")
    ratios = np.array([row["ratio"] for row in rows])
    print(f"mean ratio over {len(rows)} runs: {ratios.mean():.2f} (min {ratios.min():.2f}, max {ratios.max():.2f})")


if __name__ == "__main__":
    main()
