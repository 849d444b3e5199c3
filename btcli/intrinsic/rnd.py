"""Random Network Distillation (Burda et al. 2019).

A frozen random target net g and a trained predictor ĝ; the intrinsic reward of x is
‖ĝ(x̃) − g(x̃)‖², x̃ being the observation normalised by a running per-feature mean/std and
clipped to ±5. For Atari frame stacks only the newest frame enters (as in the paper).

Reward scaling: the paper divides by a running std of the *discounted intrinsic return*;
this module divides by the running std of the intrinsic *rewards* themselves (no mean
subtracted), which needs no per-environment return bookkeeping and also suits rewards
recomputed on replay batches.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from btcli.intrinsic.nets import CONV_OUT, input_shape, mlp, orthogonal_init, prepare, resolve_kind, small_cnn
from btcli.intrinsic.running import RunningMeanStd

R = TypeVar("R", np.ndarray, torch.Tensor)


class RND:
    """Target/predictor pair with observation and reward statistics.

    The caller seeds the observation statistics (``update_obs_stats``, e.g. on a random
    policy's first steps, as the paper does) before rewards are meaningful; ``reward`` and
    ``loss`` never update a statistic.
    """

    def __init__(self, obs_shape: tuple[int, ...], feature_dim: int = 128, kind: str = "auto", *,
                 hidden: int = 256, obs_clip: float = 5.0, eps: float = 1e-8,
                 device: torch.device | str = "cpu"):
        self.kind = resolve_kind(tuple(obs_shape), kind)
        self.obs_clip, self.eps, self.device = obs_clip, eps, torch.device(device)
        act = nn.LeakyReLU
        if self.kind == "cnn":
            # The predictor is deeper than the target, as in the paper.
            self.target = nn.Sequential(small_cnn(act), nn.Linear(CONV_OUT, feature_dim))
            self.predictor = nn.Sequential(small_cnn(act), mlp([CONV_OUT, hidden, hidden, feature_dim], nn.ReLU))
        else:
            n_in = input_shape(tuple(obs_shape), "mlp")[0]
            self.target = mlp([n_in, hidden, hidden, feature_dim], act)
            self.predictor = mlp([n_in, hidden, hidden, hidden, feature_dim], act)
        orthogonal_init(self.target)
        orthogonal_init(self.predictor)
        self.target.requires_grad_(False)
        self.target.to(self.device)
        self.predictor.to(self.device)
        self.obs_rms = RunningMeanStd(input_shape(tuple(obs_shape), self.kind))
        self.reward_rms = RunningMeanStd(())
        self._obs_norm: tuple[torch.Tensor, torch.Tensor] | None = None  # (mean, std) as float32 on device

    def parameters(self) -> list[nn.Parameter]:
        """The predictor's parameters: the only ones to optimise."""
        return list(self.predictor.parameters())

    def update_obs_stats(self, obs: np.ndarray | torch.Tensor) -> None:
        self.obs_rms.update(prepare(obs, self.kind, "cpu"))
        self._obs_norm = None

    def normalise_obs(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(x − mean) / sqrt(var + eps), clipped to ±obs_clip; float32 on the RND's device."""
        if self._obs_norm is None:
            mean = torch.as_tensor(self.obs_rms.mean, dtype=torch.float32, device=self.device)
            std = torch.as_tensor(np.sqrt(self.obs_rms.var + self.eps), dtype=torch.float32, device=self.device)
            self._obs_norm = (mean, std)
        mean, std = self._obs_norm
        x = prepare(obs, self.kind, self.device)
        return ((x - mean) / std).clamp_(-self.obs_clip, self.obs_clip)

    def reward(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Unscaled prediction error ‖ĝ(x̃) − g(x̃)‖² per sample, [B]."""
        with torch.no_grad():
            x = self.normalise_obs(obs)
            return (self.predictor(x) - self.target(x)).square().sum(dim=1)

    def loss(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Predictor MSE against the frozen target (mean over batch and features)."""
        x = self.normalise_obs(obs)
        with torch.no_grad():
            target = self.target(x)
        return F.mse_loss(self.predictor(x), target)

    def normalise_reward(self, r: R, update: bool = True) -> R:
        """r / running std of the rewards (updated with ``r`` first when ``update``).

        Left unscaled while fewer than two rewards have been seen (the std is undefined).
        """
        if update:
            self.reward_rms.update(r)
        if self.reward_rms.count < 2:
            return r
        return r / float(np.sqrt(self.reward_rms.var + self.eps))

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target.state_dict(), "predictor": self.predictor.state_dict(),
                "obs_rms": self.obs_rms.state_dict(), "reward_rms": self.reward_rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state["target"])
        self.predictor.load_state_dict(state["predictor"])
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.reward_rms.load_state_dict(state["reward_rms"])
        self._obs_norm = None
