"""Compare groups of runs across tasks with rliable-style aggregates (``btcli compare``).

Runs are grouped by a config value (``--by``, a dotted key such as ``mode`` or ``agent.lr``)
and aligned by task (``env.id``). Each run gives one score: learner-only (``eval-last``, the
default, ``eval-auc``, ``eval``: the learner's greedy evaluations, no flights) or from its
training episodes (``final``, ``auc``: in BT runs these include π_p's flights and say so);
scores are put on a common scale per task (:func:`scale_scores`) and every group gets a
``[runs, tasks]`` matrix, from which :mod:`btcli.stats` computes the mean, median, IQM and
optimality gap with stratified-bootstrap confidence intervals, the probability of improvement
between every pair of groups, and performance profiles.

Anything ambiguous is refused with one line (:class:`CompareError`) unless the caller allows
it: unfinished runs, mixed step budgets within a task. A task missing from a group, or a group
with different numbers of runs on different tasks, is always refused: the stratified bootstrap
needs one complete score matrix per group.
"""

from __future__ import annotations

import csv
import glob
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from btcli import evals, stats
from btcli.analysis import (
    EVAL_LAST,
    FLIGHT_MODES,
    RunData,
    RunDirError,
    _reference_evals,
    find_run_dirs,
    load_run,
    summarize_run,
)
from btcli.errors import BtcliError

METRICS = ("eval-last", "eval-auc", "eval", "final", "auc")
DEFAULT_METRIC = "eval-last"
EVAL_METRICS = ("eval-last", "eval-auc", "eval")  # the learner's own greedy policy: no flights
# the group of π_p zero-shot scores that compare adds beside the transfer runs that used π_p
REFERENCE = "π_p zero-shot"
AGGREGATES = ("median", "iqm", "mean", "optimality_gap")
AGGREGATE_TITLES = {"median": "Median", "iqm": "IQM", "mean": "Mean", "optimality_gap": "Optimality gap"}
FINAL_WINDOW = 100
PROFILE_POINTS = 101
DEFAULT_REPS = 2000

# summarize_run's key for each metric, and what it is called in messages.
_METRIC_KEYS = {"final": "return_last_mean", "auc": "auc", "eval": "eval_return_mean",
                "eval-last": "eval_last_mean", "eval-auc": "eval_auc"}
_METRIC_WORDS = {
    "final": f"mean return of the last {FINAL_WINDOW} training episodes",
    "auc": "area under the binned learning curve (mean return over 20 step bins of the budget)",
    "eval": "the learner's greedy policy: mean return of the last evaluation",
    "eval-last": "the learner's greedy policy: mean of its last {k} evaluations' mean returns",
    "eval-auc": "the learner's greedy policy: area under its evaluation curve, normalised to a mean return "
                "(each evaluation's mean weighted by the steps since the one before)",
}
_FLIGHTS_WORDS = "; in bt and bt+ft runs these episodes include π_p's flights (what the agent experienced, not what the learner learned)"
_REFERENCE_WORDS = ("π_p zero-shot: the frozen pre-trained policy evaluated by the transfer runs beside their "
                    "learner (same episodes and epsilon), every episode of one π_p on one task pooled; one score "
                    "per pre-trained checkpoint and task, whatever the metric")
_SCALE_WORDS = {
    "human": "human-normalised ((score - random) / (human - random), published scores)",
    "minmax": "min-max normalised over all runs of the task (0 = worst run, 1 = best run)",
    "raw": "raw score (a single task: no normalisation)",
}


class CompareError(BtcliError):
    """Input that `btcli compare` cannot aggregate without a guess; the message is one line."""


@dataclass
class RunScore:
    """One run's place in the comparison and its score."""

    path: Path
    group: str
    task: str
    seed: Any
    status: str
    budget: int | None
    score: float
    normalised: float = math.nan


@dataclass
class Interval:
    """A point estimate with its confidence interval."""

    point: float
    lo: float
    hi: float

    def as_dict(self) -> dict[str, float]:
        return {"point": self.point, "lo": self.lo, "hi": self.hi}


@dataclass
class GroupResult:
    """Aggregates of one group: ``aggregates[name]`` for each name in :data:`AGGREGATES`."""

    name: str
    runs: int
    runs_per_task: int
    aggregates: dict[str, Interval]


@dataclass
class Improvement:
    """P(x > y): probability that a run of group ``x`` beats one of group ``y`` on a random task."""

    x: str
    y: str
    interval: Interval


@dataclass
class Profile:
    """Fraction of (run, task) scores above each tau, with a pointwise confidence band."""

    point: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


@dataclass
class Comparison:
    """Everything `btcli compare` reports; :func:`to_json` gives its JSON form."""

    by: str
    metric: str
    groups: list[str]
    tasks: list[str]
    scales: dict[str, str]
    gap_threshold: float
    scores: list[RunScore]
    results: list[GroupResult]
    improvements: list[Improvement]
    taus: np.ndarray
    profiles: dict[str, Profile]
    reps: int
    level: float
    runs: dict[Path, RunData] = field(repr=False)
    notes: list[str] = field(default_factory=list)
    eval_last: int = EVAL_LAST
    includes_flights: bool = False  # a training-episode metric over runs with π_p's flights

    @property
    def metric_definition(self) -> str:
        words = _METRIC_WORDS[self.metric].format(k=self.eval_last)
        return words + (_FLIGHTS_WORDS if self.includes_flights else "")

    @property
    def metric_label(self) -> str:
        """The metric's name as the tables print it; says so when it counts π_p's steps."""
        name = f"{self.metric} (k={self.eval_last})" if self.metric == "eval-last" else self.metric
        return name + (" [training episodes, incl. π_p's flights]" if self.includes_flights else "")

    @property
    def scale_label(self) -> str:
        """Axis label of the aggregated scores."""
        kinds = set(self.scales.values())
        if kinds == {"raw"}:
            return "raw score"
        if kinds == {"human"}:
            return "human-normalised score"
        return "normalised score"


# ----------------------------------------------------------------------------- collecting runs


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
        rows = _reference_evals(run)
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


def _statistic(name: str, threshold: float):
    if name == "optimality_gap":
        return lambda x: stats.optimality_gap(x, threshold)
    return {"median": stats.median, "iqm": stats.iqm, "mean": stats.mean}[name]


def compare_runs(
    patterns: list[str],
    *,
    by: str = "mode",
    metric: str = DEFAULT_METRIC,
    allow_unfinished: bool = False,
    allow_mixed: bool = False,
    reps: int = DEFAULT_REPS,
    level: float = 0.95,
    seed: int = 0,
    eval_last: int = EVAL_LAST,
    reference: bool = True,
) -> Comparison:
    """Collect, check, score and aggregate the runs named by ``patterns``; with ``reference``, add
    the π_p zero-shot group (:func:`reference_scores`) when the runs evaluated their π_p."""
    if reps < 1:
        raise CompareError(f"--reps must be >= 1, got {reps}")
    dirs, notes = collect_run_dirs(patterns)
    if not dirs:
        raise CompareError(f"no btcli runs matched {' '.join(patterns)}")
    scores, loaded, more = load_scores(dirs, by=by, metric=metric, allow_unfinished=allow_unfinished,
                                       allow_mixed=allow_mixed, eval_last=eval_last)
    notes += more
    includes_flights = metric not in EVAL_METRICS and any(
        loaded[s.path].config.get("mode") in FLIGHT_MODES for s in scores)
    if includes_flights:
        notes.append(f"metric {metric} counts training episodes, and those of bt and bt+ft include π_p's flights; "
                     "for what the learner itself learned use --metric eval-last or eval-auc")
    if reference:
        refs, more = reference_scores(scores, loaded)
        if refs and any(s.group == REFERENCE for s in scores):
            raise CompareError(f"a group of runs is already named '{REFERENCE}'; pass --no-reference")
        scores += refs
        notes += more
    groups = sorted({s.group for s in scores}, key=_sort_key)
    tasks = sorted({s.task for s in scores})
    scales, threshold, more = scale_scores(scores)
    notes += more
    matrices = {g: score_matrix(scores, g, tasks) for g in groups}
    results = []
    for g, m in matrices.items():
        aggregates = {name: Interval(*stratified(m, _statistic(name, threshold), reps, level, seed))
                      for name in AGGREGATES}
        results.append(GroupResult(g, int(m.size), int(m.shape[0]), aggregates))
    improvements = [
        Improvement(x, y, Interval(*stats.poi_ci(matrices[x], matrices[y], reps=reps, level=level, seed=seed)))
        for i, x in enumerate(groups) for y in groups[i + 1:]
    ]
    taus = profile_taus(np.array([s.normalised for s in scores]), raw="raw" in scales.values())
    profiles = {g: Profile(*stats.performance_profile_ci(m, taus, reps=reps, level=level, seed=seed))
                for g, m in matrices.items()}
    if len(groups) == 1:
        notes.append(f"only one group ({by} = {groups[0]}): no probabilities of improvement")
    notes += sample_notes(scores)
    return Comparison(by, metric, groups, tasks, scales, threshold, scores, results, improvements, taus,
                      profiles, reps, level, loaded, notes, eval_last=eval_last, includes_flights=includes_flights)


