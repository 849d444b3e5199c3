"""Checkpoints load without running code from them (torch.load(weights_only=True)), old ones
still load, and environment snapshots are never unpickled from another run."""

import json
import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from btcli.config import build_config, to_dict
from btcli.loop import Trainer
from btcli.runs import CHECKPOINT_FILE, CHECKPOINT_MARKER, RunDir, RunDirError, load_checkpoint, sha256_file
from btcli.safeio import from_plain, to_plain

ENV = "MiniGrid-Empty-5x5-v0"
BASE = {"env.id": ENV, "steps": 600, "seed": 0, "eval_episodes": 1, "threads": 1, "agent.learning_starts": 200,
        "checkpoint_every": 300, "train_log_every": 300, "env.num_envs": 2}


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def rewrite_checkpoint(folder: Path, state) -> None:
    """Replace a checkpoint's state.pt and recompute its COMPLETE hash, as anyone can."""
    torch.save(state, folder / CHECKPOINT_FILE)
    (folder / CHECKPOINT_MARKER).write_text(json.dumps({"step": 600, "sha256": sha256_file(folder / CHECKPOINT_FILE)}))


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    cfg = build_config(BASE | {"command": "pretrain", "intrinsic.objective": "count", "save_replay": True})
    run = RunDir.create(root / "pt", to_dict(cfg), ["test"])
    Trainer(cfg, run, progress=False).train()
    return run.path


def copy_run(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    return dst


def test_plain_format_round_trips_numpy_exactly(tmp_path):
    module_state = OrderedDict(w=torch.ones(2))
    module_state._metadata = {"": {"version": 1}}
    readonly = np.arange(6, dtype=np.int32)
    readonly.flags.writeable = False
    arrays = {
        "bool": np.array([True, False]), "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "i64": np.array([-(2**62), 2**62]), "f16": np.array([0.5, -1.25], dtype=np.float16),
        "f64": np.linspace(0, 1, 7), "u16": np.array([65535], dtype=np.uint16),
        "u32": np.array([2**32 - 1], dtype=np.uint32), "big_endian": np.array([1, 258], dtype=">i4"),
        "text": np.array(["ab", "cde"]), "zero_d": np.array(3.5), "empty": np.zeros((0, 3), np.float32),
        "strided": np.arange(20, dtype=np.int16)[::3], "readonly": readonly,
    }
    state = {"arrays": arrays, "scalars": [np.int64(7), np.float32(0.1), np.bool_(True)],
             "nested": ((np.ones(2, np.uint8), 5), [np.zeros(1)]), "module": module_state, "plain": [1, "x", None]}
    torch.save(to_plain(state), tmp_path / "s.pt")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "s.pt") == []
    back = from_plain(torch.load(tmp_path / "s.pt", weights_only=True))
    for key, arr in arrays.items():
        assert back["arrays"][key].dtype == arr.dtype and back["arrays"][key].shape == arr.shape, key
        np.testing.assert_array_equal(back["arrays"][key], arr)
    assert [type(x) for x in back["scalars"]] == [np.int64, np.float32, np.bool_]
    assert back["scalars"][1] == np.float32(0.1)
    assert isinstance(back["nested"][0], tuple) and back["nested"][0][1] == 5
    np.testing.assert_array_equal(back["nested"][0][0], np.ones(2, np.uint8))
    assert to_plain(state)["module"] is module_state  # no numpy inside: the same object, metadata kept
    assert back["plain"] == [1, "x", None]
    with pytest.raises(TypeError, match="object arrays"):
        to_plain({"o": np.array([object()])})


def test_btcli_checkpoints_need_no_unpickling_beyond_tensors_and_plain_data(pretrained_run):
    path = RunDir(pretrained_run).latest_checkpoint() / CHECKPOINT_FILE
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    raw = torch.load(path, weights_only=True)  # no allowlist at all
    assert isinstance(raw["episodes"]["env"]["envs"][0], bytes)  # the MiniGrid snapshot stays bytes
    state = load_checkpoint(path.parent, env_state=True)
    assert isinstance(state["replay"]["frames"], np.ndarray) and state["replay"]["frames"].dtype == np.uint8
    assert "episodes" in state and "episodes" not in load_checkpoint(path.parent)  # dropped unless asked


