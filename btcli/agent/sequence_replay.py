"""Replay of fixed-length sequences for the recurrent learner (btcli/agent/recurrent.py).

The storage is :class:`btcli.agent.replay.ReplayBuffer`'s (one stream per environment copy,
logical positions, FIRST / ENDED / TERMINATED / TRANSITION flags, final-frame entries), plus the
recurrent state the actor had when it received each entry's observation.

A sequence is ``burn_in + seq_len + n_step`` consecutive entries of one stream, starting at any
position whose whole window is held: ``start >= oldest`` (``+ frame_stack - 1`` once the stream
has wrapped, as those entries lost their stack history) and ``start + length <= written``. It may
span episode ends: ``first`` marks the entries where the state is zeroed, as the actor did. The
loss falls on entries ``burn_in .. burn_in + seq_len - 1`` that are transitions; entry ``t``'s
target is its n-step return inside the sequence, ``sum_{i<m} γ^i r_{t+i}``, bootstrapped at entry
``t + m`` with discount γ^m (0 when the episode terminated), m <= n_step stopping at the episode's
end, so ``t + m`` always lies inside the sequence.

With ``prev_inputs`` each entry also keeps the previous action and reward its observation was
fed with (-1 and 0 at an episode's first entry; for a final-frame entry, the episode's last
action and reward), as the network with ``agent.prev_inputs`` takes them.

With ``demos`` each entry also keeps π_p's greedy action for its observation, chosen when the step
was taken (so a recurrent π_p's answer comes from the state that followed the real episode): the
kickstart term's teacher actions (``transfer.kickstart``), sampled at the learned entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from btcli.agent.replay import FIRST, TRANSITION, ReplayBuffer


@dataclass
class SequenceBatch:
    obs: np.ndarray  # [B, T, *obs_shape], T = burn_in + seq_len + n_step
    first: np.ndarray  # [B, T] bool: the state is zeroed entering this entry
    state0: np.ndarray  # [B, *state_shape] float32: the actor's state at the first entry
    actions: np.ndarray  # [B, L] int64, L = seq_len: at entries burn_in .. burn_in + L - 1
    returns: np.ndarray  # [B, L] float32
    discounts: np.ndarray  # [B, L] float32
    boot: np.ndarray  # [B, L] int64: the entry (0 .. T-1) each target bootstraps from
    mask: np.ndarray  # [B, L] float32: 1 where the entry is a transition (it carries loss)
    streams: np.ndarray  # [B] int64
    starts: np.ndarray  # [B] int64 logical position of entry 0
    burn_in: int
    prev_actions: np.ndarray | None = None  # [B, T] int64, with prev_inputs: entry t's previous action (-1: none)
    prev_rewards: np.ndarray | None = None  # [B, T] float32, with prev_inputs: entry t's previous reward
    demo_actions: np.ndarray | None = None  # [B, L] int64, with demos: π_p's action at each learned entry

    def to(self, convert) -> SequenceTensorBatch:
        """The batch as the learner takes it: ``convert`` (numpy -> tensor on the device) per field."""
        def maybe(value):
            return None if value is None else convert(value)

        return SequenceTensorBatch(*(convert(getattr(self, k)) for k in
                                     ("obs", "first", "state0", "actions", "returns", "discounts", "boot", "mask")),
                                   burn_in=self.burn_in, prev_actions=maybe(self.prev_actions),
                                   prev_rewards=maybe(self.prev_rewards), demo_actions=maybe(self.demo_actions))


@dataclass
class SequenceTensorBatch:
    """A sequence batch on the learner's device (fields as :class:`SequenceBatch`)."""

    obs: Any
    first: Any
    state0: Any
    actions: Any
    returns: Any
    discounts: Any
    boot: Any
    mask: Any
    burn_in: int = 0
    prev_actions: Any = None
    prev_rewards: Any = None
    demo_actions: Any = None

    def transitions(self):
        """The learned steps as one-step transitions (obs, next_obs: the entry after each), for the
        intrinsic reward sources that learn from replay (RND, NGU's inverse dynamics)."""
        length = self.actions.shape[1]
        keep = self.mask.bool()
        obs = self.obs[:, self.burn_in:self.burn_in + length][keep]
        nxt = self.obs[:, self.burn_in + 1:self.burn_in + length + 1][keep]
        return _Transitions(obs, self.actions[keep], nxt)


