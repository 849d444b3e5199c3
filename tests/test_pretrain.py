"""Reward-free pre-training through the shared loop: the learner sees only intrinsic reward."""

import numpy as np
import pandas as pd
import pytest

from btcli.config import ConfigError, build_config, to_dict
from btcli.loop import Trainer
from btcli.runs import RunDir

GRID = {"command": "pretrain", "intrinsic.objective": "count", "env.id": "MiniGrid-Empty-5x5-v0",
        "steps": 1_600, "seed": 0, "eval_episodes": 4, "threads": 1, "agent.learning_starts": 400}


def make(tmp_path, name="r", **extra):
    cfg = build_config(GRID | extra)
    return Trainer(cfg, RunDir.create(tmp_path / name, to_dict(cfg), ["test"]), progress=False)


def test_learner_sees_count_bonus_not_task_reward(tmp_path):
    trainer = make(tmp_path)
    seen = []
    add = trainer.replay.add

    def spy(obs, actions, rewards, *rest):
        seen.append((np.array(rewards), trainer.env))
        return add(obs, actions, rewards, *rest)

    trainer.replay.add = spy
    summary = trainer.train()
    rewards = np.concatenate([r for r, _ in seen])
    # every stored reward is a count bonus 1/sqrt(N) for some N >= 1 (the task pays 0 on most steps)
    n = 1.0 / rewards**2
    assert np.allclose(n, np.round(n), atol=1e-3) and rewards.max() <= 1.0 and rewards.min() > 0
    metrics = pd.read_csv(trainer.run.metrics_path)
    assert (metrics["intrinsic_return"] > 0).all()
    # coverage counts distinct cells: at least 1, at most the steps taken + the start cell, and the
    # 3x3 room of Empty-5x5 has 9 cells
    assert (metrics["coverage"] >= 1).all() and (metrics["coverage"] <= metrics["length"] + 1).all()
    assert metrics["coverage"].max() <= 9
    assert summary["objective"] == "count" and 1 <= summary["coverage_total"] <= 9
    evals = pd.read_csv(trainer.run.eval_path)
    assert (evals["coverage"] >= 1).all()


def test_counts_survive_a_checkpoint(tmp_path):
    first = make(tmp_path)
    first.train()
    second = Trainer(first.cfg, first.run, progress=False)
    assert second.restore() == 1_600
    assert second.intrinsic.counts.counts == first.intrinsic.counts.counts
    assert second.visited == first.visited and len(second.visited) > 0


def test_rnd_objective_trains_its_predictor(tmp_path):
    trainer = make(tmp_path, **{"intrinsic.objective": "rnd"})
    before = [p.detach().clone() for p in trainer.intrinsic.rnd.parameters()]
    trainer.train()
    after = list(trainer.intrinsic.rnd.parameters())
    assert any(not np.allclose(a.detach().numpy(), b.numpy()) for a, b in zip(after, before))


def test_objective_must_match_command():
    with pytest.raises(ConfigError, match="pretrain needs an objective"):
        build_config({"command": "pretrain"})
    with pytest.raises(ConfigError, match="pretrain needs an objective"):
        build_config({"intrinsic.objective": "count"})
    with pytest.raises(ConfigError, match="'intrinsic.objective' is 'icm'; choose one of: none, count, rnd, ngu"):
        build_config({"command": "pretrain", "intrinsic.objective": "icm"})


def test_count_objective_on_atari_is_one_line(btcli, tmp_path):
    proc = btcli("pretrain", "--objective", "count", "--env", "ALE/Breakout-v5", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "objective 'count' needs discrete grid cells" in lines[0]
