"""NGU's episodic novelty (Badia et al. 2020): ``--objective ngu``, and ``ngu+rnd`` with RND's
life-long modulation.

Episodic reward (btcli/intrinsic/episodic.py): with the k nearest neighbours' squared distances
d² of the embedding f(x_{t+1}) in the episode's memory, d_n = d² / running_mean(d²),
d_n = max(d_n − ξ, 0), K = ε / (d_n + ε), s = sqrt(ΣK) + c, r = 0 if s > s_max else 1/s
(k = 10, ε = 1e-4, ξ = 8e-3, c = 1e-3, s_max = 8). With RND: r · min(max(α, 1), L), L = 5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from btcli.envs.base import Step, _f
from btcli.intrinsic.objectives.rnd import next_observations
from btcli.intrinsic.registry import SourceSpec, objective, options

if TYPE_CHECKING:
    import torch


@options("ngu")
@dataclass
class NGUOptions:
    embed_dim: int = _f(32, "ngu: size of the inverse-dynamics embedding f")
    idm_lr: float = _f(5e-4, "ngu: Adam learning rate of the inverse-dynamics model")
    k: int = _f(10, "ngu: nearest neighbours in the episodic kernel")
    memory: int = _f(30_000, "ngu: episodic memory capacity per environment copy")
    train_every: int = _f(8, "ngu: train f (and RND) on every n-th learner update")
    normalise: bool = _f(True, "ngu: divide rewards by their running std (our choice; NGU's R2D2 rescales values instead)")

    def validate(self) -> None:
        if min(self.embed_dim, self.k, self.memory, self.train_every) < 1 or self.idm_lr <= 0:
            raise ValueError("intrinsic.ngu.embed_dim, k, memory and train_every must be at least 1 and "
                             "intrinsic.ngu.idm_lr positive")


class TransitionRing:
    """The most recent 1-step transitions (x_t, a_t, x_{t+1}), for the inverse-dynamics model.

    Observations are stored as the model sees them: the newest frame of an Atari stack
    ([1, 84, 84] uint8), a MiniGrid grid as it is. Sampling draws uniformly with torch's global
    generator (seeded by the run and saved in its checkpoints). Checkpointed with the replay
    (``save_replay``); otherwise a resumed run refills it within ``capacity / num_envs``
    vector steps.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], dtype: np.dtype):
        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_shape), dtype=dtype)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.size = 0
        self.head = 0

    def add(self, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray) -> None:
        idx = (self.head + np.arange(len(obs))) % self.capacity
        self.obs[idx], self.next_obs[idx], self.actions[idx] = obs, next_obs, actions
        self.head = int((self.head + len(obs)) % self.capacity)
        self.size = min(self.size + len(obs), self.capacity)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        idx = torch.randint(self.size, (n,)).numpy()
        return self.obs[idx], self.actions[idx], self.next_obs[idx]

    def state_dict(self) -> dict[str, Any]:
        held = slice(0, self.size)  # filled from slot 0 on, so the first ``size`` slots are all it holds
        return {"obs": self.obs[held].copy(), "next_obs": self.next_obs[held].copy(),
                "actions": self.actions[held].copy(), "head": self.head}

    @classmethod
    def restored(cls, capacity: int, state: dict[str, Any]) -> TransitionRing:
        ring = cls(capacity, state["obs"].shape[1:], state["obs"].dtype)
        ring.size = len(state["obs"])
        ring.obs[:ring.size], ring.next_obs[:ring.size] = state["obs"], state["next_obs"]
        ring.actions[:ring.size] = state["actions"]
        ring.head = int(state["head"])
        return ring


