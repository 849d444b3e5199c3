"""Sweep files: a YAML grid of btcli training runs, expanded into jobs (``btcli sweep``).

A sweep file::

    out: runs/paper                       # root of every run directory (and of logs/)
    stages:                               # run in order; a stage starts when the previous one ended
      - name: pretrain
        command: pretrain                 # a btcli training command (pretrain, transfer, ...)
        grid: {env: [MiniGrid-DoorKey-5x5-v0], seed: [0, 1, 2]}
        args: {objective: count, steps: 20000}
      - name: transfer
        command: transfer
        grid: {env: [MiniGrid-DoorKey-5x5-v0], seed: [0, 1, 2], mode: [ft, bt]}
        args: {steps: 20000, pretrained: "{run:pretrain}"}
        set: {agent.lr: [1.0e-4, 5.0e-4]}

* ``grid`` and ``set`` values that are lists are crossed (first key slowest); every grid key
  and every list in ``set`` is part of the run's name; ``args`` holds single values.
* ``grid``/``args`` keys are options of the command (``env``, ``seed``, ``steps``, ``mode``,
  ``num-envs`` or ``num_envs``, ...) or config keys (sent as ``--set``); ``set`` keys are config keys.
* Strings in ``args`` and ``set`` are templates: ``{env}``, ``{seed}``, ``{agent.lr}`` (any grid
  or set key, or an ``args`` value that is not a template itself), ``{out}``, ``{stage}``, ``{name}`` (this run's name), and ``{run:STAGE}``: the run
  directory of the earlier stage's run that agrees with this one on every key they share.
  ``{{`` and ``}}`` are literal braces.
* A run is named ``<stage>-<value>-...`` (``s<seed>`` for seeds, ``<leaf><value>`` for keys
  other than env, mode and objective, e.g. ``lr0.0001``), or by the stage's ``run`` template.
  Its directory is ``<out>/<name>`` and its log ``<out>/logs/<name>.log``.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from btcli.errors import BtcliError

STAGE_KEYS = ("name", "command", "grid", "args", "set", "run")
TOP_KEYS = ("out", "stages", "slurm")  # slurm: job resources of --backend slurm (btcli/sweep_slurm.py)
# Options the sweep itself passes to every job; a grid may not set them.
RESERVED = ("out", "resume", "quiet", "json", "json_out", "set", "set_", "help", "print_config")
BARE_KEYS = ("env", "env.id", "mode", "objective", "intrinsic.objective")
LOGS = "logs"

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


class SweepError(BtcliError):
    """A sweep file that cannot be expanded, or a sweep that did not finish; one line."""


@dataclass(frozen=True)
class OptionSpec:
    """One option of a btcli command: its flag and whether it takes a value."""

    flag: str
    is_flag: bool = False
    off_flag: str | None = None


@dataclass
class Stage:
    """One stage of a sweep file, as written (values not yet crossed or filled)."""

    name: str
    command: str
    grid: dict[str, list[Any]]
    args: dict[str, Any]
    set: dict[str, list[Any]]
    run: str | None = None


@dataclass
class Sweep:
    """A parsed sweep file."""

    out: Path
    stages: list[Stage]
    source: Path | None = None
    slurm: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    """One run of the sweep: where it goes and the btcli arguments that make it."""

    stage: str
    command: str
    name: str
    run_dir: Path
    args: list[str]
    point: dict[str, Any]
    needs: list[Path] = field(default_factory=list)
    sets_threads: bool = False

    @property
    def log(self) -> Path:
        return self.run_dir.parent / LOGS / f"{self.name}.log"


# ----------------------------------------------------------------------------- parsing


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{where} must be a mapping of key: value, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def parse_sweep(data: Any, *, source: Path | None = None, out: Path | None = None) -> Sweep:
    """Check the structure of a loaded sweep file (not yet the keys) and return it typed."""
    where = f"sweep file '{source}'" if source else "sweep file"
    if not isinstance(data, dict):
        raise SweepError(f"{where} must hold a mapping with 'out' and 'stages'")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise SweepError(f"{where}: unknown top-level key '{unknown[0]}'; allowed: {', '.join(TOP_KEYS)}")
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise SweepError(f"{where}: 'stages' must be a non-empty list of stages")
    if out is None:
        root = data.get("out")
        if root is None:
            root = Path("runs") / (source.stem if source else "sweep")
        elif not isinstance(root, str) or not root.strip():
            raise SweepError(f"{where}: 'out' must be a folder path")
        out = Path(root)
    stages: list[Stage] = []
    for i, raw in enumerate(stages_raw, 1):
        if not isinstance(raw, dict):
            raise SweepError(f"{where}: stage {i} must be a mapping with name, command and grid")
        label = f"stage {raw.get('name', i)!s}"
        bad = [k for k in raw if k not in STAGE_KEYS]
        if bad:
            hint = difflib.get_close_matches(str(bad[0]), STAGE_KEYS, n=1)
            raise SweepError(f"{label}: unknown key '{bad[0]}'" + (f"; did you mean '{hint[0]}'?" if hint else
                             f"; a stage has: {', '.join(STAGE_KEYS)}"))
        name, command = raw.get("name"), raw.get("command")
        if not isinstance(name, str) or not name or _UNSAFE.search(name):
            raise SweepError(f"stage {i}: 'name' must be a word of letters, digits, '.', '_', '-' (got {name!r})")
        if not isinstance(command, str):
            raise SweepError(f"{label}: 'command' must name a btcli training command (pretrain, transfer, ...)")
        if any(s.name == name for s in stages):
            raise SweepError(f"two stages are named '{name}'; stage names must be unique")
        grid = {k: _as_list(v) for k, v in _mapping(raw.get("grid"), f"{label}: 'grid'").items()}
        sets = {k: _as_list(v) for k, v in _mapping(raw.get("set"), f"{label}: 'set'").items()}
        args = _mapping(raw.get("args"), f"{label}: 'args'")
        for section, values in (("grid", grid), ("set", sets)):
            for key, vs in values.items():
                if not vs or not all(_scalar(v) for v in vs):
                    raise SweepError(f"{label}: {section}.{key} must be a value or a non-empty list of values")
        for key, v in args.items():
            if not _scalar(v):
                raise SweepError(f"{label}: args.{key} must be a single value (put lists in 'grid' to cross them)")
        seen: dict[str, str] = {}
        for section, values in (("grid", grid), ("args", args), ("set", sets)):
            for key in values:
                norm = key.replace("-", "_")
                if norm in seen:
                    raise SweepError(f"{label}: '{key}' is given twice ({seen[norm]} and {section})")
                seen[norm] = section
        run = raw.get("run")
        if run is not None and not isinstance(run, str):
            raise SweepError(f"{label}: 'run' must be a name template such as '{{stage}}-{{env}}-s{{seed}}'")
        stages.append(Stage(name, command, grid, args, sets, run))
    return Sweep(out, stages, source, _mapping(data.get("slurm"), f"{where}: 'slurm'"))


def load_sweep(path: str | os.PathLike, *, out: Path | None = None) -> Sweep:
    """Read and check a sweep YAML file; ``out`` overrides its ``out`` root."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"sweep file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"cannot read sweep file '{path}': {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SweepError(f"sweep file '{path}' is not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    return parse_sweep(data, source=path, out=out)


