"""The DQN learner: double Q-learning targets, n-step returns, Huber loss, Adam, target network.

The learner owns the math and nothing else: it never touches the environment or the disk.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from btcli.agent.replay import TensorBatch


def td_targets(returns: torch.Tensor, discounts: torch.Tensor, next_q_target: torch.Tensor,
               next_q_online: torch.Tensor | None) -> torch.Tensor:
    """n-step targets G + γ^m·Q_target(s', a*), a* = argmax of the online net (double) or target net."""
    selector = next_q_online if next_q_online is not None else next_q_target
    best = selector.argmax(dim=1, keepdim=True)
    return returns + discounts * next_q_target.gather(1, best).squeeze(1)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients so their global L2 norm is at most ``max_norm``; returns the norm before.

    The same arithmetic as ``nn.utils.clip_grad_norm_``, which always multiplies by the clamped
    coefficient so a GPU never waits on a comparison. On a CPU the comparison is free, and
    skipping the multiply by exactly 1 (most updates) saves a pass over every gradient.
    """
    grads = [p.grad for p in params if p.grad is not None]
    norm = nn.utils.get_total_norm(grads, foreach=True)
    if grads and (norm.device.type != "cpu" or bool(max_norm / (norm + 1e-6) < 1.0)):
        nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
    return norm


def large_margin_loss(q: torch.Tensor, demo: torch.Tensor, margin: float) -> torch.Tensor:
    """DQfD's supervised loss (Hester et al. 2018), per row: max_a [Q(s,a) + m·1(a ≠ a_d)] − Q(s, a_d).

    Zero once the demonstrated action a_d leads every other action by at least the margin m;
    otherwise it raises Q(s, a_d) and lowers the best rival. ``q: [B, A]``, ``demo: [B]``.
    """
    bonus = torch.full_like(q, margin)
    bonus.scatter_(1, demo.unsqueeze(1), 0.0)
    return (q + bonus).max(dim=1).values - q.gather(1, demo.unsqueeze(1)).squeeze(1)


# eager updates before a CUDA graph is captured: capture needs autograd's and the optimizer's lazy state
GRAPH_WARMUP_UPDATES = 3


class DQNLearner:
    """Online and target Q-networks with their optimizer.

    With ``cuda_graph`` (CUDA only) the whole update (forwards, backward, clipping, Adam) is
    captured once as a CUDA graph and replayed: the same kernels on the same math, without
    launching ~150 kernels from Python per update, which is what bounds a small DQN on a GPU.
    """

    def __init__(self, online: nn.Module, *, lr: float, adam_eps: float, double: bool = True,
                 max_grad_norm: float = 10.0, precision: str = "fp32", device: torch.device | str = "cpu",
                 cuda_graph: bool = False, demo_margin: float | None = None):
        self.device = torch.device(device)
        self.online = online.to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.cuda_graph = cuda_graph and self.device.type == "cuda"
        # fused Adam runs one kernel over all parameters; the default per-tensor loop costs ~3 ms/update on a CPU.
        # capturable keeps Adam's step count on the GPU, so a graph replay advances it
        self._params = list(self.online.parameters())
        self.optimizer = torch.optim.Adam(self._params, lr=lr, eps=adam_eps, fused=True,
                                          capturable=self.cuda_graph)
        self.double = double
        self.max_grad_norm = max_grad_norm
        self.precision = precision
        # with a margin, every update takes demonstrated actions and a weight for large_margin_loss
        self.demo_margin = demo_margin
        self.updates = 0
        self._warmup_left = GRAPH_WARMUP_UPDATES  # eager updates still to run in this process before capture
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_inputs: list[torch.Tensor] = []
        self._graph_outputs: tuple[torch.Tensor, torch.Tensor] | None = None

    def _autocast(self):
        if self.precision == "bf16":
            # no cast cache: cached bf16 weights would outlive a captured graph's replays
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.cuda_graph)
        return nullcontext()

    @torch.inference_mode()
    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values of the online network for a batch of observations (no gradient)."""
        return self.online(obs).float()

    def update(self, batch: TensorBatch, demo: torch.Tensor | None = None,
               demo_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient step on a replay batch; returns (TD loss, mean Q of the taken actions) as 0-d tensors.

        A learner built with ``demo_margin`` also needs ``demo`` (an action per row) and
        ``demo_weight`` (a 0-d tensor w): the loss is TD + w · mean large_margin_loss.
        """
        batch = batch.fields()
        if self.demo_margin is not None:
            if demo is None or demo_weight is None:
                raise ValueError("this learner has a demo margin: every update needs demo and demo_weight")
            batch += (demo, demo_weight)
        self.updates += 1
        if not self.cuda_graph:
            return self._step(*batch)
        if self._graph is None and self._warmup_left > 0:
            self._warmup_left -= 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self._step(*batch)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self._graph is None:
            self._capture(batch)
        else:
            for static, value in zip(self._graph_inputs, batch):
                static.copy_(value, non_blocking=True)
        self._graph.replay()
        loss, q = self._graph_outputs
        return loss.clone(), q.clone()  # the graph overwrites its outputs at the next replay

    def _capture(self, batch: tuple[torch.Tensor, ...]) -> None:
        """Record one update on static input tensors (recording runs nothing; replay does)."""
        self._graph_inputs = [x.clone() for x in batch]
        self.optimizer.zero_grad(set_to_none=True)  # the graph allocates the gradients in its own pool
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._graph_outputs = self._step(*self._graph_inputs)

    def _step(self, obs: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor,
              discounts: torch.Tensor, next_obs: torch.Tensor, demo: torch.Tensor | None = None,
              demo_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # the parameter-free input transform (frames to floats, grids to cell codes) is shared by
        # the target and the online network's forwards of next_obs; grids encode obs with it
        together = self.online.torso.encode_together
        if together:
            x, next_x = self.online.encode(torch.cat((obs, next_obs))).split(len(obs))
        else:
            next_x = self.online.encode(next_obs)
        with torch.no_grad(), self._autocast():
            next_q_target = self.target.q_from_encoded(next_x).float()
            next_q_online = self.online.q_from_encoded(next_x).float() if self.double else None
            target = td_targets(returns, discounts, next_q_target, next_q_online)
        del next_x
        if not together:
            x = self.online.encode(obs)
        with self._autocast():
            q_all = self.online.q_from_encoded(x).float()
        q = q_all.gather(1, actions.unsqueeze(1)).squeeze(1)
        td_loss = F.smooth_l1_loss(q, target)
        loss = td_loss
        if demo is not None:
            loss = td_loss + demo_weight * large_margin_loss(q_all, demo, self.demo_margin).mean()
        for p in self._params:  # what zero_grad(set_to_none=True) does, without its ~0.1 ms of profiler hooks
            p.grad = None
        loss.backward()
        if self.max_grad_norm > 0:
            clip_grad_norm(self._params, self.max_grad_norm)
        self.optimizer.step()
        return td_loss.detach(), q.detach().mean()

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
        self.optimizer.load_state_dict(state["optimizer"])  # new state tensors: a captured graph is stale
        for group in self.optimizer.param_groups:  # the saved groups say how the saving run stepped, not this one
            group["capturable"] = self.cuda_graph
        self._graph, self._graph_inputs, self._graph_outputs = None, [], None
        self.updates = int(state["updates"])
