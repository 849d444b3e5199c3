"""Everyday polish: report figures that fit the run (and PDF/SVG), compare's default --out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml

from btcli.analysis import learning_figure, load_run
from btcli.runs import EVAL_COLUMNS, METRICS_COLUMNS

EMPTY = "MiniGrid-Empty-5x5-v0"


def fake_run(path: Path, *, command="transfer", mode="scratch", pretrained_share=0.0, random_share=0.1,
             intrinsic=False, episodes=60, steps=3000, seed=0) -> Path:
    """A finished run directory in btcli's format with controlled columns."""
    path.mkdir(parents=True)
    cfg = {"command": command, "mode": mode, "steps": steps, "seed": seed, "env": {"id": EMPTY, "num_envs": 4},
           "intrinsic": {"objective": "count" if command == "pretrain" else "none"}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rng = np.random.default_rng(seed)
    with open(path / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(METRICS_COLUMNS)
        for i, step in enumerate(np.linspace(steps / episodes, steps, episodes).astype(int)):
            learner = 1.0 - pretrained_share - random_share
            w.writerow([int(step), i + 1, i % 4, round(float(rng.random()), 3), 20, 0.1 * i,
                        round(float(rng.random()) * 10, 3) if intrinsic else "", 4, learner, pretrained_share,
                        random_share])
    with open(path / "eval.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(EVAL_COLUMNS)
        w.writerows([[steps, k, 0.5 + 0.1 * k, 12, 0.01, "", 3] for k in range(3)])
    (path / "summary.json").write_text(json.dumps({"status": "complete", "steps": steps, "episodes": episodes}))
    return path


def panels(path: Path) -> list[tuple[str, list[str]]]:
    """(y label, legend labels) of each panel of the report figure."""
    fig = learning_figure(load_run(path))
    return [(ax.get_ylabel(), ax.get_legend_handles_labels()[1]) for ax in fig.axes]


def test_report_draws_only_the_panels_that_apply(tmp_path):
    scratch = panels(fake_run(tmp_path / "scratch"))  # epsilon-greedy: its random share is just epsilon
    assert [p[0].split("\n")[0] for p in scratch] == ["episode return (raw score)", "coverage"]
    assert "train: 95% CI of the bin mean (±1.96 SD/√n)" in scratch[0][1]
    assert "eval: mean ± SD of its episodes" in scratch[0][1]
    assert not any("π_p" in label for _, labels in scratch for label in labels)

    bt = panels(fake_run(tmp_path / "bt", mode="bt", pretrained_share=0.5, random_share=0.0))
    assert [p[0].split("\n")[0] for p in bt] == ["episode return (raw score)", "coverage", "share of steps"]
    assert bt[2][1] == ["learner", "π_p (pre-trained)"]  # no random actions in this run: no random band

    ez = panels(fake_run(tmp_path / "ez", mode="ez-greedy", random_share=0.3))
    assert ez[2][1] == ["learner", "random"]

    pre = panels(fake_run(tmp_path / "pre", command="pretrain", intrinsic=True))
    assert pre[0][0].startswith("task return (raw score)\nlogged only") and pre[1][0].startswith("intrinsic return")
    assert load_run(tmp_path / "pre").config["command"] == "pretrain"
    assert learning_figure(load_run(tmp_path / "pre")).axes[0].get_title().startswith(f"{EMPTY} | pretrain count")


def test_report_writes_pdf_and_svg(btcli, tmp_path):
    run = fake_run(tmp_path / "r", mode="bt", pretrained_share=0.5)
    for fmt, magic in (("pdf", b"%PDF"), ("svg", b"<svg")):
        proc = btcli("report", str(run), "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        figure = run / f"report.{fmt}"
        assert f"wrote {figure}" in proc.stdout and magic in figure.read_bytes()[:400]
    assert not (run / "report.png").exists()


def test_compare_writes_beside_the_runs_by_default(btcli, tmp_path):
    from conftest import REPO

    from btcli.cli_analysis import default_compare_out

    root = tmp_path / "runs" / "sweep"
    for mode, shift in (("scratch", 0.0), ("bt", 0.5)):
        for seed in range(3):
            fake_run(root / f"{mode}-s{seed}", mode=mode, seed=seed + int(shift * 10))
    proc = btcli("compare", str(root / "*"), "--reps", "50")
    assert proc.returncode == 0, proc.stderr
    out = root / "compare-mode-eval-last"  # the default metric
    assert (out / "compare.md").exists() and f"in {out}" in " ".join(proc.stdout.split())
    assert not (REPO / "compare").exists() and not (REPO / "compare-mode-eval-last").exists()
    again = btcli("compare", str(root), "--reps", "50", "--metric", "auc", "--json")  # its own output is no run
    assert again.returncode == 0, again.stderr
    assert (root / "compare-mode-auc" / "compare.md").exists() and f"in {root / 'compare-mode-auc'}" in again.stderr
    assert default_compare_out([root / "bt-s0"], "agent.lr", "final") == root / "compare-agent.lr-final"
    assert default_compare_out([root / "a", tmp_path / "runs" / "b"], "mode", "eval") == tmp_path / "runs" / "compare-mode-eval"
