"""Running a sweep's jobs: local subprocesses, Ray tasks or Slurm jobs, idempotently.

Each job is ``python -m btcli <command> ... --out RUN --quiet`` with its output appended to
``<out>/logs/<name>.log``. Before a stage starts, every job is classified from its directory:
``summary.json`` present means complete (skipped), ``config.yaml`` present means unfinished
(started again with ``--resume``), anything else is started afresh. So a sweep that was killed
and started again only runs what is missing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from btcli.signals import recorded_signals
from btcli.sweep import Job, SweepError
from btcli.sweep_tasks import (
    BLOCKED,
    INTERRUPTED,
    SKIPPED,
    Outcome,
    Task,
    _child_env,
    _clear_empty,
    _finished,
    _open_log,
    is_complete,
    make_task,
)

BACKENDS = ("local", "ray", "slurm")  # slurm: btcli/sweep_slurm.py
POLL_S = 0.2

def default_jobs() -> int:
    """Parallel local jobs: one per two CPU cores (at least one)."""
    return max(1, _cpus() // 2)



def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)



def threads_per_job(backend: str, jobs: int, slurm=None) -> int:
    """Torch threads each job gets: the cores shared out between local jobs; 1 per Ray task; a
    Slurm job's CPUs (``slurm.cpus``)."""
    if backend == "slurm":
        return slurm.cpus if slurm is not None else 1
    return max(1, _cpus() // max(1, jobs)) if backend == "local" else 1



# ----------------------------------------------------------------------------- local backend


def run_local(tasks: list[Task], jobs: int, report: Callable[[Outcome], None]) -> tuple[list[Outcome], bool]:
    """Run ``tasks`` as up to ``jobs`` parallel subprocesses; returns (outcomes, interrupted).

    On SIGINT/SIGTERM no new job starts and the signal is passed to the running jobs, which
    save a checkpoint and exit; their runs are resumed by the next sweep.
    """
    pending = list(tasks)
    running: dict[subprocess.Popen, tuple[Task, float, object]] = {}
    outcomes: list[Outcome] = []

    def forward(signum: int) -> None:
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    with recorded_signals(forward) as signals:
        while running or (pending and not signals):
            while pending and len(running) < jobs and not signals:
                task = pending.pop(0)
                log = _open_log(task)
                # A session of its own: a terminal's Ctrl-C reaches the sweep, which forwards it once.
                proc = subprocess.Popen(task.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=_child_env(), start_new_session=True)
                running[proc] = (task, time.monotonic(), log)
            time.sleep(POLL_S)
            for proc in [p for p in running if p.poll() is not None]:
                task, start, log = running.pop(proc)
                log.close()
                outcome = _finished(task, proc.returncode, time.monotonic() - start, bool(signals))
                outcomes.append(outcome)
                report(outcome)
    outcomes += [Outcome(t.job, INTERRUPTED, t.resume, note="not started") for t in pending]
    return outcomes, bool(signals)


# ----------------------------------------------------------------------------- ray backend


def _ray_job(argv: list[str], log_path: str, env: dict[str, str]) -> tuple[int, float]:
    """Body of a Ray task: the same subprocess as the local backend; (exit code, seconds)."""
    start = time.monotonic()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"# {dt.datetime.now().isoformat(timespec='seconds')} (ray) {shlex.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ) | env)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # ray.cancel(): let the run save a checkpoint
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait()
    return rc, time.monotonic() - start


def connect_ray(address: str | None):
    """Import Ray and connect (``address``) or start a local instance, unless this process already
    did; returns (ray module, whether this call connected). SweepError when impossible."""
    try:
        import ray
    except ImportError:
        raise SweepError("--backend ray needs Ray: pip install 'ray>=2.9' (or the btcli extra: pip install "
                         "'btcli[ray]')") from None
    if ray.is_initialized():
        return ray, False
    import logging

    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"at '{address}'" if address else "locally"
        raise SweepError(f"cannot start or reach Ray {where}: {' '.join(str(e).split())[:200]}") from None
    return ray, True


def run_ray(tasks: list[Task], address: str | None, threads: int, jobs: int | None,
            report: Callable[[Outcome], None]) -> tuple[list[Outcome], bool]:
    """Submit each task as a Ray task requesting ``threads`` CPUs (at most ``jobs`` in flight)."""
    ray, _ = connect_ray(address)
    remote = ray.remote(num_cpus=threads, max_retries=0)(_ray_job)
    env = {"PYTHONPATH": _child_env()["PYTHONPATH"]}
    pending = list(tasks)
    flying: dict[object, Task] = {}
    outcomes: list[Outcome] = []
    limit = jobs or len(tasks) or 1

    def forward(_signum: int) -> None:
        for ref in flying:
            with contextlib.suppress(Exception):
                ray.cancel(ref)

    with recorded_signals(forward) as signals:
        while flying or (pending and not signals):
            while pending and len(flying) < limit and not signals:
                task = pending.pop(0)
                flying[remote.remote(task.argv, str(task.job.log), env)] = task
            ready, _ = ray.wait(list(flying), num_returns=1, timeout=1.0)
            for ref in ready:
                task = flying.pop(ref)
                try:
                    rc, seconds = ray.get(ref)
                except Exception as e:  # a cancelled or crashed task
                    rc, seconds = (130 if signals else 1), None
                    if not signals:
                        task.job.log.parent.mkdir(parents=True, exist_ok=True)
                        with open(task.job.log, "a", encoding="utf-8") as log:
                            log.write(f"# ray task failed: {' '.join(str(e).split())[:500]}\n")
                outcome = _finished(task, rc, seconds, bool(signals))
                outcomes.append(outcome)
                report(outcome)
    outcomes += [Outcome(t.job, INTERRUPTED, t.resume, note="not started") for t in pending]
    return outcomes, bool(signals)


# ----------------------------------------------------------------------------- stages


def run_sweep(jobs_list: list[Job], *, backend: str = "local", jobs: int | None = None, address: str | None = None,
              report: Callable[[Outcome], None] = lambda o: None, slurm=None,
              executor=None) -> tuple[list[Outcome], bool]:
    """Run every job, stage after stage; returns (outcomes in job order, interrupted).

    Complete runs are skipped; a job whose arguments name the run directory of an earlier
    job that did not complete is blocked. ``slurm``: the SlurmOptions of ``backend='slurm'``;
    ``executor``: a submitit executor to use instead of the one they describe.
    """
    if backend not in BACKENDS:
        raise SweepError(f"unknown --backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    ray, started_ray = connect_ray(address) if backend == "ray" else (None, False)  # fail before anything runs
    if backend == "slurm":
        from btcli.sweep_slurm import SlurmOptions, check_slurm

        slurm = slurm or SlurmOptions()
        if executor is None:
            check_slurm(slurm)  # fail before anything runs
    try:
        return _run_stages(jobs_list, backend, jobs, address, report, slurm, executor)
    finally:
        if started_ray:
            ray.shutdown()


def _run_stages(jobs_list: list[Job], backend: str, jobs: int | None, address: str | None,
                report: Callable[[Outcome], None], slurm=None, executor=None) -> tuple[list[Outcome], bool]:
    n_jobs = jobs if jobs is not None else (default_jobs() if backend == "local" else None)
    threads = threads_per_job(backend, n_jobs or 1, slurm)
    results: dict[str, Outcome] = {}
    stages = list(dict.fromkeys(j.stage for j in jobs_list))
    interrupted = False
    for stage in stages:
        todo: list[Task] = []
        for job in (j for j in jobs_list if j.stage == stage):
            if interrupted:
                results[job.name] = Outcome(job, INTERRUPTED, note="not started")
            elif is_complete(job):
                results[job.name] = Outcome(job, SKIPPED, note="complete")
                report(results[job.name])
            elif any(not (need / "summary.json").exists() for need in job.needs):
                missing = next(n for n in job.needs if not (n / "summary.json").exists())
                results[job.name] = Outcome(job, BLOCKED, note=f"needs the unfinished run {missing}")
                report(results[job.name])
            else:
                _clear_empty(job.run_dir)
                todo.append(make_task(job, threads))
        if interrupted or not todo:
            continue
        if backend == "local":
            outcomes, interrupted = run_local(todo, n_jobs or 1, report)
        elif backend == "slurm":
            from btcli.sweep_slurm import SLURM_DIR, make_executor, run_slurm

            folder = todo[0].job.log.parent / SLURM_DIR
            executor = executor if executor is not None else make_executor(slurm, folder)  # one for the sweep
            outcomes, interrupted = run_slurm(todo, slurm, folder, n_jobs, report, executor=executor)
        else:
            outcomes, interrupted = run_ray(todo, address, threads, n_jobs, report)
        results |= {o.job.name: o for o in outcomes}
    return [results[j.name] for j in jobs_list], interrupted


def plan(jobs_list: list[Job], *, backend: str = "local", jobs: int | None = None,
         slurm=None) -> list[tuple[Job, str, Task | None]]:
    """What a sweep would do, without running anything: (job, action, task) per job."""
    n_jobs = jobs if jobs is not None else (default_jobs() if backend == "local" else None)
    threads = threads_per_job(backend, n_jobs or 1, slurm)
    out = []
    for job in jobs_list:
        if is_complete(job):
            out.append((job, "skip (complete)", None))
        else:
            task = make_task(job, threads)
            out.append((job, "resume" if task.resume else "start", task))
    return out
