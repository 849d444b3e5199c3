"""The run report's words: the terminal tables (rich) and the markdown report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from btcli.run_figure import PLOT_FILE
from btcli.run_logs import RunData, run_title
from btcli.run_summary import AUC_BINS, BOOTSTRAP_RESAMPLES

MARKDOWN_FILE = "report.md"
# config.yaml sections that record facts rather than settings (btcli.config.RECORD_KEYS)
_RECORD_SECTIONS = ("meta", "provenance")


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

    lines = [f"# Run report: {run_title(run)}", ""]
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