def sample_notes(scores: list[RunScore]) -> list[str]:
    """What makes intervals narrower than the evidence: one run per group and task (the bootstrap
    has nothing to resample: zero width), or one seed counted twice (copies are not independent)."""
    notes = []
    cells: dict[tuple[str, str], list[RunScore]] = {}
    for s in scores:
        cells.setdefault((s.group, s.task), []).append(s)
    single = sorted({g for (g, _), runs in cells.items() if len(runs) == 1}, key=_sort_key)
    if single:
        notes.append(f"one run per task in group(s) {', '.join(single)}: intervals of zero width say nothing "
                     "about seed-to-seed spread; run several seeds")
    for (g, task), runs in sorted(cells.items(), key=lambda kv: (_sort_key(kv[0][0]), kv[0][1])):
        seeds = [r.seed for r in runs]
        repeated = sorted({str(x) for x in seeds if seeds.count(x) > 1})
        if repeated:
            notes.append(f"group {g}, task {task}: seed(s) {', '.join(repeated)} appear more than once; "
                         "runs with the same seed are not independent samples")
    return notes


def profile_taus(values: np.ndarray, *, raw: bool) -> np.ndarray:
    """Thresholds for the performance profiles: from 0 (or the lowest raw score) to the highest score."""
    lo = float(values.min()) if raw else min(0.0, float(values.min()))
    hi = float(values.max())
    return np.linspace(lo, hi if hi > lo else lo + 1.0, PROFILE_POINTS)


def stratified(matrix: np.ndarray, statistic, reps: int, level: float, seed: int) -> tuple[float, float, float]:
    """``(point, lo, hi)`` of a scalar aggregate by stratified bootstrap."""
    point, lo, hi = stats.stratified_bootstrap_ci(matrix, statistic, reps=reps, level=level, seed=seed)
    return float(point), float(lo), float(hi)


# ----------------------------------------------------------------------------- outputs


