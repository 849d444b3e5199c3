"""Single-run analysis: load a run directory, summarise it, plot it, write a report.

A run directory (written by the training loop) holds ``config.yaml`` and, depending on how
far the run got, ``metrics.csv`` (one row per finished training episode), ``train.csv``
(periodic learner statistics), ``eval.csv`` (one row per evaluation episode) and
``summary.json`` (written last, only when the run completes). This module only reads those
files, plus it writes ``report.png`` and ``report.md`` back into the directory on request.

Honesty rules kept throughout:

* a run without a readable ``summary.json`` is reported as ``'unfinished'``;
* a figure that cannot be computed from the data present is ``None``, never a guess;
* every number in :func:`summarize_run`'s result is a plain ``int``/``float``/``str``/``None``
  (no numpy scalars, no NaN), so ``json.dumps(summary, allow_nan=False)`` works.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from btcli import evals
from btcli.runs import EVAL_COLUMNS, METRICS_COLUMNS, TRAIN_COLUMNS

__all__ = [
    "AUC_BINS",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "EVAL_COLUMNS",
    "METRICS_COLUMNS",
    "TRAIN_COLUMNS",
    "RunData",
    "RunDirError",
    "bootstrap_ci",
    "learning_curve",
    "learning_figure",
    "load_run",
    "plot_learning_curve",
    "render_summary_table",
    "report_run",
    "summarize_run",
    "write_markdown",
]

# Missing files give empty frames with the columns the training loop writes (btcli.runs);
# extra columns found in a file (added by later versions) are kept as they are.
_TEXT_COLUMNS = {"checkpoint", "policy", "env_id"}

AUC_BINS = 20
EVAL_LAST = 3  # evaluations averaged by eval_last_mean (compare --metric eval-last)
# modes whose training episodes include steps chosen by π_p (BT flights)
FLIGHT_MODES = ("bt", "bt+ft")
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0

PLOT_FILE = "report.png"
MARKDOWN_FILE = "report.md"

# behaviour -> metrics.csv column with its share of the episode's steps (btcli.behaviour.BEHAVIOURS)
SHARE_COLUMNS = {"learner": "share_learner", "pretrained": "share_pretrained", "random": "share_random"}
# config.yaml sections that record facts rather than settings (btcli.config.RECORD_KEYS)
_RECORD_SECTIONS = ("meta", "provenance")


class RunDirError(ValueError):
    """The path is not a readable btcli run directory. The message is a single line."""


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


def _one_line(text: str) -> str:
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
        notes.append(f"{path.name}: unreadable ({_one_line(exc)})")
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
        msg = _one_line(exc)
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
            notes.append(f"summary.json: unreadable ({_one_line(exc)[:120]}), run treated as unfinished")
        else:
            if isinstance(loaded, dict):
                summary = loaded
            else:
                notes.append("summary.json: not a JSON object, run treated as unfinished")
    return RunData(path, config, metrics, train, evals, summary, notes)


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """A plain finite float, or None (for None, NaN, inf, non-numbers, bools)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int_or_none(value: Any) -> int | None:
    f = _finite(value)
    return None if f is None else int(round(f))


