import pytest
import yaml

from btcli.config import (
    ConfigError,
    build_config,
    from_dict,
    load_yaml_overrides,
    parse_set_items,
    to_dict,
)


def test_precedence_defaults_preset_yaml_flags_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"agent": {"lr": 2.0e-4, "n_step": 5}, "steps": 1000}))
    overrides = load_yaml_overrides(path)
    overrides.update({"env.id": "ALE/Breakout-v5", "steps": 2000})
    overrides.update(parse_set_items(["agent.n_step=7"]))
    cfg = build_config(overrides)
    assert cfg.agent.torso == "cnn"  # Atari preset
    assert cfg.agent.buffer_size == 200_000  # Atari preset
    assert cfg.agent.lr == 2.0e-4  # YAML beats preset
    assert cfg.steps == 2000  # flag beats YAML
    assert cfg.agent.n_step == 7  # --set beats all


def test_minigrid_preset_differs_from_atari():
    grid = build_config({"env.id": "MiniGrid-Empty-5x5-v0"})
    atari = build_config({"env.id": "ALE/Pong-v5"})
    assert grid.agent.torso == "mlp" and atari.agent.torso == "cnn"
    assert grid.agent.reward_clip == 0.0 and atari.agent.reward_clip == 1.0


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'agent.lrr'; did you mean 'agent.lr'"):
        build_config({"agent.lrr": 1e-3})
    with pytest.raises(ConfigError, match="unknown config key 'agent'"):
        build_config({"agent": 3})


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"config key 'steps' expects int, got str 'many'"):
        build_config(parse_set_items(["steps=many"]))
    with pytest.raises(ConfigError, match="config key 'agent.dueling' expects bool"):
        build_config({"agent.dueling": 1})
    with pytest.raises(ConfigError, match="'agent.precision' is 'fp8'"):
        build_config({"agent.precision": "fp8"})


def test_numbers_without_dot_are_numbers():
    cfg = build_config(parse_set_items(["agent.lr=1e-4", "steps=2e5", "agent.buffer_size=10_000"]))
    assert cfg.agent.lr == pytest.approx(1e-4)
    assert cfg.steps == 200_000 and isinstance(cfg.steps, int)
    assert cfg.agent.buffer_size == 10_000


def test_malformed_yaml_is_one_line_with_position(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("agent:\n  lr: [1, 2\nsteps: 3\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_overrides(path)
    msg = str(info.value)
    assert "\n" not in msg and "is not valid YAML at line" in msg


def test_yaml_must_be_mapping_and_exist(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml_overrides(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml_overrides(tmp_path / "missing.yaml")


def test_set_requires_equals():
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_set_items(["agent.lr"])


def test_round_trip_through_dict():
    cfg = build_config({"env.id": "MiniGrid-Empty-5x5-v0", "seed": 3})
    again = from_dict(to_dict(cfg) | {"meta": {"argv": []}})
    assert again == cfg


def test_validation_rejects_nonpositive():
    with pytest.raises(ConfigError, match="'agent.batch_size' must be positive"):
        build_config({"agent.batch_size": 0})
