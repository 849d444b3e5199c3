"""Single-run analysis (``btcli report``): load a run directory, summarise it, plot it, write a report.

The pieces live by concern: :mod:`btcli.run_logs` reads the run directory, :mod:`btcli.run_summary`
computes its headline figures, :mod:`btcli.run_figure` draws them and :mod:`btcli.run_render`
puts them into tables and markdown. This module puts them together (:func:`report_run`) and is
the one to import from.
"""

from __future__ import annotations

import os
from pathlib import Path

from btcli.run_figure import PLOT_FILE, learning_curve, learning_figure, plot_learning_curve
from btcli.run_logs import RunData, find_run_dirs, load_run, one_line
from btcli.run_render import MARKDOWN_FILE, render_runs_table, render_summary_table, write_markdown
from btcli.run_summary import (
    AUC_BINS,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    EVAL_LAST,
    SHARE_COLUMNS,
    bootstrap_ci,
    summarize_run,
)
from btcli.runs import EVAL_COLUMNS, METRICS_COLUMNS, TRAIN_COLUMNS, RunDirError

__all__ = [
    "AUC_BINS",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "EVAL_COLUMNS",
    "EVAL_LAST",
    "MARKDOWN_FILE",
    "METRICS_COLUMNS",
    "PLOT_FILE",
    "SHARE_COLUMNS",
    "TRAIN_COLUMNS",
    "RunData",
    "RunDirError",
    "bootstrap_ci",
    "find_run_dirs",
    "learning_curve",
    "learning_figure",
    "load_run",
    "plot_learning_curve",
    "render_runs_table",
    "render_summary_table",
    "report_run",
    "summarize_run",
    "write_markdown",
]


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
            raise RunDirError(one_line(f"cannot write the report files into '{run.path}' ({e.strerror or e}); "
                                       "pass --no-files to print the summary only")) from None
    return summary

