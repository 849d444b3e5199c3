"""The recurrent learner (btcli/agent/recurrent.py, btcli/agent/sequence_replay.py).

Replay tests write frames whose value is their logical position + 1 in their stream (stream e
adds 1000 * e), and a recurrent "state" that holds the same number, so every sampled entry says
where it came from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from btcli.agent.networks import VectorMLP
from btcli.agent.recurrent import R2D2Learner, RecurrentActor, RecurrentQNetwork
from btcli.agent.replay import FIRST
from btcli.agent.sequence_replay import SequenceReplay
from btcli.config import ConfigError, build_config

STREAM = 1000


def filled_replay(steps: int, *, capacity=4 * 40, num_envs=4, burn_in=2, seq_len=5, n_step=2, episode=7,
                  gamma=0.9, terminate=True, demos=False) -> SequenceReplay:
    """Streams whose episodes last ``episode`` steps (copy e's first one ``episode - e``), ending
    terminated (or truncated). Entry ids: position + 1 + STREAM * e, in obs, reward and state;
    with ``demos``, π_p's recorded action is id % 4."""
    r = SequenceReplay(capacity, num_envs, (1,), np.float32, n_step=n_step, gamma=gamma, seed=1,
                       num_actions=4, state_shape=(2, 1), burn_in=burn_in, seq_len=seq_len, demos=demos)
    length = np.array([e for e in range(num_envs)])  # steps into the episode
    for _ in range(steps):
        ids = (r.written + 1 + STREAM * np.arange(num_envs)).astype(np.float32)
        ended = length + 1 >= episode
        final = (ids + 1)[:, None]  # the final-frame entry's id is the next position's
        r.add(ids[:, None], np.arange(num_envs) % 4, ids, ended & terminate, ended & ~terminate, final,
              states=np.repeat(ids[:, None, None], 2, axis=1),
              final_states=np.repeat(final[:, None], 2, axis=1), **({"demo_actions": ids.astype(np.int64) % 4}
                                                                       if demos else {}))
        length = np.where(ended, 0, length + 1)
    return r


def test_sequences_are_whole_windows_that_never_cross_the_write_boundary():
    r = filled_replay(100)  # 40 slots per stream, written ~114 entries each: wrapped
    batch = r.sample(4000)
    ids = batch.obs[..., 0]  # [B, T]
    stream = (ids[:, 0] // STREAM).astype(int)
    pos = (ids - 1 - STREAM * stream[:, None]).astype(np.int64)
    assert (np.diff(pos, axis=1) == 1).all()  # consecutive entries of one stream
    assert (pos[:, 0] == batch.starts).all() and (stream == batch.streams).all()
    oldest = r.written[stream] - r.cap_per_env
    assert (pos[:, 0] >= oldest).all() and (pos[:, -1] < r.written[stream]).all()
    # both ends are reached: the oldest held start and the newest whole window
    for e in range(4):
        mine = batch.starts[batch.streams == e]
        assert mine.min() == r.written[e] - r.cap_per_env and mine.max() == r.written[e] - r.length


def test_stored_states_line_up_with_their_sequences():
    r = filled_replay(60)
    batch = r.sample(500)
    assert np.array_equal(batch.state0[:, 0, 0], batch.obs[:, 0, 0])  # the state stored with entry 0
    assert np.array_equal(batch.state0[:, 1, 0], batch.obs[:, 0, 0])


def test_burn_in_entries_carry_no_loss_and_targets_are_n_step_returns_inside_the_sequence():
    gamma, n = 0.9, 2
    r = filled_replay(60, gamma=gamma, n_step=n)
    batch = r.sample(500)
    b, length = batch.actions.shape
    for i in range(b):
        ids = batch.obs[i, :, 0]
        flags = r.flags[batch.streams[i], (batch.starts[i] + np.arange(r.length)) % r.cap_per_env]
        for j in range(length):
            t = r.burn_in + j  # learned entries start after the burn-in
            is_transition = ids[t] != 0 and flags[t] & 8
            assert batch.mask[i, j] == float(bool(is_transition))
            if not is_transition:
                assert batch.returns[i, j] == 0.0
                continue
            # hand-computed: rewards are the entry ids; stop after an entry that ended its episode
            expected, m = 0.0, 0
            while m < n:
                expected += gamma ** m * ids[t + m]
                m += 1
                if flags[t + m - 1] & 4:  # ENDED
                    break
            ended = bool(flags[t + m - 1] & 4)
            assert batch.returns[i, j] == pytest.approx(expected, rel=1e-6)
            assert batch.boot[i, j] == t + m
            assert batch.discounts[i, j] == pytest.approx(0.0 if ended else gamma ** m)
    assert (batch.first == ((r.flags[batch.streams[:, None], (batch.starts[:, None] + np.arange(r.length))
                                     % r.cap_per_env] & FIRST) > 0)).all()


def tiny_net(seed=0, actions=3) -> RecurrentQNetwork:
    torch.manual_seed(seed)
    return RecurrentQNetwork(VectorMLP(2, hidden=8), core_size=4, num_actions=actions, dueling=True)


def test_unroll_zeroes_the_state_at_episode_starts():
    net = tiny_net()
    x = torch.randn(3, 6, 2)
    first = torch.zeros(3, 6, dtype=torch.bool)
    first[1, 3] = True
    state = torch.randn(3, 2, 4)
    q, _ = net.unroll(x, first, state)
    fresh, _ = net.unroll(x[1:2, 3:], torch.zeros(1, 3, dtype=torch.bool), net.initial_state(1))
    assert torch.allclose(q[1, 3:], fresh[0], atol=1e-6)
    carried, _ = net.unroll(x[1:2, 3:], torch.zeros(1, 3, dtype=torch.bool), net.unroll(x[1:2, :3], first[1:2, :3],
                                                                                          state[1:2])[1])
    assert not torch.allclose(q[1, 3:], carried[0], atol=1e-4)  # the reset mattered


def test_actor_carries_each_copys_state_and_resets_the_ended_ones():
    net = tiny_net()
    actor = RecurrentActor(net, num_envs=3, device="cpu")
    obs = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)
    actor(obs)
    after_one = actor.state.clone()
    assert torch.equal(actor.before, torch.zeros(3, 2, 4))
    actor(obs)
    assert torch.equal(actor.before, after_one) and not torch.equal(actor.state, after_one)
    kept = actor.state.clone()
    actor.reset([1])
    assert torch.equal(actor.state[1], torch.zeros(2, 4))
    assert torch.equal(actor.state[[0, 2]], kept[[0, 2]])
    saved = actor.episode_state_dict()
    other = RecurrentActor(net, num_envs=3, device="cpu")
    other.load_episode_state_dict(saved)
    assert np.array_equal(other(obs), actor(obs)) and torch.equal(other.state, actor.state)


def test_recorded_demos_line_up_with_the_learned_entries_and_survive_a_save():
    r = filled_replay(100, demos=True)  # wrapped streams, episodes ending inside sequences
    batch = r.sample(2000)
    ids = batch.obs[:, r.burn_in:r.burn_in + r.seq_len, 0].astype(np.int64)  # [B, L]
    learned = batch.mask > 0
    assert learned.sum() > 5000 and (~learned).sum() > 500  # final frames among the learned entries
    assert np.array_equal(batch.demo_actions[learned], ids[learned] % 4)  # each entry's own demo
    other = filled_replay(0, demos=True)
    other.load_state_dict(r.state_dict())
    again = other.sequences(batch.streams, batch.starts)
    assert np.array_equal(again.demo_actions[learned], batch.demo_actions[learned])
    assert filled_replay(20).sample(8).demo_actions is None  # kept only when asked for
    with pytest.raises(ValueError, match="keeps π_p's action for each entry"):
        r.add(np.zeros((4, 1), np.float32), np.zeros(4, np.int64), np.zeros(4), np.zeros(4, bool), np.zeros(4, bool),
              np.zeros((4, 1), np.float32), states=np.zeros((4, 2, 1)), final_states=np.zeros((4, 2, 1)))


def test_kickstart_loss_of_the_recurrent_learner_by_hand():
    from btcli.agent.dqn import large_margin_loss

    r = filled_replay(60, burn_in=2, seq_len=5, demos=True)
    tensors = r.sample(16).to(torch.from_numpy)
    torch.manual_seed(0)
    net = RecurrentQNetwork(VectorMLP(1, hidden=8), core_size=1, num_actions=4, dueling=True)
    learner = R2D2Learner(net, burn_in=2, lr=1e-3, adam_eps=1e-8, demo_margin=0.3)
    weight = torch.tensor(0.5)
    loss, td, _ = learner.sequence_loss(tensors, tensors.demo_actions, weight)
    assert torch.equal(td, learner.sequence_loss(tensors)[1])  # the TD part is unchanged
    # by hand: the online net unrolled over burn-in then the learned steps, margin loss per learned entry
    x = net.encode(tensors.obs.flatten(0, 1)).unflatten(0, tensors.first.shape)
    with torch.no_grad():
        state = net.unroll(x[:, :2], tensors.first[:, :2], tensors.state0)[1]
        q = net.unroll(x[:, 2:], tensors.first[:, 2:], state)[0][:, :5]  # [B, L, A]
    rows = []
    for b in range(q.shape[0]):
        for t in range(q.shape[1]):
            if tensors.mask[b, t] > 0:
                qa, demo = q[b, t], int(tensors.demo_actions[b, t])
                rows.append(max(float(qa[a]) + (0.0 if a == demo else 0.3) for a in range(4)) - float(qa[demo]))
    assert loss.item() - td.item() == pytest.approx(0.5 * sum(rows) / len(rows), rel=2e-4)  # float32 of a large TD loss
    assert float(large_margin_loss(q[0], tensors.demo_actions[0], 0.3).min()) >= 0.0
    with pytest.raises(ValueError, match="every update needs demo and demo_weight"):
        learner.update(tensors)


def test_burn_in_gives_no_gradient_and_its_rewards_do_not_reach_the_loss():
    r = filled_replay(60, burn_in=3, seq_len=4)
    batch = r.sample(64)
    net = RecurrentQNetwork(VectorMLP(1, hidden=8), core_size=1, num_actions=4, dueling=True)
    learner = R2D2Learner(net, burn_in=3, lr=1e-3, adam_eps=1e-8)
    tensors = batch.to(torch.from_numpy)
    loss = learner.sequence_loss(tensors)[0]
    # the loss is a function of the learned entries only: other actions at burn-in entries change nothing
    r.actions[...] = (r.actions + 1) % 4
    again = r.sequences(batch.streams, batch.starts)
    again.actions[...] = batch.actions  # learned actions unchanged
    assert torch.equal(learner.sequence_loss(again.to(torch.from_numpy))[0], loss)
    # the burn-in only rebuilds the state: the online net's gradient does not flow through it
    seen = []
    handle = net.core.register_forward_hook(lambda m, i, o: seen.append(torch.is_grad_enabled()))
    learner.sequence_loss(tensors)
    handle.remove()
    # the online core (the target is its copy, without the hook): 3 burn-in steps without grad, then
    # the 4 learned steps and the 2 they bootstrap from, with grad
    assert seen == [False] * 3 + [True] * 6


def test_recurrent_config_refusals():
    kick = build_config({"env.id": "MiniGrid-Empty-6x6-v0", "mode": "bt", "transfer.pretrained": "runs/x",
                         "agent.core": "lstm", "transfer.kickstart": 0.1})  # its replay records π_p's actions
    assert kick.transfer.kickstart == 0.1
    with pytest.raises(ConfigError, match="agent.core' is 'gru'"):
        build_config({"env.id": "MiniGrid-Empty-6x6-v0", "agent.core": "gru"})
    with pytest.raises(ConfigError, match="and their sequences need"):
        build_config({"env.id": "MiniGrid-Empty-6x6-v0", "agent.core": "lstm", "agent.buffer_size": 60})


def test_cli_trains_evaluates_and_transfers_from_a_recurrent_run(btcli, tmp_path):
    """pretrain with agent.core=lstm, then: evaluate acts through a recurrent actor (a plain
    forward would raise) and logs its episodes; bt+ft from it copies its weights and evaluates the
    recurrent π_p beside the learner; FT into a feed-forward learner is refused in one line unless
    only the torso is copied; export is refused in one line."""
    run = tmp_path / "pt"
    lstm = ["--set", "agent.core=lstm", "--set", "agent.seq_len=6", "--set", "agent.burn_in=2"]
    small = ["--set", "agent.learning_starts=400", "--set", "eval_episodes=4", "--set", "threads=1", "--quiet"]
    btcli("pretrain", "--objective", "count", "--env", "MiniGrid-Empty-6x6-v0", "--steps", "1200", "--seed", "0",
          "--out", str(run), *lstm, *small, check=True)
    before = len((run / "eval.csv").read_text().splitlines())
    btcli("evaluate", str(run), "--episodes", "4", check=True)
    assert len((run / "eval.csv").read_text().splitlines()) == before + 4
    export = btcli("export", str(run), "--out", str(tmp_path / "exp"))
    assert export.returncode != 0 and "recurrent learner" in export.stderr and len(export.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "exp").exists()
    transfer = ("transfer", "--pretrained", str(run), "--env", "MiniGrid-Empty-6x6-v0", "--steps", "800")
    btcli(*transfer, "--mode", "bt+ft", "--out", str(tmp_path / "btft"), *lstm, *small, check=True)
    import pandas as pd

    evals = pd.read_csv(tmp_path / "btft" / "eval.csv")
    assert set(evals["policy"]) == {"learner", "pretrained"}
    refused = btcli(*transfer, "--mode", "ft", "--out", str(tmp_path / "ft-ff"), *small)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "agent.core is 'none' here but 'lstm'" in refused.stderr and "transfer.ft_layers=torso" in refused.stderr
    assert not (tmp_path / "ft-ff").exists()
    btcli(*transfer, "--mode", "ft", "--out", str(tmp_path / "ft-torso"), "--set", "transfer.ft_layers=torso",
          *small, check=True)
    teacher = btcli(*transfer, "--mode", "bt+ft", "--out", str(tmp_path / "ks"), "--set", "transfer.ft_layers=torso",
                    "--set", "transfer.kickstart=0.1", *small)
    assert teacher.returncode != 0 and len(teacher.stderr.strip().splitlines()) == 1
    assert "is recurrent: a feed-forward learner's kickstart" in teacher.stderr and not (tmp_path / "ks").exists()


MEMORY = {"env.id": "MiniGrid-CueCorridor-v0", "env.actions": "navigation", "steps": 36_000, "seed": 0, "threads": 1,
          "explore.eps_decay_steps": 8_000, "eval_every": 3_000, "eval_episodes": 100, "agent.buffer_size": 20_000,
          "agent.target_update": 500, "agent.batch_size": 16, "agent.hidden": 128}


LSTM = {"agent.core": "lstm", "agent.core_size": 64, "agent.seq_len": 10, "agent.burn_in": 3}


@pytest.mark.slow
def test_recurrent_learner_solves_the_memory_task_the_feed_forward_one_cannot(tmp_path):
    """MiniGrid-CueCorridor-v0 (btcli/envs/tasks.py): the cue is shown at the start only. Without
    memory at most half the episodes reach the right goal (return <= 0.3875 in expectation); the
    LSTM learner, same budget, ends well above that on seed 0, or else on seed 1.

    Seed 0 alone is not enough across CPUs: float rounding differs between AVX2 and AVX-512 and
    the runs diverge. With burn-in 3 (which rebuilds the stale stored states before the loss),
    seeds 0-3 on an AVX2 CPU reached 0.73 / 0.77 / 0.77 / 0.35 at 36k; without burn-in seeds 0 and
    2 stayed at the memoryless level. The feed-forward learner cannot pass on any seed."""
    import pandas as pd

    from btcli.config import to_dict
    from btcli.loop import Trainer
    from btcli.runs import RunDir

    def score(name: str, extra: dict) -> float:
        cfg = build_config(MEMORY | extra)
        run = RunDir.create(tmp_path / name, to_dict(cfg), ["test"])
        Trainer(cfg, run, progress=False).train()
        evals = pd.read_csv(run.eval_path).groupby("step")["return"].mean()
        return float(evals.iloc[-2:].mean())  # the last two evaluations, 100 episodes each

    scores = {"ff": score("ff", {}), "lstm": score("lstm", LSTM)}
    if scores["lstm"] <= 0.55:
        scores["lstm-seed1"] = score("lstm-seed1", LSTM | {"seed": 1})
    print(f"CueCorridor, eval return at 33k-36k steps: {scores}")  # shown with pytest -s
    assert scores["ff"] < 0.45, scores  # half the episodes at 0.775 at best
    assert max(scores["lstm"], scores.get("lstm-seed1", 0.0)) > 0.55, scores  # more than 70% right
