"""Optional copies of a run's CSV logs in TensorBoard and Weights & Biases (the ``log.*`` keys).

The CSV files are the record. A :class:`Sink` is handed exactly the rows that were just written
to ``metrics.csv``, ``train.csv`` and ``eval.csv`` (after they are on disk) and passes them to
each writer; a writer that raises is dropped with one warning line, so it can neither lose nor
stop the CSV logs. ``btcli export-logs`` replays the CSV files of finished (or offline) runs
through the same writers, so a live copy and a replayed one carry the same scalars.

Scalars are named ``<table>/<column>`` (``metrics/return``, ``train/loss``, ``eval/return``):
one per numeric, non-empty cell of every row, ``step`` excepted. In TensorBoard the
environment step is the x-axis (``global_step``); in W&B every table gets its own step metric
``<table>/step``, logged with each row, since several episodes may end at the same step.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from btcli.errors import BtcliError

TABLES = ("metrics", "train", "eval")  # the CSV logs of a run directory, <table>.csv
TENSORBOARD_DIR = "tensorboard"  # RUN/tensorboard/events.out.tfevents.*
WANDB_DIR = "wandb"  # RUN/wandb/offline-run-* (W&B makes the folder under the dir it is given)
TARGETS = ("tensorboard", "wandb")


class TrackerError(BtcliError):
    """A logging extra that is missing, or an export that cannot be written."""


def _needs(target: str) -> None:
    """Raise a one-line TrackerError naming the pip extra when ``target``'s package is missing."""
    module = {"tensorboard": "tensorboard", "wandb": "wandb"}[target]
    if importlib.util.find_spec(module) is None:
        raise TrackerError(f"{target} logging needs the '{module}' package, which is not installed; "
                           f"pip install 'btcli[{target}]' (or turn log.{target} off)")


def require(log_cfg: Any) -> None:
    """Check before a run starts that every writer ``log_cfg`` (a LogConfig) asks for can be imported."""
    for target in TARGETS:
        if getattr(log_cfg, target):
            _needs(target)


def scalar(value: Any) -> float | None:
    """A CSV cell as a float, or None for empty and non-numeric cells (a checkpoint name)."""
    if value is None or isinstance(value, str) and not value.strip():
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'agent': {'lr': 1e-4}} -> {'agent.lr': 1e-4}; lists and None become text (TensorBoard's
    hparams take only numbers, text and booleans)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            out[prefix + key] = value
        else:
            out[prefix + key] = str(value)
    return out


