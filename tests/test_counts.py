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
