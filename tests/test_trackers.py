"""TensorBoard / W&B copies of the CSV logs: same scalars as the CSVs, offline W&B, failures that
never touch the CSVs, and `btcli export-logs`."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from btcli.runs import CsvLog
from btcli.trackers import TABLES, Sink, TensorBoardWriter, read_table, require, scalar

EMPTY = "MiniGrid-Empty-5x5-v0"
TINY = ["--env", EMPTY, "-q", "--set", "threads=1", "--set", "eval_episodes=2", "--set", "eval_every=400",
        "--set", "train_log_every=200", "--set", "agent.learning_starts=200"]


def csv_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every numeric cell of the run's CSV logs, in file order."""
    found: dict[str, list[tuple[int, float]]] = {}
    for table in TABLES:
        header, rows = read_table(run / f"{table}.csv")
        for row in rows:
            step = int(float(row[header.index("step")]))
            for column, cell in zip(header, row):
                if column != "step" and scalar(cell) is not None:
                    found.setdefault(f"{table}/{column}", []).append((step, scalar(cell)))
    return found


def tensorboard_scalars(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, TENSORS, EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0, TENSORS: 0})
    acc.Reload()
    return acc, {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_same_as_csv(events: dict, csvs: dict) -> None:
    assert sorted(events) == sorted(csvs)
    for tag, expected in csvs.items():
        got = events[tag]
        assert [s for s, _ in got] == [s for s, _ in expected], tag
        # event files hold float32
        np.testing.assert_array_equal(np.float32([v for _, v in got]), np.float32([v for _, v in expected]), tag)


def wandb_records(path: Path):
    """The records of a W&B transaction log (run-<id>.wandb): a 7-byte header (':W&B', magic,
    version), then LevelDB-log records in 32 KiB blocks (crc32c, length, type; types 1 full,
    2 first, 3 middle, 4 last), each a serialized wandb Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, parts = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def wandb_history(run_file: Path) -> tuple[list[dict], dict]:
    rows, config = [], {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
        elif kind == "run":
            config |= {i.key: json.loads(i.value_json) for i in record.run.config.update}
        elif kind == "config":
            config |= {i.key: json.loads(i.value_json) for i in record.config.update}
    return rows, config


def wandb_rows_as_scalars(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        table = next(k.split("/")[0] for k in row if "/" in k)
        step = int(row[f"{table}/step"])
        for key, value in row.items():
            if key.startswith(f"{table}/") and key != f"{table}/step":
                found.setdefault(key, []).append((step, float(value)))
    return found


@pytest.mark.slow
def test_live_tensorboard_and_offline_wandb_carry_the_csv_scalars(btcli, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    run = tmp_path / "r"
    made = btcli("transfer", *TINY, "--steps", "800", "--out", str(run), "--set", "log.tensorboard=true",
                 "--set", "log.wandb=true")
    assert made.returncode == 0, made.stderr
    assert "wandb (offline: " in made.stderr and "wandb sync" in made.stderr
    # a resume may switch a writer on or off (logging changes no number); it continues the event files
    more = btcli("transfer", "--resume", "--out", str(run), "--steps", "1600", "-q", "--set", "log.tensorboard=true",
                 "--set", "log.wandb=true")
    assert more.returncode == 0, more.stderr
    csvs = csv_scalars(run)
    assert {"metrics/return", "train/loss", "eval/return"} <= set(csvs) and max(s for s, _ in csvs["train/loss"]) == 1600

    acc, events = tensorboard_scalars(run / "tensorboard")
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one file per process
    assert_same_as_csv(events, csvs)
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    shown = yaml.safe_load("\n".join(line[4:] for line in text.splitlines()))
    assert shown["agent"] == saved["agent"] and shown["env"]["id"] == EMPTY and shown["log"]["tensorboard"] is True
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")

    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2  # each process is one offline W&B run; no network was used
    rows, config = [], {}
    for folder in offline:
        part, conf = wandb_history(next(folder.glob("run-*.wandb")))
        rows += part
        config = config or conf
    assert_same_as_csv(wandb_rows_as_scalars(rows), csvs)
    assert config["agent"]["lr"] == saved["agent"]["lr"] and config["env"]["id"] == EMPTY and "meta" in config

    # replaying the CSVs gives the same scalars as the live copy
    replay = btcli("export-logs", str(run), "--to", "tensorboard", "--out", str(tmp_path / "tb"))
    assert replay.returncode == 0, replay.stderr
    assert f"wrote {tmp_path / 'tb' / 'r'}" in replay.stdout
    _, replayed = tensorboard_scalars(tmp_path / "tb" / "r")
    assert_same_as_csv(replayed, csvs)
    refused = btcli("export-logs", str(run), "--to", "tensorboard")  # RUN/tensorboard has the live files
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "already holds TensorBoard event files; pass --force" in lines[0]
    wb = btcli("export-logs", str(run), "--to", "wandb", "--out", str(tmp_path / "wb"))
    assert wb.returncode == 0, wb.stderr
    (folder,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    assert f"wandb sync {folder}" in wb.stdout
    rows, _ = wandb_history(next(folder.glob("run-*.wandb")))
    assert_same_as_csv(wandb_rows_as_scalars(rows), csvs)


def test_resumed_writer_hides_what_the_killed_process_logged(tmp_path):
    """A resume drops the CSV rows after its checkpoint; TensorBoard must not show them either."""
    pytest.importorskip("tensorboard")
    columns = ["step", "loss"]
    first = TensorBoardWriter(tmp_path, {"seed": 0})
    first.write("train", columns, [[100, 1.0], [200, 2.0], [300, 3.0], [400, 4.0]])
    first.close()
    resumed = TensorBoardWriter(tmp_path, {"seed": 0}, purge_step=201)  # checkpoint at step 200
    resumed.write("train", columns, [[300, 30.0], [400, 40.0]])
    resumed.close()
    _, events = tensorboard_scalars(tmp_path)
    assert events["train/loss"] == [(100, 1.0), (200, 2.0), (300, 30.0), (400, 40.0)]


class Broken:
    where = "nowhere"

    def __init__(self):
        self.calls = 0

    def write(self, table, columns, rows):
        self.calls += 1
        raise OSError("disk of the tracking server is full")

    def close(self):
        pass


class Recorder:
    where = "memory"

    def __init__(self):
        self.rows = []
        self.closed = False

    def write(self, table, columns, rows):
        self.rows += [(table, list(r)) for r in rows]

    def close(self):
        self.closed = True


def test_failing_writer_is_dropped_and_the_csv_keeps_every_row(tmp_path, capsys):
    broken, kept = Broken(), Recorder()
    sink = Sink([broken, kept])
    log = CsvLog(tmp_path / "train.csv", ["step", "loss"], sink=sink)
    log.write([[1, 0.5]])
    log.write([[2, 0.25], [3, 0.125]])
    log.close()
    sink.close()
    assert (tmp_path / "train.csv").read_text().splitlines() == ["step,loss", "1,0.5", "2,0.25", "3,0.125"]
    assert broken.calls == 1  # dropped after its first failure
    assert kept.rows == [("train", [1, 0.5]), ("train", [2, 0.25]), ("train", [3, 0.125])] and kept.closed
    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: broken logging stopped (OSError: disk")
    assert "btcli export-logs RUN --to broken" in warnings[0]


def test_missing_extra_is_one_line_naming_pip_install(monkeypatch, tmp_path):
    import importlib.util

    from btcli.errors import BtcliError
    from btcli.launch import _prepare_run

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    out = tmp_path / "r"
    with pytest.raises(BtcliError, match=r"wandb logging needs the 'wandb' package, which is not installed; "
                                         r"pip install 'btcli\[wandb\]'"):
        _prepare_run({"env.id": EMPTY, "log.wandb": True}, out, resume=False, json_out=False, quiet=True)
    assert not out.exists()  # refused before the run directory was made

    class Log:
        tensorboard, wandb = True, False

    require(Log())  # tensorboard itself is found


def test_export_logs_errors(btcli, tmp_path):
    missing = btcli("export-logs", str(tmp_path / "nope"), "--to", "tensorboard")
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert missing.returncode == 2 and len(lines) == 1 and lines[0].startswith("btcli: error: ")
    assert "does not exist" in lines[0]
    run = tmp_path / "empty"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    empty = btcli("export-logs", str(run), "--to", "tensorboard")
    lines = [line for line in empty.stderr.splitlines() if line.strip()]
    assert empty.returncode == 2 and len(lines) == 1 and "has no logged rows yet" in lines[0]
