"""The `compare` and `sweep` commands (registered on the main Typer app by :func:`register`)."""

from __future__ import annotations

import contextlib
import json
import shlex
from enum import Enum
from pathlib import Path

import typer

from btcli.errors import BtcliError, Interrupted


class Metric(str, Enum):
    """The score `compare` gives each run (btcli.compare.METRICS)."""

    eval_last = "eval-last"
    eval_auc = "eval-auc"
    eval = "eval"
    final = "final"
    auc = "auc"


def default_compare_out(paths: list[Path], by: str, metric: str) -> Path:
    """``compare-<by>-<metric>`` in the deepest folder holding every compared run (beside the runs,
    not in the current directory); relative to the current directory when below it."""
    import os
    import re

    absolute = [p.absolute() for p in paths]
    common = Path(os.path.commonpath([str(p) for p in absolute])) if absolute else Path.cwd()
    if common in absolute:  # one run, or runs nested in one another: beside it
        common = common.parent
    name = "compare-" + re.sub(r"[^A-Za-z0-9._+=-]", "_", f"{by}-{metric}")
    with contextlib.suppress(ValueError):
        return (common / name).relative_to(Path.cwd())
    return common / name


def compare(
    runs: list[str] = typer.Argument(..., metavar="RUN_OR_GLOB...",
                                     help="run directories, folders of runs, or quoted globs such as 'runs/*'"),
    by: str = typer.Option("mode", help="config key whose value makes the groups: mode, intrinsic.objective, agent.lr, ..."),
    metric: Metric = typer.Option(Metric.eval_last, help="learner-only (greedy evaluations, no flights): eval-last "
                                  "(mean of the last --last-evals evaluations) | eval-auc (area under the evaluation "
                                  "curve) | eval (last evaluation); from training episodes (incl. π_p's flights in "
                                  "bt, bt+ft): final (last 100 episodes) | auc"),
    last_evals: int = typer.Option(3, "--last-evals", help="evaluations averaged by --metric eval-last"),
    reference: bool = typer.Option(True, "--reference/--no-reference",
                                   help="add the π_p zero-shot group from the runs' evaluations of their frozen π_p"),
    out_dir: Path | None = typer.Option(None, "--out", help="folder for the CSV, markdown and PNG files (default: "
                                        "compare-<by>-<metric> in the folder holding the runs)"),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON on stdout"),
    allow_mixed: bool = typer.Option(False, "--allow-mixed", help="allow different step budgets within a task"),
    allow_unfinished: bool = typer.Option(False, "--allow-unfinished", help="include runs without summary.json"),
    reps: int = typer.Option(2000, help="bootstrap resamples of every confidence interval"),
) -> None:
    """Compare groups of runs across tasks: IQM, median, mean, optimality gap, P(improvement), profiles."""
    from btcli.console import err, fail, out

    try:
        from btcli.compare import REFERENCE, compare_runs, headline, render_tables, to_json, write_outputs

        result = compare_runs(runs, by=by, metric=metric.value, allow_unfinished=allow_unfinished,
                              allow_mixed=allow_mixed, reps=reps, eval_last=last_evals, reference=reference)
        if out_dir is None:
            out_dir = default_compare_out([s.path for s in result.scores if s.group != REFERENCE], by, metric.value)
        try:
            files = write_outputs(result, out_dir)
        except OSError as e:
            raise BtcliError(f"cannot write the comparison into '{out_dir}': {e.strerror or e}") from None
        if json_out:
            err.print(headline(result))
            err.print(f"wrote {', '.join(p.name for p in files.values())} in {out_dir}", soft_wrap=True, markup=False)
            print(json.dumps(to_json(result, files), indent=2, allow_nan=False))
            return
        out.print(headline(result))
        for table in render_tables(result):
            out.print(table)
        for note in result.notes:
            out.print(f"note: {note}")
        out.print(f"wrote {', '.join(p.name for p in files.values())} in {out_dir}")
    except BtcliError as e:
        fail(e)


class Backend(str, Enum):
    """Where a sweep's runs execute."""

    local = "local"
    ray = "ray"
    slurm = "slurm"


