"""The reward-free pre-training objectives, as a registry: adding one is one new file.

Each module in ``btcli/intrinsic/objectives/`` declares

* its options, a dataclass registered with :func:`options` under a section name; they become the
  config keys ``intrinsic.<section>.<field>`` (``btcli keys`` lists them with their help), and
* one or more objectives, with :func:`objective`: a name (``--objective NAME``), the sections
  it reads and a builder ``(spec: SourceSpec) -> IntrinsicSource``.

Modules are found by name (every module of that package, imported in name order), so nothing
else changes when one is added. They are imported whenever configs are read, so they must not
import torch at module level: the builder and the source's methods import what they need.

An intrinsic source turns one vector step into the learner's rewards (the task's reward is never
among its inputs) and, where the objective has a trained part, learns from replay batches.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from btcli.errors import BtcliError


class IntrinsicSource(Protocol):
    def rewards(self, obs, actions, step) -> Any:
        """float32 [num_envs] rewards of the transitions ``obs --actions--> step`` (never step.reward)."""
        ...

    def learn(self, batch) -> None:
        """Train on a replay :class:`btcli.agent.replay.TensorBatch` (next_obs is n steps ahead);
        a no-op for objectives without a trained part."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything but the episodes in progress."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def episode_state_dict(self) -> dict[str, Any] | None:
        """The episodes in progress (saved only when the environment's episodes are), or None."""
        ...

    def load_episode_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue the saved episodes; None: they restart."""
        ...


class Untrained:
    """For sources without a trained part or run-wide state: learning and their state are no-ops."""

    def learn(self, batch) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class NoEpisodeState:
    """For sources whose rewards do not depend on the episode so far."""

    def episode_state_dict(self) -> None:
        return None

    def load_episode_state_dict(self, state: None) -> None:
        return None


@dataclass
class SourceSpec:
    """What a builder gets: the run's options for the sections it declared, the environment
    copies (read for their spaces and probes, never stepped), the device, and whether replay is
    checkpointed (``save_replay``: then a source's own buffers may be too)."""

    objective: str
    options: dict[str, Any]
    env: Any
    device: Any
    save_buffers: bool = False


@dataclass(frozen=True)
class Objective:
    name: str
    sections: tuple[str, ...]
    build: Callable[[SourceSpec], IntrinsicSource]
    help: str


_SECTIONS: dict[str, type] = {}
_OBJECTIVES: dict[str, Objective] = {}
_LOADED = False


def options(section: str) -> Callable[[type], type]:
    """Class decorator: register an options dataclass as config section ``intrinsic.<section>``."""

    def register(cls: type) -> type:
        if section in _SECTIONS and _SECTIONS[section] is not cls:
            raise ValueError(f"intrinsic config section '{section}' is registered twice")
        _SECTIONS[section] = cls
        return cls

    return register


def objective(name: str, *, sections: tuple[str, ...], help: str) -> Callable:
    """Function decorator: register ``build(spec) -> IntrinsicSource`` as objective ``name``."""

    def register(build: Callable[[SourceSpec], IntrinsicSource]) -> Callable:
        if name in _OBJECTIVES:
            raise ValueError(f"objective '{name}' is registered twice")
        _OBJECTIVES[name] = Objective(name, tuple(sections), build, help)
        return build

    return register


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    from btcli.intrinsic import objectives as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _LOADED = True


def config_sections() -> dict[str, type]:
    """Section name -> options dataclass, in the order the modules registered them."""
    _load()
    return dict(_SECTIONS)


def objectives() -> dict[str, Objective]:
    """Objective name -> :class:`Objective`, in registration order."""
    _load()
    return dict(_OBJECTIVES)


def build_source(intrinsic, env, device, *, save_buffers: bool = False) -> IntrinsicSource | None:
    """The reward source of ``intrinsic.objective`` (None for ``none``: a transfer run)."""
    if intrinsic.objective == "none":
        return None
    known = objectives()
    if intrinsic.objective not in known:
        raise BtcliError(f"unknown objective '{intrinsic.objective}'; available: {', '.join(known)}")
    obj = known[intrinsic.objective]
    spec = SourceSpec(obj.name, {s: getattr(intrinsic, s) for s in obj.sections}, env, device, save_buffers)
    return obj.build(spec)
