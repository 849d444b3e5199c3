"""The pre-trained run a transfer reads: finding its checkpoint, checking it, and using it.

A transfer pins one checkpoint (folder and content hash) when it starts and records it in
its config.yaml under ``provenance.pretrained``; a resumed transfer reloads exactly that
checkpoint or refuses. Nothing is substituted silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from btcli.agent.networks import QNetwork
from btcli.errors import BtcliError
from btcli.runs import CHECKPOINT_MARKER, RunDir, RunDirError, load_checkpoint

# agent keys that fix the Q-network's shape: FT copies weights, so these must agree
TORSO_KEYS = ("torso", "hidden")
ARCHITECTURE_KEYS = (*TORSO_KEYS, "dueling")
CORE_KEYS = ("core", "core_size", "prev_inputs")  # the recurrent core (configs from before it: feed-forward)


def _architecture_value(agent: dict[str, Any], key: str) -> Any:
    """An agent config's value of an architecture key; a config without ``core`` is feed-forward,
    and a feed-forward network has no core size."""
    core = agent.get("core") or "none"
    if key == "core":
        return core
    if key == "core_size":
        return agent.get("core_size") if core != "none" else None
    if key == "prev_inputs":
        return bool(agent.get("prev_inputs", False))
    return agent.get(key)


class PretrainedError(BtcliError):
    """The pre-trained run is missing, incomplete or does not fit this task."""


@dataclass
class Pretrained:
    """One loaded, verified pre-trained checkpoint."""

    run: Path
    checkpoint: Path
    state: dict[str, Any]

    @property
    def sha256(self) -> str:
        return self.state["checkpoint_sha256"]

    @property
    def agent_config(self) -> dict[str, Any]:
        return self.state["config"]["agent"]

    def provenance(self) -> dict[str, Any]:
        """What a transfer records about its pre-trained run (config.yaml, provenance.pretrained)."""
        s = self.state
        return {
            "run": str(self.run.resolve()), "checkpoint": str(self.checkpoint.resolve()), "sha256": self.sha256,
            "command": s.get("command"), "objective": s.get("objective"), "step": int(s["step"]),
            "env_id": s["env_id"], "obs_shape": list(s["obs_shape"]), "num_actions": int(s["num_actions"]),
            "visited_marks": bool(s.get("visited_marks", False)),
            **({"kind": "export", "export": s["export"]} if "export" in s else {}),
        }

    def check_task(self, identity: dict[str, Any], *, allow_other_env: bool) -> None:
        """Refuse a checkpoint from another observation space, action space or (unless allowed) env."""
        s = self.state
        where = f"pre-trained checkpoint '{self.checkpoint}'"
        if list(s["obs_shape"]) != list(identity["obs_shape"]):
            raise PretrainedError(f"{where} has observations of shape {tuple(s['obs_shape'])} but "
                                  f"{identity['env_id']} has {tuple(identity['obs_shape'])}; pre-train on this task's layout")
        if int(s["num_actions"]) != int(identity["num_actions"]) or \
                list(s.get("action_meanings", [])) != list(identity["action_meanings"]):
            raise PretrainedError(f"{where} has {s['num_actions']} actions {s.get('action_meanings')} but "
                                  f"{identity['env_id']} has {identity['num_actions']} {identity['action_meanings']}; "
                                  "the action spaces must be the same")
        if bool(s.get("visited_marks", False)) != identity["visited_marks"]:
            raise PretrainedError(f"{where} was trained with env.visited={bool(s.get('visited_marks', False))} but this "
                                  f"run has env.visited={identity['visited_marks']}; the observations must be encoded alike")
        if s["env_id"] != identity["env_id"] and not allow_other_env:
            raise PretrainedError(f"{where} was trained on {s['env_id']}, not {identity['env_id']}; pass "
                                  "--set transfer.allow_other_env=true to transfer across tasks with the same spaces")

    def check_architecture(self, agent: dict[str, Any], layers: str = "all") -> None:
        """FT copies weights: refuse a learner whose network differs from the pre-trained one in
        what is copied (``layers`` 'all': torso, core and head; 'torso': the torso only, so a
        feed-forward learner can take a recurrent run's torso and the other way round)."""
        keys = ARCHITECTURE_KEYS + CORE_KEYS if layers == "all" else TORSO_KEYS
        for key in keys:
            theirs, ours = _architecture_value(self.agent_config, key), _architecture_value(agent, key)
            if theirs != ours:
                also = "" if layers == "torso" or key not in CORE_KEYS else \
                    " (or copy only the torso: transfer.ft_layers=torso)"
                raise PretrainedError(f"agent.{key} is {ours!r} here but {theirs!r} in the pre-trained run "
                                      f"'{self.run}'; fine-tuning copies weights, so the networks must match "
                                      f"(use --set agent.{key}={theirs}){also}")

    @property
    def recurrent(self) -> bool:
        return _architecture_value(self.agent_config, "core") != "none"

    def reward_source(self, net: nn.Module, device: torch.device):
        """What a π_p with ``agent.prev_inputs`` is fed as its previous reward: its run's NGU source
        (a pre-training run) or its task's clipped reward (a transfer run); None for any other π_p
        (:func:`btcli.evaluation.checkpoint_rewards`)."""
        from btcli.config import from_dict
        from btcli.evaluation import checkpoint_rewards

        s = self.state
        return checkpoint_rewards(net, from_dict(s["config"]), s, s["obs_shape"], s["num_actions"], device)

    def check_teacher(self, kickstart: float, learner_core: str) -> None:
        """A feed-forward learner's kickstart asks π_p about replayed single steps, which a recurrent
        π_p cannot answer (a recurrent learner's replay records π_p's actions as they are taken)."""
        if kickstart > 0 and self.recurrent and learner_core == "none":
            raise PretrainedError(f"pre-trained run '{self.run}' is recurrent: a feed-forward learner's kickstart asks "
                                  "π_p about replayed single steps, which a recurrent π_p cannot answer; set "
                                  "transfer.kickstart=0, or agent.core=lstm (its replay records π_p's actions)")

    def network(self, obs_shape: tuple[int, ...], num_actions: int, device: torch.device) -> nn.Module:
        """The pre-trained online Q-network, frozen (π_p = argmax of its Q-values), feed-forward or
        recurrent as it was trained."""
        from btcli.build import q_network

        net = q_network(self.agent_config, obs_shape, num_actions, device)
        net.load_state_dict(self.state["learner"]["online"])
        return net.to(device).eval().requires_grad_(False)


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(run directory, checkpoint folder) for a run directory (its newest complete checkpoint) or a
    checkpoint folder."""
    path = Path(path)
    if not path.exists():
        raise PretrainedError(f"pre-trained run '{path}' does not exist; pass the directory of a `btcli pretrain` run")
    if (path / CHECKPOINT_MARKER).exists() or path.name.startswith("step_"):
        return path.parent.parent, path
    if not (path / "config.yaml").exists():
        raise PretrainedError(f"'{path}' is not a btcli run directory (no config.yaml); pass the directory "
                              "of a `btcli pretrain` run")
    latest = RunDir(path).latest_checkpoint()
    if latest is None:
        raise PretrainedError(f"pre-trained run '{path}' has no complete checkpoint yet; let it reach one "
                              "(or finish) first")
    return path, latest


def load_pretrained(path: str | Path, *, sha256: str | None = None, device: str = "cpu") -> Pretrained:
    """Load and verify a pre-trained checkpoint (or a ``btcli export`` folder); with ``sha256``,
    insist on exactly that content."""
    from btcli.export import is_export

    if is_export(path):
        return _from_export(Path(path), sha256=sha256, device=device)
    run, checkpoint = resolve_checkpoint(path)
    try:
        state = load_checkpoint(checkpoint, map_location=device)
    except RunDirError as e:
        raise PretrainedError(f"pre-trained {e}") from None
    if "learner" not in state or "obs_shape" not in state:
        raise PretrainedError(f"'{checkpoint}' is not a btcli DQN checkpoint")
    if sha256 is not None and state["checkpoint_sha256"] != sha256:
        raise PretrainedError(f"pre-trained checkpoint '{checkpoint}' changed since this run started (content hash "
                              f"{state['checkpoint_sha256'][:12]}..., recorded {sha256[:12]}...); restore it or start a new run")
    return Pretrained(run=run, checkpoint=checkpoint, state=state)


def _from_export(path: Path, *, sha256: str | None, device: str) -> Pretrained:
    """An export folder as a pre-trained checkpoint: its policy.json gives the facts a checkpoint
    holds, its safetensors the online weights; its identity is the SHA-256 of policy.json."""
    from btcli.export import ExportError, read_export

    try:
        export = read_export(path)
    except ExportError as e:
        raise PretrainedError(f"pre-trained export: {e}") from None
    if sha256 is not None and export.sha256 != sha256:
        raise PretrainedError(f"pre-trained export '{path}' changed since this run started (policy.json SHA-256 "
                              f"{export.sha256[:12]}..., recorded {sha256[:12]}...); restore it or start a new run")
    spec = export.spec
    net, obs, src = spec["network"], spec["observation"], spec["source"]
    state = {
        "checkpoint_sha256": export.sha256,
        "config": {"agent": {"torso": net["torso"], "hidden": net["hidden"], "dueling": net["dueling"],
                             "channels_last": False}},
        "learner": {"online": {k: v.to(device) for k, v in export.weights.items()}},
        "command": src.get("command"), "objective": src.get("objective"), "step": int(src["step"]),
        "env_id": spec["env"]["id"], "obs_shape": list(obs["shape"]), "num_actions": int(spec["actions"]["count"]),
        "action_meanings": list(spec["actions"]["meanings"]), "visited_marks": bool(obs.get("visited_marks")),
        "export": {"source_run": src.get("run"), "source_checkpoint": src.get("checkpoint"),
                   "source_sha256": src.get("checkpoint_sha256"), "weights_sha256": spec["weights"]["sha256"]},
    }
    return Pretrained(run=path, checkpoint=path, state=state)


def copy_weights(target: QNetwork, source_state: dict[str, torch.Tensor], layers: str, extra_actions: int = 0
                 ) -> list[str]:
    """Copy pre-trained weights into ``target``: 'all', or 'torso' (the head keeps its fresh init).
    With ``extra_actions`` the target's head has that many more outputs; they keep their fresh
    init and the pre-trained rows fill the others. Returns the names of the copied tensors."""
    wanted = {k: v for k, v in source_state.items() if layers == "all" or k.startswith("torso.")}
    own = target.state_dict()
    for name, value in list(wanted.items()):
        if name not in own:
            raise PretrainedError(f"pre-trained weight '{name}' does not fit this network; the architectures differ")
        if own[name].shape != value.shape:
            grown = extra_actions and name.startswith("head.advantage.") and \
                own[name].shape[0] == value.shape[0] + extra_actions and own[name].shape[1:] == value.shape[1:]
            if not grown:
                raise PretrainedError(f"pre-trained weight '{name}' does not fit this network; the architectures differ")
            wanted[name] = torch.cat([value.to(own[name].device), own[name][value.shape[0]:]])
    missing = [k for k in own if k not in wanted and (layers == "all" or k.startswith("torso."))]
    if missing:
        raise PretrainedError(f"pre-trained checkpoint lacks weights {missing[:3]}; the architectures differ")
    target.load_state_dict(wanted, strict=False)
    return sorted(wanted)


@torch.no_grad()
def zero_values(net: QNetwork, layers: str) -> None:
    """Start fine-tuning at state values of 0, keeping only what the head says between actions.

    With the copied head (``layers='all'``) Q(s, a) becomes Q(s, a) - mean_a Q(s, a): the
    dueling head's value stream is zeroed (its advantages are already centred), a plain head's
    rows are centred. The pre-trained policy's ranking of actions is unchanged. A fresh head
    (``layers='torso'``) is zeroed, so Q = 0 everywhere, whatever the scale of the copied features.

    Why: pre-trained values are on the intrinsic reward's scale (e.g. ~10 for a coverage reward
    against a task whose returns are at most 1), and the copied features can be several times
    larger than fresh ones, so a fresh head on them also starts far from the task's values. DQN
    unlearns a uniformly inflated value only at about (1 - gamma) per target period, and until
    then bootstrapping keeps it inflated (experiments/RESULTS.md).
    """
    head = net.head
    if layers == "torso":
        for param in head.parameters():
            param.zero_()
    elif head.value is not None:
        head.value.weight.zero_()
        head.value.bias.zero_()
    else:
        head.advantage.weight.sub_(head.advantage.weight.mean(dim=0, keepdim=True))
        head.advantage.bias.sub_(head.advantage.bias.mean())


def freeze(net: nn.Module, part: str) -> list[str]:
    """Stop gradients into ``part`` ('none' or 'torso'); returns the frozen parameter names."""
    if part == "none":
        return []
    frozen = []
    for name, param in net.named_parameters():
        if name.startswith(f"{part}."):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen
