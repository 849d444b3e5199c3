"""Greedy evaluation under the evaluation protocol: small epsilon, full episodes, raw scores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from btcli.behaviour import epsilon_greedy
from btcli.envs.base import VecEnv, coverage_key


@dataclass
class EpisodeResult:
    """One finished evaluation episode."""

    env_index: int
    ret: float
    length: int
    coverage: int | None = None  # distinct grid cells (or rooms) visited, where the env exposes them


def greedy_actor(net: torch.nn.Module, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a batch of observations to the network's greedy actions."""

    @torch.inference_mode()
    def act(obs: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(obs).to(device)).argmax(dim=1).cpu().numpy()

    return act


def clip_rewards(reward: np.ndarray, clip: float) -> np.ndarray:
    """The rewards a learner trains on: ``reward`` clipped to [-clip, clip] (``clip`` 0: unclipped)."""
    return np.clip(reward, -clip, clip) if clip > 0 else reward


class TaskRewards:
    """The scorer of a transfer learner with ``prev_inputs``: the task's reward, clipped to
    [-clip, clip] as the learner's training rewards are (``clip`` 0: unclipped). Stateless."""

    def __init__(self, clip: float):
        self.clip = float(clip)

    def scorer(self, num_envs: int) -> TaskRewards:
        return self  # nothing to copy: it holds no state

    def rewards(self, obs: np.ndarray, actions: np.ndarray, step) -> np.ndarray:
        return clip_rewards(np.asarray(step.reward, dtype=np.float32), self.clip)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def episode_state_dict(self) -> dict:
        return {}

    def load_episode_state_dict(self, state: dict | None) -> None:
        pass


def actor_for(net: torch.nn.Module, device: torch.device, num_envs: int,
              intrinsic=None, reward_clip: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The greedy actor of ``net`` for ``num_envs`` copies: a fresh :class:`RecurrentActor` (its
    states start at zero) for a recurrent network, :func:`greedy_actor` otherwise. A network with
    ``prev_inputs`` is fed the rewards it learned from: those of ``intrinsic`` (a pre-training
    run's NGU source) by a frozen copy of it (``intrinsic.scorer``: fresh episodic memories,
    nothing of the run's own changed), or without one (a transfer run) :class:`TaskRewards` with
    ``reward_clip``; given neither, it is refused (ValueError)."""
    if getattr(net, "recurrent", False):
        from btcli.agent.recurrent import RecurrentActor

        scorer = None
        if getattr(net, "prev_inputs", False):
            if intrinsic is None and reward_clip is not None:
                intrinsic = TaskRewards(reward_clip)
            if intrinsic is None or not hasattr(intrinsic, "scorer"):
                raise ValueError("a network with agent.prev_inputs needs the rewards it learned from to act")
            scorer = intrinsic.scorer(num_envs)
        return RecurrentActor(net, num_envs, device, scorer=scorer)
    return greedy_actor(net, device)


def checkpoint_rewards(net: torch.nn.Module, cfg, state: dict, obs_shape, num_actions: int, device):
    """The reward source a checkpoint's network with ``prev_inputs`` is fed when it acts: its
    pre-training run's NGU source, or :class:`TaskRewards` for a transfer run; None for any other
    network."""
    if not getattr(net, "prev_inputs", False):
        return None
    from types import SimpleNamespace

    from btcli.intrinsic.registry import build_source

    spec_env = SimpleNamespace(obs_shape=tuple(obs_shape), num_actions=int(num_actions), num_envs=1)
    source = build_source(cfg.intrinsic, spec_env, device)
    if source is None:
        return TaskRewards(cfg.agent.reward_clip)
    source.load_state_dict(state["intrinsic"])
    return source


def evaluate(act: Callable[[np.ndarray], np.ndarray], env: VecEnv, episodes: int, epsilon: float,
             seed: int, on_episode: Callable[[EpisodeResult], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> list[EpisodeResult] | None:
    """Run exactly ``episodes`` episodes, split evenly over the env copies.

    Returns None when ``should_stop`` turned true first (an Atari evaluation can take minutes,
    so a SIGINT must not wait for it).

    Each copy runs a fixed quota so that short episodes are not over-represented (taking the
    first K episodes to finish would bias the mean towards quick failures). An ``act`` with a
    ``reset(copies)`` method (a recurrent actor) is reset for the copies whose episode ended, after
    its ``after_step(obs, actions, step)`` where it has one.
    """
    rng = np.random.default_rng(seed)
    n = env.num_envs
    quota = np.full(n, episodes // n)
    quota[: episodes % n] += 1
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    done_count = np.zeros(n, dtype=np.int64)
    results: list[EpisodeResult] = []
    obs = env.reset(seed=seed)
    probes = env.last_probes()
    key = coverage_key(probes)
    visited = [{int(v)} for v in probes[key]] if key else None
    reset, after_step = getattr(act, "reset", None), getattr(act, "after_step", None)
    while (done_count < quota).any():
        if should_stop is not None and should_stop():
            return None
        actions = epsilon_greedy(act(obs), epsilon, env.num_actions, rng)
        step = env.step(actions)
        if after_step is not None:  # a network fed its previous action and reward
            after_step(obs, actions, step)
        returns += step.reward
        lengths += 1
        if visited is not None:
            for cells, cell in zip(visited, step.probes[key].tolist()):
                cells.add(cell)
        ended = np.flatnonzero(step.terminated | step.truncated)
        if reset is not None and ended.size:
            reset(ended)
        for i in ended:
            if done_count[i] < quota[i]:
                coverage = len(visited[i]) if visited is not None else None
                result = EpisodeResult(int(i), float(returns[i]), int(lengths[i]), coverage)
                results.append(result)
                if on_episode is not None:
                    on_episode(result)
            done_count[i] += 1
            returns[i] = 0.0
            lengths[i] = 0
        if visited is not None and ended.size:
            start = env.last_probes()[key]
            for i in ended:
                visited[i] = {int(start[i])}
        obs = step.obs
    return results