def sweep(
    ctx: typer.Context,
    grid: Path = typer.Argument(..., metavar="GRID.yaml", help="sweep file: out root and stages of grids"),
    backend: Backend = typer.Option(Backend.local, help="local (subprocesses on this machine) | ray (one Ray task "
                                    "per run) | slurm (one Slurm job per run, through submitit)"),
    jobs: int | None = typer.Option(None, help="runs at once (local default: one per 2 CPU cores; ray, slurm: no limit)"),
    address: str | None = typer.Option(None, help="Ray cluster address (default: start a local Ray instance)"),
    partition: str | None = typer.Option(None, help="slurm: partition (or slurm.partition in the sweep file)"),
    time_min: int | None = typer.Option(None, "--time", help="slurm: minutes per job (default 240; a longer run is "
                                        "requeued and resumed)"),
    cpus: int | None = typer.Option(None, help="slurm: CPUs per run, also its torch threads (default 2)"),
    mem: float | None = typer.Option(None, help="slurm: GB of memory per run (default: the partition's)"),
    out_root: Path | None = typer.Option(None, "--out", help="root folder of the runs (overrides the file's 'out')"),
    only: list[str] = typer.Option([], "--only", metavar="KEY=VALUE", help="run only the runs whose grid has this "
                                   "value (repeat: one key ORs, keys AND), and the runs they read (e.g. pre-training)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the commands and what would run; run nothing"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no line per finished run"),
) -> None:
    """Expand a grid of runs (stages in order) and run what is missing; rerun it to finish a killed sweep."""
    from btcli.console import err, fail, out

    try:
        from btcli.sweep import expand, load_sweep, select
        from btcli.sweep_exec import plan, run_sweep

        backend = backend.value
        if jobs is not None and jobs < 1:
            raise BtcliError(f"--jobs must be at least 1, got {jobs}")
        spec = load_sweep(grid, out=out_root)
        slurm = None
        if backend == "slurm":
            from btcli.sweep_slurm import check_slurm, slurm_options

            slurm = slurm_options(spec.slurm, partition=partition, time=time_min, cpus=cpus, mem=mem)
            if not dry_run:
                check_slurm(slurm)
        elif any(v is not None for v in (partition, time_min, cpus, mem)):
            raise BtcliError("--partition, --time, --cpus and --mem apply to --backend slurm only")
        job_list = expand(spec, command_options(ctx.find_root().command))
        if only:
            job_list = select(job_list, only)
        stages = list(dict.fromkeys(j.stage for j in job_list))
        if dry_run:
            if slurm is not None:
                out.print(f"# {slurm.describe()}", soft_wrap=True, markup=False)
            for job, action, task in plan(job_list, backend=backend, jobs=jobs, slurm=slurm):
                line = f"# {job.stage}/{job.name}: {action}"
                out.print(line if task is None else f"{line}\n{shlex.join(task.argv)}", soft_wrap=True, markup=False)
            out.print(f"{len(job_list)} runs in {len(stages)} stage(s); nothing was run (--dry-run)")
            return
        err.print(f"sweep: {len(job_list)} runs in {len(stages)} stage(s) under {spec.out}, backend {backend}"
                  + (f" ({slurm.describe()})" if slurm is not None else ""), markup=False)
        counter = iter(range(1, len(job_list) + 1))

        def report(o) -> None:
            if not quiet:
                took = f" in {o.seconds:.1f} s" if o.seconds is not None else ""
                extra = f" ({o.note})" if o.note and o.status != "skipped" else ""
                resumed = " (resumed)" if o.resumed and o.status == "done" else ""
                err.print(f"[{next(counter)}/{len(job_list)}] {o.status}{resumed} {o.job.name}{took}{extra}",
                          markup=False)

        outcomes, interrupted = run_sweep(job_list, backend=backend, jobs=jobs, address=address, report=report,
                                          slurm=slurm)
        out.print(_table(outcomes))
        _finish(outcomes, interrupted)
    except BtcliError as e:
        fail(e)


def command_options(app) -> dict[str, dict]:
    """The training commands of a btcli CLI (a Typer ``app``, or the Click group of a running one:
    those with --out and --resume) and their options, as :func:`btcli.sweep.expand` needs them."""
    import typer.main

    from btcli.sweep import OptionSpec

    group = typer.main.get_command(app) if isinstance(app, typer.Typer) else app
    found: dict[str, dict[str, OptionSpec]] = {}
    for name, command in group.commands.items():
        opts: dict[str, OptionSpec] = {}
        for param in command.params:
            if getattr(param, "param_type_name", "") != "option":
                continue
            long = [o for o in param.opts if o.startswith("--")]
            if not long:
                continue
            off = next((o for o in getattr(param, "secondary_opts", []) if o.startswith("--")), None)
            spec = OptionSpec(long[0], bool(getattr(param, "is_flag", False)), off)
            for alias in (param.name, long[0][2:]):
                opts[alias.replace("-", "_")] = spec
        if "out" in opts and "resume" in opts:
            found[name] = opts
    return found


def _table(outcomes):
    from rich.table import Table

    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    title = f"{len(outcomes)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    table = Table(title=title, header_style="bold")
    for col in ("stage", "run", "status", "seconds", "log / note"):
        table.add_column(col, no_wrap=col == "run")
    for o in outcomes:
        status = o.status + (" (resumed)" if o.resumed and o.status == "done" else "")
        colour = {"done": "green", "skipped": "dim", "failed": "red", "blocked": "yellow"}.get(o.status, "yellow")
        where = str(o.job.log) if o.seconds is not None else o.note  # a log exists once a run has started
        if o.status == "failed":
            where = f"{o.note}; {o.job.log}"
        table.add_row(o.job.stage, o.job.name, f"[{colour}]{status}[/{colour}]",
                      "" if o.seconds is None else f"{o.seconds:.1f}", where)
    return table


def _finish(outcomes, interrupted: bool) -> None:
    """Exit status of a sweep: failures and interruptions are one line and a non-zero code."""
    failed = [o for o in outcomes if o.status == "failed"]
    blocked = [o for o in outcomes if o.status == "blocked"]
    if failed:
        shown = ", ".join(f"{o.job.name} ({o.note}; log {o.job.log})" for o in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        also = f"; {len(blocked)} run(s) that need them were not started" if blocked else ""
        raise BtcliError(f"{len(failed)} of {len(outcomes)} runs failed: {shown}{more}{also}; fix the cause and run "
                         "the sweep again (finished runs are skipped)")
    if interrupted:
        stopped = [o for o in outcomes if o.status == "interrupted"]
        raise Interrupted(f"sweep interrupted: {len(stopped)} run(s) not finished (started ones saved a "
                          "checkpoint); run the same command again to finish only those")
    if blocked:
        raise BtcliError(f"{len(blocked)} run(s) were not started because a run they need is unfinished: "
                         f"{blocked[0].job.name} ({blocked[0].note})")


def register(app: typer.Typer) -> None:
    """Add `compare` and `sweep` to the btcli app."""
    app.command()(compare)
    app.command()(sweep)
