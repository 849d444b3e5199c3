"""Transfer from a pre-trained run: FT copies weights, BT flies π_p, provenance and refusals."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from btcli.config import ConfigError, build_config, from_dict, to_dict
from btcli.loop import Trainer
from btcli.pretrained import PretrainedError
from btcli.runs import RunDir

ENV = "MiniGrid-Empty-5x5-v0"
BASE = {"env.id": ENV, "steps": 1_200, "seed": 0, "eval_episodes": 2, "threads": 1, "agent.learning_starts": 400,
        "checkpoint_every": 600, "train_log_every": 400}


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A short reward-free pre-training run on the 5x5 room."""
    root = tmp_path_factory.mktemp("pre")
    cfg = build_config(BASE | {"command": "pretrain", "intrinsic.objective": "count"})
    run = RunDir.create(root / "pt", to_dict(cfg), ["test"])
    Trainer(cfg, run, progress=False).train()
    return run.path


def make(tmp_path, mode, pretrained=None, name=None, **extra):
    keys = BASE | {"mode": mode} | extra
    if pretrained is not None:
        keys["transfer.pretrained"] = str(pretrained)
    cfg = build_config(keys)
    run = RunDir.create(tmp_path / (name or mode.replace("+", "_")), to_dict(cfg), ["test"])
    return Trainer(cfg, run, progress=False)


def pretrained_weights(run_path):
    state = torch.load(RunDir(run_path).latest_checkpoint() / "state.pt", weights_only=False)
    return state["learner"]["online"]


@pytest.mark.parametrize("layers", ["all", "torso"])
def test_ft_copies_exactly_the_chosen_layers(tmp_path, pretrained_run, layers):
    trainer = make(tmp_path, "ft", pretrained_run, **{"transfer.ft_layers": layers, "transfer.ft_zero_values": False})
    source = pretrained_weights(pretrained_run)
    for name, value in trainer.learner.online.state_dict().items():
        same = torch.equal(value, source[name])
        assert same == (layers == "all" or name.startswith("torso.")), name


@pytest.mark.parametrize("layers", ["all", "torso"])
def test_ft_starts_at_zero_state_values_by_default(tmp_path, pretrained_run, layers):
    trainer = make(tmp_path, "ft", pretrained_run, **{"transfer.ft_layers": layers})
    source = pretrained_weights(pretrained_run)
    own = trainer.learner.online.state_dict()
    changed = {name for name, value in own.items() if not torch.equal(value, source[name])}
    if layers == "all":  # only the value stream differs from the copy, and it is zero
        assert changed == {"head.value.weight", "head.value.bias"}
    else:
        assert all(not name.startswith("torso.") for name in changed)
    assert all(not own[name].any() for name in own if name.startswith("head.value.") or
               (layers == "torso" and name.startswith("head.")))
    assert torch.equal(trainer.learner.target.state_dict()["head.value.weight"], own["head.value.weight"])
    # the target network starts as a copy of the initialised online network
    for name, value in trainer.learner.target.state_dict().items():
        assert torch.equal(value, trainer.learner.online.state_dict()[name])


def test_freeze_torso_trains_only_the_head(tmp_path, pretrained_run):
    trainer = make(tmp_path, "ft", pretrained_run, **{"transfer.freeze": "torso", "transfer.ft_layers": "torso"})
    source = pretrained_weights(pretrained_run)
    head_before = {k: v.clone() for k, v in trainer.learner.online.state_dict().items() if k.startswith("head.")}
    trainer.train()
    after = trainer.learner.online.state_dict()
    assert trainer.learner.updates > 0
    assert all(torch.equal(after[k], source[k]) for k in after if k.startswith("torso."))
    assert any(not torch.equal(after[k], v) for k, v in head_before.items())


def test_scratch_and_bt_start_from_random_weights(tmp_path, pretrained_run):
    source = pretrained_weights(pretrained_run)
    for mode in ("scratch", "bt"):
        trainer = make(tmp_path, mode, pretrained_run if mode == "bt" else None)
        assert not any(torch.equal(v, source[k]) for k, v in trainer.learner.online.state_dict().items()
                       if v.numel() > 1)


def test_bt_flies_the_frozen_pretrained_policy_and_logs_it(tmp_path, pretrained_run):
    trainer = make(tmp_path, "bt", pretrained_run, **{"explore.eps_decay_steps": 600})
    pi_before = {k: v.clone() for k, v in pretrained_weights(pretrained_run).items()}
    summary = trainer.train()
    share = summary["behaviour_share"]
    assert share["pretrained"] > 0.2 and share["random"] == 0.0  # εz-greedy: no random steps in bt
    assert sum(share.values()) == pytest.approx(1.0, abs=1e-3)
    assert summary["flights"] > 0 and 1 <= summary["flight_len_mean"] <= summary["flight_len_max"] <= 100
    metrics = pd.read_csv(trainer.run.metrics_path)
    total = metrics[["share_learner", "share_pretrained", "share_random"]].sum(axis=1)
    assert np.allclose(total, 1.0, atol=1e-3)
    train = pd.read_csv(trainer.run.train_path)
    assert (train["flights"] >= 0).all() and train["share_pretrained"].iloc[0] > 0.5
    # π_p is frozen: the pre-trained run's weights are untouched and the run's own checkpoint differs
    assert all(torch.equal(v, pretrained_weights(pretrained_run)[k]) for k, v in pi_before.items())