@dataclass
class _Transitions:
    obs: Any
    actions: Any
    next_obs: Any


class SequenceReplay(ReplayBuffer):
    """:class:`ReplayBuffer` storage plus per-entry recurrent states, sampled as sequences."""

    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype=np.uint8,
                 frame_stack: int = 1, n_step: int = 1, gamma: float = 0.99, seed: int = 0, *,
                 num_actions: int | None = None, state_shape: tuple[int, ...], burn_in: int, seq_len: int,
                 prev_inputs: bool = False, demos: bool = False):
        super().__init__(capacity, num_envs, obs_shape, obs_dtype, frame_stack, n_step, gamma, seed,
                         num_actions=num_actions)
        self.burn_in, self.seq_len = int(burn_in), int(seq_len)
        self.length = self.burn_in + self.seq_len + self.n_step
        if self.cap_per_env < self.length + self.frame_stack:
            raise ValueError(f"capacity // num_envs = {self.cap_per_env} is too small for sequences of "
                             f"{self.length} entries")
        self.state_shape = tuple(int(s) for s in state_shape)
        self.states = np.zeros((self.num_envs, self.cap_per_env, *self.state_shape), dtype=np.float32)
        self.prev_inputs = bool(prev_inputs)
        held = (self.num_envs, self.cap_per_env) if self.prev_inputs else (self.num_envs, 0)
        self.prev_actions = np.full(held, -1, dtype=np.int64)
        self.prev_rewards = np.zeros(held, dtype=np.float32)
        self.demos = bool(demos)
        self.demo_actions = np.zeros((self.num_envs, self.cap_per_env if self.demos else 0), dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return super().nbytes + int(self.states.nbytes + self.prev_actions.nbytes + self.prev_rewards.nbytes
                                       + self.demo_actions.nbytes)

    def add(self, obs, actions, rewards, terminated, truncated, final_obs, *, states, final_states,
            prev_actions=None, prev_rewards=None, demo_actions=None) -> None:
        """:meth:`ReplayBuffer.add` plus ``states`` (each copy's state when it received ``obs``) and
        ``final_states`` (its state after it, stored with the final-frame entry of an ended episode);
        with ``prev_inputs``, the previous action and reward ``obs`` was fed with; with ``demos``,
        π_p's greedy action for ``obs`` (a final frame carries no loss, so it needs none)."""
        before = self.written.copy()
        super().add(obs, actions, rewards, terminated, truncated, final_obs)
        cap = self.cap_per_env
        self.states[self._env_ids, before % cap] = np.asarray(states, dtype=np.float32)
        ended = np.flatnonzero(self.written - before == 2)
        if ended.size:
            self.states[ended, (before[ended] + 1) % cap] = np.asarray(final_states, dtype=np.float32)[ended]
        if self.prev_inputs:
            if prev_actions is None or prev_rewards is None:
                raise ValueError("this replay keeps each entry's previous action and reward: pass them")
            self.prev_actions[self._env_ids, before % cap] = prev_actions
            self.prev_rewards[self._env_ids, before % cap] = prev_rewards
            if ended.size:  # the final frame was reached by this step's action and reward
                self.prev_actions[ended, (before[ended] + 1) % cap] = np.asarray(actions)[ended]
                self.prev_rewards[ended, (before[ended] + 1) % cap] = np.asarray(rewards)[ended]
        if self.demos:
            if demo_actions is None:
                raise ValueError("this replay keeps π_p's action for each entry (the kickstart's teacher): pass it")
            self.demo_actions[self._env_ids, before % cap] = demo_actions

    def _start_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per stream: (lowest start, number of starts) of the sequences it holds whole."""
        held = np.minimum(self.written, self.cap_per_env)
        lowest = self.written - held + np.where(self.written > self.cap_per_env, self.frame_stack - 1, 0)
        count = np.maximum(self.written - self.length - lowest + 1, 0)
        return lowest, count

    def can_sample(self, batch_size: int) -> bool:
        """True when the streams hold at least ``batch_size`` distinct whole sequences."""
        return int(self._start_range()[1].sum()) >= batch_size

    def sample(self, batch_size: int) -> SequenceBatch:
        """``batch_size`` sequences, uniform (with replacement) over every held start position."""
        lowest, count = self._start_range()
        total = int(count.sum())
        if total == 0:
            raise ValueError("the replay buffer holds no whole sequence yet")
        cum = np.cumsum(count)
        u = self.rng.integers(0, total, size=batch_size)
        streams = np.searchsorted(cum, u, side="right")
        starts = lowest[streams] + (u - (cum[streams] - count[streams]))
        return self.sequences(streams, starts)

    def sequences(self, streams: np.ndarray, starts: np.ndarray) -> SequenceBatch:
        """The sequences of ``streams`` beginning at logical positions ``starts`` (all held whole)."""
        cap, n, b = self.cap_per_env, self.n_step, len(starts)
        steps = np.arange(self.length)
        pos = starts[:, None] + steps  # [B, T]
        flat_e = np.repeat(streams, self.length)
        obs = self._stacks(flat_e, pos.reshape(-1)).reshape(b, self.length, *self.obs_shape)
        flags = self.flags[streams[:, None], pos % cap]
        learn = pos[:, self.burn_in:self.burn_in + self.seq_len]  # [B, L]
        valid, m, term = self._window(np.repeat(streams, self.seq_len), learn.reshape(-1))
        m, term = m.reshape(b, -1), term.reshape(b, -1)
        mask = valid.reshape(b, -1) & (flags[:, self.burn_in:self.burn_in + self.seq_len] & TRANSITION > 0)
        j = np.arange(n)
        rewards = self.rewards[streams[:, None, None], (learn[:, :, None] + j) % cap].astype(np.float64)
        rewards[j >= m[:, :, None]] = 0.0
        returns = (rewards @ self._gamma_pows[:n]).astype(np.float32)
        discounts = np.where(term, 0.0, self._gamma_pows[m]).astype(np.float32)
        boot = np.arange(self.burn_in, self.burn_in + self.seq_len)[None, :] + m
        return SequenceBatch(
            obs=obs, first=flags & FIRST > 0, state0=self.states[streams, starts % cap].copy(),
            actions=self.actions[streams[:, None], learn % cap].astype(np.int64),
            returns=np.where(mask, returns, 0.0).astype(np.float32),
            discounts=np.where(mask, discounts, 0.0).astype(np.float32),
            boot=np.where(mask, boot, self.burn_in).astype(np.int64), mask=mask.astype(np.float32),
            streams=streams.astype(np.int64), starts=starts.astype(np.int64), burn_in=self.burn_in,
            **({"prev_actions": self.prev_actions[streams[:, None], pos % cap],
                "prev_rewards": self.prev_rewards[streams[:, None], pos % cap]} if self.prev_inputs else {}),
            demo_actions=self.demo_actions[streams[:, None], learn % cap] if self.demos else None)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["states"] = self.states[:, :self._used_slots()]
        if self.prev_inputs:
            state |= {"prev_actions": self.prev_actions[:, :self._used_slots()],
                      "prev_rewards": self.prev_rewards[:, :self._used_slots()]}
        if self.demos:
            state["demo_actions"] = self.demo_actions[:, :self._used_slots()]
        return state

    def load_state_dict(self, d) -> None:
        super().load_state_dict(d)
        used = self._used_slots()
        self.states[:, :used] = np.asarray(d["states"])[:, :used]
        self.states[:, used:] = 0.0
        if self.prev_inputs:
            self.prev_actions[:, :used] = np.asarray(d["prev_actions"])[:, :used]
            self.prev_rewards[:, :used] = np.asarray(d["prev_rewards"])[:, :used]
            self.prev_actions[:, used:], self.prev_rewards[:, used:] = -1, 0.0
        if self.demos:
            self.demo_actions[:, :used] = np.asarray(d["demo_actions"])[:, :used]
            self.demo_actions[:, used:] = 0
