"""The runs `btcli compare` reads and one score per run: collected, grouped, checked and scaled per task."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import numpy as np

from btcli import evals, stats
from btcli.compare_results import (
    _METRIC_KEYS,
    _REFERENCE_WORDS,
    EVAL_METRICS,
    FINAL_WINDOW,
    METRICS,
    REFERENCE,
    CompareError,
    RunScore,
)
from btcli.run_logs import RunData, find_run_dirs, load_run, reference_evals
from btcli.run_summary import EVAL_LAST, summarize_run
from btcli.runs import RunDirError


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def collect_run_dirs(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """Run directories named by ``patterns`` (runs, folders of runs, quoted globs), deduplicated.

    A path that does not exist is an error unless it is a glob; files (a shell glob like
    ``runs/*`` also lists logs) are skipped and counted in the returned notes.
    """
    dirs: list[Path] = []
    seen: set[Path] = set()
    skipped_files = 0
    for pattern in patterns:
        if _is_glob(pattern) and not os.path.exists(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
        else:
            if not os.path.exists(pattern):
                raise CompareError(f"'{pattern}' does not exist; pass run directories, folders of runs or globs")
            matches = [pattern]
        for match in matches:
            path = Path(match)
            if not path.is_dir():
                skipped_files += 1
                continue
            try:
                found = find_run_dirs(path)
            except RunDirError as e:
                raise CompareError(str(e)) from None
            for run_dir in found:
                key = run_dir.resolve()
                if key not in seen:
                    seen.add(key)
                    dirs.append(run_dir)
    notes = [f"skipped {skipped_files} path(s) that are files, not run directories"] if skipped_files else []
    return dirs, notes


def config_value(config: dict, key: str) -> Any:
    """The value of a dotted key in a run's saved config; KeyError when absent."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def group_label(config: dict, by: str, path: Path) -> str:
    """The group of a run: the value of the ``by`` key, or of several keys joined by commas
    (``mode,steps`` gives ``scratch/160000``)."""
    values = []
    for key in (k.strip() for k in by.split(",")):
        try:
            value = config_value(config, key)
            if key == "tag" and not value:  # an untagged run is known by its mode
                value = config_value(config, "mode")
            values.append(_label(value))
        except KeyError:
            raise CompareError(
                f"run '{path}' has no config key '{key}'; --by takes keys of the runs' config.yaml, joined by "
                "commas (e.g. mode, intrinsic.objective, agent.lr, tag, mode,steps)"
            ) from None
    return "/".join(values)


def _label(value: Any) -> str:
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def _sort_key(label: str) -> tuple:
    """Numeric group labels in numeric order, then the others alphabetically."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _names(paths: list[Path], limit: int = 3) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def load_scores(
    dirs: list[Path], *, by: str, metric: str, allow_unfinished: bool = False, allow_mixed: bool = False,
    eval_last: int = EVAL_LAST,
) -> tuple[list[RunScore], dict[Path, RunData], list[str]]:
    """Load every run, check the input is unambiguous, and score each run with ``metric``."""
    if metric not in METRICS:
        raise CompareError(f"unknown --metric '{metric}'; choose one of: {', '.join(METRICS)}")
    if eval_last < 1:
        raise CompareError(f"--last-evals must be >= 1, got {eval_last}")
    notes: list[str] = []
    scores: list[RunScore] = []
    loaded: dict[Path, RunData] = {}
    unfinished: list[Path] = []
    no_value: list[tuple[Path, str]] = []
    short: list[Path] = []  # eval-last over fewer evaluations than asked
    for path in dirs:
        try:
            run = load_run(path)
        except RunDirError as e:
            raise CompareError(str(e)) from None
        summary = summarize_run(run, window=FINAL_WINDOW, eval_last=eval_last)
        group = group_label(run.config, by, path)
        task = summary.get("env_id")
        if not task:
            raise CompareError(f"run '{path}' names no environment (env.id) in its config.yaml")
        if summary["status"] != "complete":
            unfinished.append(path)
        value = summary.get(_METRIC_KEYS[metric])
        if metric == "eval" and summary.get("eval_source") != "training":
            value = None  # only the run's own evaluations share one protocol; `btcli evaluate` rows may not
        if value is None:
            no_value.append((path, summary["status"]))
            continue
        loaded[path] = run
        if metric == "eval-last" and summary["eval_last_k"] < eval_last:
            short.append(path)
        scores.append(RunScore(path, group, task, summary.get("seed"), summary["status"],
                               summary.get("steps_budget"), float(value)))
    if unfinished and not allow_unfinished:
        raise CompareError(
            f"{len(unfinished)} of {len(dirs)} runs are unfinished (no summary.json): {_names(unfinished)}; "
            "pass --allow-unfinished to include what they logged so far"
        )
    if unfinished:
        notes.append(f"{len(unfinished)} unfinished run(s) included with the data logged so far")
    if no_value:
        finished = [p for p, status in no_value if status == "complete"]
        if finished or not allow_unfinished:
            what = ("no evaluation episodes of their own; btcli evaluate's rows do not count" if metric in EVAL_METRICS
                    else "no finished training episodes")
            bad = finished or [p for p, _ in no_value]
            raise CompareError(f"{len(bad)} run(s) have no '{metric}' score ({what}): {_names(bad)}; "
                               "choose another --metric or leave them out")
        notes.append(f"left out {len(no_value)} unfinished run(s) with no '{metric}' score yet: "
                     f"{_names([p for p, _ in no_value])}")
    if not scores:
        raise CompareError("no runs left to compare")
    if "steps" not in (k.strip() for k in by.split(",")):  # comparing budgets is the point of --by steps
        _check_budgets(scores, allow_mixed, notes)
    if short:
            notes.append(f"{len(short)} run(s) have fewer than {eval_last} evaluations; their eval-last averages "
                         f"those they have: {_names(short)}")
    return scores, loaded, notes


def reference_scores(scores: list[RunScore], loaded: dict[Path, RunData]) -> tuple[list[RunScore], list[str]]:
    """The π_p zero-shot group: one score per (task, pre-trained checkpoint), the mean return of every
    evaluation episode of that π_p logged by the runs on that task (π_p is frozen, so its evaluations
    at different steps and in different runs all estimate one number). Left out, with a note, when
    it is not on every task with the same number of checkpoints (a complete score matrix)."""
    pooled: dict[tuple[str, str], list] = {}
    where: dict[tuple[str, str], str] = {}
    for s in scores:
        run = loaded[s.path]
        rows = reference_evals(run)
        facts = (run.config.get("provenance") or {}).get("pretrained") or {}
        if rows.empty or not facts.get("sha256"):
            continue
        key = (s.task, str(facts["sha256"]))
        pooled.setdefault(key, []).append(rows)
        where.setdefault(key, str(facts.get("run") or s.path))
    if not pooled:
        return [], []
    tasks = sorted({s.task for s in scores})
    per_task = {t: sum(1 for (task, _) in pooled if task == t) for t in tasks}
    if len(set(per_task.values())) != 1 or 0 in per_task.values():
        listed = ", ".join(f"{n} on {t}" for t, n in per_task.items())
        return [], [f"{REFERENCE} left out: its pre-trained checkpoints are not on every task alike ({listed})"]
    import pandas as pd

    out = [RunScore(Path(where[key]), REFERENCE, key[0], key[1][:12], "complete", None,
                    float(evals.pooled_mean(pd.concat(frames))))
           for key, frames in sorted(pooled.items())]
    return out, [_REFERENCE_WORDS]


def _check_budgets(scores: list[RunScore], allow_mixed: bool, notes: list[str]) -> None:
    for task in sorted({s.task for s in scores}):
        counts: dict[Any, int] = {}
        for s in scores:
            if s.task == task:
                counts[s.budget] = counts.get(s.budget, 0) + 1
        if len(counts) > 1:
            listed = ", ".join(f"{b} ({n} run{'s' if n > 1 else ''})" for b, n in sorted(counts.items(), key=str))
            if not allow_mixed:
                raise CompareError(f"task {task} mixes step budgets {listed}; "
                                   "pass --allow-mixed to compare them anyway")
            notes.append(f"task {task} mixes step budgets {listed} (--allow-mixed)")


# ----------------------------------------------------------------------------- scores


def scale_scores(scores: list[RunScore]) -> tuple[dict[str, str], float, list[str]]:
    """Fill ``normalised`` in place; returns ``(scale per task, optimality-gap threshold, notes)``.

    Per task: Atari games with published random and human scores are human-normalised. The
    other tasks are min-max normalised over all runs of the task (all groups), unless the
    comparison has a single task, whose raw scores are kept. The optimality gap is measured
    below 1 on normalised scales (human level, or the best run), and below the best run's
    score on the raw scale.
    """
    tasks = sorted({s.task for s in scores})
    scales: dict[str, str] = {}
    notes: list[str] = []
    for task in tasks:
        runs = [s for s in scores if s.task == task]
        raw = np.array([s.score for s in runs])
        if task in stats.ATARI_RANDOM_HUMAN:
            low, high = stats.atari_bounds([task])
            scaled = stats.normalise(raw, low[0], high[0])
            scales[task] = "human"
        elif len(tasks) == 1:
            scaled = raw
            scales[task] = "raw"
        elif raw.max() > raw.min():
            scaled = stats.normalise(raw, raw.min(), raw.max())
            scales[task] = "minmax"
        else:
            scaled = np.zeros_like(raw)
            scales[task] = "minmax"
            notes.append(f"task {task}: every run scored {raw[0]:g}; its normalised scores are all 0")
        for s, v in zip(runs, scaled):
            s.normalised = float(v)
    threshold = 1.0
    if set(scales.values()) == {"raw"}:
        threshold = max(s.normalised for s in scores)
    return scales, threshold, notes


def score_matrix(scores: list[RunScore], group: str, tasks: list[str]) -> np.ndarray:
    """The ``[runs, tasks]`` normalised scores of ``group``; CompareError when it is not complete."""
    columns = []
    for task in tasks:
        col = [s.normalised for s in sorted((s for s in scores if s.group == group and s.task == task),
                                            key=lambda s: str(s.path))]
        if not col:
            raise CompareError(
                f"group '{group}' has no runs on task {task}; stratified statistics need every group on every "
                "task (add its runs or leave the task's runs out)"
            )
        columns.append(col)
    sizes = {len(c) for c in columns}
    if len(sizes) > 1:
        listed = ", ".join(f"{len(c)} on {t}" for c, t in zip(columns, tasks))
        raise CompareError(f"group '{group}' has different numbers of runs per task ({listed}); "
                           "the score matrix needs the same number on every task")
    return np.array(columns, dtype=float).T

