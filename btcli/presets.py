"""Domain presets: the config values a run gets for its environment family before any file or --set."""

from __future__ import annotations

from typing import Any

# Domain presets: what a user gets with no config file. Chosen for the step budgets btcli
# runs on a laptop; experiments/*.yaml hold the paper-scale settings.
ATARI_PRESET: dict[str, Any] = {
    "agent.torso": "cnn", "agent.lr": 1e-4, "agent.buffer_size": 200_000,
    "agent.learning_starts": 20_000, "agent.target_update": 8_000, "agent.reward_clip": 1.0,
    "explore.eps_decay_steps": 100_000, "eval_episodes": 8, "checkpoint_every": 50_000,
}
MINIGRID_PRESET: dict[str, Any] = {
    "agent.torso": "mlp", "agent.lr": 5e-4, "agent.buffer_size": 100_000,
    "agent.learning_starts": 1_000, "agent.target_update": 1_000, "agent.reward_clip": 0.0,
    "agent.gamma": 0.99, "explore.eps_decay_steps": 20_000, "explore.eps_eval": 0.01,
    "env.num_envs": 4,
}


def preset_for(env_id: str) -> dict[str, Any]:
    """The domain preset for an environment id (empty for unknown families)."""
    if env_id.startswith("ALE/"):
        return dict(ATARI_PRESET)
    if env_id.startswith("MiniGrid"):
        return dict(MINIGRID_PRESET)
    return {}
