"""Random network distillation (Burda et al. 2019), ``--objective rnd``.

Reward: the prediction error ||ĝ(x) − g(x)||² of a trained predictor ĝ against a frozen random
network g on the next observation x, observations normalised by their running mean/std and
clipped to ±5 (btcli/intrinsic/rnd.py), divided by the running std of the raw rewards (our
choice: RND's paper scales by the std of the intrinsic return). The predictor learns on the
replay batch's next observations at every learner update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from btcli.envs.base import _f
from btcli.intrinsic.registry import NoEpisodeState, SourceSpec, objective, options


@options("rnd")
@dataclass
class RNDOptions:
    lr: float = _f(1e-4, "Adam learning rate of the RND predictor (rnd, ngu+rnd)")
    feature_dim: int = _f(128, "output size of the RND target and predictor networks (rnd, ngu+rnd)")

    def validate(self) -> None:
        if self.lr <= 0 or self.feature_dim < 1:
            raise ValueError("intrinsic.rnd.lr must be positive and intrinsic.rnd.feature_dim at least 1")


def next_observations(step) -> np.ndarray:
    """The observation each transition led to: the final one where an episode ended."""
    ended = step.terminated | step.truncated
    if not ended.any():
        return step.obs
    nxt = step.obs.copy()
    nxt[ended] = step.final_obs[ended]
    return nxt


class RNDSource(NoEpisodeState):
    """Random network distillation: prediction error on the next observation, scaled by its std."""

    def __init__(self, obs_shape: tuple[int, ...], *, lr: float, feature_dim: int, device):
        import torch

        from btcli.intrinsic.rnd import RND

        self.rnd = RND(obs_shape, feature_dim=feature_dim, device=device)
        self.optimizer = torch.optim.Adam(self.rnd.parameters(), lr=lr, fused=True)

    def rewards(self, obs: np.ndarray, actions: np.ndarray, step) -> np.ndarray:
        nxt = next_observations(step)
        self.rnd.update_obs_stats(nxt)
        raw = self.rnd.reward(nxt).cpu().numpy()
        return np.asarray(self.rnd.normalise_reward(raw), dtype=np.float32)

    def learn(self, batch) -> None:
        loss = self.rnd.loss(batch.next_obs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"rnd": self.rnd.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rnd.load_state_dict(state["rnd"])
        self.optimizer.load_state_dict(state["optimizer"])



@objective("rnd", sections=("rnd",), help="random network distillation: prediction error on the next observation")
def build(spec: SourceSpec):
    opts = spec.options["rnd"]
    return RNDSource(tuple(spec.env.obs_shape), lr=opts.lr, feature_dim=opts.feature_dim, device=spec.device)
