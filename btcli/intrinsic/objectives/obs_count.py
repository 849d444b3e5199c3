"""Episodic counts of exact observations (``--objective obs-count``): a tabular stand-in for NGU's
episodic novelty in small discrete domains, and the example of adding an objective in one file.

Reward of copy i's transition into x_{t+1}: 1/sqrt(n), n the number of times x_{t+1} (its bytes)
has been seen in copy i's episode so far, itself included; the first observation of an episode
counts once. Each copy's counts are emptied when its episode ends. No trained part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from btcli.envs.base import _f
from btcli.intrinsic.objectives.rnd import next_observations
from btcli.intrinsic.registry import SourceSpec, Untrained, objective, options


@options("obs_count")
@dataclass
class ObsCountOptions:
    scale: float = _f(1.0, "obs-count: the reward is scale / sqrt(n)")

    def validate(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"intrinsic.obs_count.scale must be positive, got {self.scale}")


class ObsCountSource(Untrained):
    """scale / sqrt(n_episode(x_{t+1})) per copy."""

    def __init__(self, num_envs: int, scale: float) -> None:
        self.scale = scale
        self.counts: list[dict[bytes, int]] = [{} for _ in range(num_envs)]

    def rewards(self, obs: np.ndarray, actions: np.ndarray, step) -> np.ndarray:
        nxt = next_observations(step)
        out = np.empty(len(self.counts), dtype=np.float32)
        for i, seen in enumerate(self.counts):
            if not seen:  # the episode's first observation counts once
                seen[obs[i].tobytes()] = 1
            key = nxt[i].tobytes()
            seen[key] = seen.get(key, 0) + 1
            out[i] = self.scale / np.sqrt(seen[key])
        for i in np.flatnonzero(step.terminated | step.truncated):
            self.counts[i] = {}
        return out

    def episode_state_dict(self) -> dict[str, Any]:
        return {"counts": [[[k, n] for k, n in seen.items()] for seen in self.counts]}

    def load_episode_state_dict(self, state: dict[str, Any] | None) -> None:
        n = len(self.counts)
        self.counts = [{} for _ in range(n)] if state is None else [{bytes(k): int(c) for k, c in pairs}
                                                                      for pairs in state["counts"]]


@objective("obs-count", sections=("obs_count",), help="episodic counts of exact observations: scale/sqrt(n)")
def build(spec: SourceSpec):
    return ObsCountSource(int(spec.env.num_envs), spec.options["obs_count"].scale)
