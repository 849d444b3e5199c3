"""btcli's Python API: what the commands do, callable from a script or a notebook.

    import btcli
    run = btcli.train({"command": "transfer", "mode": "scratch", "env": {"id": "MiniGrid-Empty-5x5-v0"},
                       "steps": 20_000}, "runs/scratch-s0")
    df = btcli.load_runs(["runs/scratch-s0", "runs/bt-*"])          # one row per episode, config columns
    result = btcli.compare_groups(["runs/*"], by="mode", metric="auc")  # == `btcli compare --json`
    btcli.export_policy("runs/pt-s0", "exports/pt-s0"); policy = btcli.load_policy("exports/pt-s0")

Every function raises :class:`btcli.BtcliError` (a one-line message saying what to fix) for
input the command line would refuse. Nothing here changes a process-wide setting unless asked
(``train(..., configure_process=True)``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btcli.errors import BtcliError

TABLES = ("metrics", "train", "eval", "summary")


@dataclass
class RunResult:
    """A trained (or already finished) run: its directory, resolved config and summary.json."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]


def _overrides(config: Any) -> dict[str, Any]:
    """Flat dotted overrides from a dict (nested or dotted keys), a RunConfig or a YAML path."""
    from btcli.config import RECORD_KEYS, RunConfig, flatten, load_yaml_overrides, to_dict

    if isinstance(config, (str, os.PathLike)):
        return load_yaml_overrides(config)
    if isinstance(config, RunConfig):
        return flatten(to_dict(config))
    if isinstance(config, dict):
        return flatten({k: v for k, v in config.items() if k not in RECORD_KEYS})
    raise BtcliError(f"config must be a dict, a btcli RunConfig or the path of a YAML file, not {type(config).__name__}")


@contextlib.contextmanager
def _threads(threads: int, configure: bool) -> Iterator[None]:
    """The run's thread settings: for the rest of the process (``configure``, as the CLI does),
    or only while training, restoring torch's thread count and the BLAS limits afterwards."""
    if configure:
        from btcli.process import configure_process

        configure_process(threads)
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    count = threads if threads > 0 else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    with threadpool_limits(1, user_api="blas"):
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def train(config: Any, out: str | os.PathLike, *, command: str | None = None, resume: bool = False,
          progress: bool = False, configure_process: bool = False) -> RunResult:
    """Train one run into the directory ``out``, as ``btcli transfer|pretrain|finetune`` would.

    ``config``: a dict of config keys (nested like a YAML file, ``{"agent": {"lr": 1e-4}}``, or
    dotted, ``{"agent.lr": 1e-4}``; ``command``, ``mode``, ``steps``, ``seed``, ``env.id``, ...),
    a :class:`btcli.config.RunConfig`, or the path of a YAML file. ``command`` (transfer,
    pretrain or finetune) overrides the config's ``command``. ``resume=True`` continues the run
    in ``out`` (a finished run is returned as it is). The run directory is the CLI's, with the
    config and the argument list ``["btcli.train"]`` recorded.

    ``configure_process=False`` (the default) leaves the process as it was: torch's thread
    count (``threads`` of the config) and numpy's single BLAS thread apply while training and
    are restored after; malloc is not tuned (the CLI is then up to ~25% faster on CPUs).
    ``True`` applies the CLI's settings (:func:`btcli.configure_process`) for the rest of the
    process. Either way the same seed gives the same numbers as the CLI.
    """
    import sys

    from btcli.config import build_config
    from btcli.launch import _prepare_run

    overrides = _overrides(config)
    if command is not None:
        overrides["command"] = command
    overrides.setdefault("command", "transfer")
    if overrides["command"] == "finetune":
        overrides["mode"] = "ft"
    if resume:
        from btcli.runs import RunDir

        threads = int(RunDir.open_existing(out).read_config().get("threads", 0))
    else:
        threads = build_config(dict(overrides)).threads  # validates the config before anything runs
    argv, sys.argv = sys.argv, ["btcli.train"]  # recorded as the run's command line
    try:
        with _threads(threads, configure_process):
            prepared = _prepare_run(overrides, Path(out), resume, False, not progress)
            if prepared is None:  # a resumed run that had already finished
                summary = json.loads((Path(out) / "summary.json").read_text())
            else:
                trainer, run = prepared
                try:
                    summary = trainer.train(resume=resume)
                finally:
                    run.unlock()  # the CLI holds it until it exits; a notebook may train this run again
    finally:
        sys.argv = argv
    from btcli.runs import RunDir

    return RunResult(Path(out), RunDir(out).read_config(), summary)


