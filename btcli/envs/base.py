"""The contract every environment family in btcli implements.

A ``VecEnv`` steps ``num_envs`` copies of one task together and resets each copy in the
*same* step its episode ends (same-step autoreset): ``Step.obs`` is already the first
observation of the next episode for those copies, and ``Step.final_obs`` holds the last
observation of the episode that ended. There is no separate "reset step" whose transition
could leak into replay or episodic memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Step:
    """What one vector step returns. Arrays have a leading ``num_envs`` axis."""

    obs: np.ndarray  # observation to act on next; a reset observation where an episode ended
    reward: np.ndarray  # float32, raw (unclipped) environment reward
    terminated: np.ndarray  # bool, the episode reached a terminal state (no bootstrap)
    truncated: np.ndarray  # bool, the episode was cut by a time limit (bootstrap)
    final_obs: np.ndarray  # last observation of the ended episode where terminated|truncated
    # Optional per-env probes, e.g. {"cell": int array} for coverage; keys are stable per env family.
    probes: dict[str, np.ndarray] = field(default_factory=dict)


class VecEnv(Protocol):
    """Batched environment used by the training loop and by evaluation."""

    env_id: str
    num_envs: int
    obs_shape: tuple[int, ...]  # per-env observation shape as the agent sees it (stacked)
    obs_dtype: np.dtype
    frame_stack: int  # >1: obs_shape[0] frames, newest last, zeros before an episode's first frame
    num_actions: int
    action_meanings: list[str]

    def reset(self, seed: int) -> np.ndarray:
        """Reset every copy; copy i is seeded with ``seed + i``. Returns obs [num_envs, *obs_shape]."""
        ...

    def step(self, actions: np.ndarray) -> Step:
        """Apply one action per copy (int array [num_envs])."""
        ...

    def last_probes(self) -> dict[str, np.ndarray]:
        """Probes of the states behind the latest returned observations (e.g. start cells)."""
        ...

    def render_rgb(self) -> np.ndarray:
        """uint8 [H, W, 3] frame of copy 0 (Atari: only when made with render=True)."""
        ...

    def state_dict(self) -> dict | None:
        """The episodes in progress, for a checkpoint that resumes exactly; None when this
        family cannot save them (a resumed run then restarts its episodes)."""
        ...

    def load_state_dict(self, state: dict) -> np.ndarray:
        """Continue the episodes ``state_dict`` saved; returns the observations to act on."""
        ...

    def close(self) -> None: ...


class WithoutEpisodeState:
    """For env families whose episodes in progress a checkpoint cannot hold (emulator state)."""

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state: dict) -> np.ndarray:
        raise ValueError(f"{type(self).__name__} cannot continue saved episodes")


COVERAGE_PROBES = ("cell", "room")


def coverage_key(probes: dict[str, np.ndarray]) -> str | None:
    """The probe that coverage counts distinct values of: grid cells, else rooms, else none."""
    return next((k for k in COVERAGE_PROBES if k in probes), None)


class SequentialVecEnv:
    """Reset logic shared by the backends that step their copies one by one in Python."""

    num_envs: int
    _seed: int
    _started: bool = False

    def _reset_one(self, i: int, seed: int | None) -> None:
        raise NotImplementedError

    def _current_obs(self) -> np.ndarray:
        raise NotImplementedError

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every copy; copy i is seeded with ``seed + i`` (default: the construction seed
        on the first reset; later resets without a seed continue each copy's RNG)."""
        if seed is None and not self._started:
            seed = self._seed
        for i in range(self.num_envs):
            self._reset_one(i, None if seed is None else seed + i)
        self._started = True
        return self._current_obs().copy()

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("call reset() before step()")


def _f(default, help: str):
    """A dataclass field whose one-line help text feeds ``--help`` and the README."""
    return field(default=default, metadata={"help": help})


@dataclass
class EnvConfig:
    """Which task to run and how it is presented to the agent."""

    id: str = _f("MiniGrid-FourRooms-v0", "environment id: ALE/<Game>-v5 or MiniGrid-<Task>-v0")
    num_envs: int = _f(4, "environment copies stepped together; acting is batched over them")
    sticky_actions: float = _f(0.25, "Atari: probability of repeating the previous action (Machado et al. 2018)")
    frame_skip: int = _f(4, "Atari: emulator frames per agent step (max-pooled over the last two)")
    frame_stack: int = _f(4, "Atari: frames stacked into one observation")
    max_episode_frames: int = _f(108_000, "Atari: emulator frames before an episode is truncated")
    noop_max: int = _f(0, "Atari: up to this many no-op actions at reset (0: none, as ALE v5)")
    atari_backend: str = _f("vector", "Atari: 'vector' (ale_py.AtariVectorEnv, C++ threads) or 'gym' (gymnasium envs, RAM probes)")
    max_episode_steps: int = _f(0, "MiniGrid: step limit per episode (0: the task's own limit)")
    visited: bool = _f(False, "MiniGrid: mark the cells visited this episode in the observation (state + 4), so "
                       "episodic novelty is a function of the observation")
    actions: str = _f("all", "MiniGrid: the agent's actions: 'all' (the task's 7), 'navigation' (left, right, "
                      "forward) or names joined by commas, e.g. 'left,right,forward,toggle'")
