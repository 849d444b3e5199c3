"""Run directories: resolved config, CSV logs, atomic checkpoints and the final summary.

Layout (documented in the README)::

    RUN/config.yaml    resolved config + meta (argv, versions, git commit, time)
    RUN/metrics.csv    one row per finished training episode
    RUN/train.csv      periodic learner statistics
    RUN/eval.csv       one row per evaluation episode
    RUN/checkpoints/   step_<N>/ folders; a folder counts only once its COMPLETE marker exists
    RUN/summary.json   written last, when the run has finished
    RUN/.lock          held (flock) by the process training the run; the kernel frees it on exit
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import errno
import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from btcli.errors import BtcliError

CHECKPOINT_MARKER = "COMPLETE"
CHECKPOINT_FILE = "state.pt"

METRICS_COLUMNS = ["step", "episode", "env_index", "return", "length", "time", "intrinsic_return", "coverage",
                   "share_learner", "share_pretrained", "share_random"]
TRAIN_COLUMNS = ["step", "time", "sps", "epsilon", "loss", "q_mean", "updates", "replay_size",
                 "flight_prob", "flights", "flight_len_mean", "flight_len_max", "share_pretrained", "share_random"]
# policy: "learner" (the run's own network) or "pretrained" (the frozen π_p a transfer started from, its
# zero-shot reference); env_id: the task evaluated on (`btcli evaluate --env` may name another one)
EVAL_COLUMNS = ["step", "episode", "return", "length", "epsilon", "checkpoint", "coverage", "policy", "env_id"]


class RunDirError(BtcliError):
    """The run directory is missing, already exists, or is damaged."""


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind an exception (torch.save wraps a failed write in a RuntimeError)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


@contextlib.contextmanager
def disk_errors(what: str, hint: str = "choose a writable --out") -> Iterator[None]:
    """Turn a full disk (or another OS error) while writing into one clear line ending in ``hint``."""
    try:
        yield
    except (OSError, RuntimeError) as raised:
        e = _os_error(raised)
        if e is None:
            raise
        if e.errno == errno.ENOSPC:
            raise RunDirError(
                f"disk full while writing {what}; free some space and rerun with --resume "
                "(the last complete checkpoint is intact)"
            ) from None
        # permissions, a read-only disk, a path through a file or a missing mount, I/O errors
        raise RunDirError(f"cannot write {what}: {e.strerror or e}; {hint}") from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with disk_errors(str(path)):
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def git_commit() -> str | None:
    """The commit of the btcli source tree, with '+dirty' when it has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def run_meta(argv: list[str]) -> dict[str, Any]:
    """Provenance saved beside the resolved config."""
    import gymnasium
    import numpy
    import torch

    import btcli

    versions = {"btcli": btcli.__version__, "python": platform.python_version(), "torch": str(torch.__version__),
                "numpy": numpy.__version__, "gymnasium": gymnasium.__version__}
    for name in ("ale_py", "minigrid"):
        with contextlib.suppress(Exception):
            versions[name] = str(__import__(name).__version__)
    return {
        "argv": list(argv),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "git_commit": git_commit(),
        "versions": versions,
    }


class CsvLog:
    """An append-only CSV file with a fixed header; rows are flushed as they are written.

    A file written by an older btcli whose header is a prefix of ``columns`` (columns were only
    ever added at the end) is first rewritten with the new header, its rows padded with empty
    cells, so appended rows line up; any other header is refused.

    ``sink`` (a btcli.trackers.Sink) gets each batch of rows once it is on disk, under the
    table name ``path.stem`` (TensorBoard / W&B copies; they never stop the CSV)."""

    def __init__(self, path: Path, columns: list[str], hint: str = "choose a writable --out", sink=None):
        self.path = path
        self.columns = columns
        self.hint = hint
        self.sink = sink
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            _upgrade_header(path, columns)
        with disk_errors(str(path), hint):
            self._fh = open(path, "a", newline="")
            self._writer = csv.writer(self._fh)
            if new:
                self._writer.writerow(columns)
                self._fh.flush()

    def write(self, rows: list[list[Any]]) -> None:
        with disk_errors(str(self.path), self.hint):
            self._writer.writerows(rows)
            self._fh.flush()
        if self.sink:
            self.sink.write(self.path.stem, self.columns, rows)

    def close(self) -> None:
        self._fh.close()