def _patterns(runs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    if isinstance(runs, (str, os.PathLike)):
        return [os.fspath(runs)]
    return [os.fspath(r) for r in runs]


def load_runs(runs: str | os.PathLike | Iterable[str | os.PathLike], *, table: str = "metrics",
              include_unfinished: bool = True) -> Any:
    """One long pandas DataFrame of many runs: the rows of ``table`` from every run, each with
    the run's config as columns.

    ``runs``: run directories, folders holding runs, or globs (``"runs/bt-*"``), like
    ``btcli compare``. ``table``: ``metrics`` (one row per training episode, the default),
    ``train``, ``eval``, or ``summary`` (one row per run: summary.json's figures). Columns:
    ``run`` (the directory), ``finished`` (summary.json exists), the table's own columns (see
    the README's run-directory section), then every config key flattened with dots
    (``mode``, ``seed``, ``env.id``, ``agent.lr``, ...; a key named like a table column gets a
    ``config.`` prefix). ``include_unfinished=False`` keeps only finished runs.
    """
    import pandas as pd

    from btcli.analysis import load_run
    from btcli.compare import collect_run_dirs
    from btcli.config import RECORD_KEYS, flatten
    from btcli.runs import RunDirError

    if table not in TABLES:
        raise BtcliError(f"unknown table {table!r}; choose one of: {', '.join(TABLES)}")
    dirs, _notes = collect_run_dirs(_patterns(runs))
    if not dirs:
        raise BtcliError(f"no btcli runs matched {' '.join(_patterns(runs))}")
    frames = []
    for path in dirs:
        try:
            data = load_run(path)
        except RunDirError as e:
            raise BtcliError(str(e)) from None
        if data.summary is None and not include_unfinished:
            continue
        if table == "summary":
            rows = pd.DataFrame([flatten(data.summary or {})])
        else:
            rows = getattr(data, table).copy()
        config = flatten({k: v for k, v in data.config.items() if k not in RECORD_KEYS})
        rows.insert(0, "finished", data.summary is not None)
        rows.insert(0, "run", str(path))
        for key, value in config.items():
            rows[f"config.{key}" if key in rows.columns else key] = [value] * len(rows)
        frames.append(rows)
    if not frames:
        return pd.DataFrame(columns=["run", "finished"])
    return pd.concat(frames, ignore_index=True)


def compare_groups(runs: str | os.PathLike | Iterable[str | os.PathLike], *, by: str = "mode",
                   metric: str = "final", allow_unfinished: bool = False, allow_mixed: bool = False,
                   reps: int = 2000, out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Compare groups of runs; returns the object ``btcli compare --json`` prints (IQM, median,
    mean, optimality gap with stratified-bootstrap intervals, probabilities of improvement,
    performance profiles, per-run scores). With ``out`` the CSV, markdown and PNG files are
    written there too and listed under ``files``, as the command does."""
    from btcli.compare import compare_runs, to_json, write_outputs

    result = compare_runs(_patterns(runs), by=by, metric=metric, allow_unfinished=allow_unfinished,
                          allow_mixed=allow_mixed, reps=reps)
    files = {}
    if out is not None:
        try:
            files = write_outputs(result, Path(out))
        except OSError as e:
            raise BtcliError(f"cannot write the comparison into '{out}': {e.strerror or e}") from None
    return json.loads(json.dumps(to_json(result, files), allow_nan=False))


def export_policy(run: str | os.PathLike, out: str | os.PathLike, *, checkpoint: str | int | None = None) -> Path:
    """``btcli export``: write a run's checkpoint as a policy folder; returns the folder."""
    from btcli.export import export_run

    return export_run(run, out, checkpoint=None if checkpoint is None else str(checkpoint)).path


__all__ = ["TABLES", "RunResult", "compare_groups", "export_policy", "load_runs", "train"]
