import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from btcli.runs import (
    CHECKPOINT_MARKER,
    RunDir,
    RunDirError,
    atomic_write_text,
    disk_errors,
    load_checkpoint,
    truncate_csv_after,
)


def test_create_refuses_existing_directory(tmp_path):
    RunDir.create(tmp_path / "r", {"seed": 0}, ["btcli"])
    with pytest.raises(RunDirError, match="already exists; pass --resume"):
        RunDir.create(tmp_path / "r", {"seed": 1}, ["btcli"])
    # the first run's config is untouched
    assert "seed: 0" in (tmp_path / "r" / "config.yaml").read_text()


def test_lock_refuses_a_second_holder_and_dies_with_its_process(tmp_path):
    run = RunDir.create(tmp_path / "r", {"seed": 0}, ["btcli"])
    run.lock()
    with pytest.raises(RunDirError, match=rf"in use by another btcli process \(pid {os.getpid()}\)"):
        RunDir(tmp_path / "r").lock()
    os.close(run._lock_fd)  # what the process's exit does
    RunDir(tmp_path / "r").lock()

    # a holder killed with SIGKILL leaves no stale lock
    other = RunDir.create(tmp_path / "s", {"seed": 0}, ["btcli"])
    code = f"from btcli.runs import RunDir; RunDir({str(other.path)!r}).lock(); print('locked', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirError, match=f"pid {holder.pid}"):
        RunDir(other.path).lock()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    time.sleep(0.1)
    RunDir(other.path).lock()


def test_config_records_meta(tmp_path):
    run = RunDir.create(tmp_path / "r", {"seed": 5}, ["btcli", "transfer"])
    cfg = run.read_config()
    assert cfg["seed"] == 5
    assert cfg["meta"]["argv"] == ["btcli", "transfer"]
    assert "torch" in cfg["meta"]["versions"]


def test_checkpoints_marked_pruned_and_verified(tmp_path):
    run = RunDir.create(tmp_path / "r", {}, [])
    for step in (10, 20, 30):
        run.save_checkpoint(step, {"step": step, "w": torch.ones(3) * step}, keep=2)
    names = [p.name for p in run.complete_checkpoints()]
    assert names == ["step_000000000020", "step_000000000030"]
    state = load_checkpoint(run.latest_checkpoint())
    assert state["step"] == 30 and torch.equal(state["w"], torch.ones(3) * 30)


def test_incomplete_checkpoint_is_ignored_and_corrupt_refused(tmp_path):
    run = RunDir.create(tmp_path / "r", {}, [])
    run.save_checkpoint(10, {"step": 10}, keep=3)
    # a folder without marker (a crash mid-write) does not count
    half = run.checkpoints_path / "step_000000000020"
    half.mkdir()
    (half / "state.pt").write_bytes(b"partial")
    assert run.latest_checkpoint().name == "step_000000000010"
    # a marker whose hash does not match is refused
    (half / CHECKPOINT_MARKER).write_text(json.dumps({"step": 20, "sha256": "0" * 64}))
    with pytest.raises(RunDirError, match="corrupt"):
        load_checkpoint(half)


def test_truncate_csv_after_drops_later_and_partial_rows(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("step,return\n4,1.0\n8,2.0\n12,3.0\n16,4")
    kept = truncate_csv_after(path, 8)
    assert kept == 2
    assert path.read_text().splitlines() == ["step,return", "4,1.0", "8,2.0"]


def test_disk_full_becomes_one_line(tmp_path):
    with pytest.raises(RunDirError, match="disk full while writing x; free some space and rerun with --resume"):
        with disk_errors("x"):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    atomic_write_text(path, "old")

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(RunDirError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert not list(tmp_path.glob(".*tmp"))


def test_csv_log_upgrades_an_older_header_and_refuses_a_foreign_one(tmp_path):
    """An eval.csv from before the policy/env_id columns gets them (empty) before rows are appended."""
    import csv

    from btcli.runs import EVAL_COLUMNS, CsvLog, RunDirError

    path = tmp_path / "eval.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([EVAL_COLUMNS[:7], [100, 0, 0.5, 9, 0.01, "", 3]])
    log = CsvLog(path, EVAL_COLUMNS)
    log.write([[200, 0, 1.0, 9, 0.01, "", 4, "pretrained", "MiniGrid-Empty-5x5-v0"]])
    log.close()
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [EVAL_COLUMNS, ["100", "0", "0.5", "9", "0.01", "", "3", "", ""],
                    ["200", "0", "1.0", "9", "0.01", "", "4", "pretrained", "MiniGrid-Empty-5x5-v0"]]
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([["a", "b"], [1, 2]])
    with pytest.raises(RunDirError, match="not written by btcli"):
        CsvLog(path, EVAL_COLUMNS)
    assert path.read_text().startswith("a,b")  # refused, not rewritten
