"""A sweep's jobs as command lines, and what happened to each (shared by every backend).

A job becomes ``python -m btcli <command> ... --out RUN --quiet`` (``--resume`` when its run
directory already holds config.yaml); its output is appended to ``<out>/logs/<name>.log``.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from btcli.signals import PARENT_PID_ENV
from btcli.sweep import Job

# statuses of a job after the sweep
DONE, SKIPPED, FAILED, BLOCKED, INTERRUPTED, PLANNED = "done", "skipped", "failed", "blocked", "interrupted", "planned"


@dataclass
class Task:
    """A job ready to run: the exact command line and whether it resumes."""

    job: Job
    argv: list[str]
    resume: bool


@dataclass
class Outcome:
    """What happened to one job."""

    job: Job
    status: str
    resumed: bool = False
    seconds: float | None = None
    returncode: int | None = None
    note: str = ""


def _saved_threads(run_dir: Path) -> int | None:
    """The ``threads`` a run was started with: a resume must pass the same value."""
    try:
        value = yaml.safe_load((run_dir / "config.yaml").read_text()).get("threads")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _clear_empty(run_dir: Path) -> None:
    """Remove a run directory holding nothing but empty folders (a start killed before config.yaml)."""
    if not run_dir.is_dir() or (run_dir / "config.yaml").exists():
        return
    if any(p.is_file() or p.is_symlink() for p in run_dir.rglob("*")):
        return
    for d in sorted((p for p in run_dir.rglob("*")), key=lambda p: len(p.parts), reverse=True):
        d.rmdir()
    run_dir.rmdir()


def make_task(job: Job, threads: int) -> Task:
    """The command line of a job given the state of its directory (start or ``--resume``)."""
    resume = (job.run_dir / "config.yaml").exists()
    argv = [sys.executable, "-m", "btcli", job.command, *job.args]
    if not job.sets_threads:
        argv += ["--set", f"threads={(_saved_threads(job.run_dir) or threads) if resume else threads}"]
    argv += ["--out", str(job.run_dir), "--quiet"] + (["--resume"] if resume else [])
    return Task(job, argv, resume)


def is_complete(job: Job) -> bool:
    return (job.run_dir / "summary.json").exists()


def _open_log(task: Task):
    task.job.log.parent.mkdir(parents=True, exist_ok=True)
    log = open(task.job.log, "a", encoding="utf-8")
    stamp = dt.datetime.now().isoformat(timespec="seconds")
    log.write(f"# {stamp} {shlex.join(task.argv)}\n")
    log.flush()
    return log


def _child_env() -> dict[str, str]:
    # The children import btcli the way this process did (an uninstalled checkout included).
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *(p for p in paths if p != root)])
    env[PARENT_PID_ENV] = str(os.getpid())  # the run stops (checkpointed) if the sweep is killed
    return env


def _finished(task: Task, rc: int, seconds: float, stopping: bool) -> Outcome:
    if rc == 0 and is_complete(task.job):
        return Outcome(task.job, DONE, task.resume, seconds, rc)
    if stopping and rc in (130, -signal.SIGINT, -signal.SIGTERM):
        return Outcome(task.job, INTERRUPTED, task.resume, seconds, rc, "stopped; resumed by the next sweep")
    note = f"exit code {rc}" if rc != 0 else "exited 0 without writing summary.json"
    return Outcome(task.job, FAILED, task.resume, seconds, rc, note)
