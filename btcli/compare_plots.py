"""The PNGs of `btcli compare`: learning curves, interval estimates, performance profiles.

Figures are drawn on matplotlib's Agg canvas directly (no global backend is touched) and
written atomically. Each group keeps one colour across the three figures.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from btcli import evals, stats
from btcli.compare_results import AGGREGATE_TITLES, AGGREGATES, EVAL_METRICS, REFERENCE, Comparison
from btcli.run_logs import RunData, episodes, training_evals

CURVE_BINS = 40
CURVE_REPS = 1000


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=150)
    os.replace(tmp, path)
    return path


def _colours(c: Comparison) -> dict[str, str]:
    return {g: f"C{i % 10}" for i, g in enumerate(c.groups)}


def binned_returns(run: RunData, upper: float, bins: int = CURVE_BINS) -> np.ndarray:
    """Mean training return per equal step bin of ``[0, upper]``; NaN where a bin has no episode."""
    ep = episodes(run)
    if ep.empty or upper <= 0:
        return np.full(bins, np.nan)
    return stats.binned_mean(ep["step"].to_numpy(dtype=float), ep["return"].to_numpy(dtype=float), upper, bins)[0]


def binned_evals(run: RunData, upper: float, bins: int = CURVE_BINS) -> np.ndarray:
    """The learner's evaluation means placed in the step bins of :func:`binned_returns`; NaN elsewhere."""
    out = np.full(bins, np.nan)
    c = evals.curve(training_evals(run))
    if c.empty or upper <= 0:
        return out
    idx = stats.step_bins(c["step"].to_numpy(dtype=float), upper, bins)
    out[idx] = c["mean"].to_numpy(dtype=float)  # one evaluation per bin at most, unless bins are finer than evaluations
    return out


def curve_band(curves: np.ndarray, level: float, reps: int = CURVE_REPS, seed: int = 0):
    """Mean over runs (rows) per bin and its percentile-bootstrap band (:func:`btcli.stats.bootstrap_mean_ci`);
    a single run is its own band."""
    if curves.shape[0] < 2:  # nothing to resample
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins stay NaN
            mean = np.nanmean(curves, axis=0)
        return mean, mean, mean
    return stats.bootstrap_mean_ci(curves, reps=reps, level=level, seed=seed)


def _x_range(runs: list[RunData], budgets: list[int | None]) -> float:
    """The step budget of a task's runs (the largest), else the last logged episode step."""
    known = [b for b in budgets if b]
    if known:
        return float(max(known))
    last = [float(episodes(r)["step"].max()) for r in runs if not episodes(r).empty]
    return max(last, default=0.0)


def plot_learning_curves(c: Comparison, path: Path) -> Path:
    """One panel per task: each group's mean training return (raw) against steps, with a 95% band;
    for the learner-only metrics, the learners' evaluations instead. The π_p zero-shot group is a
    horizontal line at the mean of its scores."""
    eval_based = c.metric in EVAL_METRICS
    per_run = binned_evals if eval_based else binned_returns
    n = len(c.tasks)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = _figure(4.6 * cols, 3.4 * rows)
    colours = _colours(c)
    for k, task in enumerate(c.tasks):
        ax = fig.add_subplot(rows, cols, k + 1)
        runs = [s for s in c.scores if s.task == task and s.group != REFERENCE]
        upper = _x_range([c.runs[s.path] for s in runs], [s.budget for s in runs])
        centres = (np.arange(CURVE_BINS) + 0.5) * upper / CURVE_BINS
        for g in c.groups:
            if g == REFERENCE:
                ref = [s.score for s in c.scores if s.task == task and s.group == g]
                ax.axhline(float(np.mean(ref)), color=colours[g], ls="--", lw=1.4, label=f"{g} ({len(ref)})")
                continue
            members = [s for s in runs if s.group == g]
            if not members:
                continue
            curves = np.stack([per_run(c.runs[s.path], upper) for s in members])
            mean, lo, hi = curve_band(curves, c.level)
            ok = np.isfinite(mean)
            ax.plot(centres[ok], mean[ok], color=colours[g], lw=1.6, label=f"{g} ({len(members)})",
                    marker="o" if eval_based else None, ms=3)
            ax.fill_between(centres[ok], lo[ok], hi[ok], color=colours[g], alpha=0.2, lw=0)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("environment steps", fontsize=9)
        ax.set_ylabel("learner's greedy evaluation (raw)" if eval_based else "training return (raw)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        if k == 0:
            ax.legend(fontsize=8, frameon=False, title=c.by, title_fontsize=8)
    return _save(fig, path)


def plot_intervals(c: Comparison, path: Path) -> Path:
    """One panel per aggregate; each group a bar spanning its CI with a tick at the point estimate."""
    fig = _figure(3.0 * len(AGGREGATES), 0.9 + 0.45 * len(c.groups))
    colours = _colours(c)
    axes = fig.subplots(1, len(AGGREGATES), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), AGGREGATES):
        for y, r in enumerate(c.results):
            iv = r.aggregates[name]
            ax.barh(y, iv.hi - iv.lo, left=iv.lo, height=0.6, color=colours[r.name], alpha=0.75)
            ax.vlines(iv.point, y - 0.3, y + 0.3, color="k", lw=1.5)
        ax.set_yticks(range(len(c.results)), [r.name for r in c.results], fontsize=9)
        ax.set_title(AGGREGATE_TITLES[name], fontsize=10)
        ax.set_xlabel(c.scale_label, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def plot_profiles(c: Comparison, path: Path) -> Path:
    """Performance profiles: fraction of (run, task) scores above tau, with the bootstrap band."""
    fig = _figure(5.2, 3.8)
    ax = fig.add_subplot()
    colours = _colours(c)
    for g, p in c.profiles.items():
        ax.plot(c.taus, p.point, color=colours[g], lw=1.6, label=g)
        ax.fill_between(c.taus, p.lo, p.hi, color=colours[g], alpha=0.2, lw=0)
    ax.set_xlabel(f"{c.scale_label} (tau)", fontsize=9)
    ax.set_ylabel("fraction of runs with score > tau", fontsize=9)
    ax.set_ylim(-0.02, 1.02)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, title=c.by, title_fontsize=8)
    return _save(fig, path)
