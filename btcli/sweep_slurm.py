"""The Slurm backend of ``btcli sweep``: one Slurm job per run, submitted through submitit.

A job runs the same command line as the local backend (``python -m btcli <command> ...
--out RUN --quiet [--resume]``), its output appended to ``<out>/logs/<name>.log``; submitit's
own files (pickles, the job's stdout/stderr) go to ``<out>/logs/slurm/``. The sweep plans,
skips and resumes exactly as with the other backends (:mod:`btcli.sweep_exec`).

A job near its time limit gets SIGUSR2 from Slurm (``signal_delay_s`` before the end): the run
is stopped with SIGTERM (it saves a checkpoint) and the job is requeued with ``--resume``, at
most ``max_requeues`` times, so a run longer than the partition's limit still finishes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from btcli.signals import PARENT_PID_ENV, recorded_signals
from btcli.sweep import SweepError

CLUSTERS = ("slurm", "local")  # submitit's executors: Slurm, or processes on this machine (to try a sweep file)
SLURM_DIR = "slurm"  # <out>/logs/slurm: submitit's pickles and job logs
SIGNAL_DELAY_S = 120  # Slurm's SIGUSR2 comes this long before the time limit
STOP_WAIT_S = 100  # how long a run may take to checkpoint after it was asked to stop
POLL_S = 1.0


@dataclass
class SlurmOptions:
    """Resources of each run's Slurm job: ``--partition/--time/--cpus/--mem`` or the sweep
    file's ``slurm:`` section (the flags win)."""

    partition: str | None = None  # Slurm partition (default: the cluster's default)
    time: int = 240  # minutes per job; a longer run is requeued and resumed
    cpus: int = 2  # CPUs per run, also its torch threads (--set threads)
    mem: float | None = None  # GB of memory per run (default: the partition's)
    gpus: int = 0  # GPUs per run
    account: str | None = None
    qos: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load ...)
    additional: dict[str, Any] = field(default_factory=dict)  # other sbatch options, e.g. {constraint: v100}
    cluster: str = "slurm"  # 'slurm', or 'local': the jobs run on this machine through submitit's local executor
    max_requeues: int = 10  # times a job may hit its time limit and be requeued

    def describe(self) -> str:
        shown = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                 if getattr(self, f.name) not in (None, [], {}) and f.name not in ("max_requeues", "gpus")]
        shown += [f"gpus={self.gpus}"] if self.gpus else []
        return "slurm: " + ", ".join(shown)


_TYPES = {"partition": str, "time": int, "cpus": int, "mem": (int, float), "gpus": int, "account": str,
          "qos": str, "setup": list, "additional": dict, "cluster": str, "max_requeues": int}


def slurm_options(section: dict[str, Any] | None, **flags: Any) -> SlurmOptions:
    """Options from a sweep file's ``slurm:`` mapping, then the command line's (None: not given)."""
    import difflib

    opts = SlurmOptions()
    given = dict(section or {})
    given |= {k: v for k, v in flags.items() if v is not None}
    for key, value in given.items():
        if key not in _TYPES:
            close = difflib.get_close_matches(key, _TYPES, n=1)
            raise SweepError(f"slurm: unknown key '{key}'" + (f"; did you mean '{close[0]}'?" if close else
                                                                f"; allowed: {', '.join(_TYPES)}"))
        want = _TYPES[key]
        if isinstance(value, bool) or not isinstance(value, want):
            names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
            raise SweepError(f"slurm: '{key}' must be {names}, got {value!r}")
        setattr(opts, key, value)
    if opts.cluster not in CLUSTERS:
        raise SweepError(f"slurm: cluster '{opts.cluster}' is not one of: {', '.join(CLUSTERS)}")
    for key in ("time", "cpus"):
        if getattr(opts, key) < 1:
            raise SweepError(f"slurm: '{key}' must be at least 1, got {getattr(opts, key)}")
    if opts.mem is not None and opts.mem <= 0 or opts.gpus < 0 or opts.max_requeues < 0:
        raise SweepError("slurm: 'mem' must be positive and 'gpus', 'max_requeues' at least 0")
    if not all(isinstance(line, str) for line in opts.setup):
        raise SweepError("slurm: 'setup' must be a list of shell lines")
    return opts


def check_slurm(opts: SlurmOptions) -> None:
    """SweepError (one line) unless submitit is installed and, for the Slurm cluster, sbatch is found."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SweepError("--backend slurm needs submitit: pip install 'btcli[slurm]' (or pip install submitit)") from None
    if opts.cluster == "slurm" and shutil.which("sbatch") is None:
        raise SweepError("--backend slurm: no Slurm on this machine (sbatch not found); run the sweep on the "
                         "cluster's login node, or add 'slurm: {cluster: local}' to the sweep file to try it here")


def make_executor(opts: SlurmOptions, folder: Path):
    """A submitit executor for ``opts`` writing its files in ``folder``; SweepError when impossible."""
    check_slurm(opts)
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=folder, cluster=opts.cluster,
                                     **{f"{opts.cluster}_max_num_timeout": opts.max_requeues})
    params: dict[str, Any] = {"timeout_min": opts.time, "cpus_per_task": opts.cpus, "slurm_signal_delay_s": SIGNAL_DELAY_S}
    if opts.mem is not None:
        params["mem_gb"] = opts.mem
    if opts.gpus:
        params["gpus_per_node"] = opts.gpus
    for key in ("partition", "account", "qos", "setup", "additional"):
        value = getattr(opts, key)
        if value:
            params[f"slurm_{key}" if key != "additional" else "slurm_additional_parameters"] = value
    try:
        executor.update_parameters(**params)
    except (NameError, AssertionError, ValueError) as e:
        raise SweepError(f"slurm: {' '.join(str(e).split())[:300]}") from None
    return executor


def _ignore_usr2() -> None:  # in the run's process, before exec: Slurm's warning is for the job wrapper
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _exited(pid: int) -> bool:
    """Whether the child ``pid`` has exited, without reaping it (its Popen still can)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


