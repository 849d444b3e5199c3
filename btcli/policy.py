"""A loaded export: a callable from btcli-encoded observations to greedy actions and Q-values.

    policy = btcli.load_policy("exports/pt-count")     # a folder written by `btcli export`
    env = policy.make_env(num_envs=4, seed=0)           # btcli's env: the encoding it was trained on
    obs = env.reset()
    actions, q_values = policy(obs)                     # [B] int64, [B, A] float32

The observation is btcli's encoded one (``policy.obs_shape``, uint8; see ``policy.encoding``),
batched ``[B, *obs_shape]`` or a single ``obs_shape`` array. For MiniGrid, :meth:`Policy.encode`
turns the observations of a gymnasium MiniGrid env wrapped in ``FullyObsWrapper`` into it.
Action ``k`` is ``policy.action_meanings[k]``; ``policy.env_action_ids[k]`` is that action's
index in the task's own gymnasium action space.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from btcli.export import ExportError, read_export


class PolicyOutput(NamedTuple):
    """Greedy actions ``[B]`` (int64) and the Q-values behind them ``[B, A]`` (float32)."""

    actions: np.ndarray
    q_values: np.ndarray


@dataclass
class Policy:
    """A frozen Q-network and the facts needed to feed it (from an export's policy.json)."""

    path: Path
    spec: dict[str, Any]
    sha256: str  # of policy.json: the export's identity
    net: torch.nn.Module = field(repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    obs_shape = property(lambda self: tuple(self.spec["observation"]["shape"]))
    obs_dtype = property(lambda self: np.dtype(self.spec["observation"]["dtype"]))
    encoding = property(lambda self: self.spec["observation"]["encoding"])
    visited_marks = property(lambda self: bool(self.spec["observation"].get("visited_marks")))
    num_actions = property(lambda self: int(self.spec["actions"]["count"]))
    action_meanings = property(lambda self: list(self.spec["actions"]["meanings"]))
    env_action_ids = property(lambda self: list(self.spec["actions"]["env_action_ids"]))
    env_id = property(lambda self: self.spec["env"]["id"])

    def _batch(self, obs: Any) -> tuple[np.ndarray, bool]:
        arr = np.asarray(obs)
        single = arr.shape == self.obs_shape
        if single:
            arr = arr[None]
        if arr.ndim != len(self.obs_shape) + 1 or arr.shape[1:] != self.obs_shape:
            raise ValueError(f"observations of shape {list(arr.shape)} do not fit this policy: it takes btcli's "
                             f"encoded {self.env_id} observations of shape {list(self.obs_shape)} (or a batch "
                             "[B, *shape]); make them with policy.make_env() or policy.encode()")
        if arr.dtype != self.obs_dtype:
            if not np.issubdtype(arr.dtype, np.integer) or (arr.size and (arr.min() < 0 or arr.max() > 255)):
                raise ValueError(f"observations must be {self.obs_dtype} (btcli's encoding), got {arr.dtype}")
            arr = arr.astype(self.obs_dtype)
        return np.ascontiguousarray(arr), single

    @torch.inference_mode()
    def q_values(self, obs: Any) -> np.ndarray:
        """Q-values ``[B, A]`` (``[A]`` for a single observation)."""
        batch, single = self._batch(obs)
        q = self.net(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()
        return q[0] if single else q

    def __call__(self, obs: Any) -> PolicyOutput:
        """Greedy actions and Q-values of a batch (or of one observation, without the batch axis)."""
        q = self.q_values(obs)
        return PolicyOutput(q.argmax(axis=-1).astype(np.int64), q)

    def act(self, obs: Any) -> np.ndarray:
        """Greedy actions only."""
        return self(obs).actions

    def make_env(self, num_envs: int = 1, seed: int = 0, **env_overrides: Any):
        """btcli's env for this policy's task, with the options it was trained under (``env.reset()``
        then ``env.step(actions)``; see ``btcli.envs.base.VecEnv``). ``env_overrides`` change
        other options (e.g. ``sticky_actions=0.0``); those that change the observation are refused."""
        from btcli.envs import EnvConfig, make_vec_env

        saved = {k: v for k, v in self.spec["env"]["config"].items() if k in EnvConfig.__dataclass_fields__}
        for key in ("visited", "actions", "frame_stack", "frame_skip"):
            if key in env_overrides and env_overrides[key] != saved.get(key):
                raise ValueError(f"env option {key!r} changes the observation or actions this policy was trained on")
        cfg = replace(EnvConfig(**saved), num_envs=num_envs, **env_overrides)
        env = make_vec_env(cfg, seed=seed)
        if tuple(env.obs_shape) != self.obs_shape or list(env.action_meanings) != self.action_meanings:
            env.close()
            raise ValueError(f"{self.env_id} here gives observations {list(env.obs_shape)} and actions "
                             f"{env.action_meanings}, not the policy's {list(self.obs_shape)} {self.action_meanings}")
        return env

    def encode(self, image: Any, visited: Any = None) -> np.ndarray:
        """btcli's encoding of MiniGrid ``FullyObsWrapper`` observations: ``obs["image"]`` (or the
        dict itself), uint8 ``[W, H, 3]`` or a batch ``[B, W, H, 3]``. A policy trained with
        visited marks also needs ``visited``: bool ``[H, W]`` (or ``[B, H, W]``), the cells the agent
        has stood on this episode, its current cell included."""
        if self.spec["observation"]["domain"] != "minigrid":
            raise ValueError("encode() is for MiniGrid policies; Atari observations come from policy.make_env()")
        if isinstance(image, dict):
            image = image["image"]
        img = np.asarray(image)
        single = img.ndim == 3
        if single:
            img = img[None]
        h, w = self.obs_shape[:2]
        if img.ndim != 4 or img.shape[1:] != (w, h, 3):
            raise ValueError(f"expected FullyObsWrapper images [W, H, 3] = [{w}, {h}, 3] (or a batch), got "
                             f"{list(np.asarray(image).shape)}")
        obs = np.ascontiguousarray(img.transpose(0, 2, 1, 3)[..., [0, 2]]).astype(np.uint8)
        if self.visited_marks:
            if visited is None:
                raise ValueError("this policy was trained with visited marks (env.visited=true): pass visited=, the "
                                 "cells visited this episode, or use policy.make_env()")
            marks = np.asarray(visited, dtype=bool)
            obs[..., 1] |= np.where(marks[None] if marks.ndim == 2 else marks, 4, 0).astype(np.uint8)
        return obs[0] if single else obs


def load_policy(path: str | Path, device: str = "cpu") -> Policy:
    """Load an export folder (``btcli export``) as a :class:`Policy`; refuses a changed or foreign folder."""
    from btcli.agent.networks import build_q_network

    export = read_export(path)
    spec = export.spec
    n = spec["network"]
    net = build_q_network(tuple(spec["observation"]["shape"]), int(n["num_outputs"]), torso=n["torso_resolved"],
                          hidden=int(n["hidden"]), dueling=bool(n["dueling"]))
    try:
        net.load_state_dict(export.weights)
    except RuntimeError:
        raise ExportError(f"the weights in '{export.path}' do not fit the network its policy.json describes; "
                          "export the run again") from None
    dev = torch.device(device)
    return Policy(export.path, spec, export.sha256, net.to(dev).eval().requires_grad_(False), dev)
