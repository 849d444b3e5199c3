"""`btcli export` -> `btcli.load_policy`: the same greedy actions and Q-values as the run's own
network; exports as `--pretrained`; tampered exports refused."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
import yaml

import btcli
from btcli.agent.networks import build_q_network
from btcli.config import build_config, from_dict, to_dict
from btcli.envs import make_vec_env
from btcli.export import ExportError, export_run
from btcli.loop import Trainer
from btcli.pretrained import PretrainedError
from btcli.runs import RunDir, load_checkpoint, sha256_file

ENV = "MiniGrid-Empty-6x6-v0"
BASE = {"env.id": ENV, "steps": 800, "seed": 0, "eval_episodes": 2, "threads": 1, "agent.learning_starts": 200,
        "checkpoint_every": 400, "train_log_every": 400, "env.num_envs": 2, "env.actions": "navigation",
        "env.visited": True}


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    cfg = build_config(BASE | {"command": "pretrain", "intrinsic.objective": "count",
                               "intrinsic.count_scope": "episode", "agent.torso": "gridego", "agent.hidden": 64})
    run = RunDir.create(root / "pt", to_dict(cfg), ["test"])
    Trainer(cfg, run, progress=False).train()
    return run.path


@pytest.fixture(scope="module")
def exported(pretrained_run, tmp_path_factory):
    return export_run(pretrained_run, tmp_path_factory.mktemp("e") / "policy")


def own_network(run_path, checkpoint=None):
    """The run's online network exactly as `btcli evaluate` rebuilds it."""
    run = RunDir(run_path)
    cfg = from_dict(run.read_config())
    state = load_checkpoint(checkpoint or run.latest_checkpoint())
    a = cfg.agent
    net = build_q_network(tuple(state["obs_shape"]), state["num_actions"], torso=a.torso, hidden=a.hidden,
                          dueling=a.dueling)
    net.load_state_dict(state["learner"]["online"])
    return cfg, net.eval()