def _plain(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def to_json(c: Comparison, files: dict[str, Path] | None = None) -> dict[str, Any]:
    """The comparison as plain JSON-serialisable data."""
    return {
        "by": c.by,
        "metric": c.metric,
        "metric_definition": c.metric_definition,
        "metric_includes_pretrained_flights": c.includes_flights,
        "eval_last": c.eval_last if c.metric == "eval-last" else None,
        "reference_group": REFERENCE if REFERENCE in c.groups else None,
        "runs": len(c.scores),
        "tasks": c.tasks,
        "groups": [
            {"name": r.name, "runs": r.runs_per_task * len(c.tasks), "runs_per_task": r.runs_per_task,
             **{name: iv.as_dict() for name, iv in r.aggregates.items()}}
            for r in c.results
        ],
        "scale": c.scales,
        "gap_threshold": c.gap_threshold,
        "level": c.level,
        "reps": c.reps,
        "probability_of_improvement": [{"x": p.x, "y": p.y, **p.interval.as_dict()} for p in c.improvements],
        "profiles": {
            "taus": [float(t) for t in c.taus],
            "groups": {g: {"point": p.point.tolist(), "lo": p.lo.tolist(), "hi": p.hi.tolist()}
                       for g, p in c.profiles.items()},
        },
        "scores": [
            {"path": str(s.path), "group": s.group, "task": s.task, "seed": s.seed, "status": s.status,
             "budget": s.budget, "score": _plain(s.score), "normalised": _plain(s.normalised)}
            for s in c.scores
        ],
        "files": {k: str(v) for k, v in (files or {}).items()},
        "notes": c.notes,
    }


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def fmt_interval(iv: Interval) -> str:
    """``point [lo, hi]`` with 3 significant digits."""
    return f"{_fmt(iv.point)} [{_fmt(iv.lo)}, {_fmt(iv.hi)}]"


def headline(c: Comparison) -> str:
    """The one line saying what was compared."""
    short = {"human": "human-normalised", "minmax": "min-max normalised per task", "raw": "raw (one task)"}
    scale = " / ".join(short[k] for k in sorted(set(c.scales.values())))
    return (f"compared {len(c.scores)} runs in {len(c.groups)} group(s) by {c.by} on {len(c.tasks)} task(s); "
            f"metric {c.metric_label}; scores {scale}")


def render_tables(c: Comparison) -> list:
    """Rich tables for the terminal: the aggregates per group, then the probabilities of improvement."""
    from rich.table import Table

    pct = f"{100 * c.level:g}%"
    agg = Table(title=f"{c.metric_label} score by {c.by} ({c.scale_label}, {pct} stratified bootstrap CIs)",
                header_style="bold")
    agg.add_column(c.by, style="cyan")
    agg.add_column("runs", justify="right")
    for name in AGGREGATES:
        agg.add_column(AGGREGATE_TITLES[name])
    for r in c.results:
        agg.add_row(r.name, str(r.runs), *(fmt_interval(r.aggregates[n]) for n in AGGREGATES))
    tables = [agg]
    if c.improvements:
        poi = Table(title=f"P(X > Y), {pct} CI", header_style="bold")
        for col in ("X", "Y", "P(X > Y)"):
            poi.add_column(col)
        for p in c.improvements:
            poi.add_row(p.x, p.y, fmt_interval(p.interval))
        tables.append(poi)
    return tables


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_outputs(c: Comparison, out_dir: Path) -> dict[str, Path]:
    """Write the CSV files, the markdown report and the PNGs into ``out_dir``; returns their paths."""
    from btcli import compare_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["aggregates"] = _write(out_dir / "aggregates.csv", _csv_text(
        ["group", "runs", "statistic", "point", "lo", "hi"],
        [[r.name, r.runs, n, r.aggregates[n].point, r.aggregates[n].lo, r.aggregates[n].hi]
         for r in c.results for n in AGGREGATES]))
    files["poi"] = _write(out_dir / "poi.csv", _csv_text(
        ["x", "y", "probability", "lo", "hi"],
        [[p.x, p.y, p.interval.point, p.interval.lo, p.interval.hi] for p in c.improvements]))
    files["scores"] = _write(out_dir / "scores.csv", _csv_text(
        ["path", "group", "task", "seed", "status", "budget", "score", "normalised", "scale"],
        [[s.path, s.group, s.task, s.seed, s.status, s.budget, s.score, s.normalised, c.scales[s.task]]
         for s in c.scores]))
    files["profiles"] = _write(out_dir / "profiles.csv", _csv_text(
        ["group", "tau", "fraction", "lo", "hi"],
        [[g, float(t), float(p.point[i]), float(p.lo[i]), float(p.hi[i])]
         for g, p in c.profiles.items() for i, t in enumerate(c.taus)]))
    files["learning_curves"] = compare_plots.plot_learning_curves(c, out_dir / "learning_curves.png")
    files["intervals"] = compare_plots.plot_intervals(c, out_dir / "intervals.png")
    files["profiles_plot"] = compare_plots.plot_profiles(c, out_dir / "profiles.png")
    files["markdown"] = _write(out_dir / "compare.md", markdown(c, out_dir))
    return files


def markdown(c: Comparison, out_dir: Path) -> str:
    """The markdown report (images referenced relative to ``out_dir``)."""
    pct = f"{100 * c.level:g}%"
    lines = [f"# Comparison by `{c.by}`", "", headline(c) + ".", ""]
    lines += [f"- metric `{c.metric_label}`: {c.metric_definition}"]
    for task in c.tasks:
        lines.append(f"- {task}: {_SCALE_WORDS[c.scales[task]]}")
    gap = "1" if c.gap_threshold == 1.0 and "raw" not in c.scales.values() else f"{c.gap_threshold:g} (the best run)"
    lines += [f"- optimality gap: mean shortfall below {gap}",
              f"- intervals: {pct} stratified percentile bootstrap ({c.reps} resamples, runs resampled within "
              "each task)", ""]
    lines += [f"| {c.by} | runs | " + " | ".join(AGGREGATE_TITLES[n] for n in AGGREGATES) + " |",
              "|---|---:|" + "---|" * len(AGGREGATES)]
    for r in c.results:
        lines.append(f"| {r.name} | {r.runs} | " + " | ".join(fmt_interval(r.aggregates[n]) for n in AGGREGATES)
                     + " |")
    lines.append("")
    if c.improvements:
        lines += [f"Probability of improvement P(X > Y) ({pct} CI):", "", "| X | Y | P(X > Y) |", "|---|---|---|"]
        lines += [f"| {p.x} | {p.y} | {fmt_interval(p.interval)} |" for p in c.improvements]
        lines.append("")
    lines += ["![interval estimates](intervals.png)", "", "![performance profiles](profiles.png)", "",
              "![learning curves](learning_curves.png)", ""]
    if c.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in c.notes] + [""]
    lines += ["## Runs", "", f"| run | {c.by} | task | seed | status | score | normalised |",
              "|---|---|---|---|---|---:|---:|"]
    for s in c.scores:
        rel = os.path.relpath(s.path.resolve(), out_dir.resolve())
        lines.append(f"| `{rel}` | {s.group} | {s.task} | {s.seed} | {s.status} | {s.score:.4g} | "
                     f"{s.normalised:.4g} |")
    lines.append("")
    return "\n".join(lines)
