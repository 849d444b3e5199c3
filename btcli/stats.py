"""Aggregate statistics over many runs and tasks, following the rliable protocol.

Agarwal et al. (2021), "Deep RL at the edge of the statistical precipice": report interquartile
means, optimality gaps, probabilities of improvement and performance profiles, each with a
stratified-bootstrap confidence interval (runs resampled with replacement within each task).

Conventions:

* a score matrix is ``[num_runs, num_tasks]`` (runs = seeds, tasks = environments);
* the aggregate metrics (:func:`mean`, :func:`median`, :func:`iqm`, :func:`optimality_gap`,
  :func:`performance_profile`) reduce over the last two axes, so a stack of bootstrap matrices
  ``[reps, runs, tasks]`` gives one value per matrix; a 1-D or 2-D input gives a plain value;
* NaN anywhere is a ``ValueError``: drop or impute failed runs before calling (the one-sample
  :func:`bootstrap_mean_ci` of learning curves is NaN-aware: an empty bin is not a score).

The same module holds the one step binning of learning curves (:func:`step_bins`,
:func:`binned_mean`) that the run report, its AUC and compare's curves share.

Pure numpy; every bootstrap is deterministic for a given ``seed``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "ATARI_RANDOM_HUMAN",
    "atari_bounds",
    "binned_mean",
    "bootstrap_mean_ci",
    "iqm",
    "mean",
    "median",
    "normalise",
    "optimality_gap",
    "performance_profile",
    "performance_profile_ci",
    "poi_ci",
    "probability_of_improvement",
    "step_bins",
    "stratified_bootstrap_ci",
]

Value = float | np.ndarray
Statistic = Callable[[np.ndarray], "Value"]

# Elements of resampled data held at once by a bootstrap (bounds memory; ~32 MiB of float64).
_CHUNK_ELEMENTS = 1 << 22

# Published random-agent and human scores (Mnih et al. 2015; Badia et al. 2020), (random, human).
ATARI_RANDOM_HUMAN: dict[str, tuple[float, float]] = {
    "ALE/BeamRider-v5": (363.9, 16926.5),
    "ALE/Breakout-v5": (1.7, 30.5),
    "ALE/Enduro-v5": (0.0, 860.5),
    "ALE/Freeway-v5": (0.0, 29.6),
    "ALE/Gravitar-v5": (173.0, 3351.4),
    "ALE/MontezumaRevenge-v5": (0.0, 4753.3),
    "ALE/Pitfall-v5": (-229.4, 6463.7),
    "ALE/Pong-v5": (-20.7, 14.6),
    "ALE/PrivateEye-v5": (24.9, 69571.3),
    "ALE/Qbert-v5": (163.9, 13455.0),
    "ALE/Seaquest-v5": (68.4, 42054.7),
    "ALE/Solaris-v5": (1236.3, 12326.7),
    "ALE/SpaceInvaders-v5": (148.0, 1668.7),
    "ALE/Venture-v5": (0.0, 1187.5),
}


# ----------------------------------------------------------------------------- validation


def _as_scores(x, name: str = "scores", min_ndim: int = 1) -> np.ndarray:
    """``x`` as a float array; ValueError if it is empty, too low-dimensional or has NaN."""
    a = np.asarray(x, dtype=float)
    if a.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN; drop or impute missing runs first")
    return a


def _as_matrix(x, name: str = "scores") -> np.ndarray:
    """``x`` as a validated ``[num_runs, num_tasks]`` matrix."""
    a = _as_scores(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be [num_runs, num_tasks], got shape {a.shape}")
    return a


def _check_level(level: float, reps: int) -> None:
    """ValueError unless 0 < level < 1 and reps >= 1."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")


def _entries(x: np.ndarray) -> np.ndarray:
    """All entries of a <=2-D array as 1-D; for >=3-D, flatten only the last two axes."""
    return x.reshape(-1) if x.ndim <= 2 else x.reshape(*x.shape[:-2], -1)


def _out(v: np.ndarray) -> Value:
    """A 0-d result as a Python float; anything else unchanged."""
    return float(v) if np.ndim(v) == 0 else v


# ----------------------------------------------------------------------------- point metrics


def mean(x) -> Value:
    """Mean of all entries (per leading index for a ``[..., runs, tasks]`` stack)."""
    return _out(_entries(_as_scores(x)).mean(axis=-1))


def median(x) -> Value:
    """Median over tasks of each task's mean score, as rliable (and the Atari literature) defines it.

    For a ``[runs, tasks]`` matrix: ``median_t(mean_r x[r, t])`` (per leading index for a
    ``[..., runs, tasks]`` stack). A 1-D input is a plain list of values: its median.
    """
    a = _as_scores(x)
    if a.ndim == 1:
        return _out(np.median(a))
    return _out(np.median(a.mean(axis=-2), axis=-1))


