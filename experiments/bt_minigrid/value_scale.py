"""What fine-tuning starts from: the scale of a pre-trained run's values and features.

For each pre-training run given, plays ``--steps`` uniformly random steps on ``--env`` (the
run's own task by default) and reports, over the observations seen:
- the pre-trained Q-values (mean, and spread between actions), which FT with
  ``transfer.ft_zero_values=false`` starts from;
- the torso's features (L2 norm per observation, units never active) against a freshly
  initialised torso of the same architecture;
- the Q-values a fresh head gives on the copied torso (``ft_layers=torso``, values not zeroed).

    .venv/bin/python experiments/bt_minigrid/value_scale.py runs/bt_minigrid/pretrain-* \\
        --env MiniGrid-SmallFourRoomsNear-v0
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from btcli.agent.networks import build_q_network
from btcli.config import from_dict
from btcli.envs import make_vec_env
from btcli.pretrained import load_pretrained
from btcli.runs import RunDir


def random_observations(cfg, steps: int, seed: int) -> torch.Tensor:
    """Observations of ``steps`` uniformly random steps over the run's env copies."""
    env = make_vec_env(cfg.env, seed=seed)
    rng = np.random.default_rng(seed)
    seen = [env.reset(seed=seed)]
    for _ in range(steps // cfg.env.num_envs):
        seen.append(env.step(rng.integers(0, env.num_actions, cfg.env.num_envs)).obs)
    env.close()
    return torch.from_numpy(np.concatenate(seen))


@torch.no_grad()
def value_scale(run: str, env_id: str | None, steps: int, seed: int) -> dict:
    """The figures of the module docstring for one pre-training run."""
    cfg = from_dict(RunDir(run).read_config())
    if env_id:
        cfg.env.id = env_id
    pretrained = load_pretrained(run)
    obs = random_observations(cfg, steps, seed)
    net = pretrained.network(tuple(obs.shape[1:]), pretrained.state["num_actions"], torch.device("cpu"))
    torch.manual_seed(seed)
    fresh = build_q_network(tuple(obs.shape[1:]), pretrained.state["num_actions"], torso=cfg.agent.torso,
                            hidden=cfg.agent.hidden, dueling=cfg.agent.dueling)
    features, fresh_features = net.torso(obs), fresh.torso(obs)
    q = net(obs)
    fresh.torso.load_state_dict(net.torso.state_dict())
    q_fresh_head = fresh(obs)
    return {
        "run": run, "env": cfg.env.id, "observations": len(obs),
        "q_mean": round(q.mean().item(), 3), "q_spread_between_actions": round(q.std(dim=1).mean().item(), 3),
        "feature_l2": round(features.norm(dim=1).mean().item(), 2),
        "fresh_feature_l2": round(fresh_features.norm(dim=1).mean().item(), 2),
        "dead_units": f"{int((features.max(dim=0).values == 0).sum())}/{features.shape[1]}",
        "fresh_dead_units": f"{int((fresh_features.max(dim=0).values == 0).sum())}/{features.shape[1]}",
        "fresh_head_q_mean": round(q_fresh_head.mean().item(), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="pre-training run directories")
    p.add_argument("--env", default=None, help="task to draw observations from (default: each run's own)")
    p.add_argument("--steps", type=int, default=400, help="random steps (default 400)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for run in args.runs:
        print(json.dumps(value_scale(run, args.env, args.steps, args.seed)))


if __name__ == "__main__":
    main()
