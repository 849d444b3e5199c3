"""Count bonuses against values computed by hand: life-long and per-episode."""

import numpy as np
import pytest

from btcli.intrinsic.counts import CountBonus, EpisodicCountBonus


def test_lifelong_counts_are_shared_by_copies_and_episodes():
    bonus = CountBonus()
    assert bonus.reward(np.array([5, 5, 6])).tolist() == pytest.approx([1.0, 1 / np.sqrt(2), 1.0])
    assert bonus.reward(np.array([5])).tolist() == pytest.approx([1 / np.sqrt(3)])


def test_episodic_counts_restart_with_each_episode_and_per_copy():
    bonus = EpisodicCountBonus(2)
    bonus.start(0, 10)
    bonus.start(1, 10)
    # copy 0 steps to 11 then back to its start cell 10 (second visit); copy 1 stays on 10 twice
    assert bonus.reward(np.array([11, 10])).tolist() == pytest.approx([1.0, 1 / np.sqrt(2)])
    assert bonus.reward(np.array([10, 10])).tolist() == pytest.approx([1 / np.sqrt(2), 1 / np.sqrt(3)])
    bonus.end(1)
    assert not bonus.started(1) and bonus.started(0)
    bonus.start(1, 10)  # a new episode: cell 10 counted once again, copy 0 unaffected
    assert bonus.reward(np.array([10, 11])).tolist() == pytest.approx([1 / np.sqrt(3), 1.0])


def test_episode_coverage_source_pays_first_visits_only():
    from btcli.envs.base import Step
    from btcli.envs.minigrid import AGENT_IDX
    from btcli.intrinsic.objectives.count import EpisodeCoverageSource

    width = 5
    source = EpisodeCoverageSource(1, width)
    obs = np.zeros((1, 5, width, 2), dtype=np.uint8)
    obs[0, 1, 1, 0] = AGENT_IDX  # the episode starts in cell y=1, x=1 -> 6

    def step(cell, ended=False):
        done = np.array([ended])
        return Step(obs, np.zeros(1, np.float32), done, np.array([False]), obs, {"cell": np.array([cell])})

    # a turn in place (6 again), a new cell 7, back to 6, new cell 8: rewards 0, 1, 0, 1
    got = [float(source.rewards(obs, np.zeros(1), step(c))[0]) for c in (6, 7, 6, 8)]
    assert got == [0.0, 1.0, 0.0, 1.0]
    # the episode ends on cell 7 (seen: 0); the next episode starts afresh from obs' cell 6
    assert source.rewards(obs, np.zeros(1), step(7, ended=True))[0] == 0.0
    assert source.rewards(obs, np.zeros(1), step(7))[0] == 1.0
