"""The run report's figure: the learning curve and, on the same step axis, the panels that apply.

Curves are binned with :func:`btcli.stats.step_bins` over ``[0, last episode step]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from btcli import evals, stats
from btcli.modes import FLIGHT_MODES, MODES, NO_FLIGHTS, flight_source
from btcli.run_logs import RunData, episodes, reference_evals, run_title, training_evals
from btcli.run_summary import SHARE_COLUMNS, finite

PLOT_FILE = "report.png"


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
    ep = episodes(run)
    if ep.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    rets = ep["return"].to_numpy(dtype=float)
    steps = ep["step"].to_numpy(dtype=float)
    upper = max(float(steps.max()), 0.0)
    idx, width = stats.step_bins(steps, upper, bins), upper / bins
    g = pd.DataFrame({"bin": idx, "r": rets}).groupby("bin")["r"]
    agg = g.agg(["mean", "std", "count"])
    half = 1.96 * agg["std"] / np.sqrt(agg["count"])
    return pd.DataFrame(
        {
            "step": (agg.index.to_numpy(dtype=float) + 0.5) * width,
            "return_mean": agg["mean"].to_numpy(),
            "return_lo": (agg["mean"] - half).to_numpy(),
            "return_hi": (agg["mean"] + half).to_numpy(),
            "n": agg["count"].to_numpy(dtype=int),
        }
    ).reset_index(drop=True)


def binned_means(run: RunData, columns: list[str], bins: int, weight: str | None = None) -> pd.DataFrame:
    """Per-bin means of metrics.csv ``columns`` (weighted by ``weight`` if given) in the bins of
    :func:`learning_curve`, over the episodes where all of them are filled. Columns: ``step``
    (bin centre) and ``columns``; empty bins are dropped."""
    ep = episodes(run)
    empty = pd.DataFrame({c: pd.Series(dtype=float) for c in ["step", *columns]})
    if ep.empty or not set(columns) <= set(ep.columns):
        return empty
    steps = ep["step"].to_numpy(dtype=float)
    upper = max(float(steps.max()), 0.0)
    x = ep[columns].to_numpy(dtype=float)
    w = ep[weight].to_numpy(dtype=float) if weight else np.ones(len(ep))
    ok = np.isfinite(x).all(axis=1) & np.isfinite(w) & (w > 0)
    if not ok.any():
        return empty
    binned = [stats.binned_mean(steps[ok], x[ok, i], upper, bins, w[ok]) for i in range(len(columns))]
    filled = binned[0][1] > 0
    out = {"step": (np.flatnonzero(filled) + 0.5) * (upper / bins)}
    for c, (means, _) in zip(columns, binned):
        out[c] = means[filled]
    return pd.DataFrame(out)


def _any_value(run: RunData, columns: list[str], *, nonzero: bool = False) -> bool:
    """Whether some finished episode has a (non-zero) value in one of the metrics.csv ``columns``."""
    ep = episodes(run)
    cols = [c for c in columns if c in ep.columns]
    if ep.empty or not cols:
        return False
    x = ep[cols].to_numpy(dtype=float)
    ok = np.isfinite(x) & (x != 0) if nonzero else np.isfinite(x)
    return bool(ok.any())


def _eval_means(run: RunData, column: str) -> pd.DataFrame:
    """Mean and std of eval.csv's ``column`` per evaluation step (training evaluations only)."""
    e = training_evals(run)
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
    reference = evals.pooled_mean(reference_evals(run))
    if reference is not None:
        ax.axhline(reference, color="C1", ls="--", lw=1.4, label="π_p zero-shot (its evaluations, pooled)")
    if curve.empty and g.empty:
        ax.text(0.5, 0.5, "no finished episodes yet", transform=ax.transAxes, ha="center", va="center", color="0.4")
    pretrain = run.config.get("command") == "pretrain"  # the task's reward is logged, never learned from
    ax.set_ylabel("task return (raw score)\nlogged only, not learned" if pretrain else "episode return (raw score)",
                  fontsize=11 if not pretrain else 10)


def _draw_coverage(ax, run: RunData, bins: int) -> None:
    cov = binned_means(run, ["coverage"], bins)
    ax.plot(cov["step"], cov["coverage"], color="C2", lw=1.5, label="train (binned mean)")
    g = _eval_means(run, "coverage")
    if not g.empty:
        _draw_eval(ax, g)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("coverage\n(cells or rooms / ep.)", fontsize=10)


def _draw_intrinsic(ax, run: RunData, bins: int) -> None:
    got = binned_means(run, ["intrinsic_return"], bins)
    ax.plot(got["step"], got["intrinsic_return"], color="C4", lw=1.5, label="train: mean per step bin")
    ax.set_ylabel("intrinsic return\n(what it maximised)", fontsize=10)


def _draw_shares(ax, run: RunData, bins: int) -> None:
    shares = binned_means(run, list(SHARE_COLUMNS.values()), bins, weight="length")
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


def _has_flights(cfg: dict) -> bool:
    """Whether the run's mode (or its ``transfer.flights``) gives flights of any kind."""
    mode = cfg.get("mode")
    if mode not in MODES:
        return False
    transfer = cfg.get("transfer") if isinstance(cfg.get("transfer"), dict) else {}
    return flight_source(mode, str(transfer.get("flights", "auto"))) != NO_FLIGHTS


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
    flights = _has_flights(run.config)
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
    budget = finite(run.config.get("steps"))
    if budget:
        right = max(budget, finite(episodes(run)["step"].max()) or 0.0)
        top.set_xlim(0, right * 1.02)
        if status == "unfinished":
            top.axvline(budget, color="0.5", ls="--", lw=1, label="step budget")
    top.set_title(run_title(run, status), fontsize=12)
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

