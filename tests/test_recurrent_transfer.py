"""Transfer from a recurrent pre-trained run: a recurrent π_p flies BT's flights with its state
following the whole episode (and, pre-trained with agent.prev_inputs, fed the executed actions
and its own NGU rewards), FT copies the recurrent weights, and exact resume keeps both states."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from btcli.behaviour import PRETRAINED
from btcli.config import build_config, to_dict
from btcli.loop import Trainer
from btcli.pretrained import PretrainedError
from btcli.runs import RunDir
from tests.test_training import EXACT, assert_resume_is_exact

LSTM = {"agent.core": "lstm", "agent.core_size": 16, "agent.hidden": 32, "agent.seq_len": 6, "agent.burn_in": 2}
SMALL = {"env.id": "MiniGrid-Empty-6x6-v0", "env.max_episode_steps": 40, "seed": 0, "threads": 1,
         "eval_episodes": 2, "agent.learning_starts": 400, "checkpoint_every": 1_000, "train_log_every": 400}


@pytest.fixture(scope="module")
def recurrent_run(tmp_path_factory):
    """A short reward-free pre-training run of a recurrent learner (its policy moves: count reward)."""
    root = tmp_path_factory.mktemp("pre-lstm")
    cfg = build_config(SMALL | LSTM | {"command": "pretrain", "intrinsic.objective": "count", "steps": 1_600})
    run = RunDir.create(root / "pt", to_dict(cfg), ["test"])
    Trainer(cfg, run, progress=False).train()
    return run.path


@pytest.fixture(scope="module")
def prev_run(tmp_path_factory):
    """The same with NGU and agent.prev_inputs: π_p needs its previous action and NGU reward."""
    root = tmp_path_factory.mktemp("pre-prev")
    cfg = build_config(SMALL | LSTM | {"command": "pretrain", "intrinsic.objective": "ngu", "steps": 1_600,
                                       "agent.prev_inputs": True})
    run = RunDir.create(root / "pt", to_dict(cfg), ["test"])
    Trainer(cfg, run, progress=False).train()
    return run.path


@pytest.fixture
def decisive_prev(monkeypatch):
    """So short a pre-training barely weighs the previous action and reward: scale their input
    weights in every π_p a transfer loads, so that they decide many of its actions."""
    from btcli.pretrained import Pretrained

    network = Pretrained.network

    def scaled(self, *args, **kwargs):
        net = network(self, *args, **kwargs)
        with torch.no_grad():
            net.core.weight_ih[:, -(net.num_actions + 1):] *= 200.0
        return net

    monkeypatch.setattr(Pretrained, "network", scaled)


def transfer(tmp_path, mode, pretrained, name=None, **extra) -> Trainer:
    cfg = build_config(SMALL | {"mode": mode, "transfer.pretrained": str(pretrained), "steps": 1_200} | extra)
    run = RunDir.create(tmp_path / (name or mode.replace("+", "_")), to_dict(cfg), ["test"])
    return Trainer(cfg, run, progress=False)


def test_recurrent_pi_flies_with_a_state_that_saw_the_whole_episode(tmp_path, recurrent_run):
    """Every action π_p takes in a flight is the argmax of π_p unrolled from a zero state over
    every observation of its copy's episode so far, whoever acted on them."""
    trainer = transfer(tmp_path, "bt", recurrent_run, **{"transfer.flight_start": "fixed", "transfer.flight_prob": 0.2})
    steps, ends = [], []
    act, env_step = trainer.behaviour.act, trainer.env.step

    def recording_act(obs, eps, learner, pretrained=None):
        actions, who = act(obs, eps, learner, pretrained)
        steps.append((obs.copy(), actions.copy(), who.copy()))
        return actions, who

    def recording_step(actions):
        step = env_step(actions)
        ends.append(step.terminated | step.truncated)
        return step

    trainer.behaviour.act, trainer.env.step = recording_act, recording_step
    trainer.train()
    net = trainer.pretrained_net
    state = net.initial_state(trainer.cfg.env.num_envs)
    checked = 0
    for (obs, actions, who), ended in zip(steps, ends):
        with torch.no_grad():
            q, state = net.step(torch.from_numpy(obs), state)
        by_pi = who == PRETRAINED
        assert (actions[by_pi] == q.argmax(1).numpy()[by_pi]).all()
        checked += int(by_pi.sum())
        state[torch.from_numpy(ended)] = 0.0
    assert checked > 100 and sum(e.sum() for e in ends) >= 4  # many π_p steps, across several episodes