def _jsonable(obj: Any) -> Any:
    """Recursively turn numpy/pandas scalars into plain Python and NaN/inf into None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, os.PathLike):
        return str(obj)
    return str(obj)


def _episodes(run: RunData) -> pd.DataFrame:
    """Training episodes with a finite step and return, in step order (stable)."""
    m = run.metrics
    if m.empty:
        return m
    ok = np.isfinite(m["step"].to_numpy(dtype=float)) & np.isfinite(m["return"].to_numpy(dtype=float))
    return m.loc[ok].sort_values("step", kind="stable").reset_index(drop=True)


def bootstrap_ci(
    values, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    Deterministic (fixed ``seed``). Returns ``None`` for fewer than two finite values.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bound memory for large samples
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def _binned_auc(steps: np.ndarray, returns: np.ndarray, budget: float, bins: int = AUC_BINS):
    """(auc, non_empty_bins); see :func:`summarize_run` for the definition."""
    if budget is None or budget <= 0 or steps.size == 0:
        return None, 0
    idx = np.floor(steps * bins / budget).astype(np.int64)
    idx = np.clip(idx, 0, bins - 1)
    sums = np.bincount(idx, weights=returns, minlength=bins)
    counts = np.bincount(idx, minlength=bins)
    filled = counts > 0
    return float(np.mean(sums[filled] / counts[filled])), int(filled.sum())


def _max_step(run: RunData) -> float | None:
    vals = []
    for df in (run.metrics, run.train, run.eval):
        if not df.empty:
            s = df["step"].to_numpy(dtype=float)
            s = s[np.isfinite(s)]
            if s.size:
                vals.append(float(s.max()))
    if run.summary is not None and _finite(run.summary.get("steps")) is not None:
        vals.append(_finite(run.summary.get("steps")))
    return max(vals) if vals else None


def _env_id(run: RunData) -> str | None:
    env_cfg = run.config.get("env")
    return env_cfg.get("id") if isinstance(env_cfg, dict) else (env_cfg if isinstance(env_cfg, str) else None)


def _training_evals(run: RunData) -> pd.DataFrame:
    """The learner's evaluation rows written by the training loop on the run's own task.

    ``btcli evaluate`` appends rows naming a checkpoint, possibly with another epsilon or
    episode count (or another task, ``--env``); mixing them into the training curve would change
    what a point means. Runs with only such rows (on their own task) fall back to those.
    """
    e = run.eval
    during = evals.training_rows(e, _env_id(run), evals.LEARNER)
    if not during.empty or e.empty:
        return during
    return evals.training_rows(e, _env_id(run), evals.LEARNER, loop_only=False)


def _reference_evals(run: RunData) -> pd.DataFrame:
    """The rows of π_p's zero-shot evaluations beside the learner's (transfer runs with a π_p)."""
    return evals.training_rows(run.eval, _env_id(run), evals.PRETRAINED)


def _eval_scores(run: RunData, eval_last: int) -> dict:
    """Learner-only scores over the run's own evaluations, and π_p's zero-shot reference."""
    c = evals.curve(evals.training_rows(run.eval, _env_id(run), evals.LEARNER))  # btcli evaluate's rows never count
    ref = _reference_evals(run)
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
    e = _training_evals(run)
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
    if isinstance(given, dict) and any(_finite(given.get(k)) is not None for k in SHARE_COLUMNS):
        return {k: _finite(given.get(k)) for k in SHARE_COLUMNS}
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
        "step": _int_or_none(facts.get("step")),
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
    env_id = _env_id(run)
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

    budget = _finite(cfg.get("steps"))
    steps_done = _max_step(run)

    ep = _episodes(run)
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

    mean_sps = _finite(summ.get("mean_sps")) if summ else None
    if mean_sps is None and not run.train.empty:
        # steps over elapsed time, not the mean of per-row rates (which over-weights fast phases)
        last = run.train.dropna(subset=["step", "time"])
        if not last.empty and float(last["time"].iloc[-1]) > 0:
            mean_sps = float(last["step"].iloc[-1]) / float(last["time"].iloc[-1])

    wall = _finite(summ.get("wall_time_s")) if summ else None
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
        "coverage_total": _int_or_none(summ.get("coverage_total")) if summ else None,
        **ev,
        **scores,
        "training_includes_pretrained": cfg.get("mode") in FLIGHT_MODES,
        "behaviour_share": _behaviour_share(run, ep),
        "flights": _int_or_none(summ.get("flights")) if summ else None,
        "flight_len_mean": _finite(summ.get("flight_len_mean")) if summ else None,
        "flight_len_max": _int_or_none(summ.get("flight_len_max")) if summ else None,
        "pretrained": _pretrained(run),
        "mean_sps": mean_sps,
        "wall_time_s": wall,
        "notes": notes,
    }
    return _jsonable(out)


def _step_bins(steps: np.ndarray, bins: int) -> tuple[np.ndarray, float]:
    """Bin index of each step when ``[0, last step]`` is cut into ``bins`` equal bins, and the width."""
    upper = max(float(steps.max()), 0.0)
    if upper <= 0:
        return np.zeros(steps.size, dtype=np.int64), 0.0
    return np.clip(np.floor(steps * bins / upper).astype(np.int64), 0, bins - 1), upper / bins


def learning_curve(run: RunData, bins: int = 50) -> pd.DataFrame:
    """Binned training curve: returns of finished episodes, averaged in equal step bins.

    The range ``[0, last episode step]`` is cut into ``bins`` equal bins; empty bins are
    dropped. Columns: ``step`` (bin centre), ``return_mean``, ``return_lo``/``return_hi``
    (normal-approximation 95% CI of the bin mean, ``mean +- 1.96 * std / sqrt(n)``; NaN for a
    bin with a single episode) and ``n`` (episodes in the bin).
    """
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    bins = int(bins)
    cols = ["step", "return_mean", "return_lo", "return_hi", "n"]
    ep = _episodes(run)
    if ep.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    rets = ep["return"].to_numpy(dtype=float)
    idx, width = _step_bins(ep["step"].to_numpy(dtype=float), bins)
    g = pd.DataFrame({"bin": idx, "r": rets}).groupby("bin")["r"]
    stats = g.agg(["mean", "std", "count"])
    half = 1.96 * stats["std"] / np.sqrt(stats["count"])
    return pd.DataFrame(
        {
            "step": (stats.index.to_numpy(dtype=float) + 0.5) * width,
            "return_mean": stats["mean"].to_numpy(),
            "return_lo": (stats["mean"] - half).to_numpy(),
            "return_hi": (stats["mean"] + half).to_numpy(),
            "n": stats["count"].to_numpy(dtype=int),
        }
    ).reset_index(drop=True)


def _binned_means(run: RunData, columns: list[str], bins: int, weight: str | None = None) -> pd.DataFrame:
    """Per-bin means of metrics.csv ``columns`` (weighted by ``weight`` if given) in the bins of
    :func:`learning_curve`, over the episodes where all of them are filled. Columns: ``step``
    (bin centre) and ``columns``; empty bins are dropped."""
    ep = _episodes(run)
    empty = pd.DataFrame({c: pd.Series(dtype=float) for c in ["step", *columns]})
    if ep.empty or not set(columns) <= set(ep.columns):
        return empty
    idx, width = _step_bins(ep["step"].to_numpy(dtype=float), bins)
    x = ep[columns].to_numpy(dtype=float)
    w = ep[weight].to_numpy(dtype=float) if weight else np.ones(len(ep))
    ok = np.isfinite(x).all(axis=1) & np.isfinite(w) & (w > 0)
    if not ok.any():
        return empty
    total = np.bincount(idx[ok], weights=w[ok], minlength=bins)
    filled = total > 0
    out = {"step": (np.flatnonzero(filled) + 0.5) * width}
    for i, c in enumerate(columns):
        out[c] = np.bincount(idx[ok], weights=x[ok, i] * w[ok], minlength=bins)[filled] / total[filled]
    return pd.DataFrame(out)


def _any_value(run: RunData, columns: list[str], *, nonzero: bool = False) -> bool:
    """Whether some finished episode has a (non-zero) value in one of the metrics.csv ``columns``."""
    ep = _episodes(run)
    cols = [c for c in columns if c in ep.columns]
    if ep.empty or not cols:
        return False
    x = ep[cols].to_numpy(dtype=float)
    ok = np.isfinite(x) & (x != 0) if nonzero else np.isfinite(x)
    return bool(ok.any())


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------


def _title(run: RunData, status: str | None = None) -> str:
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


def _eval_means(run: RunData, column: str) -> pd.DataFrame:
    """Mean and std of eval.csv's ``column`` per evaluation step (training evaluations only)."""
    e = _training_evals(run)
    if e.empty or column not in e.columns:
        return pd.DataFrame({"mean": pd.Series(dtype=float), "std": pd.Series(dtype=float)})
    ok = np.isfinite(e["step"].to_numpy(dtype=float)) & np.isfinite(e[column].to_numpy(dtype=float))
    return e[ok].groupby("step")[column].agg(["mean", "std"])