class SlurmRun:
    """The body of one Slurm job: the run's subprocess, its output appended to the run's log.

    Calling it returns ``(exit code, seconds)``. submitit calls :meth:`checkpoint` when the job
    is about to hit its time limit (or is preempted): the run is stopped (SIGTERM: it saves a
    checkpoint) and the job is resubmitted to continue it with ``--resume``.
    """

    def __init__(self, argv: list[str], log: str, env: dict[str, str], run_dir: str):
        self.argv, self.log, self.env, self.run_dir = list(argv), log, dict(env), run_dir
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_proc"} | {"_proc": None}

    def __call__(self) -> tuple[int, float]:
        start = time.monotonic()
        Path(self.log).parent.mkdir(parents=True, exist_ok=True)
        where = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or "?"
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"# {dt.datetime.now().isoformat(timespec='seconds')} (slurm job {where}) "
                      f"{shlex.join(self.argv)}\n")
            log.flush()
            # the run stops (checkpointed) if this job's process dies, whatever kills it
            env = dict(os.environ) | self.env | {PARENT_PID_ENV: str(os.getpid())}
            self._proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, preexec_fn=_ignore_usr2)
            try:
                rc = self._proc.wait()
            except KeyboardInterrupt:  # submitit's local executor cancels with SIGINT
                self._proc.send_signal(signal.SIGTERM)
                rc = self._proc.wait()
        return rc, time.monotonic() - start

    def stop(self) -> None:
        """SIGTERM the run and wait (up to STOP_WAIT_S) until it has saved its checkpoint and exited."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        while not _exited(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)

    def resumed(self) -> SlurmRun:
        """The same job continuing the run (``--resume`` once the run directory holds a config)."""
        argv = list(self.argv)
        if "--resume" not in argv and (Path(self.run_dir) / "config.yaml").exists():
            argv.append("--resume")
        return SlurmRun(argv, self.log, self.env, self.run_dir)

    def checkpoint(self):
        """submitit's hook before a requeue: stop the run with a checkpoint, resubmit it resuming."""
        from submitit.helpers import DelayedSubmission

        self.stop()
        return DelayedSubmission(self.resumed())


def run_slurm(tasks: list, opts: SlurmOptions, folder: Path, jobs: int | None,
              report: Callable[[Any], None], executor=None) -> tuple[list, bool]:
    """Submit each task as a Slurm job (at most ``jobs`` at once); returns (outcomes, interrupted).

    On SIGINT/SIGTERM no new job is submitted and the submitted ones are cancelled; their runs get
    SIGTERM, save a checkpoint and are resumed by the next sweep.
    """
    from btcli.sweep_tasks import INTERRUPTED, Outcome, _child_env, _finished

    executor = executor if executor is not None else make_executor(opts, folder)
    env = {"PYTHONPATH": _child_env()["PYTHONPATH"]}
    pending = list(tasks)
    flying: dict[Any, Any] = {}
    outcomes: list = []
    limit = jobs or len(tasks) or 1

    def forward(_signum: int) -> None:
        for job in flying:
            with contextlib.suppress(Exception):
                job.cancel(check=False)

    with recorded_signals(forward) as signals:
        while flying or (pending and not signals):
            while pending and len(flying) < limit and not signals:
                task = pending.pop(0)
                executor.update_parameters(name=f"btcli-{task.job.name}"[:120])
                body = SlurmRun(task.argv, str(task.job.log), env, str(task.job.run_dir))
                flying[executor.submit(body)] = task
            time.sleep(POLL_S)
            for job in [j for j in flying if j.done()]:
                task = flying.pop(job)
                try:
                    rc, seconds = job.result()
                except Exception as e:  # cancelled, killed, out of requeues, or a node failure
                    rc, seconds = (130 if signals else 1), None
                    if not signals:
                        task.job.log.parent.mkdir(parents=True, exist_ok=True)
                        with open(task.job.log, "a", encoding="utf-8") as log:
                            log.write(f"# slurm job {job.job_id} failed: {' '.join(str(e).split())[:500]} "
                                      f"(submitit's logs: {folder})\n")
                outcome = _finished(task, rc, seconds, bool(signals))
                outcomes.append(outcome)
                report(outcome)
    outcomes += [Outcome(t.job, INTERRUPTED, t.resume, note="not started") for t in pending]
    return outcomes, bool(signals)