def test_prev_inputs_pi_is_fed_the_executed_actions_and_its_own_ngu_rewards(tmp_path, prev_run, decisive_prev):
    """π_p's flight actions are those of its network unrolled with, at every step, the previous
    executed action and the reward a fresh frozen copy of its run's NGU source gives that step."""
    from btcli.pretrained import load_pretrained

    trainer = transfer(tmp_path, "bt", prev_run, **{"transfer.flight_start": "fixed", "transfer.flight_prob": 0.2})
    net, n = trainer.pretrained_net, trainer.cfg.env.num_envs
    steps = []
    act, env_step = trainer.behaviour.act, trainer.env.step

    def recording_act(obs, eps, learner, pretrained=None):
        actions, who = act(obs, eps, learner, pretrained)
        steps.append([obs.copy(), who.copy(), actions.copy()])
        return actions, who

    def recording_step(actions):
        step = env_step(actions)
        steps[-1].append(step)
        return step

    trainer.behaviour.act, trainer.env.step = recording_act, recording_step
    trainer.train()
    scorer = load_pretrained(prev_run).reward_source(net, torch.device("cpu")).scorer(n)
    state, unfed = net.initial_state(n), net.initial_state(n)
    prev_a, prev_r = np.full(n, -1), np.zeros(n, dtype=np.float32)
    checked = decided = 0
    for obs, who, actions, step in steps:
        with torch.no_grad():
            x = torch.from_numpy(obs)
            q, state = net.step(x, state, net.prev_features(torch.from_numpy(prev_a), torch.from_numpy(prev_r)))
            q_unfed, unfed = net.step(x, unfed, net.prev_features(torch.full((n,), -1), torch.zeros(n)))
        by_pi = who == PRETRAINED
        assert (actions[by_pi] == q.argmax(1).numpy()[by_pi]).all()
        checked += int(by_pi.sum())
        decided += int((q.argmax(1) != q_unfed.argmax(1)).numpy()[by_pi].sum())
        prev_a, prev_r = actions.copy(), scorer.rewards(obs, actions, step)
        ended = step.terminated | step.truncated
        for s in (state, unfed):
            s[torch.from_numpy(ended)] = 0.0
        prev_a[ended], prev_r[ended] = -1, 0.0
    assert checked > 100 and decided > 20  # many π_p steps, many of them decided by what it was fed


def test_ft_copies_the_recurrent_weights_and_zeroes_the_values(tmp_path, recurrent_run):
    trainer = transfer(tmp_path, "ft", recurrent_run, **LSTM)
    source = torch.load(RunDir(recurrent_run).latest_checkpoint() / "state.pt", weights_only=False)["learner"]["online"]
    own = trainer.learner.online.state_dict()
    assert {k for k in own if k.startswith("core.")} == {"core.weight_ih", "core.weight_hh", "core.bias_ih", "core.bias_hh"}
    changed = {k for k, v in own.items() if not torch.equal(v, source[k])}
    assert changed == {"head.value.weight", "head.value.bias"}  # zeroed state values, all else copied
    torso = transfer(tmp_path, "ft", recurrent_run, name="torso", **{"transfer.ft_layers": "torso", "agent.hidden": 32})
    ff = torso.learner.online.state_dict()
    assert not any(k.startswith("core.") for k in ff)
    assert all(torch.equal(ff[k], source[k]) for k in ff if k.startswith("torso."))


