"""What reward the learner sees during reward-free pre-training, one class per objective.

A source turns one vector step into the learner's rewards (the extrinsic reward is never
among its inputs) and, where the objective has a trained part, learns from replay batches.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from btcli.envs.base import Step
from btcli.errors import BtcliError
from btcli.intrinsic.counts import CountBonus
from btcli.intrinsic.rnd import RND

OBJECTIVES = ("count", "rnd")


class IntrinsicSource(Protocol):
    def rewards(self, obs: np.ndarray, actions: np.ndarray, step: Step) -> np.ndarray:
        """float32 [num_envs] rewards of the transitions ``obs --actions--> step`` (never step.reward)."""
        ...

    def learn(self, batch: tuple[torch.Tensor, ...]) -> None:
        """Train on a replay batch (obs, actions, n-step returns, discounts, next_obs); next_obs is
        n steps ahead. No-op for objectives without a trained part."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def next_observations(step: Step) -> np.ndarray:
    """The observation each transition led to: the final one where an episode ended."""
    ended = step.terminated | step.truncated
    if not ended.any():
        return step.obs
    nxt = step.obs.copy()
    nxt[ended] = step.final_obs[ended]
    return nxt


class CountSource:
    """1/sqrt(N(cell)) on the agent's grid cell after the action (life-long counts)."""

    def __init__(self) -> None:
        self.counts = CountBonus()

    def rewards(self, obs: np.ndarray, actions: np.ndarray, step: Step) -> np.ndarray:
        return self.counts.reward(step.probes["cell"]).astype(np.float32)

    def learn(self, batch: tuple[torch.Tensor, ...]) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return self.counts.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts.load_state_dict(state)


class RNDSource:
    """Random network distillation: prediction error on the next observation, scaled by its std."""

    def __init__(self, obs_shape: tuple[int, ...], *, lr: float, feature_dim: int, device: torch.device):
        self.rnd = RND(obs_shape, feature_dim=feature_dim, device=device)
        self.optimizer = torch.optim.Adam(self.rnd.parameters(), lr=lr)

    def rewards(self, obs: np.ndarray, actions: np.ndarray, step: Step) -> np.ndarray:
        nxt = next_observations(step)
        self.rnd.update_obs_stats(nxt)
        raw = self.rnd.reward(nxt).cpu().numpy()
        return np.asarray(self.rnd.normalise_reward(raw), dtype=np.float32)

    def learn(self, batch: tuple[torch.Tensor, ...]) -> None:
        loss = self.rnd.loss(batch[4])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"rnd": self.rnd.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rnd.load_state_dict(state["rnd"])
        self.optimizer.load_state_dict(state["optimizer"])


def make_source(objective: str, env, *, lr: float, feature_dim: int, device: torch.device) -> IntrinsicSource:
    """The reward source of an objective, checked against what the environment can provide."""
    if objective == "count":
        probes = env.last_probes()
        if "cell" not in probes:
            raise BtcliError(f"objective 'count' needs discrete grid cells, which {env.env_id} does not expose; "
                             "use a MiniGrid task or --objective rnd")
        return CountSource()
    if objective == "rnd":
        return RNDSource(tuple(env.obs_shape), lr=lr, feature_dim=feature_dim, device=device)
    raise BtcliError(f"unknown objective '{objective}'; available now: {', '.join(OBJECTIVES)}")