def test_checkpoints_of_earlier_versions_with_pickled_numpy_still_load(tmp_path):
    run = RunDir.create(tmp_path / "r", {}, [])
    folder = run.save_checkpoint(10, {"step": 10}, keep=2)
    legacy = {"step": 10, "replay": {"frames": np.arange(12, dtype=np.uint8).reshape(3, 4), "n": np.int64(3)},
              "rng": {"numpy": np.random.default_rng(0).bit_generator.state}, "w": torch.arange(3.0)}
    rewrite_checkpoint(folder, legacy)  # as btcli wrote them before: numpy pickled as numpy
    assert "numpy._core.multiarray._reconstruct" in torch.serialization.get_unsafe_globals_in_checkpoint(
        folder / CHECKPOINT_FILE) or "numpy.core.multiarray._reconstruct" in \
        torch.serialization.get_unsafe_globals_in_checkpoint(folder / CHECKPOINT_FILE)
    state = load_checkpoint(folder)
    np.testing.assert_array_equal(state["replay"]["frames"], legacy["replay"]["frames"])
    assert state["replay"]["n"] == 3 and torch.equal(state["w"], legacy["w"])


def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    run = RunDir.create(tmp_path / "r", {}, [])
    folder = run.save_checkpoint(10, {"step": 10}, keep=2)
    rewrite_checkpoint(folder, {"step": 10, "learner": Payload(marker)})
    with pytest.raises(RunDirError, match=r"asks to build the Python object '(posix|os|nt)\.system'") as e:
        load_checkpoint(folder)
    assert "\n" not in str(e.value) and not marker.exists()
    with pytest.raises(RunDirError):
        safe_load_via_runs = load_checkpoint(folder, env_state=True)  # noqa: F841 (a resume refuses it too)
    assert not marker.exists()
    torch.load(folder / CHECKPOINT_FILE, weights_only=False)  # what btcli did before: the payload is real
    assert marker.exists()


@pytest.mark.slow
def test_crafted_pretrained_run_is_refused_by_transfer_finetune_and_evaluate(btcli, tmp_path, pretrained_run):
    marker = tmp_path / "pwned"
    bad = copy_run(pretrained_run, tmp_path / "bad")
    folder = RunDir(bad).latest_checkpoint()
    state = torch.load(folder / CHECKPOINT_FILE, weights_only=True)
    state["learner"] = {"online": Payload(marker)}
    rewrite_checkpoint(folder, state)
    commands = [
        ["transfer", "--mode", "bt", "--pretrained", str(bad), "--env", ENV, "--steps", "200", "--out",
         str(tmp_path / "t")],
        ["finetune", "--pretrained", str(bad), "--env", ENV, "--steps", "200", "--out", str(tmp_path / "f")],
        ["evaluate", str(bad), "--episodes", "1"],
    ]
    for args in commands:
        proc = btcli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr)
        assert lines[0].startswith("btcli: error:") and "system" in lines[0] and "not loaded" in lines[0]
        assert not marker.exists(), args
    assert not (tmp_path / "t").exists() and not (tmp_path / "f").exists()


@pytest.mark.slow
def test_environment_snapshots_of_another_run_are_never_unpickled(btcli, tmp_path, pretrained_run):
    marker = tmp_path / "pwned"
    bad = copy_run(pretrained_run, tmp_path / "bad")
    folder = RunDir(bad).latest_checkpoint()
    state = torch.load(folder / CHECKPOINT_FILE, weights_only=True)
    snapshot = pickle.dumps(Payload(marker))
    state["episodes"]["env"]["envs"] = [snapshot] * len(state["episodes"]["env"]["envs"])
    rewrite_checkpoint(folder, state)
    # the snapshot is a working payload: unpickling it (as a resume would) runs the command
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
                   input=snapshot, check=True)
    assert marker.exists()
    marker.unlink()
    transfer = btcli("transfer", "--mode", "bt+ft", "--pretrained", str(bad), "--env", ENV, "--steps", "400",
                     "--set", "agent.learning_starts=200", "--set", "eval_episodes=1", "--out", str(tmp_path / "t"),
                     "-q")
    assert transfer.returncode == 0, transfer.stderr
    evaluation = btcli("evaluate", str(bad), "--episodes", "1")
    assert evaluation.returncode == 0, evaluation.stderr
    assert not marker.exists()
