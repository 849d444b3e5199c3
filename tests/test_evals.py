"""Learner-only evaluation scores and π_p's zero-shot reference, against values computed by hand."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
import yaml

from btcli import evals
from btcli.analysis import load_run, summarize_run
from btcli.compare import REFERENCE, compare_runs
from btcli.runs import EVAL_COLUMNS, METRICS_COLUMNS

TASK = "MiniGrid-SmallFourRoomsFar-v0"
OTHER = "MiniGrid-SmallFourRooms-v0"


def frame(rows):
    return pd.DataFrame(rows, columns=EVAL_COLUMNS)


def test_eval_auc_weights_each_evaluation_by_the_steps_it_stands_for():
    c = pd.DataFrame({"step": [20.0, 40.0, 100.0], "mean": [0.0, 0.5, 1.0]})
    # (0 * 20 + 0.5 * 20 + 1.0 * 60) / 100 = 0.7
    assert evals.eval_auc(c) == pytest.approx(0.7)
    even = pd.DataFrame({"step": [10.0, 20.0, 30.0, 40.0], "mean": [0.1, 0.2, 0.6, 0.9]})
    assert evals.eval_auc(even) == pytest.approx((0.1 + 0.2 + 0.6 + 0.9) / 4)  # evenly spaced: the plain mean
    assert evals.eval_last(even, 3) == pytest.approx((0.2 + 0.6 + 0.9) / 3)
    assert evals.eval_last(even, 10) == pytest.approx(0.45)
    assert evals.eval_auc(evals.curve(frame([]))) is None


def test_training_rows_pick_the_policy_task_and_loop_rows():
    e = frame([
        [100, 0, 1.0, 5, 0.01, "", 3, "learner", TASK],
        [100, 1, 0.0, 5, 0.01, "", 3, "learner", TASK],
        [100, 0, 0.8, 5, 0.01, "", 3, "pretrained", TASK],
        [100, 0, 0.3, 5, 0.2, "step_000000000100", 3, "learner", TASK],  # btcli evaluate
        [100, 0, 0.9, 5, 0.01, "step_000000000100", 3, "learner", OTHER],  # btcli evaluate --env
        [200, 0, 0.5, 5, 0.01, None, 3, None, None],  # a row from before the policy/env columns
    ])
    learner = evals.training_rows(e, TASK)
    assert list(learner["return"]) == [1.0, 0.0, 0.5]
    assert list(evals.training_rows(e, TASK, evals.PRETRAINED)["return"]) == [0.8]
    c = evals.curve(learner)
    assert list(c["step"]) == [100.0, 200.0] and list(c["mean"]) == [0.5, 0.5] and list(c["episodes"]) == [2, 1]
    assert list(evals.training_rows(e, TASK, loop_only=False)["return"]) == [1.0, 0.0, 0.3, 0.5]


def write_run(path, *, mode, seed, sha, learner_evals, pi_evals, steps=300):
    """A finished run: ``learner_evals`` / ``pi_evals`` map an eval step to its episodes' returns."""
    path.mkdir(parents=True)
    cfg = {"command": "transfer", "mode": mode, "steps": steps, "seed": seed, "env": {"id": TASK, "num_envs": 1},
           "intrinsic": {"objective": "none"}}
    if sha:
        cfg["provenance"] = {"pretrained": {"sha256": sha * 64, "run": f"runs/pt-{sha}"}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    with open(path / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(METRICS_COLUMNS)
        w.writerow([steps, 1, 0, 0.9, 10, 1.0, "", 4, 0.5, 0.5 if mode.startswith("bt") else 0, 0])
    with open(path / "eval.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(EVAL_COLUMNS)
        for policy, table in (("learner", learner_evals), ("pretrained", pi_evals)):
            for step, returns in table.items():
                for k, r in enumerate(returns):
                    w.writerow([step, k, r, 10, 0.01, "", 4, policy, TASK])
    (path / "summary.json").write_text(json.dumps({"status": "complete", "steps": steps}))
    return path


def test_summary_and_compare_use_learner_metrics_and_the_zero_shot_reference(tmp_path):
    """Two π_p (a and b), each used by one bt and one ft run; every score by hand."""
    root = tmp_path / "runs"
    write_run(root / "bt-s0", mode="bt", seed=0, sha="a", learner_evals={100: [0, 0], 200: [1, 0], 300: [1, 1]},
              pi_evals={100: [0.5, 0.5], 200: [0.5, 0.5], 300: [0.5, 0.5]})
    write_run(root / "bt-s1", mode="bt", seed=1, sha="b", learner_evals={100: [0, 0], 200: [0, 0], 300: [0, 1]},
              pi_evals={100: [0.2, 0.2], 200: [0.2, 0.4], 300: [0.4, 0.4]})
    write_run(root / "ft-s0", mode="ft", seed=0, sha="a", learner_evals={100: [1, 1], 200: [1, 1], 300: [1, 1]},
              pi_evals={100: [0.7, 0.7], 200: [0.7, 0.7], 300: [0.7, 0.7]})
    write_run(root / "ft-s1", mode="ft", seed=1, sha="b", learner_evals={100: [0, 0], 200: [0, 0], 300: [0, 0]},
              pi_evals={100: [0.2, 0.2], 200: [0.2, 0.2], 300: [0.2, 0.2]})
    s = summarize_run(load_run(root / "bt-s0"), eval_last=2)
    assert s["eval_auc"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert s["eval_last_mean"] == pytest.approx((0.5 + 1) / 2) and s["eval_last_k"] == 2
    assert s["pretrained_eval_mean"] == pytest.approx(0.5) and s["pretrained_eval_episodes"] == 6
    assert s["training_includes_pretrained"] and not summarize_run(load_run(root / "ft-s0"))["training_includes_pretrained"]

    c = compare_runs([str(root)], metric="eval-auc", reps=200)
    assert c.groups == ["bt", "ft", REFERENCE]
    by = {(x.group, x.seed): x.score for x in c.scores}
    assert by[("bt", 1)] == pytest.approx((0 + 0 + 0.5) / 3)
    # π_p a: its 12 episodes over the runs bt-s0 and ft-s0 pooled; π_p b: its 12 over bt-s1 and ft-s1
    assert by[(REFERENCE, "a" * 12)] == pytest.approx((6 * 0.5 + 6 * 0.7) / 12)
    assert by[(REFERENCE, "b" * 12)] == pytest.approx((9 * 0.2 + 3 * 0.4) / 12)
    assert len([x for x in c.scores if x.group == REFERENCE]) == 2
    assert not c.includes_flights and any(n.startswith(REFERENCE) for n in c.notes)
    assert compare_runs([str(root)], metric="eval-last", eval_last=1, reps=50).scores[0].score == \
        pytest.approx(1.0)  # bt-s0's last evaluation
    assert REFERENCE not in compare_runs([str(root)], metric="eval-auc", reps=50, reference=False).groups
    final = compare_runs([str(root)], metric="final", reps=50)
    assert final.includes_flights and "incl. π_p's flights" in final.metric_label
    assert any("include π_p's flights" in n for n in final.notes)


def test_groups_by_several_keys_and_by_tag(tmp_path):
    from pathlib import Path

    from btcli.compare import CompareError, group_label

    cfg = {"mode": "scratch", "steps": 160000, "tag": "", "agent": {"lr": 1e-4}}
    assert group_label(cfg, "mode,steps", Path("r")) == "scratch/160000"
    assert group_label(cfg, "tag", Path("r")) == "scratch"  # untagged: its mode
    assert group_label(cfg | {"tag": "scratch+pt-budget"}, "tag", Path("r")) == "scratch+pt-budget"
    assert group_label(cfg, "mode, agent.lr", Path("r")) == "scratch/0.0001"
    with pytest.raises(CompareError, match="no config key 'agent.width'"):
        group_label(cfg, "mode,agent.width", Path("r"))
