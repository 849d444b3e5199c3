"""What a training run carries from one checkpoint to the next, and the checkpoint's layout.

A checkpoint (format 2) holds a header (format, kind, the task identity, command, mode, step,
config, objective), one entry per saveable part (``learner``, ``behaviour``, ``record``, and
``intrinsic`` in pre-training, ``replay`` with ``save_replay``), and ``episodes``: the episodes in
progress, only where the environment can save its own (MiniGrid, Atari's gym backend):
``{"env": ..., "loop": ..., "parts": {name: that part's episode state}}``. A part saves and
restores itself (``state_dict`` / ``load_state_dict``); a part with episode state also has
``episode_state_dict`` / ``load_episode_state_dict`` (None: the episodes restart).
:func:`upgrade_checkpoint` reads format 1 (every record at the top level, episode parts inside
each part's state under "episodes").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

CHECKPOINT_FORMAT = 2
RECENT_EPISODES = 100
RECORD_KEYS = ("counters", "rng", "recent_returns", "visited", "train_window", "reference_evals")


class Saveable(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Counters:
    """Everything about time that a resumed run must continue from."""

    env_steps: int = 0
    episodes: int = 0
    update_credit: float = 0.0
    next_target_sync: int = 0
    next_eval: int = 0
    next_checkpoint: int = 0
    next_train_log: int = 0
    elapsed_s: float = 0.0  # wall time before this process (resumed runs)


@dataclass
class Episodes:
    """The loop's view of the episodes in progress, one row per environment copy."""

    obs: np.ndarray  # the observations to act on next
    ret: np.ndarray  # raw return so far
    intrinsic: np.ndarray  # intrinsic return so far (pre-training)
    length: np.ndarray  # steps so far
    cells: list[set]  # coverage: cells (rooms) visited so far
    who: np.ndarray  # [num_envs, 3] steps taken by the learner, π_p, random

    @classmethod
    def empty(cls, obs: np.ndarray) -> Episodes:
        n = len(obs)
        return cls(obs, np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64), [set() for _ in range(n)],
                   np.zeros((n, 3), dtype=np.int64))

    def state_dict(self) -> dict[str, Any]:
        return {"ret": self.ret.tolist(), "intrinsic": self.intrinsic.tolist(), "length": self.length.tolist(),
                "cells": [sorted(c) for c in self.cells], "who": self.who.tolist()}

    @classmethod
    def restored(cls, obs: np.ndarray, state: dict[str, Any]) -> Episodes:
        return cls(obs, np.asarray(state["ret"], dtype=np.float64), np.asarray(state["intrinsic"], dtype=np.float64),
                   np.asarray(state["length"], dtype=np.int64), [set(c) for c in state["cells"]],
                   np.asarray(state["who"], dtype=np.int64))

    def restart(self, ended: np.ndarray) -> None:
        """Zero the sums of the copies whose episode ``ended`` (their coverage restarts elsewhere)."""
        self.ret[ended] = 0.0
        self.intrinsic[ended] = 0.0
        self.length[ended] = 0
        self.who[ended] = 0


@dataclass
class RunRecord:
    """The loop's own bookkeeping: counters, random generators, recent returns, coverage, the
    learner statistics since the last train.csv row and π_p's zero-shot evaluations."""

    counters: Counters
    rng: np.random.Generator
    clock: Callable[[], float]  # wall seconds of the run so far (resumes included)
    recent_returns: list[float] = field(default_factory=list)
    visited: set[int] = field(default_factory=set)
    losses: list[torch.Tensor] = field(default_factory=list)
    qs: list[torch.Tensor] = field(default_factory=list)
    reference_evals: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {"counters": asdict(self.counters) | {"elapsed_s": self.clock()},
                "rng": {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state()},
                "recent_returns": list(self.recent_returns), "visited": sorted(self.visited),
                "train_window": {"losses": [float(x) for x in self.losses], "qs": [float(x) for x in self.qs]},
                "reference_evals": list(self.reference_evals)}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.counters = Counters(**state["counters"])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        torch.set_rng_state(state["rng"]["torch"])
        self.recent_returns = list(state.get("recent_returns", []))
        self.visited = set(state.get("visited", []))
        window = state.get("train_window") or {"losses": [], "qs": []}
        self.losses = [torch.tensor(x, device=device) for x in window["losses"]]
        self.qs = [torch.tensor(x, device=device) for x in window["qs"]]
        self.reference_evals = list(state.get("reference_evals", []))


def split_episodes(state: Any) -> tuple[Any, Any]:
    """Format 1's convention, for reading old checkpoints only: a part's episode state sat under
    "episodes" keys at any depth of its state. Returns (the state without them, the episode
    parts at the same paths; None where there were none)."""
    if not isinstance(state, dict):
        return state, None
    kept, episodes = {}, {}
    for key, value in state.items():
        if key == "episodes":
            continue
        kept[key], inner = split_episodes(value)
        if inner is not None:
            episodes[key] = inner
    if "episodes" in state:
        own = state["episodes"]
        episodes = own if not episodes else {**episodes, **own}
    return kept, (episodes or None)


def upgrade_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint in the current layout (format 1 is moved into it; format 2 is returned as is)."""
    if state.get("format", 1) >= CHECKPOINT_FORMAT:
        return state
    state = dict(state)
    state["record"] = {k: state.pop(k) for k in RECORD_KEYS if k in state}
    parts = {}
    for name in ("behaviour", "intrinsic"):
        if state.get(name) is not None:
            state[name], episode = split_episodes(state[name])
            if episode is not None:
                parts[name] = episode
    if state.get("episodes") is not None:
        state["episodes"] = {**state["episodes"], "parts": parts}
    state["format"] = CHECKPOINT_FORMAT
    return state
