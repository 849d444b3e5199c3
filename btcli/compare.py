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

import numpy as np

from btcli import stats
from btcli.compare_output import fmt_interval, headline, markdown, render_tables, to_json, write_outputs
from btcli.compare_results import (
    AGGREGATE_TITLES,
    AGGREGATES,
    DEFAULT_METRIC,
    DEFAULT_REPS,
    EVAL_METRICS,
    FINAL_WINDOW,
    METRICS,
    PROFILE_POINTS,
    REFERENCE,
    CompareError,
    Comparison,
    GroupResult,
    Improvement,
    Interval,
    Profile,
    RunScore,
)
from btcli.compare_scores import (
    _sort_key,
    collect_run_dirs,
    config_value,
    group_label,
    load_scores,
    reference_scores,
    scale_scores,
    score_matrix,
)
from btcli.modes import FLIGHT_MODES
from btcli.run_summary import EVAL_LAST

__all__ = [
    "AGGREGATES", "AGGREGATE_TITLES", "DEFAULT_METRIC", "DEFAULT_REPS", "EVAL_METRICS", "FINAL_WINDOW", "METRICS",
    "REFERENCE", "CompareError", "Comparison", "GroupResult", "Improvement", "Interval", "Profile", "RunScore",
    "collect_run_dirs", "compare_runs", "config_value", "fmt_interval", "group_label", "headline", "load_scores",
    "markdown", "reference_scores", "render_tables", "scale_scores", "score_matrix", "to_json", "write_outputs",
]


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

