"""Who acts: exploration schedules and behaviour policies over a batch of environments."""

from __future__ import annotations

import numpy as np


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """Linear interpolation from ``start`` at step 0 to ``end`` at ``duration``, constant after."""
    if duration <= 0 or step >= duration:
        return end
    return start + (end - start) * (step / duration)


def epsilon_greedy(greedy: np.ndarray, epsilon: float, num_actions: int, rng: np.random.Generator) -> np.ndarray:
    """Replace each greedy action by a uniform random one with probability ``epsilon``."""
    explore = rng.random(greedy.shape[0]) < epsilon
    random_actions = rng.integers(0, num_actions, size=greedy.shape[0])
    return np.where(explore, random_actions, greedy)
