"""Checkpoints written by the format-1 layout (every record at the top level, episode parts under
"episodes" keys inside each part) still load, and a resume from one continues exactly.

tests/fixtures/format1 holds two runs made by btcli at commit c834f9c (format 1), uninterrupted,
600 steps, save_replay, checkpoints at 300 and 600: a reward-free pre-training (episodic counts,
visited marks) and a bt transfer flying its π_p.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from btcli.run_state import CHECKPOINT_FORMAT, split_episodes, upgrade_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "format1"
OLD_ROOT = "/tmp/fmt1"  # where the fixture runs were made (their provenance names it)


def _logs(run: Path) -> dict[str, pd.DataFrame]:
    wall = {"metrics.csv": ["time"], "train.csv": ["time", "sps"], "eval.csv": []}
    return {name: pd.read_csv(run / name).drop(columns=cols) for name, cols in wall.items()}


@pytest.mark.slow
@pytest.mark.parametrize("run", ["pretrain-count", "transfer-bt"])
def test_resume_from_a_format_1_checkpoint_is_exact(btcli, tmp_path, run):
    """Resumed with this btcli from the old 300-step checkpoint, each run ends with the logs the old
    btcli wrote uninterrupted: the old layout is read whole (episodes in progress, flights, episodic
    counts, replay) and the training behaviour is unchanged."""
    root = tmp_path / "runs"
    shutil.copytree(FIXTURE, root)
    pi = root / "pi"  # the transfer's pinned π_p: the pre-training's 600-step checkpoint, untouched
    shutil.copytree(root / "pretrain-count", pi)
    config = root / "transfer-bt" / "config.yaml"
    config.write_text(config.read_text().replace(f"{OLD_ROOT}/pretrain-count", str(pi)))
    target = root / run
    (target / "summary.json").unlink()
    shutil.rmtree(target / "checkpoints" / "step_000000000600", ignore_errors=True)
    command = "pretrain" if run.startswith("pretrain") else "transfer"
    proc = btcli(command, "--resume", "--out", str(target))
    assert proc.returncode == 0, proc.stderr
    assert "its episodes continued" in proc.stderr
    expected, got = _logs(FIXTURE / run), _logs(target)
    for name in expected:
        pd.testing.assert_frame_equal(got[name], expected[name], check_dtype=False, obj=f"{run}/{name}")


def test_upgrade_moves_records_and_splits_episode_parts():
    """Format 1 by hand: behaviour's flights, NGU's memories one level down, the coverage counts."""
    old = {
        "format": 1, "step": 10, "learner": {"online": {}},
        "counters": {"env_steps": 10}, "rng": {"numpy": 1}, "recent_returns": [1.0], "visited": [3],
        "train_window": {"losses": [], "qs": []}, "reference_evals": [],
        "behaviour": {"steps": [1, 2, 3], "episodes": {"n_left": [2], "kind": [1], "action": [0], "length": [1]},
                      "since_drain": {"steps": [0, 0, 0], "durations": []}},
        "intrinsic": {"idm": {"w": 1}, "memory": {"d2_mean": {"m": 0.5}, "episodes": {"sizes": [4]}}},
        "episodes": {"env": "snapshot", "loop": {"ret": [0.0]}},
    }
    new = upgrade_checkpoint(old)
    assert new["format"] == CHECKPOINT_FORMAT == 2
    assert new["record"] == {"counters": {"env_steps": 10}, "rng": {"numpy": 1}, "recent_returns": [1.0],
                             "visited": [3], "train_window": {"losses": [], "qs": []}, "reference_evals": []}
    assert "counters" not in new and new["learner"] == {"online": {}}
    assert new["behaviour"] == {"steps": [1, 2, 3], "since_drain": {"steps": [0, 0, 0], "durations": []}}
    assert new["intrinsic"] == {"idm": {"w": 1}, "memory": {"d2_mean": {"m": 0.5}}}
    assert new["episodes"]["parts"] == {"behaviour": {"n_left": [2], "kind": [1], "action": [0], "length": [1]},
                                        "intrinsic": {"memory": {"sizes": [4]}}}
    assert new["episodes"]["env"] == "snapshot" and upgrade_checkpoint(new) is new
    assert old["format"] == 1 and "counters" in old  # the caller's dict is left as it was
    assert split_episodes({"a": {"b": 1}}) == ({"a": {"b": 1}}, None)