def _draw_eval(ax, g: pd.DataFrame) -> None:
    ax.errorbar(
        g.index.to_numpy(dtype=float), g["mean"].to_numpy(), yerr=g["std"].fillna(0.0).to_numpy(),
        fmt="o", color="C3", ms=4, capsize=3, lw=1.2, label="eval: mean ± SD of its episodes",
    )


def _draw_returns(ax, run: RunData, bins: int) -> None:
    curve = learning_curve(run, bins=bins)
    if not curve.empty:
        flights = " (incl. π_p's flights)" if run.config.get("mode") in FLIGHT_MODES else ""
        ax.plot(curve["step"], curve["return_mean"], color="C0", lw=1.8,
                label=f"train: mean return per step bin ({bins} bins){flights}")
        if (curve["return_hi"] - curve["return_lo"]).gt(0).any():  # one-episode or constant bins have no band
            ax.fill_between(
                curve["step"], curve["return_lo"], curve["return_hi"], color="C0", alpha=0.25, lw=0,
                label="train: 95% CI of the bin mean (±1.96 SD/√n)",
            )
    g = _eval_means(run, "return")
    if not g.empty:
        _draw_eval(ax, g)
    reference = evals.pooled_mean(_reference_evals(run))
    if reference is not None:
        ax.axhline(reference, color="C1", ls="--", lw=1.4, label="π_p zero-shot (its evaluations, pooled)")
    if curve.empty and g.empty:
        ax.text(0.5, 0.5, "no finished episodes yet", transform=ax.transAxes, ha="center", va="center", color="0.4")
    pretrain = run.config.get("command") == "pretrain"  # the task's reward is logged, never learned from
    ax.set_ylabel("task return (raw score)\nlogged only, not learned" if pretrain else "episode return (raw score)",
                  fontsize=11 if not pretrain else 10)