def iqm(x) -> Value:
    """Interquartile mean: drop ``int(0.25 n)`` entries from each end, average the rest.

    Same as ``scipy.stats.trim_mean(x, 0.25, axis=None)`` for a matrix.
    """
    flat = np.sort(_entries(_as_scores(x)), axis=-1)
    n = flat.shape[-1]
    cut = int(0.25 * n)
    return _out(flat[..., cut : n - cut].mean(axis=-1))


def optimality_gap(x, threshold: float = 1.0) -> Value:
    """Mean of ``max(threshold - x, 0)``: how far scores fall short of ``threshold``."""
    gap = np.maximum(threshold - _entries(_as_scores(x)), 0.0)
    return _out(gap.mean(axis=-1))


def performance_profile(scores, taus) -> np.ndarray:
    """Fraction of run-task entries with score ``> tau``, one value per tau (last axis)."""
    flat = _entries(_as_scores(scores))
    t = _as_scores(taus, "taus").reshape(-1)
    return np.stack([(flat > tau).mean(axis=-1) for tau in t], axis=-1)


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + 0.5 P(X = Y) per task, averaged over tasks; ``x, y: [..., runs, tasks]``."""
    xs = x[..., :, None, :]
    ys = y[..., None, :, :]
    per_task = (xs > ys).mean(axis=(-3, -2)) + 0.5 * (xs == ys).mean(axis=(-3, -2))
    return per_task.mean(axis=-1)


def _check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``[n_x, tasks]`` and ``[n_y, tasks]`` matrices with matching task counts."""
    a, b = _as_matrix(x, "x"), _as_matrix(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and y must have the same number of tasks, got {a.shape[1]} and {b.shape[1]}")
    return a, b


def probability_of_improvement(x, y) -> float:
    """Average over tasks of P(X > Y) + 0.5 P(X = Y), i.e. Mann-Whitney U / (n_x n_y).

    ``x: [n_x, tasks]`` and ``y: [n_y, tasks]``; 0.5 means no difference.
    """
    a, b = _check_pair(x, y)
    return float(_poi(a, b))


# ----------------------------------------------------------------------------- bootstrap


def _resample(rng: np.random.Generator, scores: np.ndarray, reps: int) -> np.ndarray:
    """``reps`` stratified resamples ``[reps, runs, tasks]``: runs drawn per task, with replacement."""
    runs, tasks = scores.shape
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    return scores[idx, np.arange(tasks)]


def _chunks(reps: int, per_rep: int) -> list[tuple[int, int]]:
    """``(start, stop)`` slices of ``range(reps)`` holding about ``_CHUNK_ELEMENTS`` elements each."""
    size = max(1, _CHUNK_ELEMENTS // max(1, per_rep))
    return [(s, min(reps, s + size)) for s in range(0, reps, size)]


def _percentile_ci(point, boots: np.ndarray, level: float) -> tuple[Value, Value, Value]:
    """``(point, lo, hi)`` with the percentile interval of ``boots`` along axis 0."""
    alpha = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(boots, [alpha, 100.0 - alpha], axis=0)
    return _out(np.asarray(point, dtype=float)), _out(lo), _out(hi)


def _apply(statistic: Statistic, batch: np.ndarray, batched: bool) -> np.ndarray:
    """``statistic`` on each matrix of ``batch``; result ``[len(batch), ...]``."""
    if not batched:
        return np.stack([np.asarray(statistic(m), dtype=float) for m in batch])
    out = np.asarray(statistic(batch), dtype=float)
    if out.ndim == 0 or out.shape[0] != batch.shape[0]:
        raise ValueError(
            "statistic must map [reps, runs, tasks] to [reps, ...]; pass batched=False for per-matrix statistics"
        )
    return out


def stratified_bootstrap_ci(
    scores,
    statistic: Statistic,
    *,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    batched: bool = True,
) -> tuple[Value, Value, Value]:
    """``(point, lo, hi)``: ``statistic(scores)`` and its stratified percentile-bootstrap interval.

    Each resample draws ``num_runs`` runs with replacement independently within every task.
    With ``batched=True`` (the metrics here), ``statistic`` is called on ``[reps, runs, tasks]``
    stacks and must return ``[reps]`` or ``[reps, k]``; otherwise it gets one matrix at a time.
    """
    _check_level(level, reps)
    s = _as_matrix(scores)
    rng = np.random.default_rng(seed)
    point = np.asarray(statistic(s), dtype=float)
    parts = [_apply(statistic, _resample(rng, s, stop - start), batched) for start, stop in _chunks(reps, s.size)]
    boots = np.concatenate(parts, axis=0)
    if boots.shape[1:] != point.shape:
        raise ValueError(f"statistic gave shape {point.shape} on scores but {boots.shape[1:]} per resample")
    return _percentile_ci(point, boots, level)


def poi_ci(
    x, y, *, reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(point, lo, hi)`` for :func:`probability_of_improvement`.

    ``x`` and ``y`` are resampled independently, each stratified by task.
    """
    _check_level(level, reps)
    a, b = _check_pair(x, y)
    rng = np.random.default_rng(seed)
    per_rep = a.shape[0] * b.shape[0] * a.shape[1]
    parts = [_poi(_resample(rng, a, stop - start), _resample(rng, b, stop - start)) for start, stop in _chunks(reps, per_rep)]
    point, lo, hi = _percentile_ci(_poi(a, b), np.concatenate(parts), level)
    return float(point), float(lo), float(hi)


def performance_profile_ci(
    scores, taus, *, reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(profile, lo, hi)``, each ``[len(taus)]``: the profile and its pointwise bootstrap band."""
    t = _as_scores(taus, "taus").reshape(-1)
    point, lo, hi = stratified_bootstrap_ci(
        scores, lambda s: performance_profile(s, t), reps=reps, level=level, seed=seed
    )
    return np.atleast_1d(point), np.atleast_1d(lo), np.atleast_1d(hi)


def bootstrap_mean_ci(values, *, reps: int = 2000, level: float = 0.95, seed: int = 0):
    """``(mean, lo, hi)``: the mean over rows (axis 0) of ``values`` (``[n]`` or ``[n, k]``) and its
    percentile-bootstrap interval, rows resampled with replacement (one sample, no strata).

    NaN entries are left out of each mean (a column with none stays NaN), so ``[runs, bins]``
    learning curves with empty bins can be passed as they are.
    """
    _check_level(level, reps)
    x = np.asarray(values, dtype=float)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        point = np.nanmean(x, axis=0)
        # draws in chunks take the same integers as one draw of [reps, n]: the result is chunk-free
        boots = np.concatenate([np.nanmean(x[rng.integers(0, n, size=(stop - start, n))], axis=1)
                                for start, stop in _chunks(reps, x.size)])
        alpha = 100.0 * (1.0 - level) / 2.0
        lo, hi = np.nanpercentile(boots, [alpha, 100.0 - alpha], axis=0)
    return point, lo, hi


# ----------------------------------------------------------------------------- step bins


def step_bins(steps, upper: float, bins: int) -> np.ndarray:
    """Bin of each step when ``[0, upper]`` is cut into ``bins`` equal bins:
    ``clip(floor(step * bins / upper), 0, bins - 1)`` (steps at or past ``upper`` fall in the last
    bin); all in bin 0 when ``upper <= 0``."""
    s = np.asarray(steps, dtype=float)
    if upper <= 0:
        return np.zeros(s.size, dtype=np.int64)
    return np.clip(np.floor(s * bins / upper).astype(np.int64), 0, bins - 1)


def binned_mean(steps, values, upper: float, bins: int, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """``(means, totals)``, each ``[bins]``: per bin of :func:`step_bins`, the mean of ``values``
    weighted by ``weights`` (1 each by default), NaN for an empty bin, and the bin's total weight."""
    idx = step_bins(steps, upper, bins)
    w = np.ones(idx.size) if weights is None else np.asarray(weights, dtype=float)
    totals = np.bincount(idx, weights=w, minlength=bins)
    sums = np.bincount(idx, weights=np.asarray(values, dtype=float) * w, minlength=bins)
    means = np.full(bins, np.nan)
    filled = totals > 0
    means[filled] = sums[filled] / totals[filled]
    return means, totals


# ----------------------------------------------------------------------------- normalisation


def normalise(scores, low, high) -> np.ndarray:
    """``(scores - low) / (high - low)``; ``low`` and ``high`` are scalars or one per task (last axis)."""
    s = _as_scores(scores)
    lo, hi = _as_scores(low, "low", 0), _as_scores(high, "high", 0)
    if np.any(hi == lo):
        raise ValueError("high must differ from low for every task")
    return (s - lo) / (hi - lo)


def atari_bounds(env_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(random, human)`` score arrays for ``env_ids`` (``"ALE/<Game>-v5"``), for :func:`normalise`."""
    missing = [e for e in env_ids if e not in ATARI_RANDOM_HUMAN]
    if missing:
        raise KeyError(f"no random/human scores for {missing}; known: {sorted(ATARI_RANDOM_HUMAN)}")
    pairs = np.array([ATARI_RANDOM_HUMAN[e] for e in env_ids], dtype=float).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]
