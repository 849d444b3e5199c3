"""What reward the learner sees during reward-free pre-training, one class per objective.

A source turns one vector step into the learner's rewards (the extrinsic reward is never
among its inputs) and, where the objective has a trained part, learns from replay batches.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from btcli.envs.base import Step
from btcli.envs.minigrid import AGENT_IDX
from btcli.errors import BtcliError
from btcli.intrinsic.counts import CountBonus, EpisodicCountBonus
from btcli.intrinsic.episodic import EpisodicMemory, InverseDynamics, lifelong_modulation
from btcli.intrinsic.rnd import RND
from btcli.intrinsic.running import RunningMeanStd

OBJECTIVES = ("count", "rnd", "ngu", "ngu+rnd")


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


class EpisodeCoverageSource:
    """1 when the agent enters a grid cell for the first time in its episode, else 0.

    With the visited cells marked in the observation (env.visited) this reward is a function of
    the observation, and its return is the number of cells an episode covers. The first cell of
    an episode is read off the observation the episode starts with.
    """

    def __init__(self, num_envs: int, width: int) -> None:
        self.counts = EpisodicCountBonus(num_envs)
        self.width = width

    def rewards(self, obs: np.ndarray, actions: np.ndarray, step: Step) -> np.ndarray:
        for i in range(len(obs)):
            if not self.counts.started(i):
                ys, xs = np.nonzero(obs[i, :, :, 0] == AGENT_IDX)
                self.counts.start(i, int(ys[0]) * self.width + int(xs[0]))
        first_visit = self.counts.reward(step.probes["cell"]) == 1.0
        for i in np.flatnonzero(step.terminated | step.truncated):
            self.counts.end(int(i))
        return first_visit.astype(np.float32)

    def learn(self, batch: tuple[torch.Tensor, ...]) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"episodes": self.counts.state_dict()}  # dropped by a resume that restarts its episodes

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "episodes" in state:
            self.counts.load_state_dict(state["episodes"])


class RNDSource:
    """Random network distillation: prediction error on the next observation, scaled by its std."""

    def __init__(self, obs_shape: tuple[int, ...], *, lr: float, feature_dim: int, device: torch.device):
        self.rnd = RND(obs_shape, feature_dim=feature_dim, device=device)
        self.optimizer = torch.optim.Adam(self.rnd.parameters(), lr=lr, fused=True)

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
    (and the first after loading a state without "episodes", i.e. a resume whose episodes
    restart) seeds every copy with f(``obs``), the loop's current observations. So every
    scored embedding meets at least one stored neighbour and the empty-memory score 1/c = 1000
    never reaches the learner. Checkpoints hold the memories of the episodes in progress, and
    with ``save_ring`` (the run's ``save_replay``) the inverse-dynamics ring, so a resumed
    MiniGrid run continues exactly.

    With ``lifelong`` (``ngu+rnd``): r = r_episodic · min(max(α, 1), L), α = 1 + (err − μ)/σ,
    err the raw RND prediction error of x_{t+1} and μ, σ the running mean/std of every error
    seen (updated with the step's errors first, then applied). The RND observation normaliser
    is fed x_{t+1} as ``RNDSource`` does; the predictor learns from replay batches' next_obs.

    Reward scale. The raw rewards lie in (0, 1/c): a state within ξ of j stored neighbours,
    the others far, earns about 1/sqrt(j) (1 for a second visit, 1/sqrt(k) ≈ 0.32 for a state
    seen k or more times this episode); a state whose k neighbours all sit at d_n ≈ 1 earns
    1/(sqrt(k·ε) + c) ≈ 31, with a single neighbour at d_n ≈ 1 (the second state of an
    episode) ≈ 91, more for larger d_n; ``ngu+rnd`` multiplies by 1 … L = 5. On FourRooms the
    learned embedding gave transitions into a cell new to the episode ~40-75 on average and
    into a visited cell ~5-10 (turning in place makes a new (cell, direction) observation).
    NGU feeds such rewards to an R2D2 learner whose value rescaling h(x) absorbs the scale;
    btcli's DQN (Huber loss, no h) learns poorly from them: over 50k FourRooms steps its
    Q-values grew to ~1000 and the share of transitions into new cells fell (0.17 -> 0.14).
    So with ``normalise`` (the default) the learner sees r / σ_r, σ_r the running std of
    every raw (modulated) reward so far, updated with the step's rewards first (no mean
    subtracted: rewards stay positive and ordered), as ``RNDSource`` scales RND's: ~2.1-2.4
    for a new cell, ~0.3-0.6 for a visited one on FourRooms, Q-values ~65, and the share of
    transitions into new cells rose (0.17 -> 0.26); per-episode coverage in the last 10k of
    50k steps was 30 and 14 cells (seeds 0, 1) against 20 and 7 unscaled. Left unscaled until
    two rewards have been seen.

    Training. The embedding f learns by inverse dynamics: cross-entropy of a_t given
    [f(x_t), f(x_{t+1})]. That needs 1-step pairs, but replay batches are n-step (next_obs is
    n steps ahead, possibly past a reset), so the source keeps a ring of its latest
    ``idm_buffer`` 1-step transitions (x_{t+1} = final_obs where the episode ended, so no
    pair straddles a reset) and trains f on a uniform minibatch of it, of the replay batch's
    size. Both trained parts (f, and RND's predictor on the replay batch's next_obs) take one
    Adam step together every ``train_every``-th ``learn`` call, i.e. on the learner's
    schedule: nothing before ``learning_starts``, then one step per ``train_every ·
    train_freq`` environment steps. With the defaults (batch 32, train_freq 4, train_every 8)
    each part trains on one sample per environment step, about the rate of common RND
    implementations (the predictor sees a 0.25 share of each rollout, 4 epochs); each ring
    transition is drawn about once. Training at every learner update would cost more than the
    update itself (on FourRooms ``ngu+rnd`` ran at ~0.5x the steps/s of ``transfer --mode
    scratch``; with ``train_every`` 8 at ~0.7x, benchmarks/pretrain_throughput.py). The two losses share one
    backward pass and one fused Adam step (disjoint parameters, one learning rate each: the
    same updates as two optimizers). Until the first step f is its random initialisation (a
    random projection); memory entries keep the embedding they were computed with, as in NGU.
    """

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, num_envs: int, *, device: torch.device,
                 lifelong: bool = False, rnd_lr: float = 1e-4, rnd_feature_dim: int = 128, embed_dim: int = 32,
                 idm_lr: float = 5e-4, idm_buffer: int = 5_000, k: int = 10, memory_capacity: int = 30_000,
                 max_modulation: float = 5.0, train_every: int = 8, normalise: bool = True,
                 save_ring: bool = False):
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
        if self.ring is None:
            self.ring = TransitionRing(self.ring_capacity, self._ring_shape, obs.dtype)
        self.ring.add(self._ring_view(obs), actions, self._ring_view(nxt))
        if self.lifelong:
            r = r * self.modulation(nxt)
        if self.normalise:
            self.reward_rms.update(r)
            if self.reward_rms.count >= 2:
                r = r / float(np.sqrt(self.reward_rms.var + 1e-8))
        return r.astype(np.float32)

    def modulation(self, next_obs: np.ndarray) -> np.ndarray:
        """min(max(α, 1), L) per copy, after updating the RND statistics with ``next_obs``."""
        self.rnd.update_obs_stats(next_obs)
        err = self.rnd.reward(next_obs).double().cpu().numpy()
        self.error_rms.update(err)
        return lifelong_modulation(err, self.error_rms.mean, float(self.error_rms.std), self.max_modulation)

    def learn(self, batch: tuple[torch.Tensor, ...]) -> None:
        self.learn_calls += 1
        if self.learn_calls % self.train_every:
            return
        size = batch[0].shape[0]
        loss = None
        if self.ring is not None and self.ring.size >= size:
            obs, actions, nxt = self.ring.sample(size)
            loss = self.idm.loss(obs, nxt, actions)
        if self.lifelong:
            rnd_loss = self.rnd.loss(batch[4])
            loss = rnd_loss if loss is None else loss + rnd_loss
        if loss is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"idm": self.idm.state_dict(), "optimizer": self.optimizer.state_dict(),
                                 "memory": self.memory.state_dict(), "learn_calls": self.learn_calls,
                                 "reward_rms": self.reward_rms.state_dict()}
        if self.save_ring and self.ring is not None:
            state["ring"] = self.ring.state_dict()
        if self.lifelong:
            state |= {"rnd": self.rnd.state_dict(), "error_rms": self.error_rms.state_dict()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.idm.load_state_dict(state["idm"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.memory.load_state_dict(state["memory"])  # empty memories unless the episodes continue
        self._seeded = bool(self.memory.sizes.all())  # a seeded copy never holds fewer than one entry
        if state.get("ring") is not None:
            self.ring = TransitionRing.restored(self.ring_capacity, state["ring"])
        self.learn_calls = int(state["learn_calls"])
        self.reward_rms.load_state_dict(state["reward_rms"])
        if self.lifelong:
            self.rnd.load_state_dict(state["rnd"])
            self.error_rms.load_state_dict(state["error_rms"])


def make_source(objective: str, env, *, lr: float, feature_dim: int, device: torch.device,
                embed_dim: int = 32, idm_lr: float = 5e-4, idm_buffer: int = 5_000, k: int = 10,
                memory_capacity: int = 30_000, max_modulation: float = 5.0, train_every: int = 8,
                normalise: bool = True, count_scope: str = "lifelong", save_buffers: bool = False) -> IntrinsicSource:
    """The reward source of an objective, checked against what the environment can provide.

    ``lr`` and ``feature_dim`` are RND's (``rnd`` and ``ngu+rnd``); the rest configure NGU.
    ``save_buffers`` (the run's ``save_replay``) puts NGU's transition ring in checkpoints.
    """
    if objective == "count":
        probes = env.last_probes()
        if "cell" not in probes:
            raise BtcliError(f"objective 'count' needs discrete grid cells, which {env.env_id} does not expose; "
                             "use a MiniGrid task or --objective rnd")
        if count_scope == "episode":
            return EpisodeCoverageSource(int(env.num_envs), int(env.obs_shape[1]))
        return CountSource()
    if objective == "rnd":
        return RNDSource(tuple(env.obs_shape), lr=lr, feature_dim=feature_dim, device=device)
    if objective in ("ngu", "ngu+rnd"):
        return NGUSource(tuple(env.obs_shape), int(env.num_actions), int(env.num_envs), device=device,
                         lifelong=objective == "ngu+rnd", rnd_lr=lr, rnd_feature_dim=feature_dim,
                         embed_dim=embed_dim, idm_lr=idm_lr, idm_buffer=idm_buffer, k=k,
                         memory_capacity=memory_capacity, max_modulation=max_modulation, train_every=train_every,
                         normalise=normalise, save_ring=save_buffers)
    raise BtcliError(f"unknown objective '{objective}'; available now: {', '.join(OBJECTIVES)}")
