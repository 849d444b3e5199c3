"""NGU episodic novelty (Badia et al. 2020): k-NN kernel over a per-episode embedding memory,
an inverse-dynamics embedding, and RND's life-long modulation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from btcli.intrinsic.nets import CONV_OUT, input_shape, mlp, prepare, resolve_kind, small_cnn
from btcli.intrinsic.running import RunningMean

T = TypeVar("T", float, np.ndarray, torch.Tensor)


def _kernel_rewards(dist2: np.ndarray, running_mean_d2: float, eps: float, xi: float, c: float,
                    s_max: float) -> np.ndarray:
    """The kernel reward per row of ``dist2`` [N, k]; ``inf`` marks a missing neighbour (K = 0)."""
    with np.errstate(over="ignore", invalid="ignore"):
        d_n = dist2 / max(running_mean_d2, np.finfo(np.float64).tiny)
        d_n = np.maximum(d_n - xi, 0.0)
        kernel = eps / (d_n + eps)
    s = np.sqrt(kernel.sum(axis=1)) + c
    return np.where(s > s_max, 0.0, 1.0 / s)


def episodic_kernel_reward(dist2: np.ndarray | torch.Tensor, running_mean_d2: float, k: int = 10,
                           eps: float = 1e-4, xi: float = 8e-3, c: float = 1e-3, s_max: float = 8.0) -> float:
    """NGU's episodic reward from squared distances to neighbours in the memory.

    d_n = d² / running_mean(d²); d_n = max(d_n − ξ, 0); K = ε / (d_n + ε);
    s = sqrt(ΣK) + c; r = 0 if s > s_max else 1/s.
    Only the k smallest of ``dist2`` count; fewer than k count as they are, and none gives
    ΣK = 0, so r = 1/c. A running mean of 0 (all distances 0) makes every d_n 0.
    Note s ≤ sqrt(k) + c, so with k = 10 the s_max = 8 cut-off never fires.
    """
    if isinstance(dist2, torch.Tensor):
        dist2 = dist2.detach().cpu().numpy()
    d2 = np.sort(np.asarray(dist2, dtype=np.float64).reshape(-1))[:k]
    return float(_kernel_rewards(d2[None], running_mean_d2, eps, xi, c, s_max)[0])


class EpisodicMemory:
    """One embedding memory per environment copy, emptied by ``reset`` at each episode start.

    ``add_and_reward`` scores each embedding against the memory as it was *before* adding it
    (NGU's M holds f(x_0..x_{t-1}) when r_t is computed): a state never counts as its own
    neighbour, and the first call after a reset sees an empty memory and returns 1/c (1000
    with the defaults). A loop that rewards transitions with the novelty of x_{t+1} should
    therefore add f(x_0) right after the reset and discard that reward.

    ``add`` stores embeddings of some copies without scoring them (no reward, running mean
    untouched): that is how a loop seeds a just-reset copy with f(x_0).

    The running mean of squared k-NN distances is updated with every neighbour distance of
    the whole batch first, then used to normalise (NGU's order: update, then normalise).
    A full memory overwrites its oldest entry. ``state_dict`` holds that running mean;
    ``episode_state_dict`` the memories of the episodes in progress (loading None empties them).

    The memories live in host memory as float32 numpy arrays whatever device the embedding
    net runs on: the loop needs the rewards on the host every step anyway, and small numpy
    operations cost microseconds where each torch call costs several.

    Neighbour search is two-stage so that long (Atari) episodes stay cheap: candidates are
    ranked by ‖m‖² − 2 q·m (one batched matrix-vector product against cached squared norms),
    then the 2k best candidates' squared distances are recomputed exactly as Σ(m − q)². The
    exact recomputation keeps the ξ clustering of (near-)identical embeddings intact (the
    expanded form's rounding near 0 would blur it); ranking by the expanded form can only
    misplace neighbours whose distances agree to float32 rounding, and the 2k margin makes
    even that matter only when more than k such near-ties straddle the k-th place (timings:
    experiments/RESULTS.md).
    """

    _TORCH_SELECT = 2_000  # above this many entries torch's topk beats numpy's argpartition

    def __init__(self, num_envs: int, dim: int, *, capacity: int = 30_000, k: int = 10, eps: float = 1e-4,
                 xi: float = 8e-3, c: float = 1e-3, s_max: float = 8.0):
        self.num_envs, self.dim, self.capacity, self.k = num_envs, dim, capacity, k
        self.eps, self.xi, self.c, self.s_max = eps, xi, c, s_max
        self.memory = np.zeros((num_envs, capacity, dim), dtype=np.float32)
        self.sqnorms = np.zeros((num_envs, capacity), dtype=np.float32)  # ‖m‖² of each slot
        self.sizes = np.zeros(num_envs, dtype=np.int64)  # entries held per env
        self.heads = np.zeros(num_envs, dtype=np.int64)  # next slot to write per env
        self.d2_mean = RunningMean()
        self._rows = np.arange(num_envs)[:, None]

    def reset(self, env_indices: Sequence[int] | np.ndarray | None = None) -> None:
        """Empty the memories of ``env_indices`` (indices or a bool mask; None: all)."""
        idx: slice | np.ndarray = slice(None)
        if env_indices is not None:
            idx = np.asarray(env_indices)
            idx = idx if idx.dtype == bool else idx.astype(np.int64)
        self.sizes[idx] = 0
        self.heads[idx] = 0

    def knn_dist2(self, embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
        """Squared distances [num_envs, k] to each env's k nearest stored embeddings, ascending,
        ``inf`` where the memory holds fewer than k."""
        q = self._as_array(embeddings, self.num_envs)
        out = np.full((self.num_envs, self.k), np.inf)
        held = int(self.sizes.max())
        if held == 0:
            return out
        mem = self.memory[:, :held]
        # stage 1: rank by ‖m‖² − 2 q·m (‖q‖² is the same for a whole row); empty slots last
        scores = self.sqnorms[:, :held] - 2.0 * np.matmul(mem, q[:, :, None])[:, :, 0]
        scores[np.arange(held)[None] >= self.sizes[:, None]] = np.inf
        n_cand = min(2 * self.k, held)
        if n_cand == held:
            idx = np.broadcast_to(np.arange(held), (self.num_envs, held))
        elif held > self._TORCH_SELECT:
            idx = torch.from_numpy(scores).topk(n_cand, dim=1, largest=False).indices.numpy()
        else:
            idx = np.argpartition(scores, n_cand - 1, axis=1)[:, :n_cand]
        # stage 2: exact squared distances of the candidates (empty slots stay inf)
        diff = mem[self._rows, idx] - q[:, None]
        d2 = np.einsum("ecd,ecd->ec", diff, diff)
        d2[np.isinf(np.take_along_axis(scores, idx, axis=1))] = np.inf
        d2.sort(axis=1)
        kk = min(self.k, held)
        out[:, :kk] = d2[:, :kk]
        return out

    def add_and_reward(self, embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
        """Episodic rewards [num_envs] (float64) of ``embeddings`` [num_envs, dim], then store them."""
        q = self._as_array(embeddings, self.num_envs)
        d2 = self.knn_dist2(q)
        self.d2_mean.update(d2[np.isfinite(d2)])
        rewards = _kernel_rewards(d2, self.d2_mean.mean, self.eps, self.xi, self.c, self.s_max)
        self._store(np.arange(self.num_envs), q)
        return rewards

    def add(self, embeddings: np.ndarray | torch.Tensor, env_indices: Sequence[int] | np.ndarray) -> None:
        """Store ``embeddings`` [len(env_indices), dim] in those copies' memories without scoring them."""
        idx = np.asarray(env_indices)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64).reshape(-1)
        self._store(idx, self._as_array(embeddings, idx.size))

    def _store(self, idx: np.ndarray, q: np.ndarray) -> None:
        slots = self.heads[idx]
        self.memory[idx, slots] = q
        self.sqnorms[idx, slots] = np.einsum("ed,ed->e", q, q)
        self.heads[idx] = (slots + 1) % self.capacity
        self.sizes[idx] = np.minimum(self.sizes[idx] + 1, self.capacity)

    def _as_array(self, embeddings: np.ndarray | torch.Tensor, rows: int) -> np.ndarray:
        if isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.detach().cpu().numpy()
        q = np.asarray(embeddings, dtype=np.float32)
        if q.shape != (rows, self.dim):
            raise ValueError(f"embeddings of shape {q.shape}, expected {(rows, self.dim)}")
        return q

    def state_dict(self) -> dict[str, Any]:
        """The running mean of d² (the memories themselves are the episodes': :meth:`episode_state_dict`)."""
        return {"d2_mean": self.d2_mean.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load the running mean of d² and empty every memory (:meth:`load_episode_state_dict` fills them)."""
        self.d2_mean.load_state_dict(state["d2_mean"])
        self.reset()

    def episode_state_dict(self) -> dict[str, Any]:
        """Each copy's memory of the episode in progress: the written slots, sizes and heads."""
        held = int(self.sizes.max())  # slots past every copy's size were never written
        return {"memory": self.memory[:, :held].copy(), "sqnorms": self.sqnorms[:, :held].copy(),
                "sizes": self.sizes.copy(), "heads": self.heads.copy()}

    def load_episode_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue the saved episodes' memories; None empties them (the episodes restart)."""
        self.reset()
        if state is not None:
            held = state["memory"].shape[1]
            self.memory[:, :held], self.sqnorms[:, :held] = state["memory"], state["sqnorms"]
            self.sizes[:], self.heads[:] = state["sizes"], state["heads"]


class InverseDynamics(nn.Module):
    """Embedding f trained to predict a_t from [f(x_t), f(x_{t+1})] (NGU's controllable state).

    Frame stacks enter as their newest frame scaled to [0, 1]; other observations flattened.
    """

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, embed_dim: int = 32, *,
                 kind: str = "auto", hidden: int = 128):
        super().__init__()
        self.kind = resolve_kind(tuple(obs_shape), kind)
        if self.kind == "cnn":
            self.encoder = nn.Sequential(small_cnn(nn.ReLU), nn.Linear(CONV_OUT, embed_dim))
        else:
            self.encoder = mlp([input_shape(tuple(obs_shape), "mlp")[0], hidden, embed_dim], nn.ReLU)
        self.classifier = mlp([2 * embed_dim, hidden, num_actions], nn.ReLU)

    def _features(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        device = next(self.parameters()).device
        x = prepare(obs, self.kind, device)
        return self.encoder(x / 255.0 if self.kind == "cnn" else x)

    def embed(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """f(x) [B, embed_dim], without gradient (for the episodic memory)."""
        with torch.no_grad():
            return self._features(obs)

    def loss(self, obs: np.ndarray | torch.Tensor, next_obs: np.ndarray | torch.Tensor,
             actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Cross-entropy of a_t given [f(x_t), f(x_{t+1})], mean over the batch."""
        logits = self.classifier(torch.cat([self._features(obs), self._features(next_obs)], dim=1))
        return F.cross_entropy(logits, torch.as_tensor(actions, device=logits.device).long())


def lifelong_modulation(rnd_error: T, mean: float, std: float, L: float = 5.0) -> T:
    """NGU's multiplier min(max(α, 1), L) with α = 1 + (err − μ) / σ (σ floored at 1e-8)."""
    alpha = 1.0 + (rnd_error - float(mean)) / max(float(std), 1e-8)
    if isinstance(alpha, torch.Tensor):
        return alpha.clamp(1.0, L)
    if isinstance(alpha, np.ndarray):
        return np.clip(alpha, 1.0, L)
    return min(max(float(alpha), 1.0), L)