# ----------------------------------------------------------------------------- keys


def config_keys() -> list[str]:
    """Every dotted config key (``btcli keys``)."""
    from btcli.config import all_keys

    return all_keys()


# ----------------------------------------------------------------------------- templates


def fill(template: str, fields: dict[str, Any], where: str) -> str:
    """Replace ``{key}`` fields of ``template``; SweepError naming ``where`` for an unknown field."""

    def sub(m: re.Match) -> str:
        whole = m.group(0)
        if whole in ("{{", "}}"):
            return whole[0]
        key = m.group(1).strip()
        if key not in fields:
            known = ", ".join("{" + k + "}" for k in fields if not k.startswith("run:"))
            raise SweepError(f"{where}: unknown template field '{{{key}}}'; known: {known}, {{run:STAGE}}")
        return str(fields[key])

    return _FIELD.sub(sub, template)


def format_value(value: Any) -> str:
    """A value as a command-line word: booleans as true/false, floats without trailing noise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def name_part(key: str, value: Any) -> str:
    """The part of a run name that a grid key contributes."""
    text = format(value, "g") if isinstance(value, float) else format_value(value)
    if key == "seed":
        return f"s{text}"
    if key in BARE_KEYS:
        return text
    return f"{key.split('.')[-1].replace('-', '_')}{text}"


def slug(text: str) -> str:
    """A run name safe as one folder name."""
    return _UNSAFE.sub("_", text.replace("/", "-"))


# ----------------------------------------------------------------------------- expansion


def _resolve_key(key: str, options: dict[str, OptionSpec], keys: list[str], where: str,
                 config_only: bool = False) -> OptionSpec | str:
    """An option of the command, or a config key (returned as the dotted string)."""
    norm = key.replace("-", "_")
    if norm in RESERVED:
        raise SweepError(f"{where}: '{key}' is set by the sweep itself (the run directory comes from 'out' and "
                         "the run's name; config keys go in 'set')")
    if not config_only and norm in options:
        return options[norm]
    if key in keys:
        return key
    candidates = list(dict.fromkeys(keys + ([] if config_only else
                                            sorted({k.replace("_", "-") for k in options} - set(RESERVED)))))
    hint = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    what = "config key" if config_only else "option or config key"
    raise SweepError(f"{where}: unknown {what} '{key}'" +
                     (f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else "; list config keys with: btcli keys"))


def _words(spec: OptionSpec | str, value: str, raw: Any) -> list[str]:
    if isinstance(spec, str):
        return ["--set", f"{spec}={value}"]
    if spec.is_flag:
        truthy = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
        if truthy:
            return [spec.flag]
        return [spec.off_flag] if spec.off_flag else []
    return [spec.flag, value]


def expand(sweep: Sweep, options: dict[str, dict[str, OptionSpec]], keys: list[str] | None = None) -> list[Job]:
    """Every job of the sweep, stage by stage, in a deterministic order. ``options``: the training
    commands and their options (``btcli.cli_analysis.command_options`` reads them off the CLI)."""
    keys = config_keys() if keys is None else keys
    jobs: list[Job] = []
    by_stage: dict[str, list[Job]] = {}
    for stage in sweep.stages:
        label = f"stage '{stage.name}'"
        if stage.command not in options:
            raise SweepError(f"{label}: '{stage.command}' is not a btcli training command; choose one of: "
                             f"{', '.join(sorted(options))}")
        opts = options[stage.command]
        specs = {k: _resolve_key(k, opts, keys, f"{label}: grid") for k in stage.grid}
        specs |= {k: _resolve_key(k, opts, keys, f"{label}: args") for k in stage.args}
        specs |= {k: _resolve_key(k, opts, keys, f"{label}: set", config_only=True) for k in stage.set}
        crossed = list(stage.grid.items()) + list(stage.set.items())
        named = [k for k in stage.grid] + [k for k, v in stage.set.items() if len(v) > 1]
        stage_jobs: list[Job] = []
        for values in itertools.product(*(v for _, v in crossed)):
            point = dict(zip((k for k, _ in crossed), values))
            base = {"out": str(sweep.out), "stage": stage.name, **{k: format_value(v) for k, v in point.items()}}
            if stage.run is not None:
                name = slug(fill(stage.run, base, f"{label}: run"))
            else:
                name = slug("-".join([stage.name, *(name_part(k, point[k]) for k in named)]))
            run_dir = sweep.out / name
            fields = base | {"name": name}
            fields |= {k: format_value(v) for k, v in stage.args.items() if not (isinstance(v, str) and "{" in v)}
            fields |= {f"run:{s}": str(_match(s, point, by_stage, sweep, stage.name)) for s in _refs(stage)}
            args: list[str] = []
            needs: list[Path] = []
            for key, raw in [*point.items(), *stage.args.items()]:
                value = format_value(raw)
                if isinstance(raw, str) and (key in stage.args or key in stage.set):
                    value = fill(raw, fields, f"{label}: {key}")
                    needs += [j.run_dir for j in jobs if _same_path(value, j.run_dir)]
                args += _words(specs[key], value, raw)
                if specs[key] == "env.id" or getattr(specs[key], "flag", None) == "--env":
                    _check_env_id(value, f"{label}: {key}")
            sets_threads = any(specs[k] == "threads" for k in specs)
            stage_jobs.append(Job(stage.name, stage.command, name, run_dir, args, point, needs, sets_threads))
        by_stage[stage.name] = stage_jobs
        jobs += stage_jobs
    _check_names(jobs)
    return jobs


def _check_env_id(value: str, where: str) -> None:
    """Refuse an unknown environment id while planning, not once per run when the sweep starts it."""
    from btcli.envs import resolve_env_id

    try:
        resolve_env_id(value)
    except ValueError as e:
        raise SweepError(f"{where}: {e}") from None


def _refs(stage: Stage) -> list[str]:
    found = []
    for raw in [*stage.args.values(), *(v for vs in stage.set.values() for v in vs)]:
        if isinstance(raw, str):
            found += [m.group(1)[4:].strip() for m in _FIELD.finditer(raw)
                      if m.group(1) and m.group(1).strip().startswith("run:")]
    return list(dict.fromkeys(found))


def _match(ref: str, point: dict[str, Any], by_stage: dict[str, list[Job]], sweep: Sweep, stage: str) -> Path:
    """The run directory of the one job of stage ``ref`` that agrees with ``point`` on shared keys."""
    if ref not in by_stage:
        earlier = [s.name for s in sweep.stages[: [s.name for s in sweep.stages].index(stage)]]
        raise SweepError(f"stage '{stage}': {{run:{ref}}} must name an earlier stage"
                         + (f" ({', '.join(earlier)})" if earlier else " (this is the first stage)"))
    hits = [j for j in by_stage[ref] if all(point[k] == v for k, v in j.point.items() if k in point)]
    shared = [k for k in (by_stage[ref][0].point if by_stage[ref] else {}) if k in point]
    at = ", ".join(f"{k}={format_value(point[k])}" for k in shared) or "no shared keys"
    if len(hits) != 1:
        differ = sorted({k for j in hits for k in j.point if k not in point})
        why = f"; they differ in {', '.join(differ)}: add it to stage '{stage}'s grid" if differ else ""
        raise SweepError(f"stage '{stage}': {{run:{ref}}} matches {len(hits)} runs for {at}{why}")
    return hits[0].run_dir


def _same_path(value: str, run_dir: Path) -> bool:
    return os.path.normpath(value) == os.path.normpath(str(run_dir))


def _check_names(jobs: list[Job]) -> None:
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.name in seen:
            other = seen[job.name]
            raise SweepError(f"runs of stage '{other.stage}' and '{job.stage}' would share the directory "
                             f"'{job.run_dir}'; give the stages different names or 'run' templates with every "
                             "crossed key")
        seen[job.name] = job


def select(jobs: list[Job], only: list[str]) -> list[Job]:
    """The jobs whose grid point matches every ``KEY=VALUE`` of ``only``, and the runs they need.

    One key given several times matches any of its values; different keys must all match. A job
    whose point lacks a key does not match it (a pre-training stage without ``tag``), but stays in
    when a selected job reads it (``needs``). Order is the sweep's own.
    """
    wanted: dict[str, set[str]] = {}
    for item in only:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--only '{item}': give KEY=VALUE with a grid key of the sweep, e.g. --only seed=0")
        wanted.setdefault(key.strip(), set()).add(value.strip())
    keys = {k for j in jobs for k in j.point}
    for key, values in wanted.items():
        if key not in keys:
            raise SweepError(f"--only {key}=...: no stage of the sweep crosses '{key}'; its grid keys are "
                             f"{', '.join(sorted(keys))}")
        seen = {format_value(j.point[key]) for j in jobs if key in j.point}
        if not values & seen:
            raise SweepError(f"--only {key}={'|'.join(sorted(values))}: no run has that value; "
                             f"the sweep's values are {', '.join(sorted(seen))}")
    chosen = {j.run_dir for j in jobs
              if all(k in j.point and format_value(j.point[k]) in vs for k, vs in wanted.items())}
    if not chosen:
        raise SweepError("--only: no run matches all of " + " ".join(only) + "; each matches some, not together")
    by_dir = {j.run_dir: j for j in jobs}
    todo = list(chosen)
    while todo:  # what the chosen runs read comes along, and what that reads
        for need in by_dir[todo.pop()].needs:
            if need in by_dir and need not in chosen:
                chosen.add(need)
                todo.append(need)
    return [j for j in jobs if j.run_dir in chosen]