class NGUSource:
    """NGU's episodic novelty (Badia et al. 2020), optionally modulated by RND (``lifelong``).

    Rewards. Copy i's transition x_t --a_t--> x_{t+1} earns the episodic novelty of f(x_{t+1})
    against copy i's memory of f(x_0..x_t) (k-NN kernel, ``EpisodicMemory``), x_{t+1} being
    the true last observation (``final_obs``) where the episode ended. Then an ended copy's
    memory is emptied and seeded with f(x_0) of its new episode (``step.obs``); the first call
    (and the first after episodes restart at a resume) seeds every copy with f(``obs``), the
    loop's current observations. So every scored embedding meets at least one stored neighbour
    and the empty-memory score 1/c = 1000 never reaches the learner. The memories of the episodes
    in progress are the episode state; with ``save_ring`` (the run's ``save_replay``) the
    checkpoint also holds the inverse-dynamics ring, so a resumed MiniGrid run continues exactly.

    With ``lifelong`` (``ngu+rnd``): r = r_episodic · min(max(α, 1), L), α = 1 + (err − μ)/σ,
    err the raw RND prediction error of x_{t+1} and μ, σ the running mean/std of every error
    seen (updated with the step's errors first, then applied). The RND observation normaliser
    is fed x_{t+1} as the rnd objective does; the predictor learns from replay batches' next_obs.

    Scale. The raw rewards lie in (0, 1/c): about 1/sqrt(j) for a state within ξ of j stored
    neighbours, up to ~1/(sqrt(k·ε) + c) for one far from all k. With ``normalise`` (the
    default; our choice, NGU's R2D2 rescales values with h(x) instead) the learner sees
    r / σ_r, σ_r the running std of every raw (modulated) reward so far, updated with the step's
    rewards first (no mean subtracted: rewards stay positive and ordered); unscaled until two
    rewards have been seen. Measured scales and their effect: experiments/RESULTS.md.

    Training. The embedding f learns by inverse dynamics: cross-entropy of a_t given
    [f(x_t), f(x_{t+1})], on a uniform minibatch (of the replay batch's size) of a ring of the
    latest ``idm_buffer`` 1-step transitions (replay batches are n-step, so cannot serve; no
    ring pair straddles a reset). Both trained parts (f, and RND's predictor on the replay
    batch's next_obs) take one Adam step together every ``train_every``-th ``learn`` call: with
    batch 32, train_freq 4 and train_every 8, about one sample per environment step each. One
    backward pass, one fused Adam step over disjoint parameter groups (one learning rate each).
    Until the first step f is its random initialisation; memory entries keep the embedding they
    were computed with, as in NGU.
    """

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, num_envs: int, *, device: torch.device,
                 lifelong: bool = False, rnd_lr: float = 1e-4, rnd_feature_dim: int = 128, embed_dim: int = 32,
                 idm_lr: float = 5e-4, idm_buffer: int = 5_000, k: int = 10, memory_capacity: int = 30_000,
                 max_modulation: float = 5.0, train_every: int = 8, normalise: bool = True,
                 save_ring: bool = False):
        import torch

        from btcli.intrinsic.episodic import EpisodicMemory, InverseDynamics
        from btcli.intrinsic.rnd import RND
        from btcli.intrinsic.running import RunningMeanStd

        if train_every < 1:
            raise ValueError(f"train_every must be >= 1, got {train_every}")
        self.device = torch.device(device)
        self.num_envs = num_envs
        self.lifelong = lifelong
        self.max_modulation = max_modulation
        self.train_every = train_every
        self.normalise = normalise
        self.reward_rms = RunningMeanStd(())  # of the raw (modulated) rewards, for ``normalise``
        self.idm = InverseDynamics(obs_shape, num_actions, embed_dim).to(self.device)
        groups = [{"params": list(self.idm.parameters()), "lr": idm_lr}]
        if lifelong:
            self.rnd = RND(obs_shape, feature_dim=rnd_feature_dim, device=self.device)
            self.error_rms = RunningMeanStd(())
            groups.append({"params": self.rnd.parameters(), "lr": rnd_lr})
        self.optimizer = torch.optim.Adam(groups, fused=True)
        self.memory = EpisodicMemory(num_envs, embed_dim, capacity=memory_capacity, k=k)
        self._ring_shape = (1, *obs_shape[-2:]) if self.idm.kind == "cnn" else tuple(obs_shape)
        self.ring_capacity = idm_buffer
        self.save_ring = save_ring
        self.ring: TransitionRing | None = None  # allocated at the first step (knows the obs dtype)
        self.learn_calls = 0
        self._seeded = False
        self.frozen = False  # a scorer: rewards only, no statistic or ring of the run moves

    def scorer(self, num_envs: int) -> NGUSource:
        """A frozen copy for ``num_envs`` other copies (an evaluation's): its own empty episodic
        memories (with this run's running mean of k-NN distances as they start), this run's
        embedding and RND networks and reward scales, none of which its calls change: they move
        only the copy's own running mean, its :meth:`state_dict`."""
        import copy

        from btcli.intrinsic.episodic import EpisodicMemory

        mem = self.memory
        out = copy.copy(self)
        out.num_envs, out.frozen, out._seeded, out.ring = num_envs, True, False, None
        out.memory = EpisodicMemory(num_envs, mem.dim, capacity=mem.capacity, k=mem.k, eps=mem.eps, xi=mem.xi,
                                    c=mem.c, s_max=mem.s_max)
        out.memory.load_state_dict(mem.state_dict())
        out.reward_rms = copy.deepcopy(self.reward_rms)
        if self.lifelong:
            out.error_rms = copy.deepcopy(self.error_rms)
        return out

    def _ring_view(self, obs: np.ndarray) -> np.ndarray:
        return obs[:, -1:] if self.idm.kind == "cnn" else obs

    def rewards(self, obs: np.ndarray, actions: np.ndarray, step: Step) -> np.ndarray:
        if not self._seeded:  # the loop's reset observations open every copy's first episode
            self.memory.reset()
            self.memory.add(self.idm.embed(obs), np.arange(self.num_envs))
            self._seeded = True
        ended = step.terminated | step.truncated
        nxt = next_observations(step)
        any_ended = bool(ended.any())
        emb = self.idm.embed(np.concatenate([nxt, step.obs[ended]]) if any_ended else nxt)
        r = self.memory.add_and_reward(emb[:self.num_envs])
        if any_ended:
            self.memory.reset(ended)
            self.memory.add(emb[self.num_envs:], ended)
        if not self.frozen:
            if self.ring is None:
                self.ring = TransitionRing(self.ring_capacity, self._ring_shape, obs.dtype)
            self.ring.add(self._ring_view(obs), actions, self._ring_view(nxt))
        if self.lifelong:
            r = r * self.modulation(nxt)
        if self.normalise:
            if not self.frozen:
                self.reward_rms.update(r)
            if self.reward_rms.count >= 2:
                r = r / float(np.sqrt(self.reward_rms.var + 1e-8))
        return r.astype(np.float32)

    def modulation(self, next_obs: np.ndarray) -> np.ndarray:
        """min(max(α, 1), L) per copy, after updating the RND statistics with ``next_obs`` (a
        frozen scorer's are left as they are)."""
        if not self.frozen:
            self.rnd.update_obs_stats(next_obs)
        err = self.rnd.reward(next_obs).double().cpu().numpy()
        if not self.frozen:
            self.error_rms.update(err)
        from btcli.intrinsic.episodic import lifelong_modulation

        return lifelong_modulation(err, self.error_rms.mean, float(self.error_rms.std), self.max_modulation)

    def learn(self, batch) -> None:
        self.learn_calls += 1
        if self.learn_calls % self.train_every:
            return
        size = batch.obs.shape[0]
        loss = None
        if self.ring is not None and self.ring.size >= size:
            obs, actions, nxt = self.ring.sample(size)
            loss = self.idm.loss(obs, nxt, actions)
        if self.lifelong:
            rnd_loss = self.rnd.loss(batch.next_obs)
            loss = rnd_loss if loss is None else loss + rnd_loss
        if loss is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        if self.frozen:  # a scorer: its calls move only its memories' running mean of k-NN distances
            return {"memory": self.memory.state_dict()}
        state: dict[str, Any] = {"idm": self.idm.state_dict(), "optimizer": self.optimizer.state_dict(),
                                 "memory": self.memory.state_dict(), "learn_calls": self.learn_calls,
                                 "reward_rms": self.reward_rms.state_dict()}
        if self.save_ring and self.ring is not None:
            state["ring"] = self.ring.state_dict()
        if self.lifelong:
            state |= {"rnd": self.rnd.state_dict(), "error_rms": self.error_rms.state_dict()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.frozen:
            self.memory.load_state_dict(state["memory"])
            self._seeded = False
            return
        self.idm.load_state_dict(state["idm"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.memory.load_state_dict(state["memory"])  # empty until load_episode_state_dict fills them
        self._seeded = False
        if state.get("ring") is not None:
            self.ring = TransitionRing.restored(self.ring_capacity, state["ring"])
        self.learn_calls = int(state["learn_calls"])
        self.reward_rms.load_state_dict(state["reward_rms"])
        if self.lifelong:
            self.rnd.load_state_dict(state["rnd"])
            self.error_rms.load_state_dict(state["error_rms"])

    def episode_state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.episode_state_dict()}

    def load_episode_state_dict(self, state: dict[str, Any] | None) -> None:
        self.memory.load_episode_state_dict(None if state is None else state["memory"])
        self._seeded = bool(self.memory.sizes.all())  # a seeded copy never holds fewer than one entry


def _build(spec: SourceSpec, lifelong: bool):
    env, ngu, rnd = spec.env, spec.options["ngu"], spec.options.get("rnd")
    extra = {"rnd_lr": rnd.lr, "rnd_feature_dim": rnd.feature_dim} if lifelong else {}
    return NGUSource(tuple(env.obs_shape), int(env.num_actions), int(env.num_envs), device=spec.device,
                     lifelong=lifelong, embed_dim=ngu.embed_dim, idm_lr=ngu.idm_lr, k=ngu.k,
                     memory_capacity=ngu.memory, train_every=ngu.train_every, normalise=ngu.normalise,
                     save_ring=spec.save_buffers, **extra)


@objective("ngu", sections=("ngu",), help="NGU's episodic novelty of the next observation")
def build_ngu(spec: SourceSpec):
    return _build(spec, lifelong=False)


@objective("ngu+rnd", sections=("ngu", "rnd"), help="NGU's episodic novelty modulated by RND's life-long novelty")
def build_ngu_rnd(spec: SourceSpec):
    return _build(spec, lifelong=True)
