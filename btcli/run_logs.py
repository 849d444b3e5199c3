"""Reading a run directory: its config and CSV logs, tolerantly, and the rows that make up its curves.

A run directory (written by the training loop) holds ``config.yaml`` and, depending on how
far the run got, ``metrics.csv`` (one row per finished training episode), ``train.csv``
(periodic learner statistics), ``eval.csv`` (one row per evaluation episode) and
``summary.json`` (written last, only when the run completes). Missing files give empty frames
with the columns the training loop writes (btcli.runs); extra columns found in a file (added by
later versions) are kept as they are.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from btcli import evals
from btcli.runs import EVAL_COLUMNS, METRICS_COLUMNS, TRAIN_COLUMNS, RunDirError

_TEXT_COLUMNS = {"checkpoint", "policy", "env_id"}


@dataclass
class RunData:
    """Everything read from one run directory.

    ``metrics``, ``train`` and ``eval`` are never ``None``: a missing or empty file gives an
    empty frame with the expected columns. ``summary`` is ``None`` when ``summary.json`` is
    absent or unreadable (the run is then unfinished). ``notes`` lists problems met while
    loading (malformed lines skipped, unreadable summary, ...).
    """

    path: Path
    config: dict
    metrics: pd.DataFrame
    train: pd.DataFrame
    eval: pd.DataFrame
    summary: dict | None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _not_a_run(path: Path, why: str) -> RunDirError:
    return RunDirError(
        f"'{path}' is not a btcli run directory ({why}); pass the directory a btcli "
        "training command wrote (it holds config.yaml, metrics.csv, ...)"
    )


def _empty_frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype=object if c in _TEXT_COLUMNS else float) for c in columns}
    )


def _read_csv(path: Path, columns: list[str], notes: list[str]) -> pd.DataFrame:
    """Read one of the run's CSV files, tolerating absence, emptiness and a torn last line."""
    if not path.is_file():
        return _empty_frame(columns)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        notes.append(f"{path.name}: unreadable ({one_line(exc)})")
        return _empty_frame(columns)
    # The loop appends whole lines; a last line without a newline is being written (or was
    # cut when the process died): its numbers may be truncated, so it is dropped.
    if text and not text.endswith("\n") and "\n" in text:
        text = text[: text.rindex("\n") + 1]
        notes.append(f"{path.name}: incomplete last line ignored")
    if not text.strip():
        return _empty_frame(columns)
    try:
        df = pd.read_csv(io.StringIO(text))
    except pd.errors.EmptyDataError:
        return _empty_frame(columns)
    except pd.errors.ParserError:
        df = pd.read_csv(io.StringIO(text), on_bad_lines="skip")
        notes.append(f"{path.name}: malformed lines skipped")
    for c in columns:
        if c not in df.columns:
            df[c] = pd.Series(dtype=object if c in _TEXT_COLUMNS else float)
        elif c not in _TEXT_COLUMNS:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def load_run(path: str | os.PathLike) -> RunData:
    """Read a run directory. Raises :class:`RunDirError` when ``config.yaml`` is missing or
    unreadable; every other file is optional."""
    path = Path(path)
    cfg_path = path / "config.yaml"
    if not path.is_dir():
        raise _not_a_run(path, "no such directory" if not path.exists() else "not a directory")
    if not cfg_path.is_file():
        raise _not_a_run(path, "no config.yaml")
    try:
        config = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        msg = one_line(exc)
        raise _not_a_run(path, f"config.yaml unreadable: {msg[:160]}") from None
    if not isinstance(config, dict):
        raise _not_a_run(path, "config.yaml is not a mapping")

    notes: list[str] = []
    metrics = _read_csv(path / "metrics.csv", METRICS_COLUMNS, notes)
    train = _read_csv(path / "train.csv", TRAIN_COLUMNS, notes)
    evals = _read_csv(path / "eval.csv", EVAL_COLUMNS, notes)

    summary = None
    sum_path = path / "summary.json"
    if sum_path.is_file():
        try:
            loaded = json.loads(sum_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            notes.append(f"summary.json: unreadable ({one_line(exc)[:120]}), run treated as unfinished")
        else:
            if isinstance(loaded, dict):
                summary = loaded
            else:
                notes.append("summary.json: not a JSON object, run treated as unfinished")
    return RunData(path, config, metrics, train, evals, summary, notes)


# --------------------------------------------------------------------------------------
# Statistics


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    """``root`` itself when it is a run directory, else every run directory below it, sorted."""
    root = Path(root)
    if (root / "config.yaml").is_file():
        return [root]
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise RunDirError(one_line(f"'{root}' {what}; pass a run directory or a folder of runs"))
    return sorted(p.parent for p in root.rglob("config.yaml") if "checkpoints" not in p.parts)


def episodes(run: RunData) -> pd.DataFrame:
    """Training episodes with a finite step and return, in step order (stable)."""
    m = run.metrics
    if m.empty:
        return m
    ok = np.isfinite(m["step"].to_numpy(dtype=float)) & np.isfinite(m["return"].to_numpy(dtype=float))
    return m.loc[ok].sort_values("step", kind="stable").reset_index(drop=True)


def run_env_id(run: RunData) -> str | None:
    env_cfg = run.config.get("env")
    return env_cfg.get("id") if isinstance(env_cfg, dict) else (env_cfg if isinstance(env_cfg, str) else None)


def training_evals(run: RunData) -> pd.DataFrame:
    """The learner's evaluation rows written by the training loop on the run's own task.

    ``btcli evaluate`` appends rows naming a checkpoint, possibly with another epsilon or
    episode count (or another task, ``--env``); mixing them into the training curve would change
    what a point means. Runs with only such rows (on their own task) fall back to those.
    """
    e = run.eval
    during = evals.training_rows(e, run_env_id(run), evals.LEARNER)
    if not during.empty or e.empty:
        return during
    return evals.training_rows(e, run_env_id(run), evals.LEARNER, loop_only=False)


def reference_evals(run: RunData) -> pd.DataFrame:
    """The rows of π_p's zero-shot evaluations beside the learner's (transfer runs with a π_p)."""
    return evals.training_rows(run.eval, run_env_id(run), evals.PRETRAINED)


def run_title(run: RunData, status: str | None = None) -> str:
    """``env | mode | seed s`` (``pretrain <objective>`` for pre-training), ``(unfinished)`` appended when so."""
    cfg = run.config
    env_cfg = cfg.get("env")
    env_id = env_cfg.get("id") if isinstance(env_cfg, dict) else env_cfg
    parts = [str(env_id if env_id is not None else "unknown env")]
    objective = (cfg.get("intrinsic") or {}).get("objective") if isinstance(cfg.get("intrinsic"), dict) else None
    if cfg.get("command") == "pretrain":  # its mode is always scratch; what it learned from is the objective
        parts.append(f"pretrain {objective}")
    elif cfg.get("mode") is not None:
        parts.append(str(cfg.get("mode")))
    if cfg.get("seed") is not None:
        parts.append(f"seed {cfg.get('seed')}")
    title = " | ".join(parts)
    if status == "unfinished":
        title += " (unfinished)"
    return title