def test_ez_greedy_flights_are_random(tmp_path):
    summary = make(tmp_path, "ez-greedy").train()
    assert summary["behaviour_share"]["pretrained"] == 0.0 and summary["behaviour_share"]["random"] > 0.2
    assert summary["flights"] > 0


def test_provenance_pins_the_checkpoint_and_a_changed_one_is_refused(tmp_path, pretrained_run):
    trainer = make(tmp_path, "bt+ft", pretrained_run)
    saved = yaml.safe_load(trainer.run.config_path.read_text())["provenance"]["pretrained"]
    latest = RunDir(pretrained_run).latest_checkpoint()
    marker = json.loads((latest / "COMPLETE").read_text())
    assert saved["sha256"] == marker["sha256"] and saved["objective"] == "count"
    assert saved["step"] == 1_200 and saved["env_id"] == ENV and saved["checkpoint"] == str(latest.resolve())
    # the recorded config still loads as a config (provenance is a record, not a key)
    assert from_dict(yaml.safe_load(trainer.run.config_path.read_text())).mode == "bt+ft"
    # if the pre-trained run continues (a newer checkpoint), a resume still uses the pinned one
    copy = tmp_path / "pt-copy"
    shutil.copytree(pretrained_run, copy)
    trainer2 = make(tmp_path, "bt", copy, name="pinned")
    pinned = RunDir(copy).latest_checkpoint()
    newer = pinned.parent / "step_000000009999"
    shutil.copytree(pinned, newer)
    again = Trainer(trainer2.cfg, trainer2.run, progress=False)
    assert again.pretrained.checkpoint == pinned.resolve()
    # a pinned checkpoint whose content changed is refused, not substituted
    state = torch.load(pinned / "state.pt", weights_only=False)
    state["step"] = 1
    torch.save(state, pinned / "state.pt")
    with pytest.raises(Exception, match="corrupt|changed"):
        Trainer(trainer2.cfg, trainer2.run, progress=False)


def test_mode_and_pretrained_must_agree():
    with pytest.raises(ConfigError, match="needs a pre-trained run"):
        build_config(BASE | {"mode": "bt"})
    with pytest.raises(ConfigError, match="does not use a pre-trained run"):
        build_config(BASE | {"mode": "scratch", "transfer.pretrained": "x"})
    with pytest.raises(ConfigError, match="only apply to modes ft and bt\\+ft"):
        build_config(BASE | {"mode": "bt", "transfer.pretrained": "x", "transfer.freeze": "torso"})


def test_architecture_mismatch_is_refused_for_ft_only(tmp_path, pretrained_run):
    with pytest.raises(PretrainedError, match="agent.hidden is 64 here but 256"):
        make(tmp_path, "ft", pretrained_run, **{"agent.hidden": 64})
    # BT keeps π_p's own network; the learner may differ
    assert make(tmp_path, "bt", pretrained_run, **{"agent.hidden": 64}).pretrained_act is not None


def one_error_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("btcli: error: "), proc.stderr
    return lines[0]


