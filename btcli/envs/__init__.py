"""Environment factory: Atari (ale-py) and MiniGrid behind one same-step-autoreset contract.

Public API::

    make_vec_env(cfg, *, seed, render=False) -> VecEnv
    resolve_env_id(env_id) -> str            # raises UnknownEnvError (one line, suggestions)
    list_env_ids() -> list[str]
    is_atari(env_id) -> bool

Every env returned also has ``last_probes() -> dict[str, np.ndarray]`` (probes of the state
behind the latest returned obs) and ``render_rgb() -> np.ndarray`` (uint8 [H, W, 3] of copy 0;
for Atari only when made with ``render=True``). See ``base.py`` for the contract and
``atari.py`` / ``minigrid.py`` for the observation conventions.
"""

from __future__ import annotations

from .base import EnvConfig, Step, VecEnv
from .minigrid import minigrid_action_names
from .registry import (
    UnknownEnvError,
    is_atari,
    is_minigrid,
    list_env_ids,
    resolve_env_id,
)

__all__ = [
    "EnvConfig",
    "Step",
    "UnknownEnvError",
    "VecEnv",
    "is_atari",
    "is_minigrid",
    "list_env_ids",
    "make_vec_env",
    "resolve_env_id",
    "validate_env_config",
]

ATARI_BACKENDS = ("vector", "gym")


def validate_env_config(cfg: EnvConfig) -> None:
    """Raise ``ValueError`` (one line) for settings no backend can honour."""
    if cfg.num_envs < 1:
        raise ValueError(f"env.num_envs must be >= 1, got {cfg.num_envs}")
    if not 0.0 <= cfg.sticky_actions <= 1.0:
        raise ValueError(f"env.sticky_actions must be in [0, 1], got {cfg.sticky_actions}")
    if cfg.frame_skip < 1:
        raise ValueError(f"env.frame_skip must be >= 1, got {cfg.frame_skip}")
    if cfg.frame_stack < 1:
        raise ValueError(f"env.frame_stack must be >= 1, got {cfg.frame_stack}")
    if cfg.max_episode_frames < 1:
        raise ValueError(f"env.max_episode_frames must be >= 1, got {cfg.max_episode_frames}")
    if cfg.noop_max < 0:
        raise ValueError(f"env.noop_max must be >= 0, got {cfg.noop_max}")
    if cfg.max_episode_steps < 0:
        raise ValueError(f"env.max_episode_steps must be >= 0, got {cfg.max_episode_steps}")
    if cfg.actions != "all":
        if is_atari(cfg.id):
            raise ValueError("env.actions applies to MiniGrid tasks only; ALE v5 already gives each game its "
                             "minimal action set")
        minigrid_action_names(cfg.actions)
    if cfg.atari_backend not in ATARI_BACKENDS:
        raise ValueError(f"env.atari_backend must be one of {', '.join(ATARI_BACKENDS)}, got {cfg.atari_backend!r}")


def make_vec_env(cfg: EnvConfig, *, seed: int, render: bool = False) -> VecEnv:
    """Build ``cfg.num_envs`` copies of ``cfg.id``; copy i is seeded with ``seed + i`` on the
    first ``reset()`` (``reset(seed)`` reseeds). Call ``reset()`` before ``step()``.

    ``render=True`` makes ``render_rgb()`` available on copy 0; for Atari it selects the
    'gym' backend (the vector backend has no RGB frames).
    """
    env_id = resolve_env_id(cfg.id)
    validate_env_config(cfg)
    if is_atari(env_id):
        from .atari import AtariGymBackend, AtariVectorBackend

        if render or cfg.atari_backend == "gym":
            return AtariGymBackend(cfg, seed)
        return AtariVectorBackend(cfg, seed)
    from .minigrid import MiniGridVecEnv

    return MiniGridVecEnv(cfg, seed)
