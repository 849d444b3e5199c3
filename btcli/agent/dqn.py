"""The DQN learner: double Q-learning targets, n-step returns, Huber loss, Adam, target network.

The learner owns the math and nothing else: it never touches the environment or the disk.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn


def td_targets(returns: torch.Tensor, discounts: torch.Tensor, next_q_target: torch.Tensor,
               next_q_online: torch.Tensor | None) -> torch.Tensor:
    """n-step targets G + γ^m·Q_target(s', a*), a* = argmax of the online net (double) or target net."""
    selector = next_q_online if next_q_online is not None else next_q_target
    best = selector.argmax(dim=1, keepdim=True)
    return returns + discounts * next_q_target.gather(1, best).squeeze(1)


class DQNLearner:
    """Online and target Q-networks with their optimizer."""

    def __init__(self, online: nn.Module, *, lr: float, adam_eps: float, double: bool = True,
                 max_grad_norm: float = 10.0, precision: str = "fp32", device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.online = online.to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        # fused Adam runs one kernel over all parameters; the default per-tensor loop costs ~3 ms/update on a CPU
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=lr, eps=adam_eps, fused=True)
        self.double = double
        self.max_grad_norm = max_grad_norm
        self.precision = precision
        self.updates = 0

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    @torch.inference_mode()
    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values of the online network for a batch of observations (no gradient)."""
        return self.online(obs).float()

    def update(self, obs: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor,
               discounts: torch.Tensor, next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient step on a batch; returns (loss, mean Q of the taken actions) as 0-d tensors."""
        with torch.no_grad(), self._autocast():
            next_q_target = self.target(next_obs).float()
            next_q_online = self.online(next_obs).float() if self.double else None
            target = td_targets(returns, discounts, next_q_target, next_q_online)
        with self._autocast():
            q = self.online(obs).float().gather(1, actions.unsqueeze(1)).squeeze(1)
        loss = F.smooth_l1_loss(q, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.online.parameters(), self.max_grad_norm, foreach=True)
        self.optimizer.step()
        self.updates += 1
        return loss.detach(), q.detach().mean()

    def sync_target(self) -> None:
        """Copy the online weights into the target network."""
        self.target.load_state_dict(self.online.state_dict())

    def state_dict(self) -> dict:
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