def test_mismatched_or_missing_pretrained_runs_are_refused(btcli, tmp_path, pretrained_run):
    out = tmp_path / "t"
    common = ["--steps", "400", "--out", str(out), "--set", "threads=1", "-q"]
    # another observation shape (6x6 room)
    line = one_error_line(btcli("transfer", "--mode", "bt", "--pretrained", str(pretrained_run),
                                "--env", "MiniGrid-Empty-6x6-v0", *common))
    assert "observations of shape (5, 5, 2)" in line and "(6, 6, 2)" in line
    # same shapes, another task: refused unless allowed
    line = one_error_line(btcli("transfer", "--mode", "ft", "--pretrained", str(pretrained_run),
                                "--env", "MiniGrid-DoorKey-5x5-v0", *common))
    assert "was trained on MiniGrid-Empty-5x5-v0" in line and "allow_other_env" in line
    # missing run, a folder that is not a run, a run with no checkpoint yet
    line = one_error_line(btcli("transfer", "--mode", "bt", "--pretrained", str(tmp_path / "nope"), "--env", ENV, *common))
    assert "does not exist" in line
    (tmp_path / "empty-run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "empty-run" / "config.yaml").write_text("seed: 0\n")
    line = one_error_line(btcli("transfer", "--mode", "bt", "--pretrained", str(tmp_path / "empty-run"),
                                "--env", ENV, *common))
    assert "no complete checkpoint" in line
    assert not out.exists()  # nothing was created by a refused transfer
    ok = btcli("transfer", "--mode", "ft", "--pretrained", str(pretrained_run), "--env", "MiniGrid-DoorKey-5x5-v0",
               "--set", "transfer.allow_other_env=true", *common)
    assert ok.returncode == 0, ok.stderr
    prov = yaml.safe_load((out / "config.yaml").read_text())["provenance"]["pretrained"]
    assert prov["env_id"] == ENV


def test_finetune_command_is_mode_ft_with_its_own_knobs(btcli, tmp_path, pretrained_run):
    out = tmp_path / "ft"
    proc = btcli("finetune", "--pretrained", str(pretrained_run), "--layers", "torso", "--freeze", "torso",
                 "--lr", "0.001", "--copy-values", "--env", ENV, "--steps", "800", "--out", str(out), "--set", "threads=1", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["command"] == "finetune" and cfg["mode"] == "ft" and cfg["agent"]["lr"] == 0.001
    assert cfg["transfer"]["ft_layers"] == "torso" and cfg["transfer"]["freeze"] == "torso"
    assert cfg["transfer"]["ft_zero_values"] is False
    summary = json.loads(proc.stdout)
    assert summary["pretrained"]["sha256"] == cfg["provenance"]["pretrained"]["sha256"]


def test_pretrained_action_hands_steps_to_pi_and_is_learned(tmp_path, pretrained_run, btcli):
    # values copied as they are: in 1,200 steps the greedy learner then picks the hand-off action
    trainer = make(tmp_path, "bt+ft", pretrained_run, **{"transfer.pretrained_action": True,
                                                          "transfer.ft_zero_values": False})
    n_env_actions = trainer.env.num_actions
    assert trainer.learner.online.head.advantage.out_features == n_env_actions + 1
    # FT fills the pre-trained rows of the grown head; the hand-off row keeps its fresh init
    source = pretrained_weights(pretrained_run)
    adv = trainer.learner.online.state_dict()["head.advantage.weight"]
    assert torch.equal(adv[:n_env_actions], source["head.advantage.weight"])
    sent, stored = [], []
    step, add = trainer.env.step, trainer.replay.add
    trainer.env.step = lambda a: (sent.append(np.array(a)), step(a))[1]
    trainer.replay.add = lambda obs, actions, *rest: (stored.append(np.array(actions)), add(obs, actions, *rest))[1]
    summary = trainer.train()
    sent, stored = np.concatenate(sent), np.concatenate(stored)
    assert sent.max() < n_env_actions  # the environment never sees the hand-off action
    assert (stored == n_env_actions).any()  # replay keeps it, so Q_θ learns its value
    assert summary["behaviour_share"]["pretrained"] > 0
    # `btcli evaluate` rebuilds the grown network and π_p from the pinned checkpoint
    proc = btcli("evaluate", str(trainer.run.path), "--episodes", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["episodes"] == 2
    with pytest.raises(ConfigError, match="pretrained_action needs a pre-trained policy"):
        build_config(BASE | {"transfer.pretrained_action": True})


@pytest.mark.parametrize("mode", ["scratch", "ez-greedy", "ft", "bt", "bt+ft"])
def test_zero_shot_reference_rows_exactly_for_modes_with_a_pretrained_policy(tmp_path, pretrained_run, mode):
    """Every evaluation of a run with π_p also evaluates the frozen π_p on the same episodes; runs
    without one write none. π_p never changes, so equal seeds give it equal returns."""
    uses = mode in ("ft", "bt", "bt+ft")
    trainer = make(tmp_path, mode, pretrained_run if uses else None, eval_every=400)
    summary = trainer.train()
    rows = pd.read_csv(trainer.run.eval_path)
    assert set(rows["env_id"]) == {ENV}
    learner, reference = rows[rows["policy"] == "learner"], rows[rows["policy"] == "pretrained"]
    assert sorted(set(learner["step"])) == [400, 800, 1200] and len(learner) == 3 * 2
    if not uses:
        assert reference.empty and summary["pretrained_eval"] is None
        return
    assert list(reference["step"]) == list(learner["step"]) and list(reference["epsilon"]) == list(learner["epsilon"])
    pi = trainer.pretrained_act
    frozen = {k: v.clone() for k, v in trainer.pretrained_net.state_dict().items()}
    from btcli.envs import make_vec_env
    from btcli.evaluation import evaluate
    env = make_vec_env(trainer.cfg.env, seed=0)
    again = evaluate(pi, env, 2, trainer.cfg.explore.eps_eval, seed=trainer.cfg.seed + 1_000_003 + 800)
    assert [r.ret for r in again] == list(reference[reference["step"] == 800]["return"])
    assert all(torch.equal(v, frozen[k]) for k, v in trainer.pretrained_net.state_dict().items())
    ref = summary["pretrained_eval"]
    assert ref["episodes"] == 6 and ref["evaluations"] == 3
    assert ref["return_mean"] == pytest.approx(reference["return"].mean())


def test_eval_pretrained_final_and_none(tmp_path, pretrained_run):
    final = make(tmp_path, "bt", pretrained_run, name="final", eval_every=400,
                 **{"transfer.eval_pretrained": "final"})
    final.train()
    rows = pd.read_csv(final.run.eval_path)
    assert list(rows[rows["policy"] == "pretrained"]["step"].unique()) == [1200]
    none = make(tmp_path, "bt", pretrained_run, name="none", eval_every=400, **{"transfer.eval_pretrained": "none"})
    assert none.train()["pretrained_eval"] is None
    assert set(pd.read_csv(none.run.eval_path)["policy"]) == {"learner"}


def test_kickstart_pulls_the_greedy_policy_toward_pi_and_decays(tmp_path, pretrained_run):
    """With the margin loss a learner from random weights agrees with π_p on replayed states far more
    often than the same run without it; the weight follows its linear decay to 0."""
    def agreement(trainer):
        b = trainer.replay.sample(256)
        obs = torch.from_numpy(b.obs)
        with torch.no_grad():
            return float((trainer.learner.online(obs).argmax(1) == trainer.pretrained_net(obs).argmax(1)).float().mean())

    plain = make(tmp_path, "bt", pretrained_run, name="plain")
    plain.train()
    kicked = make(tmp_path, "bt", pretrained_run, name="kicked", **{"transfer.kickstart": 5.0,
                                                                   "transfer.kickstart_steps": 10_000,
                                                                   "transfer.kickstart_margin": 0.5})
    kicked.train()
    assert agreement(kicked) > agreement(plain) + 0.2
    assert kicked.kickstart_weight() == pytest.approx(5.0 * (1 - 1200 / 10_000), rel=1e-3)
    kicked.counters.env_steps = 10_000
    assert kicked.kickstart_weight() == 0.0
    demo, weight = kicked._kickstart(kicked.replay.sample(4).to(torch.from_numpy))
    assert float(weight) == 0.0 and demo.shape == (4,)
    assert plain._kickstart(plain.replay.sample(4).to(torch.from_numpy)) == ()
    constant = make(tmp_path, "bt", pretrained_run, name="constant", **{"transfer.kickstart": 0.1,
                                                                       "transfer.kickstart_steps": 0})
    constant.counters.env_steps = 10**7
    assert constant.kickstart_weight() == 0.1


def test_kickstart_needs_a_pretrained_mode():
    with pytest.raises(ConfigError, match="kickstart needs a pre-trained policy"):
        build_config(BASE | {"mode": "scratch", "transfer.kickstart": 1.0})


def test_evaluate_on_another_task_with_the_same_spaces(btcli, tmp_path, pretrained_run):
    """`btcli evaluate RUN --env ID`: the pre-trained policy's score on another task, rows naming it;
    a task with other observation spaces is refused in one line."""
    run = tmp_path / "copy"
    shutil.copytree(pretrained_run, run)
    proc = btcli("evaluate", str(run), "--env", "MiniGrid-Empty-Random-5x5-v0", "--episodes", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["env_id"] == "MiniGrid-Empty-Random-5x5-v0" and result["trained_on"] == ENV
    rows = pd.read_csv(run / "eval.csv")
    other = rows[rows["env_id"] == "MiniGrid-Empty-Random-5x5-v0"]
    assert len(other) == 3 and list(other["return"]) == result["returns"]
    from btcli.analysis import load_run, summarize_run
    s = summarize_run(load_run(run))  # the other task's rows never enter the run's own figures
    assert s["evaluations"] == 1 and s["eval_step"] == 1200
    bad = btcli("evaluate", str(run), "--env", "MiniGrid-DoorKey-8x8-v0", "--episodes", "1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "obs_shape" in bad.stderr and "MiniGrid-DoorKey-8x8-v0" in bad.stderr


def test_ft_with_random_flights_explores_as_ez_greedy(tmp_path, pretrained_run):
    """transfer.flights=random gives FT BT's exploration schedule with random-action flights: the
    control that separates π_p's flights from temporally extended exploration as such."""
    trainer = make(tmp_path, "ft", pretrained_run, **{"transfer.flights": "random"})
    assert trainer.behaviour.spec.source == "random"
    summary = trainer.train()
    assert summary["flights"] > 0 and summary["behaviour_share"]["pretrained"] == 0.0
    assert make(tmp_path, "ft", pretrained_run, name="plain").behaviour.spec.source == "none"
