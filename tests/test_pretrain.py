"""Reward-free pre-training through the shared loop: the learner sees only intrinsic reward."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

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


@pytest.mark.parametrize("bootstrap", [False, True])
def test_bootstrap_terminal_stores_goal_steps_as_time_limits(tmp_path, bootstrap):
    trainer = make(tmp_path, **{"intrinsic.bootstrap_terminal": bootstrap, "steps": 600})
    ends, stored = [], []
    step, add = trainer.env.step, trainer.replay.add
    trainer.env.step = lambda a: (lambda s: (ends.append((s.terminated.copy(), s.truncated.copy())), s)[1])(step(a))
    trainer.replay.add = lambda obs, a, r, term, trunc, final: (stored.append((term.copy(), trunc.copy())),
                                                                 add(obs, a, r, term, trunc, final))[1]
    trainer.train()
    env_term = np.concatenate([t for t, _ in ends])
    env_trunc = np.concatenate([t for _, t in ends])
    term = np.concatenate([t for t, _ in stored])
    trunc = np.concatenate([t for _, t in stored])
    assert env_term.any()  # random steps reach the goal of the 3x3 room
    if bootstrap:  # the goal ends the episode but is learned through like a time limit
        assert not term.any() and np.array_equal(trunc, env_term | env_trunc)
    else:
        assert np.array_equal(term, env_term) and np.array_equal(trunc, env_trunc)
    assert len(pd.read_csv(trainer.run.metrics_path)) == int((env_term | env_trunc).sum())


def test_bootstrap_terminal_is_for_pretraining_only():
    with pytest.raises(ConfigError, match="bootstrap_terminal' applies to pretrain runs only"):
        build_config({"env.id": "MiniGrid-Empty-5x5-v0", "intrinsic.bootstrap_terminal": True})


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


def test_ngu_never_scores_against_an_empty_memory(tmp_path):
    trainer = make(tmp_path, **{"intrinsic.objective": "ngu"})
    memory = trainer.intrinsic.memory
    smallest_memory, stored = [], []
    score, add = memory.add_and_reward, trainer.replay.add

    def spy_score(embeddings):
        smallest_memory.append(int(memory.sizes.min()))
        return score(embeddings)

    def spy_add(obs, actions, rewards, *rest):
        stored.append(np.array(rewards))
        return add(obs, actions, rewards, *rest)

    memory.add_and_reward, trainer.replay.add = spy_score, spy_add
    trainer.train()
    rewards = np.concatenate(stored)
    metrics = pd.read_csv(trainer.run.metrics_path)
    assert len(metrics) >= 8  # many episode starts (Empty-5x5 ends within 100 steps)
    # every transition was scored against at least the episode's first observation, so the
    # empty-memory score 1/c = 1000 never reached the learner
    assert min(smallest_memory) >= 1 and len(smallest_memory) == 1_600 // 4
    assert rewards.dtype == np.float32 and rewards.min() > 0 and rewards.max() < 1000.0
    assert (metrics["intrinsic_return"] > 0).all()


def test_ngu_rnd_state_survives_a_checkpoint(tmp_path):
    first = make(tmp_path, **{"intrinsic.objective": "ngu+rnd"})
    first.train()
    src = first.intrinsic
    assert src.learn_calls == first.learner.updates > 0 and src.memory.d2_mean.count > 0
    second = Trainer(first.cfg, first.run, progress=False)
    fresh = {k: v.clone() for k, v in second.intrinsic.idm.state_dict().items()}  # before restore
    assert second.restore() == 1_600
    got = second.intrinsic
    for a, b, c in zip(got.idm.parameters(), src.idm.parameters(), fresh.values()):
        assert torch.equal(a, b) and not torch.equal(b, c)  # trained, and restored
    for a, b in zip(got.rnd.predictor.parameters(), src.rnd.predictor.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(got.rnd.target.parameters(), src.rnd.target.parameters()):
        assert torch.equal(a, b)
    opt_got, opt_src = got.optimizer.state_dict()["state"], src.optimizer.state_dict()["state"]
    assert opt_got.keys() == opt_src.keys() and len(opt_src) > 0
    for key in opt_src:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_got[key][name], opt_src[key][name])
    assert got.memory.d2_mean.mean == src.memory.d2_mean.mean and got.memory.d2_mean.count == src.memory.d2_mean.count
    assert got.error_rms.count == src.error_rms.count > 0 and got.error_rms.var == src.error_rms.var
    np.testing.assert_array_equal(got.rnd.obs_rms.mean, src.rnd.obs_rms.mean)
    assert got.rnd.reward_rms.count == src.rnd.reward_rms.count
    assert got.learn_calls == src.learn_calls
    assert got.reward_rms.count == src.reward_rms.count > 0 and got.reward_rms.var == src.reward_rms.var
    # MiniGrid episodes continue at a resume, and with them the episodic memories
    assert got.memory.sizes.tolist() == src.memory.sizes.tolist() and src.memory.sizes.min() > 0
    for i, held in enumerate(src.memory.sizes):  # slots past a copy's size are stale and never read
        np.testing.assert_array_equal(got.memory.memory[i, :held], src.memory.memory[i, :held])


def test_pretrain_ngu_through_the_cli(btcli, tmp_path):
    out = tmp_path / "ngu"
    btcli("pretrain", "--objective", "ngu", "--env", "MiniGrid-Empty-5x5-v0", "--steps", "1600", "--seed", "0",
          "--out", str(out), "--set", "threads=1", "--set", "eval_episodes=2", "--set", "agent.learning_starts=400",
          "--quiet", check=True)
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) >= 8 and (metrics["intrinsic_return"] > 0).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"] == "ngu" and summary["steps"] == 1_600


@pytest.mark.slow
def test_episodic_coverage_pretraining_learns_to_cover(tmp_path):
    """Learning, not running: 20k steps of episodic-coverage pre-training with the egocentric
    torso give a greedy policy that covers well over twice the cells of a uniform-random one."""
    from btcli.envs import make_vec_env
    from btcli.evaluation import evaluate

    cfg = build_config({"command": "pretrain", "intrinsic.objective": "count", "intrinsic.count_scope": "episode",
                        "env.id": "MiniGrid-SmallFourRooms-v0", "env.visited": True, "agent.torso": "gridego",
                        "agent.gamma": 0.95, "explore.eps_decay_steps": 10_000, "steps": 20_000, "seed": 0, "threads": 1, "eval_episodes": 20})
    summary = Trainer(cfg, RunDir.create(tmp_path / "r", to_dict(cfg), ["test"]), progress=False).train()
    env = make_vec_env(cfg.env, seed=123)
    rand = evaluate(lambda obs: np.zeros(len(obs), dtype=np.int64), env, 20, 1.0, seed=123)
    random_cells = float(np.mean([r.coverage for r in rand]))
    evals = pd.read_csv(tmp_path / "r" / "eval.csv")
    assert summary["status"] == "complete" and len(evals) == 20
    assert evals["coverage"].mean() > 2 * random_cells, (evals["coverage"].mean(), random_cells)
