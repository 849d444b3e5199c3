"""One run's headline figures (:func:`summarize_run`), as plain JSON-ready values.

Honesty rules kept throughout:

* a run without a readable ``summary.json`` is reported as ``'unfinished'``;
* a figure that cannot be computed from the data present is ``None``, never a guess;
* every number in the result is a plain ``int``/``float``/``str``/``None`` (no numpy scalars,
  no NaN), so ``json.dumps(summary, allow_nan=False)`` works.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

from btcli import evals, stats
from btcli.modes import FLIGHT_MODES
from btcli.run_logs import RunData, episodes, reference_evals, run_env_id, training_evals

AUC_BINS = 20
EVAL_LAST = 3  # evaluations averaged by eval_last_mean (compare --metric eval-last)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
# behaviour -> metrics.csv column with its share of the episode's steps (btcli.behaviour.BEHAVIOURS)
SHARE_COLUMNS = {"learner": "share_learner", "pretrained": "share_pretrained", "random": "share_random"}


def finite(value: Any) -> float | None:
    """A plain finite float, or None (for None, NaN, inf, non-numbers, bools)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def int_or_none(value: Any) -> int | None:
    f = finite(value)
    return None if f is None else int(round(f))


def jsonable(obj: Any) -> Any:
    """Recursively turn numpy/pandas scalars into plain Python and NaN/inf into None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return finite(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, os.PathLike):
        return str(obj)
    return str(obj)



def bootstrap_ci(
    values, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of the mean of ``values``' finite entries
    (:func:`btcli.stats.bootstrap_mean_ci`); ``None`` for fewer than two of them."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None
    _, lo, hi = stats.bootstrap_mean_ci(x, reps=resamples, level=level, seed=seed)
    return float(lo), float(hi)


def _binned_auc(steps: np.ndarray, returns: np.ndarray, budget: float, bins: int = AUC_BINS):
    """(auc, non_empty_bins); see :func:`summarize_run` for the definition."""
    if budget is None or budget <= 0 or steps.size == 0:
        return None, 0
    means, counts = stats.binned_mean(steps, returns, budget, bins)
    filled = counts > 0
    return float(np.mean(means[filled])), int(filled.sum())


def _max_step(run: RunData) -> float | None:
    vals = []
    for df in (run.metrics, run.train, run.eval):
        if not df.empty:
            s = df["step"].to_numpy(dtype=float)
            s = s[np.isfinite(s)]
            if s.size:
                vals.append(float(s.max()))
    if run.summary is not None and finite(run.summary.get("steps")) is not None:
        vals.append(finite(run.summary.get("steps")))
    return max(vals) if vals else None



def _eval_scores(run: RunData, eval_last: int) -> dict:
    """Learner-only scores over the run's own evaluations, and π_p's zero-shot reference."""
    c = evals.curve(evals.training_rows(run.eval, run_env_id(run), evals.LEARNER))  # btcli evaluate's rows never count
    ref = reference_evals(run)
    return {
        "eval_auc": evals.eval_auc(c),
        "eval_last_mean": evals.eval_last(c, eval_last),
        "eval_last_k": int(min(eval_last, len(c))),
        "evaluations": int(len(c)),
        "pretrained_eval_mean": evals.pooled_mean(ref),
        "pretrained_eval_episodes": int(len(ref)),
    }


def _last_eval(run: RunData) -> dict:
    out = {"eval_step": None, "eval_return_mean": None, "eval_return_std": None, "eval_episodes": None,
           "eval_source": None}
    e = training_evals(run)
    if e.empty:
        return out
    step = e["step"].to_numpy(dtype=float)
    ret = e["return"].to_numpy(dtype=float)
    ok = np.isfinite(step) & np.isfinite(ret)
    if not ok.any():
        return out
    last = step[ok].max()
    r = ret[ok & (step == last)]
    out["eval_step"] = int(last)
    out["eval_source"] = "training"
    rows = e[ok & (step == last)]
    if "checkpoint" in rows.columns and rows["checkpoint"].notna().any() and \
            rows["checkpoint"].astype(str).str.strip().ne("").any():  # only `btcli evaluate` rows exist
        eps = sorted({float(x) for x in rows["epsilon"].dropna()}) if "epsilon" in rows.columns else []
        out["eval_source"] = "btcli evaluate" + (f", epsilon {', '.join(f'{x:g}' for x in eps)}" if eps else "")
    out["eval_return_mean"] = float(r.mean())
    out["eval_return_std"] = float(r.std(ddof=1)) if r.size > 1 else None
    out["eval_episodes"] = int(r.size)
    return out


def _last_mean(ep: pd.DataFrame, column: str, window: int) -> float | None:
    """Mean of ``column`` over the last ``window`` episodes, empty cells left out; None if all are empty."""
    if ep.empty or column not in ep.columns:
        return None
    x = ep[column].to_numpy(dtype=float)[-window:]
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


def _weighted_shares(ep: pd.DataFrame) -> dict | None:
    """Whole-run share of steps per behaviour from metrics.csv: episode shares weighted by length."""
    if ep.empty or not set(SHARE_COLUMNS.values()) <= set(ep.columns):
        return None
    shares = ep[list(SHARE_COLUMNS.values())].to_numpy(dtype=float)
    length = ep["length"].to_numpy(dtype=float)
    ok = np.isfinite(shares).all(axis=1) & np.isfinite(length) & (length > 0)
    if not ok.any():
        return None
    w = length[ok]
    return {name: float(shares[ok, i] @ w / w.sum()) for i, name in enumerate(SHARE_COLUMNS)}


def _behaviour_share(run: RunData, ep: pd.DataFrame) -> dict | None:
    given = (run.summary or {}).get("behaviour_share")
    if isinstance(given, dict) and any(finite(given.get(k)) is not None for k in SHARE_COLUMNS):
        return {k: finite(given.get(k)) for k in SHARE_COLUMNS}
    return _weighted_shares(ep)


def _pretrained(run: RunData) -> dict | None:
    """Compact provenance of the pre-trained run a transfer used: summary.json, else config.yaml."""
    facts = (run.summary or {}).get("pretrained")
    if not isinstance(facts, dict):
        prov = run.config.get("provenance")
        facts = prov.get("pretrained") if isinstance(prov, dict) else None
    if not isinstance(facts, dict):
        return None
    sha = facts.get("sha256")
    return {
        "run": None if facts.get("run") is None else str(facts["run"]),
        "step": int_or_none(facts.get("step")),
        "objective": facts.get("objective"),
        "sha256": str(sha)[:12] if sha else None,
    }


def summarize_run(run: RunData, window: int = 100, eval_last: int = EVAL_LAST) -> dict:
    """Headline figures of one run, as a JSON-serialisable dict (``None`` where unknown).

    Keys:

    * ``path``, ``env_id``, ``command``, ``mode``, ``seed`` -- from the config.
    * ``status`` -- ``'complete'`` if ``summary.json`` was read and its ``status`` (if any)
      is ``'complete'``, else ``'unfinished'``.
    * ``steps_done`` -- the largest env step seen in metrics/train/eval CSVs or in
      ``summary.json``'s ``steps``; ``steps_budget`` -- ``config['steps']``.
    * ``episodes`` -- finished training episodes (rows of metrics.csv with a step and return).
    * ``window`` -- the requested window; ``return_last_n`` -- episodes actually averaged
      (``min(window, episodes)``).
    * ``return_last_mean`` -- mean raw return of the last ``window`` training episodes (in
      step order); ``return_last_ci95`` -- ``[lo, hi]``, percentile bootstrap 95% CI of that
      mean (2000 resamples, RNG seed 0), ``None`` with fewer than 2 episodes.
    * ``return_best_mean`` -- the best rolling mean over ``window`` consecutive episodes
      (over all episodes when there are fewer than ``window``).
    * ``auc`` -- area under the learning curve, normalised to a mean return: the step budget
      ``[0, steps_budget]`` is cut into 20 equal bins, bin ``k`` holding the episodes whose
      end step ``s`` satisfies ``k*B/20 <= s < (k+1)*B/20`` (episodes at or past the budget,
      possible with vectorised envs, count in the last bin); the mean return is taken per
      bin and ``auc`` is the unweighted mean over the non-empty bins. ``auc_bins`` is the
      number of non-empty bins (below 20 for an unfinished run, whose auc covers only the
      part of the budget it reached). ``None`` without a budget or without episodes.
    * ``eval_step``, ``eval_return_mean``, ``eval_return_std`` (sample std, ddof=1; ``None``
      with one episode), ``eval_episodes`` -- from the eval.csv rows at the LAST eval step;
      ``eval_source`` says whose rows: ``training`` (the run's own evaluations), else
      ``btcli evaluate, epsilon E`` (a run without training evaluations).
    * ``eval_auc`` -- area under the learner's evaluation curve, normalised to a mean return
      (:func:`btcli.evals.eval_auc`); ``eval_last_mean`` -- mean of the last ``eval_last``
      evaluation means (``eval_last_k`` of them, fewer when the run has fewer); ``evaluations``
      -- how many. Training evaluations of the learner on the run's own task only.
    * ``pretrained_eval_mean`` -- π_p's zero-shot score: the mean return of every evaluation
      episode of the frozen pre-trained policy the run logged beside the learner's
      (``pretrained_eval_episodes`` of them); ``None`` for runs without π_p.
    * ``training_includes_pretrained`` -- whether the training episodes (``return_last_mean``,
      ``auc``) include steps chosen by π_p (BT flights): they then show what the agent
      experienced, not what the learner learned.
    * ``intrinsic_last_mean`` -- mean ``intrinsic_return`` of the last ``window`` episodes
      (pre-training runs; empty cells are left out, as for the coverage mean).
    * ``coverage_last_mean`` -- mean ``coverage`` (distinct cells or rooms visited per episode)
      of the last ``window`` episodes; ``coverage_total`` -- ``summary.json``'s distinct cells
      or rooms over the whole run.
    * ``behaviour_share`` -- ``{'learner', 'pretrained', 'random'}``: share of the run's steps
      chosen by the learner, by the pre-trained policy and at random; ``summary.json``'s,
      else the metrics.csv shares of all episodes weighted by episode length.
    * ``flights``, ``flight_len_mean``, ``flight_len_max`` -- ``summary.json``'s flight count
      and realised flight lengths.
    * ``pretrained`` -- ``{'run', 'step', 'objective', 'sha256'}`` (first 12 hex digits) of the
      pre-trained checkpoint a transfer used: ``summary.json``'s, else config.yaml's
      ``provenance.pretrained``.
    * ``mean_sps`` -- ``summary.json``'s ``mean_sps``, else train.csv's last step over its last time.
    * ``wall_time_s`` -- ``summary.json``'s ``wall_time_s``, else the latest ``time`` logged
      in metrics/train CSVs (elapsed time so far for an unfinished run).
    * ``notes`` -- list of human-readable caveats (unfinished run, short window, ...).
    """
    if int(window) < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    window = int(window)
    cfg = run.config
    env_id = run_env_id(run)
    notes = list(run.notes)

    summ = run.summary
    if summ is None:
        status = "unfinished"
        notes.append("no summary.json: run unfinished (still running or killed)")
    elif summ.get("status", "complete") != "complete":
        status = "unfinished"
        notes.append(f"summary.json status is {summ.get('status')!r}, not 'complete'")
    else:
        status = "complete"

    budget = finite(cfg.get("steps"))
    steps_done = _max_step(run)

    ep = episodes(run)
    n = len(ep)
    returns = ep["return"].to_numpy(dtype=float) if n else np.empty(0)
    steps = ep["step"].to_numpy(dtype=float) if n else np.empty(0)

    last_n = min(window, n)
    last_mean = last_ci = best = None
    if n:
        tail = returns[-last_n:]
        last_mean = float(tail.mean())
        ci = bootstrap_ci(tail)
        last_ci = list(ci) if ci is not None else None
        best = float(pd.Series(returns).rolling(last_n, min_periods=last_n).mean().max())
        if n < window:
            notes.append(f"only {n} episodes (< window {window}): last/best means use all of them")
    else:
        notes.append("no finished training episodes in metrics.csv")

    auc, auc_bins = _binned_auc(steps, returns, budget)
    if auc is not None and auc_bins < AUC_BINS:
        notes.append(f"auc averages {auc_bins} of {AUC_BINS} step bins (the others have no episodes)")

    ev = _last_eval(run)
    if ev["eval_step"] is None:
        notes.append("no evaluation episodes")
    scores = _eval_scores(run, eval_last)

    mean_sps = finite(summ.get("mean_sps")) if summ else None
    if mean_sps is None and not run.train.empty:
        # steps over elapsed time, not the mean of per-row rates (which over-weights fast phases)
        last = run.train.dropna(subset=["step", "time"])
        if not last.empty and float(last["time"].iloc[-1]) > 0:
            mean_sps = float(last["step"].iloc[-1]) / float(last["time"].iloc[-1])

    wall = finite(summ.get("wall_time_s")) if summ else None
    if wall is None:
        times = [
            df["time"].to_numpy(dtype=float) for df in (run.metrics, run.train) if not df.empty
        ]
        times = np.concatenate(times) if times else np.empty(0)
        times = times[np.isfinite(times)]
        wall = float(times.max()) if times.size else None

    out = {
        "path": str(run.path),
        "env_id": env_id,
        "command": cfg.get("command"),
        "mode": cfg.get("mode"),
        "seed": cfg.get("seed"),
        "status": status,
        "steps_done": None if steps_done is None else int(steps_done),
        "steps_budget": None if budget is None else int(budget),
        "episodes": n,
        "window": window,
        "return_last_n": last_n,
        "return_last_mean": last_mean,
        "return_last_ci95": last_ci,
        "return_best_mean": best,
        "auc": auc,
        "auc_bins": auc_bins,
        "intrinsic_last_mean": _last_mean(ep, "intrinsic_return", window),
        "coverage_last_mean": _last_mean(ep, "coverage", window),
        "coverage_total": int_or_none(summ.get("coverage_total")) if summ else None,
        **ev,
        **scores,
        "training_includes_pretrained": cfg.get("mode") in FLIGHT_MODES,
        "behaviour_share": _behaviour_share(run, ep),
        "flights": int_or_none(summ.get("flights")) if summ else None,
        "flight_len_mean": finite(summ.get("flight_len_mean")) if summ else None,
        "flight_len_max": int_or_none(summ.get("flight_len_max")) if summ else None,
        "pretrained": _pretrained(run),
        "mean_sps": mean_sps,
        "wall_time_s": wall,
        "notes": notes,
    }
    return jsonable(out)

