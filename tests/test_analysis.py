"""Tests for btcli.analysis on synthetic run directories (no training involved)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from btcli.analysis import (
    RunData,
    RunDirError,
    learning_curve,
    load_run,
    render_summary_table,
    report_run,
    summarize_run,
)


def make_run(
    root,
    *,
    steps=100,
    returns=None,
    ep_steps=None,
    metrics=None,
    train=None,
    evals=None,
    summary=None,
    config=None,
):
    """Write a synthetic run directory. ``returns``/``ep_steps`` build metrics.csv;
    ``metrics``/``train``/``evals`` (DataFrames) are written as given; None = file absent."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = {
        "command": "transfer",
        "mode": "scratch",
        "seed": 3,
        "steps": steps,
        "env": {"id": "MiniGrid-Empty-5x5-v0", "num_envs": 2},
        "agent": {"lr": 0.001, "gamma": 0.99, "batch_size": 32},
        "meta": {"argv": ["btcli", "transfer", "--seed", "3"], "git_commit": "abc123"},
    }
    cfg.update(config or {})
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    if returns is not None:
        n = len(returns)
        if ep_steps is None:
            ep_steps = np.linspace(steps / n, steps, n).astype(int)
        metrics = pd.DataFrame(
            {
                "step": ep_steps,
                "episode": np.arange(1, n + 1),
                "env_index": np.arange(n) % 2,
                "return": np.asarray(returns, dtype=float),
                "length": np.full(n, 10),
                "time": np.arange(1, n + 1) * 0.5,
            }
        )
    if metrics is not None:
        metrics.to_csv(root / "metrics.csv", index=False)
    if train is not None:
        train.to_csv(root / "train.csv", index=False)
    if evals is not None:
        evals.to_csv(root / "eval.csv", index=False)
    if summary is not None:
        (root / "summary.json").write_text(json.dumps(summary))
    return root


