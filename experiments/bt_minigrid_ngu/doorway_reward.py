"""Does NGU's episodic reward pay for leaving the start room? (issue 16, MiniGrid-FourRooms-v0)

Loads a finished NGU pre-training run (its inverse-dynamics embedding and the running mean of
k-NN distances from its last checkpoint), lets its greedy policy act for ``--steps`` steps of
one episode, then walks the shortest path (turns and forward steps) into another room, and
prints NGU's raw episodic reward r_t (before the run's reward normalisation) at every step of
that walk beside the mean over the policy's last 30 steps. High rewards beyond the doorway with
a policy that never takes it mean the reward is right and the learner has not found it.

    .venv/bin/python experiments/bt_minigrid_ngu/doorway_reward.py runs/pilot16-B-s7 --steps 150 --seed 5
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np
import torch

from btcli.config import from_dict
from btcli.envs import make_vec_env
from btcli.evaluation import actor_for
from btcli.intrinsic.episodic import EpisodicMemory
from btcli.loop import Trainer
from btcli.runs import RunDir

WALL, AGENT = 2, 10  # MiniGrid object codes in channel 0; channel 1 holds the agent's direction
MOVES = [(0, 1), (1, 0), (0, -1), (-1, 0)]  # MiniGrid directions: right, down, left, up


def pose(obs: np.ndarray) -> tuple[int, int, int]:
    y, x = np.argwhere(obs[..., 0] == AGENT)[0]
    return int(y), int(x), int(obs[y, x, 1])


def shortest_actions(walls: np.ndarray, start: tuple[int, int, int], done) -> list[int]:
    """Breadth-first search over (y, x, direction) with actions 0 left, 1 right, 2 forward."""
    prev = {start: None}
    queue = collections.deque([start])
    while queue:
        state = queue.popleft()
        y, x, d = state
        if done(y, x):
            break
        dy, dx = MOVES[d]
        for action, nxt in ((0, (y, x, (d - 1) % 4)), (1, (y, x, (d + 1) % 4)), (2, (y + dy, x + dx, d))):
            if not walls[nxt[0], nxt[1]] and nxt not in prev:
                prev[nxt] = (state, action)
                queue.append(nxt)
    actions = []
    while prev[state] is not None:
        state, action = prev[state]
        actions.append(action)
    return actions[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", type=int, default=150, help="steps of the greedy policy first")
    parser.add_argument("--seed", type=int, default=5, help="the episode's layout")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = RunDir(args.run)
    cfg = from_dict(run.read_config())
    trainer = Trainer(cfg, run, progress=False)
    trainer.restore()
    ngu = trainer.intrinsic
    cfg.env.num_envs = 1
    env = make_vec_env(cfg.env, seed=args.seed)
    obs = env.reset(seed=args.seed)
    first = ngu.idm.embed(obs)
    memory = EpisodicMemory(1, first.shape[1], capacity=cfg.intrinsic.ngu.memory, k=cfg.intrinsic.ngu.k)
    memory.load_state_dict(ngu.memory.state_dict())
    memory.add(first, [0])
    act = actor_for(trainer.learner.online, torch.device("cpu"), 1, intrinsic=ngu)

    def step(action: np.ndarray) -> float:
        nonlocal obs
        before, result = obs, env.step(action)
        obs = result.obs
        if hasattr(act, "after_step"):  # a policy fed its previous action and reward (agent.prev_inputs)
            act.after_step(before, action, result)
        return float(memory.add_and_reward(ngu.idm.embed(obs))[0])

    greedy = [step(act(obs)) for _ in range(args.steps)]
    y, x, d = pose(obs[0])
    mid = obs.shape[1] // 2
    home = (y > mid, x > mid)

    def elsewhere(yy: int, xx: int) -> bool:  # three cells inside another room
        return (yy > mid, xx > mid) != home and min(abs(yy - mid), abs(xx - mid)) > 3

    walk = shortest_actions(obs[0][..., 0] == WALL, (y, x, d), elsewhere)
    print(f"greedy policy, steps 1-{args.steps}: mean r {np.mean(greedy):.3f}, last 30 {np.mean(greedy[-30:]):.3f}")
    print("walk into another room (action, cell, r):")
    for action in walk:
        r = step(np.array([action]))
        yy, xx, _ = pose(obs[0])
        where = "doorway" if mid in (yy, xx) else ("start room" if (yy > mid, xx > mid) == home else "new room")
        print(f"  {['left', 'right', 'forward'][action]:7s} ({yy:2d}, {xx:2d}) {where:10s} r {r:7.3f}")


if __name__ == "__main__":
    main()