def test_ft_from_a_prev_inputs_pi_copies_their_weights_or_names_the_key(tmp_path, prev_run):
    trainer = transfer(tmp_path, "ft", prev_run, **LSTM, **{"agent.prev_inputs": True})
    source = torch.load(RunDir(prev_run).latest_checkpoint() / "state.pt", weights_only=False)["learner"]["online"]
    assert torch.equal(trainer.learner.online.core.weight_ih, source["core.weight_ih"])  # the prev-input columns too
    with pytest.raises(PretrainedError, match="agent.prev_inputs is False here but True"):
        transfer(tmp_path, "ft", prev_run, name="plain", **LSTM)


def test_recurrent_pi_teaches_a_recurrent_learner_only(tmp_path, recurrent_run):
    with pytest.raises(PretrainedError, match="a feed-forward learner's kickstart asks π_p about replayed single"):
        transfer(tmp_path, "bt+ft", recurrent_run, **{"transfer.ft_layers": "torso", "agent.hidden": 32, "transfer.kickstart": 0.1})


def agreement_with_pi(net, replay) -> float:
    """Share of replayed learned steps where ``net``'s greedy action is the one π_p chose there."""
    batch = replay.sample(256)
    tensors = batch.to(torch.from_numpy)
    burn = batch.burn_in
    with torch.no_grad():
        x = net.encode(tensors.obs.flatten(0, 1)).unflatten(0, tensors.first.shape)
        state = net.unroll(x[:, :burn], tensors.first[:, :burn], tensors.state0)[1]
        q = net.unroll(x[:, burn:], tensors.first[:, burn:], state)[0][:, :batch.demo_actions.shape[1]]
    same = (q.argmax(2).numpy() == batch.demo_actions)[batch.mask > 0]
    return float(same.mean())


def test_kickstart_teaches_a_recurrent_learner_the_actions_pi_took(tmp_path, recurrent_run):
    """bt from a recurrent π_p, a fresh recurrent learner: with a strong constant kickstart its greedy
    actions on replayed steps become π_p's recorded ones; without it they stay near chance."""
    runs = {}
    for weight in (0.0, 2.0):
        trainer = transfer(tmp_path, "bt", recurrent_run, name=f"ks{weight}", **LSTM,
                           **{"transfer.kickstart": weight, "transfer.kickstart_steps": 0, "steps": 2_000})
        trainer.train()
        runs[weight] = trainer
    assert runs[0.0].replay.demos is False and runs[2.0].replay.demos is True
    taught = agreement_with_pi(runs[2.0].learner.online, runs[2.0].replay)
    untaught = agreement_with_pi(runs[0.0].learner.online, runs[2.0].replay)  # on the same replayed steps
    assert taught > 0.8 and taught > untaught + 0.3, (taught, untaught)


@pytest.mark.parametrize("pi, extra", [
    ("recurrent_run", {"mode": "bt+ft", **LSTM, "transfer.flight_cap": 30}),  # flights of a recurrent π_p in progress
    ("recurrent_run", {"mode": "bt", "transfer.pretrained_action": True, "agent.hidden": 32}),  # a feed-forward learner handing steps to it
    ("prev_run", {"mode": "bt", "transfer.flight_cap": 30, "agent.hidden": 32}),  # π_p's inputs and NGU memories mid-episode
    ("prev_run", {"mode": "bt+ft", **LSTM, "agent.prev_inputs": True, "transfer.flight_cap": 30}),  # both fed theirs
    ("recurrent_run", {"mode": "bt+ft", **LSTM, "transfer.kickstart": 0.5}),  # π_p's recorded actions in replay
], ids=["bt+ft-lstm", "bt-handoff", "bt-prev-inputs", "bt+ft-prev-inputs", "bt+ft-lstm-kickstart"])
def test_resume_with_a_recurrent_pi_is_exact(tmp_path, request, pi, extra):
    if pi == "prev_run":
        request.getfixturevalue("decisive_prev")
    cfg = build_config(EXACT | {"transfer.pretrained": str(request.getfixturevalue(pi)), "env.max_episode_steps": 100}
                       | extra)
    assert_resume_is_exact(tmp_path, cfg, keep_step=1_100, min_episodes=10)
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["behaviour_share"]["pretrained"] > 0.05  # π_p acted, so its state mattered
