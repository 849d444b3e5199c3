"""Typed run configuration: dataclasses, domain presets, YAML files and ``key=value`` overrides.

Precedence, lowest first: dataclass defaults, the preset of the environment's domain
(Atari or MiniGrid), the ``--config`` YAML file, command-line flags, ``--set key=value``.
Every key is checked: an unknown key or a value of the wrong type is a ``ConfigError``
naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from btcli.agent.replay import min_capacity
from btcli.envs import validate_env_config
from btcli.envs.base import EnvConfig, _f
from btcli.errors import BtcliError
from btcli.intrinsic.registry import config_sections, objectives
from btcli.modes import MODES, PRETRAINED_MODES, TRANSFER_MODES  # noqa: F401 (importable from here too)
from btcli.presets import ATARI_PRESET, MINIGRID_PRESET, preset_for  # noqa: F401 (importable from here too)

# Sections of a run's config.yaml that record facts about the run rather than config keys.
RECORD_KEYS = ("meta", "provenance")
# reward-free pre-training objectives: one module each in btcli/intrinsic/objectives/
OBJECTIVES = tuple(objectives())


class ConfigError(BtcliError):
    """A configuration key or value is wrong."""


@dataclass
class AgentConfig:
    """The DQN learner: network, targets and optimisation."""

    torso: str = _f("auto", "'auto' (CNN for pixels, MLP for grids), 'cnn', 'mlp', or for MiniGrid 'gridconv' (3x3 "
                     "convolutions over the grid) or 'gridego' (MLP over the grid centred on the agent, facing up)")
    hidden: int = _f(256, "width of the MLP torso layers and of the heads' hidden layer")
    dueling: bool = _f(True, "dueling head: V(s) + A(s,a) - mean_a A(s,a)")
    double: bool = _f(True, "double Q-learning: the online net picks the bootstrap action")
    n_step: int = _f(3, "n-step returns (truncated at episode ends)")
    gamma: float = _f(0.99, "discount factor")
    lr: float = _f(1e-4, "Adam learning rate")
    adam_eps: float = _f(1.5e-4, "Adam epsilon")
    batch_size: int = _f(32, "transitions per gradient update")
    buffer_size: int = _f(100_000, "replay capacity in transitions (each Atari frame stored once)")
    learning_starts: int = _f(20_000, "environment steps collected before the first update")
    train_freq: int = _f(4, "environment steps per gradient update")
    target_update: int = _f(8_000, "environment steps between target-network copies")
    max_grad_norm: float = _f(10.0, "gradient-norm clip (0: off)")
    reward_clip: float = _f(1.0, "the learner sees rewards clipped to [-c, c] (0: unclipped); logs keep raw scores")
    precision: str = _f("fp32", "update precision: 'fp32', or 'bf16' autocast for the forward passes")
    channels_last: bool = _f(True, "CNN: channels-last memory format (faster on CPUs)")
    cuda_graph: bool = _f(False, "CUDA: capture the whole update once as a CUDA graph and replay it (same math, "
                          "no per-kernel launch cost); ignored on a CPU and with agent.core=lstm")
    core: str = _f("none", "'none' (feed-forward) or 'lstm': a recurrent core learned from replayed sequences (R2D2)")
    core_size: int = _f(128, "agent.core=lstm: the LSTM's state size")
    seq_len: int = _f(20, "agent.core=lstm: steps of each replayed sequence that carry the loss")
    burn_in: int = _f(10, "agent.core=lstm: steps before them that only rebuild the stored state")
    prev_inputs: bool = _f(False, "agent.core=lstm: the LSTM also sees the previous action and the previous "
                                  "training reward, as NGU's does (pretrain: ngu / ngu+rnd only; transfer: "
                                  "the task's reward, clipped as the learner's)")


@dataclass
class ExploreConfig:
    """Epsilon-greedy exploration while training, and the evaluation epsilon."""

    eps_start: float = _f(1.0, "epsilon at step 0")
    eps_end: float = _f(0.01, "epsilon after the decay")
    eps_decay_steps: int = _f(100_000, "environment steps of linear decay from eps_start to eps_end")
    eps_eval: float = _f(0.001, "epsilon of the greedy evaluation policy (Machado et al. 2018)")
    ladder: float = _f(0.0, "> 0: copy i of N decays to ladder^(1 + ladder_alpha*i/(N-1)), not eps_end (Ape-X's "
                       "per-actor epsilons, used by R2D2 and NGU; Ape-X: 0.4); 0: off")
    ladder_alpha: float = _f(7.0, "explore.ladder: the exponent's spread across the copies (Ape-X: 7)")


def _intrinsic_config() -> type:
    """``IntrinsicConfig``: the objective, one nested section of options per registered objective
    module (``intrinsic.<section>.<key>``, btcli/intrinsic/registry.py), and bootstrap_terminal."""
    sections = config_sections()
    names = ", ".join(objectives())
    fields = [("objective", str, _f("none", f"pretrain objective: {names}; 'none' for transfer runs"))]
    fields += [(name, cls, field(default_factory=cls)) for name, cls in sections.items()]
    fields.append(("bootstrap_terminal", bool, _f(
        False, "pretrain: learn through the task's terminal states (e.g. MiniGrid's goal) as through a time limit, "
        "so the intrinsic values do not teach π_p to avoid them; the episode still ends there")))
    cls = dataclasses.make_dataclass("IntrinsicConfig", fields)
    cls.__module__ = __name__
    cls.__doc__ = "Reward-free pre-training: the intrinsic reward the learner maximises instead of the task's."
    return cls


IntrinsicConfig = _intrinsic_config()
# keys of the flat layout before objectives had sections (still read, with a note; old runs' config.yaml)
DEPRECATED_KEYS = {
    "intrinsic.rnd_lr": "intrinsic.rnd.lr", "intrinsic.rnd_feature_dim": "intrinsic.rnd.feature_dim",
    "intrinsic.ngu_embed_dim": "intrinsic.ngu.embed_dim", "intrinsic.ngu_idm_lr": "intrinsic.ngu.idm_lr",
    "intrinsic.ngu_k": "intrinsic.ngu.k", "intrinsic.ngu_memory": "intrinsic.ngu.memory",
    "intrinsic.ngu_train_every": "intrinsic.ngu.train_every", "intrinsic.ngu_normalise": "intrinsic.ngu.normalise",
    "intrinsic.count_scope": "intrinsic.count.scope",
}




@dataclass
class TransferConfig:
    """Behaviour transfer: the pre-trained run, flights, and what fine-tuning copies.

    Every default here is btcli's choice; the paper does not give these numbers (METHOD.md).
    """

    pretrained: str = _f("", "pre-trained run directory (or one of its checkpoints/step_* folders); modes ft, bt, bt+ft")
    allow_other_env: bool = _f(False, "accept a pre-trained run from another env id with the same observation and action spaces")
    flights: str = _f("auto", "who flies: 'auto' (the mode's: ez-greedy random, bt and bt+ft π_p, others none), or "
                      "'random' / 'none' (e.g. ft with ez-greedy's random flights: FT under BT's exploration schedule)")
    flight_start: str = _f("explore", "'explore': each epsilon step starts a flight, greedy between flights "
                           "(εz-greedy); 'fixed': flights start with probability flight_prob, epsilon-greedy between")
    flight_prob: float = _f(0.05, "probability that a flight starts at a step outside one (flight_start=fixed)")
    flight_mu: float = _f(2.0, "exponent of the zeta law of flight durations, P(n) ∝ n^-mu")
    flight_cap: int = _f(100, "longest flight in steps (zeta(2) has an infinite mean)")
    random_flight_share: float = _f(0.0, "bt, bt+ft: share of flights that repeat a random action instead of following π_p")
    pretrained_action: bool = _f(False, "ft, bt, bt+ft: one more learner action that hands the step to π_p; Q_θ "
                                 "learns its value (exploitation through π_p, the paper's v1)")
    ft_layers: str = _f("all", "ft, bt+ft: copy 'all' pre-trained weights, or the 'torso' only with a fresh Q head")
    freeze: str = _f("none", "ft, bt+ft: weights kept frozen while training: 'none' or 'torso'")
    eval_pretrained: str = _f("every", "ft, bt, bt+ft: also evaluate the frozen π_p on this task, same episodes and "
                              "epsilon as the learner (its zero-shot reference; eval.csv rows with policy "
                              "'pretrained'): at 'every' evaluation, at the 'final' one only, or 'none'")
    kickstart: float = _f(0.0, "ft, bt, bt+ft: initial weight of a large-margin loss pulling the learner's greedy "
                          "action toward π_p's on replayed states (DQfD's margin loss; 0: off), decayed "
                          "linearly to 0 over kickstart_steps")
    kickstart_steps: int = _f(40_000, "environment steps over which the kickstart weight decays to 0 (0: it stays constant)")
    kickstart_margin: float = _f(0.05, "margin of the kickstart loss: Q of π_p's action must exceed the others by it")
    ft_zero_values: bool = _f(True, "ft, bt+ft: start fine-tuning with state values of 0, not on the pre-training "
                              "reward's scale: the copied head keeps only its differences between actions "
                              "(Q - mean over actions), a fresh head (ft_layers=torso) starts at Q = 0")


WANDB_MODES = ("offline", "online")


@dataclass
class LogConfig:
    """Optional TensorBoard / Weights & Biases copies of the CSV logs (metrics, train, eval).

    The CSV files stay the record: a writer that is missing fails the start, one that fails
    later is dropped with a warning, and ``btcli export-logs`` replays the CSVs at any time.
    These keys change no number of the run, so a ``--resume`` may change them.
    """

    tensorboard: bool = _f(False, "also write TensorBoard event files to RUN/tensorboard/ (pip install 'btcli[tensorboard]')")
    wandb: bool = _f(False, "also log to Weights & Biases, files in RUN/wandb/ (pip install 'btcli[wandb]')")
    wandb_mode: str = _f("offline", "'offline' (no network; upload later with `wandb sync RUN/wandb/offline-run-*`) "
                         "or 'online'")
    wandb_project: str = _f("btcli", "W&B project")
    wandb_entity: str = _f("", "W&B entity (team or user; empty: your default)")
    wandb_group: str = _f("", "W&B group (empty: none)")


@dataclass
class RunConfig:
    """One training run: what `btcli transfer` (and later `pretrain`) resolves its options into."""

    command: str = _f("transfer", "the subcommand that made this run")
    tag: str = _f("", "free-form label of the run (btcli compare --by tag groups by it; sweeps set it per arm)")
    mode: str = _f("scratch", "transfer mode: scratch, ez-greedy, ft, bt or bt+ft (pretrain runs: scratch)")
    steps: int = _f(100_000, "environment steps to train for (summed over all copies)")
    seed: int = _f(0, "seed of networks, exploration and environments")
    device: str = _f("auto", "'auto' (CUDA when present), 'cpu' or 'cuda'")
    threads: int = _f(0, "CPU threads for torch (0: all cores)")
    eval_every: int = _f(0, "environment steps between evaluations (0: only at the end)")
    eval_episodes: int = _f(10, "episodes per evaluation (0: no evaluation)")
    checkpoint_every: int = _f(25_000, "environment steps between checkpoints")
    keep_checkpoints: int = _f(2, "complete checkpoints kept on disk (older ones are pruned)")
    save_replay: bool = _f(False, "store the replay buffer in checkpoints (large for Atari) so a resume keeps "
                                  "it; on MiniGrid a resume is then exact")
    train_log_every: int = _f(2_000, "environment steps between rows of train.csv")
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    intrinsic: IntrinsicConfig = field(default_factory=IntrinsicConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self) -> None:
        """Raise ConfigError on values no run could use."""
        choices = {
            "mode": (self.mode, TRANSFER_MODES),
            "device": (self.device, ("auto", "cpu", "cuda")),
            "agent.torso": (self.agent.torso, ("auto", "cnn", "mlp", "gridconv", "gridego")),
            "agent.precision": (self.agent.precision, ("fp32", "bf16")),
            "agent.core": (self.agent.core, ("none", "lstm")),
            "command": (self.command, ("transfer", "pretrain", "finetune")),
            "transfer.flight_start": (self.transfer.flight_start, ("explore", "fixed")),
            "transfer.ft_layers": (self.transfer.ft_layers, ("all", "torso")),
            "transfer.freeze": (self.transfer.freeze, ("none", "torso")),
            "transfer.eval_pretrained": (self.transfer.eval_pretrained, ("every", "final", "none")),
            "transfer.flights": (self.transfer.flights, ("auto", "random", "none")),
            "intrinsic.objective": (self.intrinsic.objective, ("none", *OBJECTIVES)),
            "log.wandb_mode": (self.log.wandb_mode, WANDB_MODES),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"config key '{key}' is '{value}'; choose one of: {', '.join(allowed)}")
        positive = {
            "steps": self.steps, "agent.batch_size": self.agent.batch_size,
            "agent.buffer_size": self.agent.buffer_size, "agent.n_step": self.agent.n_step,
            "agent.train_freq": self.agent.train_freq, "agent.target_update": self.agent.target_update,
            "agent.hidden": self.agent.hidden, "agent.core_size": self.agent.core_size, "agent.seq_len": self.agent.seq_len,
            "checkpoint_every": self.checkpoint_every, "keep_checkpoints": self.keep_checkpoints,
            "train_log_every": self.train_log_every,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"config key '{key}' must be positive, got {value}")
        non_negative = {
            "seed": self.seed, "threads": self.threads, "eval_every": self.eval_every,
            "eval_episodes": self.eval_episodes, "agent.learning_starts": self.agent.learning_starts,
            "agent.max_grad_norm": self.agent.max_grad_norm, "agent.reward_clip": self.agent.reward_clip,
            "agent.burn_in": self.agent.burn_in,
        }
        for key, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"config key '{key}' must be >= 0, got {value}")
        if self.explore.ladder_alpha < 0:
            raise ConfigError(f"config key 'explore.ladder_alpha' must be >= 0, got {self.explore.ladder_alpha}")
        for key in ("eps_start", "eps_end", "eps_eval", "ladder"):
            value = getattr(self.explore, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"config key 'explore.{key}' must be in [0, 1], got {value}")
        if self.agent.adam_eps <= 0:
            raise ConfigError(f"config key 'agent.adam_eps' must be positive, got {self.agent.adam_eps}")
        stack = self.env.frame_stack if self.env.id.startswith("ALE/") else 1
        least = min_capacity(self.env.num_envs, self.agent.n_step, stack)
        if self.agent.core != "none":  # whole sequences per copy's stream
            least = self.env.num_envs * (self.agent.burn_in + self.agent.seq_len + self.agent.n_step + stack)
        if self.agent.buffer_size < least:
            raise ConfigError(f"config key 'agent.buffer_size' is {self.agent.buffer_size}, below the {least} that "
                              f"{self.env.num_envs} copies with n_step {self.agent.n_step}"
                              f"{' and their sequences' if self.agent.core != 'none' else ''} need; raise it")
        if not 0.0 < self.agent.gamma <= 1.0:
            raise ConfigError(f"config key 'agent.gamma' must be in (0, 1], got {self.agent.gamma}")
        if (self.command == "pretrain") != (self.intrinsic.objective != "none"):
            raise ConfigError(f"config key 'intrinsic.objective' is '{self.intrinsic.objective}' in a "
                              f"'{self.command}' run; pretrain needs an objective (--objective {'|'.join(OBJECTIVES)}), "
                              "transfer and finetune take none")
        if self.intrinsic.bootstrap_terminal and self.command != "pretrain":
            raise ConfigError("config key 'intrinsic.bootstrap_terminal' applies to pretrain runs only; a transfer "
                              "learns the task's terminations")
        for name in config_sections():  # each objective module checks its own options
            try:
                getattr(self.intrinsic, name).validate()
            except ValueError as e:  # messages read "intrinsic.<section>.<key> ..."
                raise ConfigError(f"config key {e}") from None
        try:
            validate_env_config(self.env)
        except ValueError as e:  # messages read "env.<key> must ..."
            key, _, rest = str(e).partition(" ")
            raise ConfigError(f"config key '{key}' {rest}") from None
        if self.agent.lr <= 0:
            raise ConfigError(f"config key 'agent.lr' must be positive, got {self.agent.lr}")
        self._validate_transfer()

    def _validate_transfer(self) -> None:
        t = self.transfer
        for key, value in (("transfer.flight_prob", t.flight_prob), ("transfer.random_flight_share", t.random_flight_share)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"config key '{key}' must be in [0, 1], got {value}")
        if t.flight_mu <= 1.0:
            raise ConfigError(f"config key 'transfer.flight_mu' must be > 1 (the zeta law needs it), got {t.flight_mu}")
        if t.kickstart < 0 or t.kickstart_margin < 0 or t.kickstart_steps < 0:
            raise ConfigError("config keys 'transfer.kickstart', 'transfer.kickstart_margin' and "
                              "'transfer.kickstart_steps' must be >= 0")
        if t.kickstart > 0 and self.mode not in PRETRAINED_MODES:
            raise ConfigError(f"transfer.kickstart needs a pre-trained policy: modes ft, bt or bt+ft, not '{self.mode}'")
        if t.flight_cap < 1:
            raise ConfigError(f"config key 'transfer.flight_cap' must be >= 1, got {t.flight_cap}")
        if self.command == "pretrain" and self.mode != "scratch":
            raise ConfigError(f"config key 'mode' is '{self.mode}' in a pretrain run; pre-training learns from scratch")
        if self.command == "finetune" and self.mode != "ft":
            raise ConfigError(f"config key 'mode' is '{self.mode}' in a finetune run; finetune is mode ft")
        mode = MODES[self.mode]
        if mode.uses_pretrained and not t.pretrained:
            raise ConfigError(f"mode '{self.mode}' needs a pre-trained run: pass --pretrained RUN "
                              "(a `btcli pretrain` run directory)")
        if not mode.uses_pretrained and t.pretrained:
            raise ConfigError(f"mode '{self.mode}' does not use a pre-trained run, but transfer.pretrained is "
                              f"'{t.pretrained}'; drop --pretrained or choose mode ft, bt or bt+ft")
        if t.pretrained_action and not mode.uses_pretrained:
            raise ConfigError(f"transfer.pretrained_action needs a pre-trained policy: modes ft, bt or bt+ft, not '{self.mode}'")
        if not mode.copies_weights and (t.freeze != "none" or t.ft_layers != "all"):
            raise ConfigError(f"transfer.ft_layers / transfer.freeze only apply to modes ft and bt+ft, not '{self.mode}'")
        if self.agent.prev_inputs and (self.agent.core == "none" or (
                self.command == "pretrain" and not self.intrinsic.objective.startswith("ngu"))):
            raise ConfigError("agent.prev_inputs needs agent.core=lstm and, to pre-train, --objective ngu or ngu+rnd "
                              "(the rewards it is fed); set agent.prev_inputs=false")


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _resolved_type(cls, name: str):
    return typing.get_type_hints(cls)[name]


def all_keys(cls=RunConfig, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config dataclass, e.g. 'agent.lr'."""
    keys = []
    for name in _fields(cls):
        tp = _resolved_type(cls, name)
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def help_text(key: str, cls=RunConfig) -> str:
    """The one-line help of a dotted key."""
    head, _, rest = key.partition(".")
    tp = _resolved_type(cls, head)
    if rest:
        return help_text(rest, tp)
    return _fields(cls)[head].metadata.get("help", "")


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; list keys with: btcli keys"
    return ConfigError(f"unknown config key '{key}'{hint}")


