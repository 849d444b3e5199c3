"""Uniform n-step replay for vectorised environments, storing each frame once.

Layout: one circular *stream* per environment copy, ``capacity // num_envs`` entries each.
An entry holds the newest frame of ``obs_t`` (the whole observation when ``frame_stack == 1``),
the action, the reward and a flag byte. When an episode ends, one extra entry follows that
holds the newest frame of the episode's final observation; it is not a transition, only the
``next_obs`` (bootstrap source) of the transitions before it. The next entry then starts a new
episode (``FIRST`` flag).

Streams are addressed by *logical* positions ``p`` (0, 1, 2, ... in the order written, never
reset); the entry lives in slot ``p % cap_per_env``. A stream holds positions
``[written - size, written)`` with ``size = min(written, cap_per_env)``.

Stacks are rebuilt at sampling time: frame ``p - k`` (k = 1 .. frame_stack - 1) of the stack at
``p`` is zero when an entry in ``p - k + 1 .. p`` starts an episode, exactly as the environment
pads stacks at an episode's start.

Capacity counts entries, final-frame entries included (one per episode), so slightly fewer
than ``capacity`` transitions are held once the buffer is full.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

# Entry flags (one uint8 per entry).
FIRST = 1  # the entry is the first observation of an episode (frames before it are zero)
TERMINATED = 2  # the transition ended its episode in a terminal state (no bootstrap)
ENDED = 4  # the transition ended its episode (terminated or truncated); a final-frame entry follows
TRANSITION = 8  # the entry is a transition (obs_t, a_t, r_t); final-frame entries are not

_MAX_REJECTION_ROUNDS = 8


def min_capacity(num_envs: int, n_step: int, frame_stack: int) -> int:
    """The smallest capacity that holds an n-step window of stacked frames in every copy's stream."""
    return int(num_envs) * (int(n_step) + int(frame_stack) + 1)


@dataclass
class Batch:
    obs: np.ndarray  # [B, *obs_shape] same dtype as stored
    actions: np.ndarray  # [B] int64
    returns: np.ndarray  # [B] float32: sum_{i<m} gamma^i r_{t+i}
    discounts: np.ndarray  # [B] float32: gamma^m, or 0.0 if the window ended in termination
    next_obs: np.ndarray  # [B, *obs_shape]: obs at t+m (the final obs if the episode ended)
    indices: np.ndarray  # [B] int64 flat indices: env * cap_per_env + slot

    def to(self, convert) -> TensorBatch:
        """The batch as the learner takes it: ``convert`` (numpy -> tensor on the device) per field."""
        return TensorBatch(convert(self.obs), convert(self.actions), convert(self.returns),
                           convert(self.discounts), convert(self.next_obs))


@dataclass
class TensorBatch:
    """A replay batch on the learner's device, named all the way to the loss (fields as :class:`Batch`)."""

    obs: Any
    actions: Any
    returns: Any
    discounts: Any
    next_obs: Any

    def fields(self) -> tuple:
        """(obs, actions, returns, discounts, next_obs): the order a captured CUDA graph copies them in."""
        return self.obs, self.actions, self.returns, self.discounts, self.next_obs

    def transitions(self) -> TensorBatch:
        """What the intrinsic reward sources learn from (obs, actions, next_obs): this batch."""
        return self


class ReplayBuffer:
    """n-step uniform replay over ``num_envs`` per-environment circular streams.

    ``num_actions`` (optional, keyword) only picks the action storage type: uint8 when
    ``num_actions <= 256``, int32 otherwise or when not given.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype=np.uint8,
        frame_stack: int = 1,
        n_step: int = 1,
        gamma: float = 0.99,
        seed: int = 0,
        *,
        num_actions: int | None = None,
    ) -> None:
        obs_shape = tuple(int(s) for s in obs_shape)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if frame_stack < 1 or n_step < 1:
            raise ValueError(f"frame_stack and n_step must be >= 1, got {frame_stack}, {n_step}")
        if frame_stack > 1 and (len(obs_shape) < 1 or obs_shape[0] != frame_stack):
            raise ValueError(f"frame_stack={frame_stack} needs obs_shape[0] == frame_stack, got {obs_shape}")
        cap = int(capacity) // int(num_envs)
        if cap * num_envs < min_capacity(num_envs, n_step, frame_stack):
            raise ValueError(
                f"capacity // num_envs = {cap} is too small for n_step={n_step}, frame_stack={frame_stack}"
            )
        self.capacity = cap * int(num_envs)
        self.num_envs = int(num_envs)
        self.cap_per_env = cap
        self.obs_shape = obs_shape
        self.obs_dtype = np.dtype(obs_dtype)
        self.frame_stack = int(frame_stack)
        self.frame_shape = obs_shape[1:] if frame_stack > 1 else obs_shape
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self.num_actions = num_actions
        action_dtype = np.uint8 if num_actions is not None and num_actions <= 256 else np.int32

        self.frames = np.zeros((self.num_envs, cap, *self.frame_shape), dtype=self.obs_dtype)
        self.actions = np.zeros((self.num_envs, cap), dtype=action_dtype)
        self.rewards = np.zeros((self.num_envs, cap), dtype=np.float32)
        self.flags = np.zeros((self.num_envs, cap), dtype=np.uint8)
        self.written = np.zeros(self.num_envs, dtype=np.int64)  # entries ever written per stream
        self.num_transitions = np.zeros(self.num_envs, dtype=np.int64)  # TRANSITION entries held
        self.start_next = np.ones(self.num_envs, dtype=bool)  # next add() starts a new episode
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self._env_ids = np.arange(self.num_envs)
        self._gamma_pows = (self.gamma ** np.arange(self.n_step + 1)).astype(np.float64)

    # ------------------------------------------------------------------ writing

    def _write(self, envs: np.ndarray, frames: np.ndarray, actions, rewards, flags) -> None:
        """Append one entry to each stream in ``envs`` (distinct)."""
        slots = self.written[envs] % self.cap_per_env
        evicted = (self.written[envs] >= self.cap_per_env) & (self.flags[envs, slots] & TRANSITION > 0)
        self.num_transitions[envs] -= evicted
        self.frames[envs, slots] = frames
        self.actions[envs, slots] = actions
        self.rewards[envs, slots] = rewards
        self.flags[envs, slots] = flags
        self.num_transitions[envs] += (flags & TRANSITION) > 0
        self.written[envs] += 1

    def _newest(self, obs: np.ndarray) -> np.ndarray:
        return obs[:, -1] if self.frame_stack > 1 else obs

    def add(self, obs, actions, rewards, terminated, truncated, final_obs) -> None:
        """Store one vector step: obs_t [N, *obs_shape], a_t, r_t, terminated_t, truncated_t and,
        for the rows where the episode ended, final_obs [N, *obs_shape] (other rows are ignored)."""
        n = self.num_envs
        obs = np.asarray(obs)
        if obs.shape != (n, *self.obs_shape):
            raise ValueError(f"obs has shape {obs.shape}, expected {(n, *self.obs_shape)}")
        actions = np.asarray(actions).reshape(n)
        rewards = np.asarray(rewards, dtype=np.float32).reshape(n)
        terminated = np.asarray(terminated, dtype=bool).reshape(n)
        ended = terminated | np.asarray(truncated, dtype=bool).reshape(n)

        flags = np.full(n, TRANSITION, dtype=np.uint8)
        flags[self.start_next] |= FIRST
        flags[ended] |= ENDED
        flags[terminated] |= TERMINATED
        self._write(self._env_ids, self._newest(obs), actions, rewards, flags)

        if ended.any():
            envs = np.flatnonzero(ended)
            final = self._newest(np.asarray(final_obs)[envs])
            self._write(envs, final, 0, 0.0, np.zeros(len(envs), dtype=np.uint8))
        self.start_next = ended

    def new_episodes(self) -> None:
        """Make the next add() start a new episode in every stream.

        An episode left open is closed as if truncated at its last stored observation: that
        entry becomes its final-frame entry (not a transition) and the transition before it,
        if any, bootstraps from it.
        """
        for e in range(self.num_envs):
            if self.start_next[e] or self.written[e] == 0:
                continue
            last = (self.written[e] - 1) % self.cap_per_env
            f = self.flags[e, last]
            if f & TRANSITION:
                self.flags[e, last] = 0
                self.num_transitions[e] -= 1
                # the previous entry belongs to the same episode unless the last one started it
                if not (f & FIRST) and self.written[e] >= 2:
                    prev = (self.written[e] - 2) % self.cap_per_env
                    if self.flags[e, prev] & TRANSITION:
                        self.flags[e, prev] |= ENDED
        self.start_next[:] = True

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return int(self.num_transitions.sum())

    @property
    def nbytes(self) -> int:
        return int(
            self.frames.nbytes + self.actions.nbytes + self.rewards.nbytes + self.flags.nbytes
            + self.written.nbytes + self.num_transitions.nbytes + self.start_next.nbytes
        )

    def can_sample(self, batch_size: int) -> bool:
        """True when at least ``batch_size`` distinct transitions are sampleable (a lower bound:
        per stream at most n_step transitions wait for their window, frame_stack - 1 lost history)."""
        bound = len(self) - self.num_envs * (self.n_step + self.frame_stack - 1)
        return bound >= batch_size

    def _window(self, envs: np.ndarray, pos: np.ndarray):
        """Validate candidates (stream, logical position) and compute their n-step windows.

        Returns (valid mask, m, terminated-at-end mask) for all candidates.
        """
        cap, n = self.cap_per_env, self.n_step
        written = self.written[envs]
        oldest = written - np.minimum(written, cap)
        after = written - 1 - pos  # entries written after pos
        valid = self.flags[envs, pos % cap] & TRANSITION > 0
        # the stream wrapped: the oldest frame_stack - 1 entries lost their history
        valid &= ~((written > cap) & (pos - oldest < self.frame_stack - 1))

        j = np.arange(n)
        wpos = pos[:, None] + j  # [K, n]
        wflags = self.flags[envs[:, None], wpos % cap]
        ends = (wflags & ENDED > 0) & (j <= after[:, None])  # ignore unwritten / stale slots
        any_end = ends.any(axis=1)
        first_end = ends.argmax(axis=1)
        m = np.where(any_end, first_end + 1, n)
        valid &= m <= after  # the window and the next obs are written
        term = any_end & (wflags[np.arange(len(pos)), first_end] & TERMINATED > 0)
        return valid, m, term

    def _draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        sizes = np.minimum(self.written, self.cap_per_env)
        cum = np.cumsum(sizes)
        u = self.rng.integers(0, cum[-1], size=k)
        envs = np.searchsorted(cum, u, side="right")
        pos = self.written[envs] - sizes[envs] + (u - (cum[envs] - sizes[envs]))
        return envs, pos

    def _stacks(self, envs: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Observations at logical positions ``pos`` of streams ``envs``, stacks rebuilt."""
        cap = self.cap_per_env
        if self.frame_stack == 1:
            return self.frames[envs, pos % cap]
        s = self.frame_stack
        offs = np.arange(s - 1, -1, -1)  # oldest frame first: pos-(s-1) .. pos
        hist = pos[:, None] - offs  # [K, s]
        out = self.frames[envs[:, None], hist % cap]  # [K, s, *frame_shape]
        # frame pos-k is zero if an entry in pos-k+1 .. pos starts an episode
        first = self.flags[envs[:, None], hist[:, 1:] % cap] & FIRST > 0  # entries pos-s+2 .. pos
        zero = np.flip(np.logical_or.accumulate(np.flip(first, axis=1), axis=1), axis=1)  # [K, s-1]
        out[:, :-1][zero] = 0
        return out

    def sample(self, batch_size: int) -> Batch:
        """Draw ``batch_size`` transitions uniformly (with replacement) among the sampleable ones."""
        if len(self) == 0:
            raise ValueError("the replay buffer holds no transitions")
        got_e, got_p, got_m, got_t = [], [], [], []
        need = batch_size
        for _ in range(_MAX_REJECTION_ROUNDS):
            if need <= 0:
                break
            envs, pos = self._draw(need + need // 2 + 8)
            valid, m, term = self._window(envs, pos)
            idx = np.flatnonzero(valid)[:need]
            got_e.append(envs[idx]), got_p.append(pos[idx]), got_m.append(m[idx]), got_t.append(term[idx])
            need -= len(idx)
        if need > 0:  # few sampleable entries: enumerate them all
            sizes = np.minimum(self.written, self.cap_per_env)
            envs = np.repeat(self._env_ids, sizes)
            pos = np.concatenate([np.arange(w - s, w) for w, s in zip(self.written, sizes)]).astype(np.int64)
            valid, m, term = self._window(envs, pos)
            idx = np.flatnonzero(valid)
            if len(idx) == 0:
                raise ValueError("no sampleable transitions in the replay buffer")
            idx = idx[self.rng.integers(0, len(idx), size=need)]
            got_e.append(envs[idx]), got_p.append(pos[idx]), got_m.append(m[idx]), got_t.append(term[idx])
        envs, pos = np.concatenate(got_e), np.concatenate(got_p)
        m, term = np.concatenate(got_m), np.concatenate(got_t)

        cap, n = self.cap_per_env, self.n_step
        j = np.arange(n)
        wr = self.rewards[envs[:, None], (pos[:, None] + j) % cap].astype(np.float64)
        wr[j >= m[:, None]] = 0.0
        returns = (wr @ self._gamma_pows[:n]).astype(np.float32)
        discounts = np.where(term, 0.0, self._gamma_pows[m]).astype(np.float32)
        both = self._stacks(np.concatenate([envs, envs]), np.concatenate([pos, pos + m]))
        slots = pos % cap
        return Batch(
            obs=both[:batch_size],
            actions=self.actions[envs, slots].astype(np.int64),
            returns=returns,
            discounts=discounts,
            next_obs=both[batch_size:],
            indices=(envs * cap + slots).astype(np.int64),
        )

    # ------------------------------------------------------------------ checkpointing

    def _used_slots(self) -> int:
        """Slots [0, used) of every stream hold all that was ever written (streams fill from 0)."""
        return int(min(self.written.max(initial=0), self.cap_per_env))

    def state_dict(self) -> dict:
        """Everything needed to resume, as arrays and scalars that ``np.savez`` stores without pickle.

        Per-entry arrays are cut to the slots written so far, so a checkpoint of a part-filled
        buffer holds what it stores, not its capacity (an Atari buffer of 200k frames is 1.4 GB).
        """
        used = self._used_slots()
        return {
            "capacity": self.capacity,
            "num_envs": self.num_envs,
            "obs_shape": np.asarray(self.obs_shape, dtype=np.int64),
            "obs_dtype": str(self.obs_dtype),
            "frame_stack": self.frame_stack,
            "n_step": self.n_step,
            "gamma": self.gamma,
            "frames": self.frames[:, :used],
            "actions": self.actions[:, :used],
            "rewards": self.rewards[:, :used],
            "flags": self.flags[:, :used],
            "written": self.written,
            "num_transitions": self.num_transitions,
            "start_next": self.start_next,
            "rng_state": json.dumps(self.rng.bit_generator.state),
        }

    def load_state_dict(self, d) -> None:
        """Restore from ``state_dict()`` (or the mapping ``np.load`` returns). Storage layout must
        match; ``n_step`` and ``gamma`` are this buffer's own (they don't affect storage)."""
        layout = {
            "capacity": (int(d["capacity"]), self.capacity),
            "num_envs": (int(d["num_envs"]), self.num_envs),
            "obs_shape": (tuple(int(s) for s in np.asarray(d["obs_shape"])), self.obs_shape),
            "obs_dtype": (str(np.asarray(d["obs_dtype"])), str(self.obs_dtype)),
            "frame_stack": (int(d["frame_stack"]), self.frame_stack),
        }
        for key, (saved, mine) in layout.items():
            if saved != mine:
                raise ValueError(f"replay state has {key}={saved}, this buffer has {mine}")
        dirty = bool(self.written.any())  # slots past the saved ones hold this buffer's own entries
        for key in ("written", "num_transitions", "start_next"):
            src, dst = np.asarray(d[key]), getattr(self, key)
            if src.shape != dst.shape:
                raise ValueError(f"replay state {key} has shape {src.shape}, expected {dst.shape}")
            dst[...] = src
        used = self._used_slots()
        for key in ("frames", "actions", "rewards", "flags"):
            src, dst = np.asarray(d[key]), getattr(self, key)
            same_layout = src.shape[:1] + src.shape[2:] == dst.shape[:1] + dst.shape[2:]
            if not same_layout or not used <= src.shape[1] <= dst.shape[1]:
                raise ValueError(f"replay state {key} has shape {src.shape}, "
                                 f"expected {dst.shape} or a slot prefix of it")
            dst[:, :used] = src[:, :used]  # checkpoints before the cut held every slot
            if dirty:  # a fresh buffer's untouched slots are zero already (and not yet in memory)
                dst[:, used:] = 0
        self.rng.bit_generator.state = json.loads(str(np.asarray(d["rng_state"])))
