"""`btcli compare`'s outputs: JSON, terminal tables, CSV files, figures and compare.md."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from btcli.compare_results import _SCALE_WORDS, AGGREGATE_TITLES, AGGREGATES, REFERENCE, Comparison, Interval


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
