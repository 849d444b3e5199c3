"""Which environment ids btcli runs, and one-line errors for the ones it does not.

btcli runs two families: Atari games as ``ALE/<Game>-v5`` (registered by ``import ale_py``)
and grid worlds as ``MiniGrid-<Task>-v<N>`` (registered by ``import minigrid``).
"""

from __future__ import annotations

import difflib
import functools

SUPPORTED_FAMILIES = "ALE/<Game>-v5 (Atari) and MiniGrid-<Task>-v0 (grid worlds)"
_LIST_HINT = "(list ids with: btcli envs)"


class UnknownEnvError(ValueError):
    """An environment id btcli cannot run. The message is one line, with suggestions."""


def is_atari(env_id: str) -> bool:
    """True for Atari ids (``ALE/...``)."""
    return env_id.startswith("ALE/")


def is_minigrid(env_id: str) -> bool:
    """True for grid-world ids (``MiniGrid-...``)."""
    return env_id.startswith("MiniGrid-")


@functools.lru_cache(maxsize=1)
def _registered() -> tuple[str, ...]:
    # Both imports register their ids with gymnasium as a side effect.
    import ale_py
    import gymnasium as gym
    import minigrid  # noqa: F401

    from btcli.envs.tasks import register_tasks

    gym.register_envs(ale_py)
    register_tasks()
    return tuple(gym.registry.keys())


def list_env_ids() -> list[str]:
    """Every id btcli runs: the ALE/*-v5 games, then the MiniGrid-* tasks, each sorted."""
    ids = _registered()
    atari = sorted(i for i in ids if is_atari(i) and i.endswith("-v5"))
    # The WFC tasks need extra packages (imageio, networkx) that btcli does not install.
    grid = sorted(i for i in ids if is_minigrid(i) and not i.startswith("MiniGrid-WFC-"))
    return atari + grid


def _keys(env_id: str) -> list[str]:
    """Lower-case names a user might type for ``env_id``: the id itself and the bare game/task."""
    low = env_id.lower()
    keys = [low]
    if is_atari(env_id):
        keys.append(low[len("ale/") :].rsplit("-v", 1)[0])  # "breakout"
    elif is_minigrid(env_id):
        keys.append(low[len("minigrid-") :].rsplit("-v", 1)[0])  # "fourrooms", "doorkey-5x5"
    return keys


def suggest_env_ids(env_id: str, n: int = 5) -> list[str]:
    """Up to ``n`` supported ids close to ``env_id`` (case-insensitive), best first."""
    index: dict[str, str] = {}
    for known in list_env_ids():
        for key in _keys(known):
            index.setdefault(key, known)
    query = env_id.strip().lower()
    # Also try the query stripped of a family prefix/suffix, so "BreakoutNoFrameskip-v4" and
    # "ALE/Breakout-v4" still find ALE/Breakout-v5.
    variants = [query]
    bare = query.removeprefix("ale/").removeprefix("minigrid-").rsplit("-v", 1)[0]
    bare = bare.replace("noframeskip", "").replace("deterministic", "")
    if bare and bare != query:
        variants.append(bare)
    scored: dict[str, float] = {}
    for q in variants:
        for key in difflib.get_close_matches(q, list(index), n=3 * n, cutoff=0.6):
            ratio = difflib.SequenceMatcher(None, q, key).ratio()
            known = index[key]
            scored[known] = max(scored.get(known, 0.0), ratio)
    return sorted(scored, key=lambda k: (-scored[k], k))[:n]


def resolve_env_id(env_id: str) -> str:
    """Return ``env_id`` if btcli runs it; otherwise raise a one-line :class:`UnknownEnvError`."""
    supported = list_env_ids()
    if env_id in supported:
        return env_id
    suggestions = suggest_env_ids(env_id)
    if env_id in _registered():
        head = f"environment id '{env_id}' is registered with gymnasium but not supported; btcli runs {SUPPORTED_FAMILIES}"
    else:
        head = f"unknown environment id '{env_id}'"
    if suggestions:
        msg = f"{head}; did you mean: {', '.join(suggestions)}? {_LIST_HINT}"
    elif env_id in _registered():
        msg = f"{head} {_LIST_HINT}"
    else:
        msg = f"{head}; btcli runs {SUPPORTED_FAMILIES} {_LIST_HINT}"
    raise UnknownEnvError(msg)