def _upgrade_header(path: Path, columns: list[str]) -> None:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0] if rows else []
    if header == columns:
        return
    if header != columns[: len(header)]:
        raise RunDirError(f"'{path}' has the columns {header}, not those btcli writes ({columns}); "
                          "it was not written by btcli or is damaged")
    pad = [""] * (len(columns) - len(header))
    buf = io.StringIO()
    csv.writer(buf).writerows([columns, *(r + pad for r in rows[1:] if len(r) == len(header))])
    atomic_write_text(path, buf.getvalue())


def truncate_csv_after(path: Path, step: int) -> int:
    """Drop rows whose ``step`` column exceeds ``step`` (work lost with a killed run); returns rows kept."""
    if not path.exists():
        return 0
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return 0
    header, body = rows[0], rows[1:]
    col = header.index("step")
    kept = [r for r in body if len(r) == len(header) and float(r[col]) <= step]
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *kept])
    atomic_write_text(path, buf.getvalue())
    return len(kept)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class RunDir:
    """One run's directory and the files in it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.csv")
    train_path = property(lambda self: self.path / "train.csv")
    eval_path = property(lambda self: self.path / "eval.csv")
    summary_path = property(lambda self: self.path / "summary.json")
    checkpoints_path = property(lambda self: self.path / "checkpoints")

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any], argv: list[str]) -> RunDir:
        """Make a new run directory; refuse one that already exists."""
        run = cls(path)
        if run.path.exists() and (not run.path.is_dir() or any(run.path.iterdir())):
            raise RunDirError(
                f"run directory '{run.path}' already exists; pass --resume to continue it, "
                "or choose another --out"
            )
        with disk_errors(str(run.path)):
            run.checkpoints_path.mkdir(parents=True, exist_ok=True)
        run.write_config(config, argv)
        return run

    def lock(self) -> None:
        """Claim the run for this process, or refuse: two writers would interleave its logs.

        An exclusive ``flock`` on RUN/.lock, held until the process exits; the kernel frees it
        when the process dies, SIGKILL included, so a killed run never leaves a stale lock.
        """
        with disk_errors(str(self.path)):
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"run directory '{self.path}' is in use by another btcli process (pid {holder}); "
                "wait for it to finish or stop it, then --resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Free the run for another process (or a later call in this one, e.g. ``btcli.train``)."""
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            self._lock_fd = None
            os.close(fd)  # closing the only descriptor releases the flock

    @classmethod
    def open_existing(cls, path: str | Path, resuming: bool = True) -> RunDir:
        """Open a run directory for resuming (or, ``resuming=False``, for reading)."""
        run = cls(path)
        if not run.config_path.is_file():
            what = "no such directory" if not run.path.exists() else "not a btcli run directory (no config.yaml)"
            hint = ("start it without --resume" if resuming else
                    "give a run directory that btcli transfer, finetune or pretrain wrote")
            raise RunDirError(f"'{run.path}': {what}; {hint}")
        return run

    def extend_steps(self, steps: int, done: int) -> None:
        """Record in config.yaml that a resume moved the run's budget to ``steps`` (at step ``done``)."""
        doc = self.read_config()
        when = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        doc.setdefault("meta", {}).setdefault("steps_changed", []).append(
            {"from": doc.get("steps"), "to": steps, "at_step": done, "time": when})
        doc["steps"] = steps
        atomic_write_text(self.config_path, yaml.safe_dump(doc, sort_keys=False))

    def steps_done(self) -> int:
        """Environment steps a resume continues from: the summary's when complete, else the newest checkpoint's."""
        if self.is_complete():
            try:
                return int(json.loads(self.summary_path.read_text()).get("steps", 0))
            except (OSError, ValueError):
                pass
        latest = self.latest_checkpoint()
        return int(latest.name.split("_")[1]) if latest is not None else 0

    def write_config(self, config: dict[str, Any], argv: list[str]) -> None:
        doc = dict(config)
        doc["meta"] = run_meta(argv)
        atomic_write_text(self.config_path, yaml.safe_dump(doc, sort_keys=False))

    def record_provenance(self, name: str, facts: dict[str, Any]) -> None:
        """Add ``facts`` under ``provenance.<name>`` in config.yaml (e.g. the pre-trained checkpoint)."""
        doc = self.read_config()
        doc.setdefault("provenance", {})[name] = facts
        atomic_write_text(self.config_path, yaml.safe_dump(doc, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        try:
            data = yaml.safe_load(self.config_path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise RunDirError(f"'{self.config_path}' cannot be read ({e}); the run directory is damaged") from None
        if not isinstance(data, dict):
            raise RunDirError(f"'{self.config_path}' does not hold a config mapping; the run directory is damaged")
        return data

    def is_complete(self) -> bool:
        return self.summary_path.exists()

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2, sort_keys=True) + "\n")

    # --- checkpoints -------------------------------------------------------------------

    def save_checkpoint(self, step: int, state: dict[str, Any], keep: int) -> Path:
        """Write ``state`` under checkpoints/step_<step>/, marked complete only once fully on disk."""
        import torch

        from btcli.safeio import to_plain

        final = self.checkpoints_path / f"step_{step:012d}"
        tmp = self.checkpoints_path / f".tmp_step_{step:012d}"
        with disk_errors(f"checkpoint {final}"):
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                with open(tmp / CHECKPOINT_FILE, "wb") as fh:  # a Python file: write errors keep their errno
                    torch.save(to_plain(state), fh)  # numpy as tensors: loads with weights_only=True
                    fh.flush()
                    os.fsync(fh.fileno())
                marker = {"step": step, "sha256": sha256_file(tmp / CHECKPOINT_FILE)}
                with open(tmp / CHECKPOINT_MARKER, "w") as fh:
                    json.dump(marker, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        for old in self.complete_checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def complete_checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        if not self.checkpoints_path.exists():
            return []
        found = [p for p in self.checkpoints_path.glob("step_*") if (p / CHECKPOINT_MARKER).exists()]
        return sorted(found, key=lambda p: int(p.name.split("_")[1]))

    def latest_checkpoint(self) -> Path | None:
        done = self.complete_checkpoints()
        return done[-1] if done else None


def find_checkpoint(run: RunDir, which: str | None) -> Path:
    """The newest complete checkpoint, or the one named by folder path or step number."""
    if which is None:
        path = run.latest_checkpoint()
        if path is None:
            raise RunDirError(f"run '{run.path}' has no complete checkpoint yet; train it first (or wait for one)")
        return path
    if which.isdigit():
        path = run.checkpoints_path / f"step_{int(which):012d}"
    else:
        path = Path(which)
    if not path.is_dir():
        have = ", ".join(p.name.removeprefix("step_").lstrip("0") or "0" for p in run.complete_checkpoints())
        raise RunDirError(f"checkpoint '{which}' not found in '{run.path}'; available steps: {have or 'none'}")
    return path


def load_checkpoint(path: Path, map_location: str = "cpu", *, env_state: bool = False) -> dict[str, Any]:
    """Load a complete checkpoint folder, verifying its content hash, without running code from it.

    The file is read by ``torch.load(weights_only=True)`` (see :mod:`btcli.safeio`); one that
    asks for any other Python object is refused with one line. Its environment snapshots
    (``state["episodes"]``: pickled MiniGrid objects and ALE states) are dropped unless
    ``env_state``, which only a run's own resume passes: nothing unpickles them from another
    run's checkpoint (a pre-trained run, an evaluated one).
    """
    from btcli.safeio import UnsafeCheckpointError, safe_torch_load

    marker_path = path / CHECKPOINT_MARKER
    if not marker_path.exists():
        raise RunDirError(f"checkpoint '{path}' is incomplete (no {CHECKPOINT_MARKER} marker); use an earlier one")
    try:
        marker = json.loads(marker_path.read_text())
        expected = str(marker["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise RunDirError(f"checkpoint '{path}' has a damaged {CHECKPOINT_MARKER} marker; use an earlier one") from None
    if sha256_file(path / CHECKPOINT_FILE) != expected:
        raise RunDirError(f"checkpoint '{path}' is corrupt (content hash mismatch); use an earlier one")
    try:
        state = safe_torch_load(path / CHECKPOINT_FILE, map_location=map_location)
    except UnsafeCheckpointError as e:
        raise RunDirError(f"checkpoint '{path}' asks to build the Python object '{e.name}', which btcli never "
                          "writes; it was not loaded, since that could run code from the file; use a checkpoint "
                          "that btcli wrote") from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise RunDirError(f"checkpoint '{path}' cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                          "use an earlier one") from None
    if not isinstance(state, dict):
        raise RunDirError(f"checkpoint '{path}' does not hold a btcli state; use a checkpoint that btcli wrote")
    if not env_state:
        state.pop("episodes", None)
    state["checkpoint_sha256"] = expected
    return state