def _assert_plain_json(obj):
    """Only plain Python types, no NaN/inf anywhere."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) is str
            _assert_plain_json(v)
    elif isinstance(obj, list):
        for v in obj:
            _assert_plain_json(v)
    else:
        assert obj is None or type(obj) in (str, int, float, bool), (obj, type(obj))
        if type(obj) is float:
            assert math.isfinite(obj)


# ---------------------------------------------------------------------------- figures


def test_return_last_and_best_mean_by_hand(tmp_path):
    # Rows written out of step order: the analysis must order episodes by step.
    rets = [10.0, 0.0, 8.0, 2.0, 3.0, 4.0]
    steps = [10, 20, 30, 40, 50, 60]
    order = [3, 0, 5, 1, 4, 2]
    m = pd.DataFrame(
        {
            "step": [steps[i] for i in order],
            "episode": [i + 1 for i in order],
            "env_index": 0,
            "return": [rets[i] for i in order],
            "length": 5,
            "time": [float(i) for i in order],
        }
    )
    s = summarize_run(load_run(make_run(tmp_path / "r", steps=60, metrics=m)), window=3)
    assert s["episodes"] == 6
    assert s["return_last_n"] == 3
    assert s["return_last_mean"] == pytest.approx((2 + 3 + 4) / 3)
    # rolling means over 3: 6, 10/3, 13/3, 3 -> best is 6
    assert s["return_best_mean"] == pytest.approx(6.0)
    assert s["steps_done"] == 60 and s["steps_budget"] == 60


def test_window_larger_than_run_uses_all_episodes(tmp_path):
    s = summarize_run(load_run(make_run(tmp_path / "r", returns=[1.0, 2.0, 6.0])), window=100)
    assert s["return_last_n"] == 3
    assert s["return_last_mean"] == pytest.approx(3.0)
    assert s["return_best_mean"] == pytest.approx(3.0)
    assert any("window" in n for n in s["notes"])


def test_auc_by_hand(tmp_path):
    # budget 100 -> 20 bins of width 5, left-closed; step 5 is in bin 1; 100 and the
    # overshoot 120 are in the last bin.
    steps = [2, 4, 5, 7, 9, 100, 120]
    rets = [1.0, 3.0, 0.0, 10.0, 5.0, 4.0, 8.0]
    s = summarize_run(load_run(make_run(tmp_path / "r", steps=100, returns=rets, ep_steps=steps)))
    # bin 0: mean(1, 3) = 2; bin 1: mean(0, 10, 5) = 5; bin 19: mean(4, 8) = 6
    assert s["auc"] == pytest.approx((2 + 5 + 6) / 3)
    assert s["auc_bins"] == 3
    # the unweighted episode mean (31/7) differs: the bin definition matters
    assert s["auc"] != pytest.approx(np.mean(rets))


def test_auc_none_without_budget(tmp_path):
    s = summarize_run(load_run(make_run(tmp_path / "r", returns=[1.0, 2.0], config={"steps": None})))
    assert s["auc"] is None and s["steps_budget"] is None
    assert s["return_last_mean"] == pytest.approx(1.5)


def test_bootstrap_ci_contains_mean_and_shrinks(tmp_path):
    rng = np.random.default_rng(123)
    small = rng.normal(5.0, 2.0, size=20)
    large = rng.normal(5.0, 2.0, size=2000)
    s_small = summarize_run(load_run(make_run(tmp_path / "a", steps=10_000, returns=small)), window=20)
    s_large = summarize_run(load_run(make_run(tmp_path / "b", steps=10_000, returns=large)), window=2000)
    for s in (s_small, s_large):
        lo, hi = s["return_last_ci95"]
        assert lo < s["return_last_mean"] < hi
    w_small = s_small["return_last_ci95"][1] - s_small["return_last_ci95"][0]
    w_large = s_large["return_last_ci95"][1] - s_large["return_last_ci95"][0]
    assert w_large < w_small / 5  # ~ sqrt(100) = 10x narrower in expectation
    # fixed RNG seed: deterministic
    again = summarize_run(load_run(tmp_path / "a"), window=20)
    assert again["return_last_ci95"] == s_small["return_last_ci95"]


def test_ci_none_with_one_episode(tmp_path):
    s = summarize_run(load_run(make_run(tmp_path / "r", returns=[7.0])))
    assert s["return_last_mean"] == pytest.approx(7.0)
    assert s["return_last_ci95"] is None


# ---------------------------------------------------------------------------- honesty


def test_status_unfinished_without_summary_json(tmp_path):
    s = summarize_run(load_run(make_run(tmp_path / "r", returns=[1.0, 2.0])))
    assert s["status"] == "unfinished"
    assert any("summary.json" in n for n in s["notes"])
    assert s["mean_sps"] is None  # no summary, no train.csv: nothing to report


def test_status_complete_and_summary_figures_used(tmp_path):
    summ = {"status": "complete", "steps": 100, "wall_time_s": 12.5, "mean_sps": 8.0}
    s = summarize_run(load_run(make_run(tmp_path / "r", returns=[1.0, 2.0], summary=summ)))
    assert s["status"] == "complete"
    assert s["wall_time_s"] == pytest.approx(12.5)
    assert s["mean_sps"] == pytest.approx(8.0)


def test_corrupt_summary_json_is_unfinished(tmp_path):
    root = make_run(tmp_path / "r", returns=[1.0, 2.0])
    (root / "summary.json").write_text('{"status": "compl')
    s = summarize_run(load_run(root))
    assert s["status"] == "unfinished"


def test_missing_eval_gives_none(tmp_path):
    s = summarize_run(load_run(make_run(tmp_path / "r", returns=[1.0, 2.0, 3.0])))
    for k in ("eval_return_mean", "eval_return_std", "eval_episodes", "eval_step"):
        assert s[k] is None, k


def test_eval_uses_last_eval_step(tmp_path):
    ev = pd.DataFrame(
        {
            "step": [50, 50, 100, 100, 100],
            "episode": [1, 2, 1, 2, 3],
            "return": [100.0, 100.0, 1.0, 2.0, 6.0],
            "length": 10,
            "epsilon": 0.05,
            "checkpoint": ["c50", "c50", "c100", "c100", "c100"],
        }
    )
    s = summarize_run(load_run(make_run(tmp_path / "r", returns=[1.0, 2.0], evals=ev)))
    assert s["eval_step"] == 100
    assert s["eval_episodes"] == 3
    assert s["eval_return_mean"] == pytest.approx(3.0)
    assert s["eval_return_std"] == pytest.approx(np.std([1.0, 2.0, 6.0], ddof=1))


def test_mean_sps_and_wall_time_from_train_csv(tmp_path):
    train = pd.DataFrame(
        {
            "step": [10, 20, 30],
            "time": [1.0, 2.0, 40.0],
            "sps": [np.nan, 100.0, 300.0],
            "epsilon": [1.0, 0.5, 0.1],
            "loss": [np.nan, 0.3, 0.2],
            "q_mean": [np.nan, 1.0, 2.0],
            "updates": [0, 5, 10],
            "replay_size": [10, 20, 30],
        }
    )
    s = summarize_run(load_run(make_run(tmp_path / "r", returns=[1.0], train=train)))
    # 30 steps in 40 s: total steps over total time, not the mean of the per-row rates (200)
    assert s["mean_sps"] == pytest.approx(30 / 40.0)
    assert s["wall_time_s"] == pytest.approx(40.0)
    assert s["steps_done"] == 100  # metrics' last episode (budget 100) beats train's 30


def test_header_only_and_extra_columns(tmp_path):
    empty_metrics = pd.DataFrame(columns=["step", "episode", "env_index", "return", "length", "time"])
    ev_header = pd.DataFrame(columns=["step", "episode", "return", "length", "epsilon", "checkpoint"])
    run = load_run(make_run(tmp_path / "a", metrics=empty_metrics, evals=ev_header))
    s = summarize_run(run)
    assert run.metrics.empty and list(run.metrics.columns)[:2] == ["step", "episode"]
    assert s["episodes"] == 0
    assert s["return_last_mean"] is None and s["return_best_mean"] is None
    assert s["auc"] is None and s["steps_done"] is None and s["eval_episodes"] is None
    assert learning_curve(run).empty

    # later versions may add columns: kept, not fatal
    m = pd.DataFrame(
        {"step": [5, 10], "episode": [1, 2], "env_index": [0, 1], "return": [1.0, 3.0],
         "length": [5, 5], "time": [0.1, 0.2], "intrinsic_return": [0.5, np.nan]}
    )
    run = load_run(make_run(tmp_path / "b", steps=10, metrics=m))
    assert "intrinsic_return" in run.metrics.columns
    assert summarize_run(run)["return_last_mean"] == pytest.approx(2.0)


def test_torn_last_line_is_ignored(tmp_path):
    root = make_run(tmp_path / "r", steps=30, returns=[1.0, 2.0], ep_steps=[10, 20])
    with open(root / "metrics.csv", "a") as f:
        f.write("30,3,0,12")  # process killed mid-write: return may be truncated
    run = load_run(root)
    assert len(run.metrics) == 2
    assert summarize_run(run)["return_last_mean"] == pytest.approx(1.5)


def test_summary_is_strict_json(tmp_path):
    m = pd.DataFrame(
        {"step": [1, 2, np.nan, 4], "episode": [1, 2, 3, 4], "env_index": [0, 0, 0, 0],
         "return": [1.0, np.nan, 3.0, 4.0], "length": [1, 2, 3, 4], "time": [np.nan] * 4,
         "coverage": [np.nan] * 4}
    )
    train = pd.DataFrame({"step": [1], "time": [np.nan], "sps": [np.nan], "loss": [np.nan]})
    summ = {"status": "complete", "wall_time_s": float("nan"), "mean_sps": None}
    s = summarize_run(load_run(make_run(tmp_path / "r", steps=4, metrics=m, train=train, summary=summ)))
    text = json.dumps(s, allow_nan=False)
    _assert_plain_json(json.loads(text))
    _assert_plain_json(s)
    assert s["episodes"] == 2  # rows with missing step or return are not episodes
    assert s["wall_time_s"] is None and s["mean_sps"] is None


# ---------------------------------------------------------------------------- loading errors


def test_load_run_without_config_raises_one_line(tmp_path):
    d = tmp_path / "not_a_run"
    d.mkdir()
    with pytest.raises(RunDirError) as info:
        load_run(d)
    msg = str(info.value)
    from btcli.errors import BtcliError
    from btcli.runs import RunDirError as WritingError

    assert isinstance(info.value, BtcliError) and RunDirError is WritingError  # one error for run directories
    assert "\n" not in msg
    assert msg.startswith(f"'{d}' is not a btcli run directory (no config.yaml)")


def test_load_run_unreadable_config_raises_one_line(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "config.yaml").write_text("a: [1, 2\nb: {\n")
    with pytest.raises(RunDirError) as info:
        load_run(d)
    assert "\n" not in str(info.value) and "config.yaml" in str(info.value)
    with pytest.raises(RunDirError):
        load_run(tmp_path / "does_not_exist")


# ---------------------------------------------------------------------------- outputs


def test_learning_curve_columns_and_band(tmp_path):
    rng = np.random.default_rng(0)
    run = load_run(make_run(tmp_path / "r", steps=1000, returns=rng.normal(size=200)))
    curve = learning_curve(run, bins=10)
    assert list(curve.columns[:4]) == ["step", "return_mean", "return_lo", "return_hi"]
    assert len(curve) == 10 and curve["n"].sum() == 200
    assert (curve["return_lo"] <= curve["return_mean"]).all()
    assert (curve["return_mean"] <= curve["return_hi"]).all()
    assert curve["step"].is_monotonic_increasing and curve["step"].max() <= 1000


def test_report_run_writes_png_and_markdown(tmp_path):
    ev = pd.DataFrame(
        {"step": [50, 50, 100, 100], "episode": [1, 2, 1, 2], "return": [1.0, 2.0, 3.0, 5.0],
         "length": 10, "epsilon": 0.0, "checkpoint": "ckpt"}
    )
    root = make_run(tmp_path / "r", returns=np.arange(40, dtype=float), evals=ev)
    s = report_run(root)
    png = root / "report.png"
    md = root / "report.md"
    assert s["files"] == {"plot": str(png), "markdown": str(md)}
    data = png.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "](report.png)" in text
    assert "unfinished" in text.lower()  # no summary.json: the report must say so
    assert "agent.lr" in text and "MiniGrid-Empty-5x5-v0" in text
    json.dumps(s, allow_nan=False)
    assert not list(root.glob("*.tmp"))


def test_report_run_no_write_and_empty_run(tmp_path):
    root = make_run(tmp_path / "r")  # config only: nothing logged yet
    s = report_run(root, write_files=False)
    assert s["files"] == {} and not (root / "report.png").exists()
    s = report_run(root)  # plotting an empty run must still work
    assert (root / "report.png").stat().st_size > 0
    assert s["episodes"] == 0 and s["return_last_mean"] is None


def test_report_run_in_a_read_only_directory_is_one_line(tmp_path, monkeypatch):
    import btcli.analysis as analysis

    root = make_run(tmp_path / "r", returns=np.arange(5, dtype=float))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(analysis, "plot_learning_curve", refuse)
    with pytest.raises(analysis.RunDirError, match=r"cannot write the report files .*Permission denied.*--no-files"):
        report_run(root)
    assert report_run(root, write_files=False)["episodes"] == 5  # what --no-files prints


def test_report_of_a_folder_skips_a_damaged_run(tmp_path, btcli):
    make_run(tmp_path / "runs" / "good", returns=np.arange(6, dtype=float))
    make_run(tmp_path / "runs" / "bad", returns=np.arange(6, dtype=float))
    (tmp_path / "runs" / "bad" / "config.yaml").write_text("steps: [1\n")
    proc = btcli("report", str(tmp_path / "runs"), "--json", "--no-files")
    assert proc.returncode == 0, proc.stderr
    assert [s["path"] for s in json.loads(proc.stdout)] == [str(tmp_path / "runs" / "good")]
    assert proc.stderr.startswith(f"warning: skipped '{tmp_path / 'runs' / 'bad'}'")
    alone = btcli("report", str(tmp_path / "runs" / "bad"))
    assert alone.returncode == 2 and alone.stderr.startswith("btcli: error: ")


def test_render_summary_table(tmp_path):
    from rich.console import Console

    s = summarize_run(load_run(make_run(tmp_path / "r", returns=[1.0, 2.0])))
    table = render_summary_table(s)
    assert table.row_count >= 10
    console = Console(record=True, width=120)
    console.print(table)
    out = console.export_text()
    assert "unfinished" in out and "MiniGrid-Empty-5x5-v0" in out
    assert isinstance(load_run(tmp_path / "r"), RunData)


def test_evaluate_command_rows_do_not_mix_into_training_evals(tmp_path):
    import pandas as pd
    import yaml

    from btcli.analysis import load_run, summarize_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"command": "transfer", "mode": "scratch", "seed": 0,
                                                     "steps": 100, "env": {"id": "MiniGrid-Empty-5x5-v0"}}))
    pd.DataFrame({"step": [100, 100, 100, 100], "episode": [0, 1, 0, 1], "return": [1.0, 3.0, 10.0, 20.0],
                  "length": [5] * 4, "epsilon": [0.001] * 4,
                  "checkpoint": ["", "", "step_000000000100", "step_000000000100"]}).to_csv(run / "eval.csv", index=False)
    summary = summarize_run(load_run(run))
    assert summary["eval_return_mean"] == 2.0 and summary["eval_episodes"] == 2


def test_report_a_folder_of_runs(tmp_path, btcli):
    import json

    from btcli.analysis import find_run_dirs

    make_run(tmp_path / "sweep" / "a", returns=[1.0, 2.0])
    make_run(tmp_path / "sweep" / "b", returns=[3.0, 5.0])
    (tmp_path / "sweep" / "notes").mkdir()
    assert find_run_dirs(tmp_path / "sweep") == [tmp_path / "sweep" / "a", tmp_path / "sweep" / "b"]
    assert find_run_dirs(tmp_path / "sweep" / "a") == [tmp_path / "sweep" / "a"]
    proc = btcli("report", str(tmp_path / "sweep"), "--json")
    assert proc.returncode == 0, proc.stderr
    summaries = json.loads(proc.stdout)
    assert [s["return_last_mean"] for s in summaries] == [1.5, 4.0]
    assert (tmp_path / "sweep" / "b" / "report.png").exists()
    table = btcli("report", str(tmp_path / "sweep"), "--no-files")
    assert "2 runs" in table.stdout and "4" in table.stdout
    empty = btcli("report", str(tmp_path / "sweep" / "notes"))
    assert empty.returncode == 2 and "no btcli run directories" in empty.stderr


# ---------------------------------------------------------------------------- coverage, flights, pre-training

SHA = "0123456789abcdef" * 4
PROVENANCE = {"run": "/runs/pt-count-s0", "checkpoint": "/runs/pt-count-s0/checkpoints/step_50000",
              "sha256": SHA, "command": "pretrain", "objective": "count", "step": 50000,
              "env_id": "MiniGrid-Empty-5x5-v0"}


def bt_metrics(coverage=(3.0, 5.0, np.nan, 7.0), share_pretrained=(0.0, 0.5, 0.1, 0.75),
               share_random=(0.0, 0.0, 0.1, 0.0), intrinsic=(np.nan,) * 4):
    """Four episodes in the current metrics.csv format; learner share = the rest."""
    sp, sr = np.asarray(share_pretrained, dtype=float), np.asarray(share_random, dtype=float)
    return pd.DataFrame(
        {"step": [25, 50, 75, 100], "episode": [1, 2, 3, 4], "env_index": [0, 1, 0, 1],
         "return": [0.0, 1.0, 0.0, 2.0], "length": [10, 30, 20, 40], "time": [1.0, 2.0, 3.0, 4.0],
         "intrinsic_return": list(intrinsic), "coverage": list(coverage),
         "share_learner": 1.0 - sp - sr, "share_pretrained": sp, "share_random": sr}
    )


def rows_of(summary):
    from btcli.run_render import _summary_rows

    return dict(_summary_rows(summary))


def bt_config():
    return {"mode": "bt", "provenance": {"pretrained": PROVENANCE}}


def test_unfinished_transfer_figures_from_metrics_and_config(tmp_path):
    run = load_run(make_run(tmp_path / "r", metrics=bt_metrics(), config=bt_config()))
    s = summarize_run(run, window=3)
    # last 3 episodes' coverage: 5, (empty), 7
    assert s["coverage_last_mean"] == pytest.approx(6.0)
    assert s["coverage_total"] is None and s["intrinsic_last_mean"] is None
    # shares weighted by length 10, 30, 20, 40: learner (10 + 15 + 16 + 10) / 100, ...
    assert s["behaviour_share"] == pytest.approx({"learner": 0.51, "pretrained": 0.47, "random": 0.02})
    assert s["behaviour_share"]["learner"] != pytest.approx(np.mean([1.0, 0.5, 0.8, 0.25]))
    assert s["flights"] is None and s["flight_len_mean"] is None and s["flight_len_max"] is None
    assert s["pretrained"] == {"run": "/runs/pt-count-s0", "step": 50000, "objective": "count",
                               "sha256": "0123456789ab"}
    _assert_plain_json(json.loads(json.dumps(s, allow_nan=False)))

    rows = rows_of(s)
    assert rows["behaviour share"] == "learner 0.51 / π_p 0.47 / random 0.02"
    assert rows["coverage, last 3 episodes"] == "6"  # no summary.json: no run total
    assert rows["pre-trained run"] == "/runs/pt-count-s0 @ step 50,000 (count, sha 0123456789ab…)"
    assert "flights" not in rows
    assert not any(label.startswith("intrinsic") for label in rows)


def test_summary_json_exploration_figures_take_precedence(tmp_path):
    other = {**PROVENANCE, "run": "/elsewhere", "sha256": "f" * 64}
    summ = {"status": "complete", "steps": 100, "objective": "none", "coverage_total": 37,
            "behaviour_share": {"learner": 0.6, "pretrained": 0.3, "random": 0.1},
            "flights": 12, "flight_len_mean": 4.5, "flight_len_max": 17, "pretrained": PROVENANCE}
    cfg = {"mode": "bt", "provenance": {"pretrained": other}}
    s = summarize_run(load_run(make_run(tmp_path / "r", metrics=bt_metrics(), summary=summ, config=cfg)))
    assert s["behaviour_share"] == {"learner": 0.6, "pretrained": 0.3, "random": 0.1}
    assert (s["flights"], s["flight_len_mean"], s["flight_len_max"]) == (12, 4.5, 17)
    assert s["coverage_total"] == 37
    assert s["coverage_last_mean"] == pytest.approx(5.0)  # window 100 > 4 episodes: mean of 3, 5, 7
    assert s["pretrained"]["run"] == "/runs/pt-count-s0" and s["pretrained"]["sha256"] == SHA[:12]

    rows = rows_of(s)
    assert rows["flights"] == "12 (mean len 4.5, max 17)"
    assert rows["coverage, last 4 episodes"] == "5  (37 distinct over the run)"
    assert rows["behaviour share"] == "learner 0.60 / π_p 0.30 / random 0.10"


def test_pretraining_run_reports_intrinsic_return(tmp_path):
    m = bt_metrics(share_pretrained=[0.0] * 4, share_random=[0.2, 0.1, 0.0, 0.0], intrinsic=[4.0, 2.0, 1.0, 3.0])
    summ = {"status": "complete", "objective": "count", "coverage_total": 9, "pretrained": None,
            "behaviour_share": {"learner": 0.9, "pretrained": 0.0, "random": 0.1}, "flights": 0,
            "flight_len_mean": None, "flight_len_max": None}
    s = summarize_run(load_run(make_run(tmp_path / "r", metrics=m, summary=summ, config={"command": "pretrain"})),
                      window=2)
    assert s["intrinsic_last_mean"] == pytest.approx(2.0)  # episodes 3 and 4
    assert s["pretrained"] is None and s["flights"] == 0
    rows = rows_of(s)
    assert rows["intrinsic return, last 2 episodes"] == "2"
    assert rows["flights"] == "0"
    assert "pre-trained run" not in rows


def test_old_format_run_reports_without_new_figures(tmp_path):
    summ = {"status": "complete", "steps": 100, "wall_time_s": 3.0, "mean_sps": 33.3}
    root = make_run(tmp_path / "r", returns=[1.0, 2.0, 3.0], summary=summ)
    assert "coverage" not in (root / "metrics.csv").read_text()
    s = report_run(root)
    for key in ("coverage_last_mean", "coverage_total", "intrinsic_last_mean", "behaviour_share",
                "flights", "flight_len_mean", "flight_len_max", "pretrained"):
        assert s[key] is None, key
    rows = rows_of(s)
    assert not {"behaviour share", "flights", "pre-trained run"} & set(rows)
    assert not any(label.startswith(("coverage", "intrinsic")) for label in rows)
    assert s["return_last_mean"] == pytest.approx(2.0) and s["status"] == "complete"
    assert "behaviour share" not in (root / "report.md").read_text()


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_figure_panels_follow_the_logged_columns(tmp_path):
    from btcli.analysis import learning_figure

    old = load_run(make_run(tmp_path / "old", returns=[1.0, 2.0, 3.0]))
    learner_only = load_run(make_run(tmp_path / "cov", metrics=bt_metrics(share_pretrained=[0.0] * 4,
                                                                          share_random=[0.0] * 4)))
    no_coverage = load_run(make_run(tmp_path / "shares", metrics=bt_metrics(coverage=[np.nan] * 4)))
    both = load_run(make_run(tmp_path / "both", metrics=bt_metrics()))

    assert len(learning_figure(old).axes) == 1
    (_, cov) = learning_figure(learner_only).axes
    assert cov.get_ylabel().startswith("coverage")
    (_, shares) = learning_figure(no_coverage).axes
    assert shares.get_ylabel() == "share of steps"
    top, cov, shares = learning_figure(both).axes
    assert cov.get_ylabel().startswith("coverage") and shares.get_ylabel() == "share of steps"
    assert cov.get_shared_x_axes().joined(top, shares)

    # the saved PNGs: same width, taller with each added panel
    sizes = {}
    for name in ("old", "cov", "both"):
        report_run(tmp_path / name)
        sizes[name] = _png_size(tmp_path / name / "report.png")
    assert sizes["old"][0] == sizes["cov"][0] == sizes["both"][0]
    assert sizes["old"][1] < sizes["cov"][1] < sizes["both"][1]


def test_binned_shares_are_weighted_by_episode_length(tmp_path):
    from btcli.run_figure import binned_means as _binned_means
    from btcli.run_summary import SHARE_COLUMNS

    run = load_run(make_run(tmp_path / "r", metrics=bt_metrics()))
    one_bin = _binned_means(run, list(SHARE_COLUMNS.values()), bins=1, weight="length")
    assert one_bin[list(SHARE_COLUMNS.values())].iloc[0].tolist() == pytest.approx([0.51, 0.47, 0.02])
    cov = _binned_means(run, ["coverage"], bins=2)  # bins [0, 50), [50, 100]; episode 3 has no coverage
    assert cov["coverage"].tolist() == pytest.approx([3.0, 6.0])
    assert cov["step"].tolist() == pytest.approx([25.0, 75.0])


def test_markdown_has_the_new_rows_and_provenance(tmp_path):
    root = make_run(tmp_path / "r", metrics=bt_metrics(), config=bt_config())
    report_run(root, window=3)
    text = (root / "report.md").read_text()
    assert "| behaviour share | learner 0.51 / π_p 0.47 / random 0.02 |" in text
    assert "| coverage, last 3 episodes | 6 |" in text
    assert "| pre-trained run | /runs/pt-count-s0 @ step 50,000 (count, sha 0123456789ab…) |" in text
    provenance = text.split("## Provenance", 1)[1]
    assert f"- pretrained.sha256: {SHA}" in provenance and "git_commit" in provenance
    assert "provenance." not in text.split("## Provenance", 1)[0]  # not among the hyperparameters


def test_runs_table_adds_coverage_and_pretrained_share_columns(tmp_path):
    from rich.console import Console

    from btcli.analysis import render_runs_table

    old = summarize_run(load_run(make_run(tmp_path / "old", returns=[1.0, 2.0])))
    bt = summarize_run(load_run(make_run(tmp_path / "bt", metrics=bt_metrics())))
    headers = [str(c.header) for c in render_runs_table([old]).columns]
    assert "coverage" not in headers and "π_p share" not in headers
    table = render_runs_table([old, bt])
    headers = [str(c.header) for c in table.columns]
    assert headers[-2:] == ["coverage", "π_p share"]
    console = Console(record=True, width=200)
    console.print(table)
    out = console.export_text()
    assert "0.47" in out and "n/a" in out  # bt's share; the old run has neither figure


def test_report_draws_the_zero_shot_reference_and_names_flights(tmp_path):
    """A bt run that evaluated π_p: its pooled zero-shot mean is a dashed line on the returns panel
    and a row; the training rows say they include π_p's flights."""
    from btcli.analysis import learning_figure

    evals = pd.DataFrame({"step": [50, 50, 50, 100, 100, 100], "episode": [0, 1, 0, 0, 1, 0],
                          "return": [0.2, 0.4, 0.9, 0.6, 0.8, 0.5], "length": 9, "epsilon": 0.01,
                          "checkpoint": "", "coverage": 4,
                          "policy": ["learner", "learner", "pretrained", "learner", "learner", "pretrained"],
                          "env_id": "MiniGrid-Empty-5x5-v0"})
    run = load_run(make_run(tmp_path / "bt", metrics=bt_metrics(), evals=evals, config=bt_config()))
    s = summarize_run(run, eval_last=1)
    assert s["pretrained_eval_mean"] == pytest.approx(0.7) and s["pretrained_eval_episodes"] == 2
    assert s["eval_return_mean"] == pytest.approx(0.7) and s["eval_last_mean"] == pytest.approx(0.7)
    assert s["eval_auc"] == pytest.approx((0.3 * 50 + 0.7 * 50) / 100)
    rows = rows_of(s)
    assert rows["π_p zero-shot (same protocol)"].startswith("0.7")
    assert any("incl. π_p's flights" in label for label in rows)
    top = learning_figure(run).axes[0]
    dashed = [line for line in top.get_lines() if line.get_label().startswith("π_p zero-shot")]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [pytest.approx(0.7)] * 2
    plain = load_run(make_run(tmp_path / "scratch", returns=[1.0, 2.0]))
    assert not [line for line in learning_figure(plain).axes[0].get_lines() if "π_p" in line.get_label()]