class Writer(Protocol):
    """One logging backend: receives the rows of a CSV log as they are written."""

    where: str

    def write(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...


class TensorBoardWriter:
    """TensorBoard event files in ``log_dir``: one scalar per numeric cell at ``global_step = step``,
    the config as text (``config``) and as hparams.

    ``purge_step``: a resumed run passes the first step after its checkpoint, and TensorBoard
    hides what the killed process logged from there on (the CSV rows it dropped).
    ``walltime_of``: maps a step to the event's wall time (replays); None means now.
    """

    def __init__(self, log_dir: Path, config: dict[str, Any], *, purge_step: int | None = None,
                 walltime_of=None):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.where = str(log_dir)
        first = not any(Path(log_dir).glob("events.out.tfevents.*"))  # else a resume: the config is there
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=30)
        self._walltime_of = walltime_of
        if first:
            text = yaml.safe_dump(config, sort_keys=False)
            self._writer.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()))
            flat = flat_config({k: v for k, v in config.items() if k not in ("meta", "provenance")})
            for summary in hparams(flat, {f"{t}/return": None for t in ("metrics", "eval")}):
                self._writer.file_writer.add_summary(summary)

    def write(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        at = columns.index("step")
        for row in rows:
            step = int(float(row[at]))
            walltime = self._walltime_of(step) if self._walltime_of is not None else None
            for column, cell in zip(columns, row):
                value = scalar(cell)
                if column != "step" and value is not None:
                    self._writer.add_scalar(f"{table}/{column}", value, step, walltime=walltime)

    def close(self) -> None:
        self._writer.close()


class WandbWriter:
    """A W&B run in ``directory``/wandb: one history row per CSV row, the config as its config.

    Offline mode needs no network or account (``wandb sync`` uploads the folder later).
    Each training process is one W&B run; a resumed run is a new W&B run of the same name
    (``btcli export-logs --to wandb`` replays the whole run as one).
    """

    def __init__(self, directory: Path, config: dict[str, Any], *, name: str, mode: str, project: str,
                 entity: str = "", group: str = "", job_type: str | None = None):
        import wandb

        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True, save_code=False)
        self._run = wandb.init(dir=str(directory), project=project or None, entity=entity or None,
                               group=group or None, name=name, job_type=job_type, mode=mode, config=config,
                               settings=settings, reinit="create_new")
        self._defined: set[str] = set()
        folder = Path(self._run.dir).parent  # .../wandb/offline-run-<time>-<id>/files
        self.offline = mode == "offline"
        self.where = str(folder) if self.offline else (self._run.url or str(folder))

    def write(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if table not in self._defined:
            self._run.define_metric(f"{table}/step")
            self._run.define_metric(f"{table}/*", step_metric=f"{table}/step")
            self._defined.add(table)
        for row in rows:
            values = {f"{table}/{c}": scalar(v) for c, v in zip(columns, row)}
            self._run.log({k: v for k, v in values.items() if v is not None})

    def close(self) -> None:
        self._run.finish()


class Sink:
    """The writers of one process: gets every row after the CSV has it; a failing writer is dropped.

    ``close`` is idempotent and also runs at interpreter exit, so a run stopped by a signal
    (which leaves the loop by an exception) still flushes its event files.
    """

    def __init__(self, writers: list[Writer] | None = None):
        self.writers: list[Writer] = list(writers or [])

    def __bool__(self) -> bool:
        return bool(self.writers)

    def write(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        for writer in list(self.writers):
            try:
                writer.write(table, columns, rows)
            except Exception as e:  # a logging backend must never stop training
                self._drop(writer, e)

    def _drop(self, writer: Writer, e: BaseException) -> None:
        self.writers.remove(writer)
        name = type(writer).__name__.removesuffix("Writer").lower()
        print(f"warning: {name} logging stopped ({type(e).__name__}: {' '.join(str(e).split())[:200]}); the CSV "
              f"logs are complete: replay them with btcli export-logs RUN --to {name}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            writer.close()

    def close(self) -> None:
        writers, self.writers = self.writers, []
        for writer in writers:
            try:
                writer.close()
            except Exception as e:
                self.writers = [writer]
                self._drop(writer, e)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)


def open_sink(cfg: Any, run: Any, start_step: int = 0, *, resumed: bool = False) -> Sink:
    """The writers ``cfg.log`` asks for, for the run directory ``run`` (a RunDir), which starts
    (or, ``resumed``, continues) at ``start_step``. Missing packages are a TrackerError; a
    writer that cannot start is a warning and the run goes on with its CSV logs."""
    from btcli.config import to_dict

    log = cfg.log
    sink = Sink()
    if not (log.tensorboard or log.wandb):
        return sink
    require(log)
    config = run.read_config()
    if log.tensorboard:
        _start(sink, lambda: TensorBoardWriter(run.path / TENSORBOARD_DIR, config,
                                               purge_step=start_step + 1 if resumed else None), "tensorboard")
    if log.wandb:
        config = {**to_dict(cfg), **{k: config[k] for k in ("meta", "provenance") if k in config}}
        _start(sink, lambda: WandbWriter(run.path, config, name=run.path.name, mode=log.wandb_mode,
                                         project=log.wandb_project, entity=log.wandb_entity,
                                         group=log.wandb_group, job_type=cfg.command), "wandb")
    if sink:
        print("logging also to " + ", ".join(_describe(w) for w in sink.writers), file=sys.stderr, flush=True)
        atexit.register(sink.close)
    return sink


def _start(sink: Sink, make, name: str) -> None:
    try:
        sink.writers.append(make())
    except Exception as e:
        print(f"warning: {name} logging could not start ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
              f"the run goes on with its CSV logs (replay them later with btcli export-logs RUN --to {name})",
              file=sys.stderr, flush=True)


def _describe(writer: Writer) -> str:
    if isinstance(writer, WandbWriter) and writer.offline:
        return f"wandb (offline: {writer.where}; upload with: wandb sync {writer.where})"
    return f"{type(writer).__name__.removesuffix('Writer').lower()} ({writer.where})"


# ----------------------------------------------------------------------------- replay (export-logs)


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CSV log's header and rows (text cells); empty when the file is absent or empty."""
    if not path.is_file():
        return [], []
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return [], []
    header = rows[0]
    return header, [r for r in rows[1:] if len(r) == len(header)]


def _walltime_of(tables: dict[str, tuple[list[str], list[list[str]]]], created: str | None):
    """Step -> wall time of a replayed event: the run's start plus the logs' ``time`` column,
    interpolated between rows (evaluation rows have no time of their own); None when unknown."""
    import datetime as dt

    import numpy as np

    try:
        start = dt.datetime.fromisoformat(str(created)).timestamp()
    except (TypeError, ValueError):
        return None
    pairs = []
    for header, rows in tables.values():
        if "time" in header and "step" in header:
            s, t = header.index("step"), header.index("time")
            pairs += [(float(r[s]), float(r[t])) for r in rows if scalar(r[s]) is not None and scalar(r[t]) is not None]
    if not pairs:
        return None
    pairs.sort()
    steps, times = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return lambda step: start + float(np.interp(step, steps, times))


def export_run(run_dir: Path, to: str, *, out: Path | None = None, force: bool = False,
               wandb_mode: str = "offline", project: str = "btcli", entity: str = "", group: str = "") -> str:
    """Replay ``run_dir``'s CSV logs and config into TensorBoard or W&B; returns where they went.

    TensorBoard: ``out/<run name>`` with ``out``, else ``RUN/tensorboard`` (a folder that
    already holds event files is refused unless ``force``, which deletes them first).
    W&B: a new W&B run in ``out`` (or the run directory), named after the run.
    """
    from btcli.runs import RunDir

    if to not in TARGETS:
        raise TrackerError(f"unknown --to '{to}'; choose one of: {', '.join(TARGETS)}")
    _needs(to)
    run = RunDir.open_existing(run_dir, resuming=False)
    config = run.read_config()
    tables = {t: read_table(run.path / f"{t}.csv") for t in TABLES}
    if not any(rows for _, rows in tables.values()):
        raise TrackerError(f"run '{run.path}' has no logged rows yet (metrics.csv, train.csv and eval.csv are "
                           "empty); nothing to export")
    if to == "tensorboard":
        target = (out / run.path.name) if out is not None else run.path / TENSORBOARD_DIR
        old = sorted(target.glob("events.out.tfevents.*")) if target.is_dir() else []
        if old and not force:
            raise TrackerError(f"'{target}' already holds TensorBoard event files; pass --force to replace them, "
                               "or --out DIR for another folder")
        for path in old:
            path.unlink()
        writer: Writer = TensorBoardWriter(target, config,
                                           walltime_of=_walltime_of(tables, (config.get("meta") or {}).get("created")))
    else:
        target = out if out is not None else run.path
        target.mkdir(parents=True, exist_ok=True)
        writer = WandbWriter(target, config, name=run.path.name, mode=wandb_mode, project=project, entity=entity,
                             group=group, job_type=str(config.get("command") or "") or None)
    try:
        for table, (header, rows) in tables.items():
            if rows and "step" in header:
                writer.write(table, header, rows)
    finally:
        writer.close()
    return _describe(writer) if isinstance(writer, WandbWriter) else writer.where