def _draw_coverage(ax, run: RunData, bins: int) -> None:
    cov = _binned_means(run, ["coverage"], bins)
    ax.plot(cov["step"], cov["coverage"], color="C2", lw=1.5, label="train (binned mean)")
    g = _eval_means(run, "coverage")
    if not g.empty:
        _draw_eval(ax, g)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("coverage\n(cells or rooms / ep.)", fontsize=10)


def _draw_intrinsic(ax, run: RunData, bins: int) -> None:
    got = _binned_means(run, ["intrinsic_return"], bins)
    ax.plot(got["step"], got["intrinsic_return"], color="C4", lw=1.5, label="train: mean per step bin")
    ax.set_ylabel("intrinsic return\n(what it maximised)", fontsize=10)


def _draw_shares(ax, run: RunData, bins: int) -> None:
    shares = _binned_means(run, list(SHARE_COLUMNS.values()), bins, weight="length")
    names = {"learner": "learner", "pretrained": "π_p (pre-trained)", "random": "random"}
    colours = {"learner": "C0", "pretrained": "C1", "random": "0.7"}
    shown = [k for k, c in SHARE_COLUMNS.items() if k == "learner" or (shares[c].to_numpy() > 0).any()]
    ax.stackplot(  # only the behaviours that chose some step of this run
        shares["step"], *(shares[SHARE_COLUMNS[k]] for k in shown),
        labels=[names[k] for k in shown], colors=[colours[k] for k in shown], alpha=0.8,
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of steps", fontsize=10)
    # the stack fills the panel: a framed one-line legend keeps it readable
    ax.legend(fontsize=8, ncol=3, loc="lower right", frameon=True, framealpha=0.85)


def learning_figure(run: RunData, *, bins: int = 50):
    """The report figure (a matplotlib ``Figure`` on an Agg canvas; no global backend touched).

    Top panel: the training return curve (binned mean with 95% band) against env steps, with
    evaluation means +- std at each eval step. Below it, on the same step axis, only the panels
    that apply to the run: the binned intrinsic return (pre-training runs), the binned coverage
    per episode (with evaluation coverage; when the run logged it), and the binned shares of
    steps taken by the learner, π_p and random actions (episodes weighted by length; runs with
    flights or π_p hand-offs, not plain epsilon-greedy ones, whose random share is epsilon).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    status = "complete" if (run.summary is not None and run.summary.get("status", "complete") == "complete") else "unfinished"
    panels = [_draw_returns]
    if run.config.get("command") == "pretrain" and _any_value(run, ["intrinsic_return"]):
        panels.append(_draw_intrinsic)
    if _any_value(run, ["coverage"]):
        panels.append(_draw_coverage)
    flights = run.config.get("mode") in ("ez-greedy", "bt", "bt+ft")
    if (flights and _any_value(run, [SHARE_COLUMNS["pretrained"], SHARE_COLUMNS["random"]], nonzero=True)
            or _any_value(run, [SHARE_COLUMNS["pretrained"]], nonzero=True)):
        panels.append(_draw_shares)

    fig = Figure(figsize=(6.4, 4.0 + 1.8 * (len(panels) - 1)), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(
        len(panels), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [2.0] + [1.0] * (len(panels) - 1)}
    )[:, 0]
    for ax, draw in zip(axes, panels):
        draw(ax, run, bins)
        ax.tick_params(labelsize=9)
        ax.grid(True, alpha=0.3)

    top = axes[0]
    budget = _finite(run.config.get("steps"))
    if budget:
        right = max(budget, _finite(_episodes(run)["step"].max()) or 0.0)
        top.set_xlim(0, right * 1.02)
        if status == "unfinished":
            top.axvline(budget, color="0.5", ls="--", lw=1, label="step budget")
    top.set_title(_title(run, status), fontsize=12)
    axes[-1].xaxis.set_major_formatter(EngFormatter(sep=""))
    axes[-1].set_xlabel("environment steps", fontsize=11)
    for ax in axes:
        if ax.get_legend() is None and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9 if ax is top else 8, frameon=False, loc="best")
    return fig


def plot_learning_curve(run: RunData, out_path: str | os.PathLike, *, bins: int = 50, fmt: str = "png") -> Path:
    """Write :func:`learning_figure` to ``out_path`` (atomically) as ``fmt``: png (150 dpi), pdf or svg."""
    out_path = Path(out_path)
    fig = learning_figure(run, bins=bins)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    fig.savefig(tmp, format=fmt, dpi=150)
    os.replace(tmp, out_path)
    return out_path


def _fmt_num(v: Any, *, grouped: bool = True) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}" if grouped else str(v)
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.1f}"
        return f"{v:.4g}"
    return str(v)


def _fmt_shares(shares: dict) -> str:
    """``learner 0.52 / π_p 0.48 / random 0.00``."""
    labels = {"learner": "learner", "pretrained": "π_p", "random": "random"}
    parts = []
    for key, label in labels.items():
        v = shares.get(key)
        parts.append(f"{label} {'n/a' if v is None else format(v, '.2f')}")
    return " / ".join(parts)


def _fmt_pretrained(p: dict) -> str:
    """``<run> @ step 50,000 (count, sha 0123456789ab…)``."""
    text = f"{p.get('run') or 'n/a'} @ step {_fmt_num(p.get('step'))}"
    details = [str(p["objective"])] if p.get("objective") else []
    if p.get("sha256"):
        details.append(f"sha {p['sha256']}…")
    return text + (f" ({', '.join(details)})" if details else "")


def _exploration_rows(s: dict) -> list[tuple[str, str]]:
    """Rows for the figures only some runs have (pre-training, coverage, flights); absent ones are left out."""
    n = s.get("return_last_n")
    rows = []
    if s.get("intrinsic_last_mean") is not None:
        rows.append((f"intrinsic return, last {n} episodes", _fmt_num(s["intrinsic_last_mean"])))
    if s.get("coverage_last_mean") is not None or s.get("coverage_total") is not None:
        cov = _fmt_num(s.get("coverage_last_mean"))
        if s.get("coverage_total") is not None:
            cov += f"  ({_fmt_num(s['coverage_total'])} distinct over the run)"
        rows.append((f"coverage, last {n} episodes", cov))
    if s.get("behaviour_share"):
        rows.append(("behaviour share", _fmt_shares(s["behaviour_share"])))
    if s.get("flights") is not None:
        flights = _fmt_num(s["flights"])
        if s.get("flight_len_mean") is not None:
            flights += f" (mean len {_fmt_num(s['flight_len_mean'])}, max {_fmt_num(s.get('flight_len_max'))})"
        rows.append(("flights", flights))
    return rows


def _summary_rows(s: dict) -> list[tuple[str, str]]:
    """(label, value) pairs shared by the terminal table and the markdown report."""
    steps = _fmt_num(s.get("steps_done"))
    if s.get("steps_budget"):
        steps += f" / {_fmt_num(s.get('steps_budget'))}"
        if s.get("steps_done") is not None:
            steps += f" ({100.0 * s['steps_done'] / s['steps_budget']:.0f}%)"
    last = _fmt_num(s.get("return_last_mean"))
    if s.get("return_last_ci95"):
        lo, hi = s["return_last_ci95"]
        last += f"  [95% CI {_fmt_num(lo)}, {_fmt_num(hi)}]"
    ev = "n/a"
    if s.get("eval_return_mean") is not None:
        ev = _fmt_num(s["eval_return_mean"])
        if s.get("eval_return_std") is not None:
            ev += f" ± {_fmt_num(s['eval_return_std'])}"
        ev += f"  ({s.get('eval_episodes')} ep. at step {_fmt_num(s.get('eval_step'))})"
        if s.get("eval_source") not in (None, "training"):
            ev += f"  [{s['eval_source']}]"
    auc = _fmt_num(s.get("auc"))
    if s.get("auc") is not None:
        auc += f"  ({s.get('auc_bins')}/{AUC_BINS} bins)"
    flights = " (incl. π_p's flights)" if s.get("training_includes_pretrained") else ""
    learner = []
    if s.get("evaluations"):
        learner += [("eval AUC (learner's evaluations)", f"{_fmt_num(s.get('eval_auc'))}  ({s['evaluations']} evaluations)"),
                    (f"eval, mean of the last {s.get('eval_last_k')} evaluations", _fmt_num(s.get("eval_last_mean")))]
    if s.get("pretrained_eval_mean") is not None:
        learner.append(("π_p zero-shot (same protocol)",
                        f"{_fmt_num(s['pretrained_eval_mean'])}  ({s.get('pretrained_eval_episodes')} episodes)"))
    wall = s.get("wall_time_s")
    wall_s = "n/a" if wall is None else f"{wall:,.0f} s ({wall / 3600:.2f} h)"
    cmd = " / ".join(str(x) for x in (s.get("command"), s.get("mode")) if x is not None) or "n/a"
    pretrained = [("pre-trained run", _fmt_pretrained(s["pretrained"]))] if s.get("pretrained") else []
    return [
        ("env", str(s.get("env_id") if s.get("env_id") is not None else "n/a")),
        ("command / mode", cmd),
        *pretrained,
        ("seed", _fmt_num(s.get("seed"), grouped=False)),
        ("status", str(s.get("status"))),
        ("env steps", steps),
        ("training episodes", _fmt_num(s.get("episodes"))),
        (f"return, last {s.get('return_last_n')} episodes{flights}", last),
        (f"best rolling mean ({s.get('return_last_n')} ep.){flights}", _fmt_num(s.get("return_best_mean"))),
        (f"AUC (mean binned return){flights}", auc),
        ("eval return (last eval)", ev),
        *learner,
        *_exploration_rows(s),
        ("mean env steps/s", _fmt_num(s.get("mean_sps"))),
        ("wall time", wall_s),
    ]


def render_summary_table(summary: dict):
    """A ``rich.table.Table`` of the summary figures for the terminal."""
    from rich.table import Table

    status = summary.get("status")
    table = Table(title=f"run {summary.get('path')}", show_header=True, header_style="bold")
    table.add_column("metric", style="cyan", no_wrap=True)
    table.add_column("value")
    for label, value in _summary_rows(summary):
        if label == "status":
            value = f"[green]{value}[/green]" if status == "complete" else f"[yellow]{value}[/yellow]"
        table.add_row(label, value)
    notes = summary.get("notes") or []
    if notes:
        table.caption = "; ".join(notes)
    return table


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            items.extend(_flatten(v, key + "."))
        else:
            items.append((key, v))
    return items


def _md_cell(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        v = ", ".join(str(x) for x in v)
    text = "n/a" if v is None else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def write_markdown(
    run: RunData, summary: dict, out_path: str | os.PathLike, *, plot_path: str | os.PathLike | None = None
) -> Path:
    """Write a short markdown report: summary table, the learning-curve PNG (embedded by a
    path relative to the markdown file), caveats and the config's hyperparameters.

    ``plot_path`` defaults to ``summary['files']['plot']`` if set, else ``<run>/report.png``
    when that file exists (no image link is written otherwise)."""
    out_path = Path(out_path)
    if plot_path is None:
        plot_path = (summary.get("files") or {}).get("plot")
        if plot_path is None and (run.path / PLOT_FILE).is_file():
            plot_path = run.path / PLOT_FILE

    lines = [f"# Run report: {_title(run)}", ""]
    status = summary.get("status")
    if status != "complete":
        lines += ["> **Unfinished run** (no complete `summary.json`): figures cover only the data logged so far.", ""]
    lines += [f"Run directory: `{run.path}`", "", "| metric | value |", "|---|---|"]
    lines += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in _summary_rows(summary)]
    lines.append("")
    if plot_path is not None:
        rel = os.path.relpath(Path(plot_path).resolve(), out_path.parent.resolve())
        lines += [f"![learning curve]({Path(rel).as_posix()})", ""]
    notes = summary.get("notes") or []
    if notes:
        lines += ["## Caveats", ""] + [f"- {n}" for n in notes] + [""]
    definitions = (
        "Definitions: *last* = mean raw return of the last episodes (percentile bootstrap 95% CI, "
        f"{BOOTSTRAP_RESAMPLES} resamples); *AUC* = mean over the non-empty of {AUC_BINS} equal "
        "step bins of [0, budget] of the per-bin mean training return; eval figures come from "
        "the last evaluation step."
    )
    if summary.get("coverage_last_mean") is not None or summary.get("coverage_total") is not None:
        definitions += " *Coverage* = distinct grid cells (or rooms) visited per episode."
    if summary.get("behaviour_share"):
        definitions += (" *Behaviour share* = share of the run's steps chosen by the learner, by the "
                        "pre-trained policy π_p (flights) and at random (epsilon steps, random flights).")
    lines += [definitions, ""]

    cfg = run.config
    skip = (*_RECORD_SECTIONS, "env", "agent")
    hyper = [(k, v) for k, v in cfg.items() if k not in skip and not isinstance(v, dict)]
    for section in ("env", "agent"):
        if isinstance(cfg.get(section), dict):
            hyper += _flatten(cfg[section], section + ".")
    for k, v in cfg.items():
        if k not in skip and isinstance(v, dict):
            hyper += _flatten(v, k + ".")
    if hyper:
        lines += ["## Configuration", "", "| key | value |", "|---|---|"]
        lines += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in hyper]
        lines.append("")
    records = [kv for sec in _RECORD_SECTIONS if isinstance(cfg.get(sec), dict) for kv in _flatten(cfg[sec])]
    if records:
        lines += ["## Provenance", ""]
        for k, v in records:
            if k == "argv" and isinstance(v, (list, tuple)):
                lines.append(f"- argv: `{' '.join(str(x) for x in v)}`")
            else:
                lines.append(f"- {k}: {_md_cell(v)}")
        lines.append("")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, out_path)
    return out_path


def report_run(path: str | os.PathLike, *, write_files: bool = True, window: int = 100, fmt: str = "png") -> dict:
    """Load, summarise and (when ``write_files``) write ``report.<fmt>`` (png, pdf or svg) and
    ``report.md`` into the run directory. Returns the summary dict with ``files``: ``{'plot': ...,
    'markdown': ...}`` (paths as strings; empty when nothing was written)."""
    run = load_run(path)
    summary = summarize_run(run, window=window)
    summary["files"] = {}
    if write_files:
        try:
            png = plot_learning_curve(run, run.path / Path(PLOT_FILE).with_suffix(f".{fmt}"), fmt=fmt)
            summary["files"]["plot"] = str(png)
            md = write_markdown(run, summary, run.path / MARKDOWN_FILE, plot_path=png)
            summary["files"]["markdown"] = str(md)
        except OSError as e:
            raise RunDirError(_one_line(f"cannot write the report files into '{run.path}' ({e.strerror or e}); "
                                        "pass --no-files to print the summary only")) from None
    return summary


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    """``root`` itself when it is a run directory, else every run directory below it, sorted."""
    root = Path(root)
    if (root / "config.yaml").is_file():
        return [root]
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise RunDirError(_one_line(f"'{root}' {what}; pass a run directory or a folder of runs"))
    return sorted(p.parent for p in root.rglob("config.yaml") if "checkpoints" not in p.parts)


def render_runs_table(summaries: list[dict]):
    """One row per run: the headline figures of several runs side by side. The ``coverage``
    (last-window mean) and ``π_p share`` columns appear only when some run has a coverage
    figure or a non-zero share of steps chosen by the pre-trained policy."""
    from rich.table import Table

    rows = [{**s, "pretrained_share": (s.get("behaviour_share") or {}).get("pretrained")} for s in summaries]
    table = Table(title=f"{len(summaries)} runs", header_style="bold")
    columns = [("run", "path"), ("env", "env_id"), ("mode", "mode"), ("seed", "seed"), ("status", "status"),
               ("steps", "steps_done"), ("return (last)", "return_last_mean"), ("eval return", "eval_return_mean"),
               ("AUC", "auc")]
    if any(r.get("coverage_last_mean") is not None for r in rows):
        columns.append(("coverage", "coverage_last_mean"))
    if any(r["pretrained_share"] for r in rows):
        columns.append(("π_p share", "pretrained_share"))
    for label, _ in columns:
        table.add_column(label, no_wrap=label == "run")
    for r in rows:
        table.add_row(*(_fmt_num(r.get(key)) if key not in ("path", "env_id", "mode", "status") else str(r.get(key))
                        for _, key in columns))
    return table
