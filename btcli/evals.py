"""Evaluation-based scores of a run, from its eval.csv: the learner's own greedy policy and the
frozen pre-trained policy π_p evaluated beside it (the zero-shot reference).

Which rows count: those the training loop wrote (empty ``checkpoint``; ``btcli evaluate``
appends rows that may use another epsilon or episode count), on the run's own task (empty
``env_id`` or the run's env id; ``btcli evaluate --env`` can evaluate on another task), of one
policy (``policy``: ``learner`` or ``pretrained``; files from before the column count as
``learner``).

Scores, over the evaluation curve ``(s_i, m_i)``: the mean return m_i of the evaluation at
step s_i, steps ascending, ``s_0 = 0``:

* ``eval_auc = Σ_i m_i (s_i - s_{i-1}) / s_last``: the area under the step curve of the
  evaluations, normalised to a mean return (each evaluation stands for the steps since the one
  before; with evaluations every E steps it is the plain mean of the m_i);
* ``eval_last(k) = mean of the last k m_i`` (all of them when there are fewer than k).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LEARNER, PRETRAINED = "learner", "pretrained"


def _blank(column: pd.Series) -> pd.Series:
    return column.isna() | (column.astype(str).str.strip() == "")


def training_rows(evals: pd.DataFrame, env_id: str | None, policy: str = LEARNER, *,
                  loop_only: bool = True) -> pd.DataFrame:
    """The rows the training loop wrote (all rows, ``loop_only=False``) for ``policy`` on the run's
    own task ``env_id``."""
    if evals.empty:
        return evals
    keep = np.ones(len(evals), dtype=bool)
    if loop_only and "checkpoint" in evals.columns:
        keep &= _blank(evals["checkpoint"]).to_numpy()
    if "policy" in evals.columns:
        who = evals["policy"].where(~_blank(evals["policy"]), LEARNER).astype(str)
        keep &= (who == policy).to_numpy()
    elif policy != LEARNER:
        return evals.iloc[0:0]
    if "env_id" in evals.columns and env_id is not None:
        env = evals["env_id"]
        keep &= (_blank(env) | (env.astype(str) == env_id)).to_numpy()
    ok = np.isfinite(pd.to_numeric(evals["step"], errors="coerce").to_numpy(dtype=float)) & \
        np.isfinite(pd.to_numeric(evals["return"], errors="coerce").to_numpy(dtype=float))
    return evals[keep & ok]


def curve(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluation step: ``step``, ``mean``, ``std`` (sample std; NaN for one episode),
    ``episodes``; ascending steps."""
    if rows.empty:
        return pd.DataFrame({"step": pd.Series(dtype=float), "mean": pd.Series(dtype=float),
                             "std": pd.Series(dtype=float), "episodes": pd.Series(dtype=int)})
    g = rows.assign(step=rows["step"].astype(float), ret=rows["return"].astype(float)).groupby("step")["ret"]
    out = g.agg(["mean", "std", "count"]).rename(columns={"count": "episodes"}).reset_index()
    return out.sort_values("step", kind="stable").reset_index(drop=True)


def eval_auc(c: pd.DataFrame) -> float | None:
    """``Σ_i m_i (s_i - s_{i-1}) / s_last`` with ``s_0 = 0`` (see the module doc); None without evaluations."""
    if c.empty:
        return None
    steps = c["step"].to_numpy(dtype=float)
    means = c["mean"].to_numpy(dtype=float)
    if steps[-1] <= 0:  # evaluated only at step 0: the curve is one point
        return float(means[-1])
    widths = np.diff(np.concatenate(([0.0], np.maximum(steps, 0.0))))
    return float(means @ widths / steps[-1])


def eval_last(c: pd.DataFrame, k: int) -> float | None:
    """Mean of the last ``k`` evaluation means; None without evaluations."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if c.empty:
        return None
    return float(c["mean"].to_numpy(dtype=float)[-k:].mean())


def pooled_mean(rows: pd.DataFrame) -> float | None:
    """Mean return over every evaluation episode in ``rows`` (for a frozen policy every evaluation
    estimates the same number, so they are pooled); None when empty."""
    if rows.empty:
        return None
    return float(rows["return"].astype(float).mean())
