"""btcli compare on synthetic run directories written in the format btcli.runs produces."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from btcli import stats
from btcli.analysis import load_run, summarize_run
from btcli.compare import CompareError, collect_run_dirs, compare_runs, write_outputs
from btcli.runs import EVAL_COLUMNS, METRICS_COLUMNS

EMPTY = "MiniGrid-Empty-5x5-v0"
DOORKEY = "MiniGrid-DoorKey-5x5-v0"


def write_run(path, *, env=EMPTY, mode="scratch", seed=0, steps=1000, final=0.5, early=0.0, lr=1e-4,
              eval_return=None, finished=True, episodes=150):
    """A run directory: ``episodes`` training episodes, the last 100 returning ``final`` and the
    earlier ones ``early``, one evaluation of 3 episodes averaging ``eval_return``."""
    path.mkdir(parents=True)
    cfg = {"command": "transfer", "mode": mode, "steps": steps, "seed": seed, "threads": 1,
           "env": {"id": env, "num_envs": 4}, "agent": {"lr": lr, "gamma": 0.99},
           "intrinsic": {"objective": "none"}, "meta": {"argv": ["btcli", "transfer"]}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    ep_steps = np.linspace(steps / episodes, steps, episodes).astype(int)
    with open(path / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(METRICS_COLUMNS)
        for i, s in enumerate(ep_steps):
            ret = final if i >= episodes - 100 else early
            w.writerow([int(s), i + 1, i % 4, ret, 10, round(0.01 * i, 3), "", 5])
    if eval_return is not None:
        with open(path / "eval.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(EVAL_COLUMNS)
            for i, r in enumerate([eval_return - 0.1, eval_return, eval_return + 0.1]):
                w.writerow([steps, i, r, 12, 0.01, "", 6])
    if finished:
        summary = {"status": "complete", "steps": steps, "episodes": episodes, "final_return_mean": final,
                   "wall_time_s": 1.5, "mean_sps": 600.0}
        (path / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path


def two_groups(root, seeds=(0, 1, 2), tasks=(EMPTY, DOORKEY)):
    """scratch and bt runs on each task; bt scores higher. Returns {(mode, task, seed): final}."""
    rng = np.random.default_rng(7)
    truth = {}
    for task in tasks:
        for mode, base in (("scratch", 0.2), ("bt", 0.6)):
            for seed in seeds:
                final = round(float(base + 0.3 * rng.random()), 4)
                truth[(mode, task, seed)] = final
                write_run(root / f"{mode}-{task}-s{seed}", env=task, mode=mode, seed=seed, final=final,
                          eval_return=final + 0.05)
    return truth


# ----------------------------------------------------------------------------- statistics


def test_groups_scores_and_iqm_match_trim_mean(tmp_path):
    truth = two_groups(tmp_path / "runs")
    c = compare_runs([str(tmp_path / "runs")], metric="final", reps=300)
    assert c.groups == ["bt", "scratch"] and c.tasks == sorted([EMPTY, DOORKEY])
    assert len(c.scores) == 12 and c.scales == {EMPTY: "minmax", DOORKEY: "minmax"}
    for s in c.scores:  # final = the last 100 episodes only (the 50 before return 0)
        assert s.score == pytest.approx(truth[(s.group, s.task, s.seed)])
    for task in c.tasks:  # min-max over all runs of the task, every group together
        raw = np.array([v for (m, t, _), v in truth.items() if t == task])
        for s in (s for s in c.scores if s.task == task):
            assert s.normalised == pytest.approx((s.score - raw.min()) / (raw.max() - raw.min()))
    for r in c.results:
        norm = [s.normalised for s in c.scores if s.group == r.name]
        assert r.runs == 6 and r.runs_per_task == 3
        assert r.aggregates["iqm"].point == pytest.approx(sps.trim_mean(norm, 0.25))
        assert r.aggregates["mean"].point == pytest.approx(np.mean(norm))
        by_task = [np.mean([s.normalised for s in c.scores if s.group == r.name and s.task == t]) for t in c.tasks]
        assert r.aggregates["median"].point == pytest.approx(np.median(by_task))  # rliable: of the task means
        assert r.aggregates["optimality_gap"].point == pytest.approx(np.mean(np.maximum(1 - np.array(norm), 0)))
        for iv in r.aggregates.values():
            assert iv.lo <= iv.point + 1e-12 and iv.point <= iv.hi + 1e-12
    bt = next(r for r in c.results if r.name == "bt")
    scratch = next(r for r in c.results if r.name == "scratch")
    assert bt.aggregates["iqm"].point > scratch.aggregates["iqm"].point


def test_notes_say_when_intervals_rest_on_one_run_or_a_repeated_seed(tmp_path):
    two_groups(tmp_path / "runs")
    assert not [n for n in compare_runs([str(tmp_path / "runs")], metric="final", reps=50).notes if "seed" in n]
    two_groups(tmp_path / "one", seeds=(0,))
    c = compare_runs([str(tmp_path / "one")], metric="final", reps=50)
    assert any(n.startswith("one run per task in group(s) bt, scratch: intervals of zero width") for n in c.notes)
    assert all(r.aggregates["iqm"].lo == r.aggregates["iqm"].hi for r in c.results)  # what the note warns of
    two_groups(tmp_path / "twice", seeds=(0, 1))
    for task in (EMPTY, DOORKEY):  # a copied run directory: the same seed counted twice
        shutil.copytree(tmp_path / "twice" / f"bt-{task}-s1", tmp_path / "twice" / f"bt-{task}-copy")
        shutil.copytree(tmp_path / "twice" / f"scratch-{task}-s1", tmp_path / "twice" / f"scratch-{task}-copy")
    notes = compare_runs([str(tmp_path / "twice")], metric="final", reps=50).notes
    assert f"group bt, task {DOORKEY}: seed(s) 1 appear more than once; runs with the same seed are not " \
           "independent samples" in notes


def test_probability_of_improvement_counts_pairs_per_task(tmp_path):
    truth = two_groups(tmp_path / "runs")
    c = compare_runs([str(tmp_path / "runs")], metric="final", reps=300)
    (p,) = c.improvements
    assert (p.x, p.y) == ("bt", "scratch")
    per_task = []
    for task in c.tasks:
        xs = [v for (m, t, _), v in truth.items() if m == "bt" and t == task]
        ys = [v for (m, t, _), v in truth.items() if m == "scratch" and t == task]
        per_task.append(np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in xs for b in ys]))
    assert p.interval.point == pytest.approx(np.mean(per_task))
    assert p.interval.lo <= p.interval.point <= p.interval.hi


def test_single_task_keeps_raw_scores_and_metrics(tmp_path):
    root = tmp_path / "runs"
    for seed, (lr, final) in enumerate([(1e-4, 0.3), (1e-4, 0.5), (5e-4, 0.7), (5e-4, 0.9)]):
        write_run(root / f"r{seed}", seed=seed, lr=lr, final=final, early=0.1, eval_return=final / 2)
    c = compare_runs([str(root)], metric="final", by="agent.lr", reps=200)
    assert c.groups == ["0.0001", "0.0005"] and c.scales == {EMPTY: "raw"}
    assert [s.normalised for s in c.scores] == [s.score for s in c.scores]
    assert c.gap_threshold == pytest.approx(0.9)  # raw scale: the gap is measured below the best run
    finals = [s.score for s in c.scores]
    for metric, key in (("auc", "auc"), ("eval", "eval_return_mean")):
        c = compare_runs([str(root)], by="agent.lr", metric=metric, reps=50)
        for s, final in zip(c.scores, finals):
            assert s.score == pytest.approx(summarize_run(load_run(s.path))[key])
            assert s.score < final  # the early episodes (auc) / the eval returns are lower
    assert sorted(s.score for s in c.scores) == pytest.approx([0.15, 0.25, 0.35, 0.45])


def test_atari_scores_are_human_normalised(tmp_path):
    for seed, final in enumerate([-20.0, -5.0]):
        for mode, shift in (("scratch", 0.0), ("bt", 3.0)):
            write_run(tmp_path / f"{mode}{seed}", env="ALE/Pong-v5", mode=mode, seed=seed, final=final + shift)
    c = compare_runs([str(tmp_path)], metric="final", reps=100)
    random, human = stats.ATARI_RANDOM_HUMAN["ALE/Pong-v5"]
    assert c.scales == {"ALE/Pong-v5": "human"} and c.gap_threshold == 1.0
    for s in c.scores:
        assert s.normalised == pytest.approx((s.score - random) / (human - random))


def test_profiles_are_fractions_above_tau(tmp_path):
    two_groups(tmp_path / "runs")
    c = compare_runs([str(tmp_path / "runs")], metric="final", reps=100)
    assert c.taus[0] == 0.0 and c.taus[-1] == pytest.approx(1.0)
    for g, p in c.profiles.items():
        norm = np.array([s.normalised for s in c.scores if s.group == g])
        assert p.point == pytest.approx([(norm > t).mean() for t in c.taus])
        assert np.all(np.diff(p.point) <= 1e-12)


# ----------------------------------------------------------------------------- refusals


def test_refuses_unfinished_runs_unless_allowed(tmp_path):
    two_groups(tmp_path / "runs")
    (tmp_path / "runs" / f"bt-{EMPTY}-s1" / "summary.json").unlink()
    with pytest.raises(CompareError, match=r"1 of 12 runs are unfinished \(no summary.json\): .*bt-.*-s1; "
                                           r"pass --allow-unfinished"):
        compare_runs([str(tmp_path / "runs")], metric="final", reps=10)
    c = compare_runs([str(tmp_path / "runs")], metric="final", reps=10, allow_unfinished=True)
    assert len(c.scores) == 12 and sum(s.status == "unfinished" for s in c.scores) == 1
    assert any("unfinished" in n for n in c.notes)


def test_refuses_mixed_budgets_unless_allowed(tmp_path):
    write_run(tmp_path / "a", seed=0, steps=1000)
    write_run(tmp_path / "b", seed=1, steps=1000, mode="bt")
    write_run(tmp_path / "c", seed=2, steps=2000, mode="bt")
    with pytest.raises(CompareError, match=rf"task {EMPTY} mixes step budgets 1000 \(2 runs\), 2000 \(1 run\); "
                                           "pass --allow-mixed"):
        compare_runs([str(tmp_path)], metric="final", reps=10)
    # allowed, the groups still need the same number of runs on every task: one task here
    c = compare_runs([str(tmp_path)], metric="final", reps=10, allow_mixed=True)
    assert [r.runs for r in c.results] == [2, 1]
    # --by steps compares budgets on purpose
    assert compare_runs([str(tmp_path)], metric="final", by="steps", reps=10).groups == ["1000", "2000"]


def test_refuses_a_task_missing_from_a_group(tmp_path):
    two_groups(tmp_path / "runs")
    write_run(tmp_path / "runs" / "extra", env="MiniGrid-FourRooms-v0", mode="scratch")
    with pytest.raises(CompareError, match="group 'bt' has no runs on task MiniGrid-FourRooms-v0; stratified"):
        compare_runs([str(tmp_path / "runs")], metric="final", reps=10)


def test_refuses_uneven_runs_per_task(tmp_path):
    two_groups(tmp_path / "runs")
    write_run(tmp_path / "runs" / "extra", env=EMPTY, mode="bt", seed=9)
    with pytest.raises(CompareError, match=rf"group 'bt' has different numbers of runs per task \(3 on {DOORKEY}, "
                                           rf"4 on {EMPTY}\)"):
        compare_runs([str(tmp_path / "runs")], metric="final", reps=10)


def test_eval_metric_uses_only_the_runs_own_evaluations(tmp_path):
    """A run trained without evaluations and evaluated once by `btcli evaluate` (another epsilon,
    one episode) is not scored on that: report names the source, compare --metric eval refuses."""
    for seed in (0, 1):
        write_run(tmp_path / "runs" / f"r{seed}", seed=seed, eval_return=0.5)
    adhoc = write_run(tmp_path / "runs" / "r2", seed=2)
    with open(adhoc / "eval.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(EVAL_COLUMNS)
        w.writerow([1000, 0, 3.0, 12, 0.2, "step_000000001000", ""])
    s = summarize_run(load_run(adhoc))
    assert s["eval_return_mean"] == 3.0 and s["eval_source"] == "btcli evaluate, epsilon 0.2"
    assert summarize_run(load_run(tmp_path / "runs" / "r0"))["eval_source"] == "training"
    with pytest.raises(CompareError, match=r"1 run\(s\) have no 'eval' score .*btcli evaluate's rows do not count"):
        compare_runs([str(tmp_path / "runs")], metric="eval", reps=10)
    assert len(compare_runs([str(tmp_path / "runs")], metric="final", reps=10).scores) == 3


def test_refuses_no_runs_unknown_key_and_missing_metric(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match="no btcli runs matched"):
        compare_runs([str(tmp_path / "empty"), str(tmp_path / "nothing-*")], metric="final")
    with pytest.raises(CompareError, match="does not exist"):
        compare_runs([str(tmp_path / "missing")], metric="final")
    write_run(tmp_path / "a")
    with pytest.raises(CompareError, match="has no config key 'agent.width'"):
        compare_runs([str(tmp_path / "a")], metric="final", by="agent.width")
    with pytest.raises(CompareError, match=r"1 run\(s\) have no 'eval' score \(no evaluation episodes of their own"):
        compare_runs([str(tmp_path / "a")], metric="eval")
    with pytest.raises(CompareError, match="unknown --metric 'best'"):
        compare_runs([str(tmp_path / "a")], metric="best")


def test_globs_folders_and_files(tmp_path):
    two_groups(tmp_path / "runs", tasks=(EMPTY,))
    (tmp_path / "runs" / "logs").mkdir()
    (tmp_path / "runs" / "logs" / "x.log").write_text("log")
    (tmp_path / "runs" / "notes.txt").write_text("not a run")
    dirs, notes = collect_run_dirs([str(tmp_path / "runs" / "*")])
    assert len(dirs) == 6 and notes == ["skipped 1 path(s) that are files, not run directories"]
    again, _ = collect_run_dirs([str(tmp_path / "runs"), str(tmp_path / "runs" / "bt-*")])
    assert sorted(again) == sorted(dirs)  # a folder and an overlapping glob: each run once


# ----------------------------------------------------------------------------- outputs


def test_files_written(tmp_path):
    two_groups(tmp_path / "runs")
    c = compare_runs([str(tmp_path / "runs")], metric="final", reps=100)
    files = write_outputs(c, tmp_path / "out")
    names = {p.name for p in files.values()}
    assert names == {"aggregates.csv", "poi.csv", "scores.csv", "profiles.csv", "compare.md",
                     "learning_curves.png", "intervals.png", "profiles.png"}
    for p in files.values():
        assert p.parent == tmp_path / "out" and p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(files["aggregates"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 4
    iqm_bt = next(r for r in rows if r["group"] == "bt" and r["statistic"] == "iqm")
    assert float(iqm_bt["point"]) == pytest.approx(next(r for r in c.results if r.name == "bt").aggregates["iqm"].point)
    with open(files["scores"]) as fh:
        assert len(list(csv.DictReader(fh))) == 12
    md = files["markdown"].read_text()
    assert "min-max normalised over all runs of the task" in md and "](intervals.png)" in md
    assert "| bt | 6 |" in md and not list((tmp_path / "out").glob(".*.tmp"))


def test_cli_json_and_table(tmp_path, btcli):
    two_groups(tmp_path / "runs")
    proc = btcli("compare", "--metric", "final", str(tmp_path / "runs" / "*"), "--json", "--reps", "200", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["runs"] == 12 and data["by"] == "mode" and data["metric"] == "final"
    assert [g["name"] for g in data["groups"]] == ["bt", "scratch"]
    for g in data["groups"]:
        assert set(g) >= {"median", "iqm", "mean", "optimality_gap", "runs"}
        assert g["iqm"]["lo"] <= g["iqm"]["point"] <= g["iqm"]["hi"]
    (poi,) = data["probability_of_improvement"]
    assert poi["x"] == "bt" and poi["point"] > 0.5
    assert len(data["profiles"]["taus"]) == len(data["profiles"]["groups"]["bt"]["point"])
    assert len(data["scores"]) == 12 and set(data["files"]) >= {"markdown", "intervals", "learning_curves"}
    assert "compared 12 runs in 2 group(s) by mode on 2 task(s)" in proc.stderr

    table = btcli("compare", "--metric", "final", str(tmp_path / "runs"), "--reps", "100", "--out", str(tmp_path / "o2"))
    assert table.returncode == 0, table.stderr
    assert "compared 12 runs" in table.stdout and "IQM" in table.stdout and "P(X > Y)" in table.stdout
    assert (tmp_path / "o2" / "compare.md").exists()

    (tmp_path / "runs" / f"bt-{EMPTY}-s0" / "summary.json").unlink()
    bad = btcli("compare", "--metric", "final", str(tmp_path / "runs"), "--out", str(tmp_path / "o3"))
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("btcli: error: 1 of 12 runs are unfinished")
    assert not (tmp_path / "o3").exists()