def rollout_obs(env, steps: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    obs = [env.reset(seed=seed)]
    for _ in range(steps):
        obs.append(env.step(rng.integers(env.num_actions, size=env.num_envs)).obs)
    return np.concatenate(obs)


def test_cli_export_writes_weights_spec_and_model_card(btcli, tmp_path, pretrained_run):
    out = tmp_path / "exp"
    proc = btcli("export", str(pretrained_run), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.safetensors", "policy.json"]
    spec = json.loads((out / "policy.json").read_text())
    assert printed["sha256"] == sha256_file(out / "policy.json") and printed["policy"] == spec
    assert spec["observation"]["shape"] == [6, 6, 2] and spec["observation"]["dtype"] == "uint8"
    assert spec["observation"]["visited_marks"] is True and spec["observation"]["domain"] == "minigrid"
    assert spec["network"] | {} == spec["network"] and spec["network"]["torso"] == "gridego"
    assert (spec["network"]["hidden"], spec["network"]["dueling"], spec["network"]["num_outputs"]) == (64, True, 3)
    assert spec["actions"]["meanings"] == ["left", "right", "forward"] and spec["actions"]["env_action_ids"] == [0, 1, 2]
    assert spec["env"]["id"] == ENV and spec["env"]["config"]["actions"] == "navigation"
    latest = RunDir(pretrained_run).latest_checkpoint()
    marker = json.loads((latest / "COMPLETE").read_text())
    assert spec["source"]["checkpoint_sha256"] == marker["sha256"] and spec["source"]["step"] == 800
    assert spec["weights"]["sha256"] == sha256_file(out / "model.safetensors")
    summary = json.loads((pretrained_run / "summary.json").read_text())
    assert spec["scores"]["eval_return_mean"] == summary["eval_return_mean"]
    card = (out / "README.md").read_text()
    for fact in (ENV, "btcli pretrain --objective count", "800 environment steps", marker["sha256"],
                 printed["sha256"], f"{summary['final_return_mean']:.3f}"):
        assert fact in card, fact
    # an existing folder is never overwritten; an earlier checkpoint can be chosen
    again = btcli("export", str(pretrained_run), "--out", str(out))
    assert again.returncode == 2 and again.stderr.startswith("btcli: error:") and "already exists" in again.stderr
    older = btcli("export", str(pretrained_run), "--checkpoint", "400", "--out", str(tmp_path / "e400"), "--json")
    assert older.returncode == 0 and json.loads(older.stdout)["policy"]["source"]["step"] == 400


def test_load_policy_gives_the_runs_own_actions_and_q_values(pretrained_run, exported):
    policy = btcli.load_policy(exported.path)
    cfg, net = own_network(pretrained_run)
    env = make_vec_env(cfg.env, seed=11)
    obs = rollout_obs(env, 60)
    env.close()
    with torch.no_grad():
        expected_q = net(torch.from_numpy(obs)).numpy()
    actions, q = policy(obs)
    np.testing.assert_array_equal(q, expected_q)
    np.testing.assert_array_equal(actions, expected_q.argmax(1))
    assert actions.dtype == np.int64 and q.shape == (len(obs), 3)
    assert len(set(actions.tolist())) > 1 or np.ptp(expected_q) > 0  # not a degenerate network
    one = policy(obs[5])  # one observation, no batch axis (another batch size: float rounding may differ)
    assert one.q_values.shape == (3,) and int(one.actions) == actions[5]
    np.testing.assert_allclose(one.q_values, q[5], rtol=1e-5, atol=1e-6)
    # the policy's own env is the run's env: same options, same observations for a seed
    mine = policy.make_env(num_envs=2, seed=11)
    np.testing.assert_array_equal(rollout_obs(mine, 60), obs)
    mine.close()
    with pytest.raises(ValueError, match=r"shape \[6, 6, 3\] do not fit this policy.*\[6, 6, 2\]"):
        policy(np.zeros((6, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="must be uint8"):
        policy(obs.astype(np.float32) + 0.5)
    with pytest.raises(ValueError, match="changes the observation"):
        policy.make_env(visited=False)


def test_encode_turns_gymnasium_minigrid_observations_into_btclis(exported):
    import gymnasium as gym
    from minigrid.wrappers import FullyObsWrapper

    policy = btcli.load_policy(exported.path)
    raw_env = FullyObsWrapper(gym.make(ENV))
    ours = policy.make_env(num_envs=1, seed=5)
    raw, _ = raw_env.reset(seed=5)
    obs = ours.reset(seed=5)
    visited = np.zeros((6, 6), bool)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="visited marks"):
        policy.encode(raw)
    compared = 0
    for _ in range(40):
        x, y = raw_env.unwrapped.agent_pos
        visited[y, x] = True
        encoded = policy.encode(raw, visited=visited)
        np.testing.assert_array_equal(encoded, obs[0])
        np.testing.assert_array_equal(policy(encoded[None]).q_values, policy(obs).q_values)
        compared += 1
        a = int(rng.integers(3))
        raw, _, term, trunc, _ = raw_env.step(policy.env_action_ids[a])
        step = ours.step(np.array([a]))
        if term or trunc:
            break
        obs = step.obs
    assert compared >= 5
    raw_env.close()
    ours.close()


def test_tampered_exports_are_refused(exported, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(exported.path, bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="does not match the SHA-256 in policy.json"):
        btcli.load_policy(bad)
    spec = json.loads((exported.path / "policy.json").read_text())
    (bad / "model.safetensors").write_bytes((exported.path / "model.safetensors").read_bytes())
    spec["weights"]["file"] = "../model.safetensors"
    (bad / "policy.json").write_text(json.dumps(spec))
    with pytest.raises(ExportError, match="lacks its weights file"):
        btcli.load_policy(bad)
    (bad / "policy.json").write_text(json.dumps(spec | {"format_version": 99}))
    with pytest.raises(ExportError, match="format version 99"):
        btcli.load_policy(bad)


def test_transfer_from_an_export_is_the_transfer_from_its_run(tmp_path, pretrained_run, exported):
    keys = BASE | {"steps": 400, "mode": "bt+ft", "agent.torso": "gridego", "agent.hidden": 64,
                   "transfer.ft_zero_values": False}
    runs = {}
    for name, source in (("from_run", pretrained_run), ("from_export", exported.path)):
        cfg = build_config(keys | {"transfer.pretrained": str(source)})
        run = RunDir.create(tmp_path / name, to_dict(cfg), ["test"])
        runs[name] = (cfg, run, Trainer(cfg, run, progress=False))
    a, b = runs["from_run"][2], runs["from_export"][2]
    for (k, va), (k2, vb) in zip(a.learner.online.state_dict().items(), b.learner.online.state_dict().items()):
        assert k == k2 and torch.equal(va, vb), k  # FT copied the same weights
    env = make_vec_env(runs["from_run"][0].env, seed=2)
    obs = rollout_obs(env, 30)
    env.close()
    np.testing.assert_array_equal(a.pretrained_act(obs), b.pretrained_act(obs))  # BT flies the same π_p
    np.testing.assert_array_equal(b.pretrained_act(obs), btcli.load_policy(exported.path).act(obs))
    prov = yaml.safe_load((tmp_path / "from_export" / "config.yaml").read_text())["provenance"]["pretrained"]
    assert prov["kind"] == "export" and prov["sha256"] == sha256_file(exported.path / "policy.json")
    assert prov["export"]["source_sha256"] == exported.spec["source"]["checkpoint_sha256"]
    b.train()
    assert json.loads((tmp_path / "from_export" / "summary.json").read_text())["pretrained"]["kind"] == "export"
    # the run pins the export: once policy.json changes, the run no longer reloads it
    spec_path = exported.path / "policy.json"
    original = spec_path.read_text()
    try:
        spec_path.write_text(original.replace('"created": "', '"created": "x'))
        with pytest.raises(PretrainedError, match=r"export .* changed since this run started"):
            Trainer(runs["from_export"][0], RunDir(tmp_path / "from_export"), progress=False)
    finally:
        spec_path.write_text(original)


@pytest.mark.slow
def test_cli_transfer_and_finetune_take_an_export(btcli, tmp_path, exported):
    common = ["--env", ENV, "--steps", "400", "--set", "env.actions=navigation", "--set", "env.visited=true",
              "--set", "agent.torso=gridego", "--set", "agent.hidden=64", "--set", "agent.learning_starts=200",
              "--set", "eval_episodes=1", "-q"]
    bt = btcli("transfer", "--mode", "bt", "--pretrained", str(exported.path), "--out", str(tmp_path / "bt"), *common)
    ft = btcli("finetune", "--pretrained", str(exported.path), "--out", str(tmp_path / "ft"), *common)
    assert bt.returncode == 0 and ft.returncode == 0, bt.stderr + ft.stderr
    summary = json.loads((tmp_path / "bt" / "summary.json").read_text())
    assert summary["behaviour_share"]["pretrained"] > 0 and summary["pretrained"]["kind"] == "export"
    other = btcli("transfer", "--mode", "bt", "--pretrained", str(exported.path), "--out", str(tmp_path / "x"),
                  *common[:-3], "--set", "env.visited=false", "-q")
    assert other.returncode == 2 and re.search(r"env\.visited=True but this run has env\.visited=False", other.stderr)


def test_atari_export_round_trip(tmp_path):
    cfg = build_config({"env.id": "ALE/Pong-v5", "steps": 8, "env.num_envs": 2, "agent.buffer_size": 1000,
                        "threads": 1, "seed": 1, "eval_episodes": 0})
    run = RunDir.create(tmp_path / "atari", to_dict(cfg), ["test"])
    trainer = Trainer(cfg, run, progress=False)
    trainer.train()  # 8 random steps: the network is its seeded init, which is all an export needs
    policy = btcli.load_policy(export_run(run.path, tmp_path / "exp").path)
    assert policy.obs_shape == (4, 84, 84) and policy.spec["network"]["torso_resolved"] == "cnn"
    assert policy.action_meanings == trainer.env.action_meanings
    env = policy.make_env(num_envs=2, seed=4)
    obs = rollout_obs(env, 8)
    env.close()
    with torch.no_grad():  # the run's network is channels-last on a CPU: equal up to float rounding
        expected = trainer.learner.online(torch.from_numpy(obs)).numpy()
    actions, q = policy(obs)
    np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(actions, expected.argmax(1))
    with pytest.raises(ValueError, match="MiniGrid policies"):
        policy.encode(obs[0])
