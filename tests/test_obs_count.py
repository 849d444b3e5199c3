"""The obs-count objective (btcli/intrinsic/objectives/obs_count.py) against rewards by hand."""

from __future__ import annotations

import numpy as np
import pytest

from btcli.config import ConfigError, build_config
from btcli.envs.base import Step
from btcli.intrinsic.objectives.obs_count import ObsCountSource
from btcli.intrinsic.registry import build_source, objectives


def step(nxt, ended=(False, False), final=None):
    nxt = np.array(nxt, dtype=np.uint8).reshape(2, 1)
    return Step(obs=nxt, reward=np.zeros(2, np.float32), terminated=np.array(ended), truncated=np.zeros(2, bool),
                final_obs=nxt if final is None else np.array(final, dtype=np.uint8).reshape(2, 1))


def test_rewards_are_one_over_sqrt_of_the_episodes_count():
    src = ObsCountSource(2, scale=2.0)
    obs = np.array([[0], [5]], dtype=np.uint8)
    # copy 0: 0 -> 1 (first time: n = 1 -> 2/1); copy 1: 5 -> 5 (the start counts once: n = 2 -> 2/sqrt(2))
    np.testing.assert_allclose(src.rewards(obs, None, step([1, 5])), [2.0, 2 / np.sqrt(2)])
    # copy 0 back to 0 (n = 2); copy 1's episode ends in 6 (its final obs, n = 1), then restarts in 7
    np.testing.assert_allclose(src.rewards(np.array([[1], [5]], dtype=np.uint8), None, step([0, 7], ended=(False, True),
                                                                             final=[0, 6])), [2 / np.sqrt(2), 2.0])
    assert src.counts[1] == {}
    # copy 1's new episode starts at 7 (counted once), moves to 7 again: n = 2
    np.testing.assert_allclose(src.rewards(np.array([[0], [7]], dtype=np.uint8), None, step([0, 7])), [2 / np.sqrt(3), 2 / np.sqrt(2)])
    other = ObsCountSource(2, scale=2.0)
    other.load_episode_state_dict(src.episode_state_dict())
    assert other.counts == src.counts
    other.load_episode_state_dict(None)
    assert other.counts == [{}, {}]


def test_registered_with_its_config_section():
    assert "obs-count" in objectives()
    cfg = build_config({"env.id": "MiniGrid-Empty-5x5-v0", "command": "pretrain", "intrinsic.objective": "obs-count",
                        "intrinsic.obs_count.scale": 0.5})

    class Env:
        num_envs = 3

    src = build_source(cfg.intrinsic, Env(), "cpu")
    assert isinstance(src, ObsCountSource) and src.scale == 0.5 and len(src.counts) == 3
    with pytest.raises(ConfigError, match="intrinsic.obs_count.scale must be positive"):
        build_config({"env.id": "MiniGrid-Empty-5x5-v0", "command": "pretrain", "intrinsic.objective": "obs-count",
                      "intrinsic.obs_count.scale": 0})
