"""agent.prev_inputs: the recurrent core also sees the previous action and reward (NGU's inputs).

Checked: the input features against hand values; the actor feeds, resets and saves them; replay
stores with every entry what its observation was fed (the entry before's action and reward, or
none at an episode's first entry); an evaluation's frozen NGU scorer moves nothing of the run's
source; a pre-training run with them evaluates and is a π_p a transfer can use (the recurrent
transfer tests check what it is fed), a transfer learner with them is fed the task's clipped
reward; pre-training with another objective refuses them in one line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from btcli.agent.networks import VectorMLP
from btcli.agent.recurrent import RecurrentActor, RecurrentQNetwork
from btcli.agent.replay import FIRST
from btcli.agent.sequence_replay import SequenceReplay
from btcli.config import ConfigError, build_config
from btcli.envs.base import Step


def prev_net(num_actions: int = 3) -> RecurrentQNetwork:
    torch.manual_seed(0)
    return RecurrentQNetwork(VectorMLP(2, hidden=8), core_size=4, num_actions=num_actions, dueling=True,
                             prev_inputs=True)


def test_prev_features_are_a_one_hot_action_and_the_reward():
    net = prev_net()
    got = net.prev_features(torch.tensor([-1, 2, 0]), torch.tensor([0.0, 1.5, -2.0]))
    want = torch.tensor([[0, 0, 0, 0.0], [0, 0, 1, 1.5], [1, 0, 0, -2.0]])
    assert torch.equal(got, want)
    assert net.core.input_size == 8 + 3 + 1


def test_the_previous_reward_changes_the_q_values_and_is_required():
    net = prev_net()
    obs, state = torch.ones(2, 2), net.initial_state(2)
    low = net.step(obs, state, net.prev_features(torch.tensor([1, 1]), torch.tensor([0.0, 0.0])))[0]
    high = net.step(obs, state, net.prev_features(torch.tensor([1, 1]), torch.tensor([5.0, 5.0])))[0]
    assert not torch.allclose(low, high)
    with pytest.raises(ValueError, match="previous action and reward"):
        net.step(obs, state)


def test_actor_feeds_resets_and_saves_the_previous_action_and_reward():
    net = prev_net()
    actor = RecurrentActor(net, num_envs=3, device="cpu")
    obs = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)
    actor(obs)
    assert actor.replay_fields()["prev_actions"].tolist() == [-1, -1, -1]  # the episodes' first observations
    actor.observe_step(np.array([2, 0, 1]), np.array([0.5, 1.0, 2.0], dtype=np.float32))
    actor.reset([1])
    actor(obs)
    fields = actor.replay_fields()
    assert fields["prev_actions"].tolist() == [2, -1, 1] and fields["prev_rewards"].tolist() == [0.5, 0.0, 2.0]
    other = RecurrentActor(net, num_envs=3, device="cpu")
    other.load_episode_state_dict(actor.episode_state_dict())
    assert other.prev_actions.tolist() == [2, -1, 1] and np.array_equal(other(obs), actor(obs))
    with pytest.raises(ValueError, match="needs the rewards it learned from"):
        actor.after_step(obs, np.zeros(3, dtype=np.int64), None)
    seen = []

    class Scorer:  # the frozen NGU source's interface: rewards and the memories of the episodes in progress
        def rewards(self, o, a, s):
            seen.append(a)
            return np.full(3, 7.0)

        def episode_state_dict(self):
            return {"calls": len(seen)}

        def load_episode_state_dict(self, state):
            seen.append(state)

    fed = RecurrentActor(net, num_envs=3, device="cpu", scorer=Scorer())
    fed(obs)
    fed.after_step(obs, np.array([1, 1, 0]), None)
    assert fed.prev_actions.tolist() == [1, 1, 0] and fed.prev_rewards.tolist() == [7.0] * 3 and len(seen) == 1
    fed.load_episode_state_dict(fed.episode_state_dict())
    assert seen[-1] == {"calls": 1}  # the scorer's memories travel with the actor's episode state


def test_replay_stores_what_each_entry_was_fed_through_episode_ends_and_wrapping():
    """A loop with the real actor: every sampled entry's previous action and reward are the stored
    action and reward of the entry before it in its stream, none (-1, 0) at an episode's first
    entry; a final-frame entry's are its episode's last."""
    num_envs, rng = 3, np.random.default_rng(1)
    net = prev_net()
    actor = RecurrentActor(net, num_envs=num_envs, device="cpu")
    replay = SequenceReplay(3 * 30, num_envs, (2,), np.float32, n_step=2, gamma=0.9, seed=0, num_actions=3,
                            state_shape=(2, 4), burn_in=2, seq_len=4, prev_inputs=True)
    obs = rng.normal(size=(num_envs, 2)).astype(np.float32)
    length = np.zeros(num_envs, dtype=int)
    for _ in range(80):  # 30 slots per stream: wrapped
        actor(obs)
        actions = rng.integers(3, size=num_envs)
        rewards = rng.normal(size=num_envs).astype(np.float32)
        length += 1
        ended = length >= np.array([5, 6, 7])
        nxt = rng.normal(size=(num_envs, 2)).astype(np.float32)
        replay.add(obs, actions, rewards, ended, np.zeros(num_envs, bool), nxt + 100, **actor.replay_fields())
        actor.observe_step(actions, rewards)
        actor.reset(np.flatnonzero(ended))
        length[ended] = 0
        obs = nxt
    batch = replay.sample(500)
    cap = replay.cap_per_env
    pos = batch.starts[:, None] + np.arange(replay.length)
    first = replay.flags[batch.streams[:, None], pos % cap] & FIRST > 0
    assert first.any() and (~first).any()
    assert (batch.prev_actions[first] == -1).all() and (batch.prev_rewards[first] == 0).all()
    before = (pos - 1) % cap
    stream = np.broadcast_to(batch.streams[:, None], pos.shape)
    inside = ~first & (pos - 1 >= replay.written[stream] - cap)  # the entry before is still held
    assert np.array_equal(batch.prev_actions[inside], replay.actions[stream[inside], before[inside]])
    assert np.array_equal(batch.prev_rewards[inside], replay.rewards[stream[inside], before[inside]])
    final = batch.obs[..., 0] > 50  # the final-frame entries (their obs were shifted by 100)
    assert (final & inside).any()


def test_an_evaluation_scorer_changes_nothing_of_the_runs_ngu_source():
    from btcli.intrinsic.objectives.ngu import NGUSource

    rng = np.random.default_rng(0)
    source = NGUSource((5,), 3, 2, device=torch.device("cpu"), lifelong=True)
    obs = rng.normal(size=(2, 5)).astype(np.float32)
    for _ in range(6):
        nxt = rng.normal(size=(2, 5)).astype(np.float32)
        source.rewards(obs, np.zeros(2, dtype=np.int64), Step(nxt, np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), nxt))
        obs = nxt
    kept = (source.reward_rms.count, source.error_rms.count, source.ring.size, source.memory.sizes.copy(),
            source.memory.d2_mean.count)
    scorer = source.scorer(4)
    same = np.repeat(rng.normal(size=(1, 5)).astype(np.float32), 4, axis=0)
    for _ in range(5):
        nxt = np.repeat(rng.normal(size=(1, 5)).astype(np.float32), 4, axis=0)
        r = scorer.rewards(same, np.zeros(4, dtype=np.int64), Step(nxt, np.zeros(4), np.zeros(4, bool), np.zeros(4, bool), nxt))
        assert r.shape == (4,) and np.allclose(r, r[0])  # four copies of one trajectory score alike
        same = nxt
    assert (source.reward_rms.count, source.error_rms.count, source.ring.size, source.memory.d2_mean.count) == \
        (kept[0], kept[1], kept[2], kept[4])
    assert np.array_equal(source.memory.sizes, kept[3]) and scorer.memory.sizes.tolist() == [6] * 4


def test_task_rewards_are_the_clipped_task_reward_a_transfer_learner_is_fed():
    from btcli.evaluation import TaskRewards

    step = Step(np.zeros((3, 1)), np.array([-2.5, 0.25, 7.0]), np.zeros(3, bool), np.zeros(3, bool), np.zeros((3, 1)))
    assert TaskRewards(1.0).rewards(None, None, step).tolist() == [-1.0, 0.25, 1.0]
    assert TaskRewards(0.0).rewards(None, None, step).tolist() == [-2.5, 0.25, 7.0]
    from btcli.evaluation import actor_for

    with pytest.raises(ValueError, match="needs the rewards it learned from"):  # never a silent guess
        actor_for(prev_net(), torch.device("cpu"), 3)
    assert actor_for(prev_net(), torch.device("cpu"), 3, reward_clip=1.0).scorer.clip == 1.0


def test_refused_without_a_core_or_outside_ngu_pretraining_in_one_line():
    with pytest.raises(ConfigError, match="agent.prev_inputs needs agent.core=lstm"):
        build_config({"env.id": "MiniGrid-Empty-6x6-v0", "command": "pretrain", "intrinsic.objective": "count",
                      "agent.core": "lstm", "agent.prev_inputs": True})
    with pytest.raises(ConfigError, match="agent.prev_inputs needs agent.core=lstm"):
        build_config({"env.id": "MiniGrid-Empty-6x6-v0", "command": "pretrain", "intrinsic.objective": "ngu",
                      "agent.prev_inputs": True})
    with pytest.raises(ConfigError, match="agent.prev_inputs needs agent.core=lstm"):
        build_config({"env.id": "MiniGrid-Empty-6x6-v0", "mode": "scratch", "agent.prev_inputs": True})
    cfg = build_config({"env.id": "MiniGrid-Empty-6x6-v0", "mode": "scratch", "agent.core": "lstm", "agent.prev_inputs": True})
    assert cfg.agent.prev_inputs  # a transfer learner is fed the task's reward


def test_cli_pretrains_evaluates_and_transfers_from_a_prev_inputs_run(btcli, tmp_path):
    run = tmp_path / "pt"
    btcli("pretrain", "--objective", "ngu", "--env", "MiniGrid-Empty-6x6-v0", "--steps", "1000", "--seed", "0",
          "--out", str(run), "--set", "agent.core=lstm", "--set", "agent.prev_inputs=true", "--set", "agent.seq_len=6",
          "--set", "agent.burn_in=2", "--set", "agent.learning_starts=400", "--set", "eval_episodes=4",
          "--set", "threads=1", "--quiet", check=True)
    before = len((run / "eval.csv").read_text().splitlines())
    assert before == 1 + 4  # the final evaluation ran with the frozen scorer feeding its rewards
    btcli("evaluate", str(run), "--episodes", "3", check=True)
    assert len((run / "eval.csv").read_text().splitlines()) == before + 3
    out = tmp_path / "bt"
    btcli("transfer", "--mode", "bt", "--pretrained", str(run), "--env", "MiniGrid-Empty-6x6-v0", "--steps", "400",
          "--out", str(out), "--set", "agent.core=lstm", "--set", "eval_episodes=2", "--set", "threads=1",
          "--quiet", check=True)
    rows = pd.read_csv(out / "eval.csv")
    assert set(rows["policy"]) == {"learner", "pretrained"}  # π_p's zero-shot reference, fed by its scorer
    ft = tmp_path / "btft"  # FT copies the previous-input weights too; the learner is fed the task's reward
    btcli("transfer", "--mode", "bt+ft", "--pretrained", str(run), "--env", "MiniGrid-Empty-6x6-v0", "--steps", "400",
          "--out", str(ft), "--set", "agent.core=lstm", "--set", "agent.prev_inputs=true", "--set", "eval_episodes=2",
          "--set", "threads=1", "--quiet", check=True)
    btcli("evaluate", str(ft), "--episodes", "2", check=True)
    assert (pd.read_csv(ft / "eval.csv")["policy"] == "learner").sum() == 2 + 2