def _number(text: str) -> Any:
    try:
        number = float(text.replace("_", ""))
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def _coerce(key: str, value: Any, tp) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    if tp in (int, float) and isinstance(value, str):
        value = _number(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e6 in YAML is a float
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(
        f"config key '{key}' expects {tp.__name__}, got {type(value).__name__} {value!r}"
    )


def get_key(cfg: Any, key: str) -> Any:
    """The value of a dotted key of a config dataclass, e.g. ``get_key(cfg, "agent.lr")``."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def set_key(cfg: Any, key: str, value: Any) -> None:
    """Set a dotted key on a config dataclass with type checking (a deprecated key sets its new one)."""
    if isinstance(cfg, RunConfig):
        key = DEPRECATED_KEYS.get(key, key)
    obj, cls = cfg, type(cfg)
    parts = key.split(".")
    for part in parts[:-1]:
        if part not in _fields(cls) or not dataclasses.is_dataclass(_resolved_type(cls, part)):
            raise _unknown_key(key)
        obj = getattr(obj, part)
        cls = type(obj)
    leaf = parts[-1]
    if leaf not in _fields(cls) or dataclasses.is_dataclass(_resolved_type(cls, leaf)):
        raise _unknown_key(key)
    setattr(obj, leaf, _coerce(key, value, _resolved_type(cls, leaf)))


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'agent': {'lr': 1}} -> {'agent.lr': 1}."""
    flat: dict[str, Any] = {}
    for k, v in mapping.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def load_yaml_overrides(path: str | Path) -> dict[str, Any]:
    """Read a config file into flat dotted overrides; one-line errors for unreadable files."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist; check the path given to --config") from None
    except OSError as e:
        raise ConfigError(f"config file '{path}' cannot be read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: {problem}; fix the file and rerun") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys (like 'agent: {{lr: 1e-4}}'), not a {type(data).__name__}")
    for key in RECORD_KEYS:  # a run's saved config.yaml may be reused as a config file
        data.pop(key, None)
    return flatten(data)


def parse_set_items(items: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` items; values are YAML scalars (1e-4, true, 'text')."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got '{item}' (for example --set agent.lr=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out


def build_config(overrides: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Resolve a RunConfig: defaults, the env's domain preset, then ``overrides`` in order."""
    cfg = base if base is not None else RunConfig()
    env_id = overrides.get("env.id", cfg.env.id)
    if base is None:
        for key, value in preset_for(str(env_id)).items():
            set_key(cfg, key, value)
    for key, value in overrides.items():
        if key in DEPRECATED_KEYS:
            print(f"note: config key '{key}' is now '{DEPRECATED_KEYS[key]}'; the old name still works",
                  file=sys.stderr, flush=True)
        set_key(cfg, key, value)
    cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (YAML-ready)."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from a saved config.yaml mapping, checking every key."""
    cfg = RunConfig()
    for key, value in flatten({k: v for k, v in data.items() if k not in RECORD_KEYS}).items():
        set_key(cfg, key, value)
    cfg.validate()
    return cfg
