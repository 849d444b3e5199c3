"""Shared by the throughput benchmarks: steps/s of btcli's own training loop after learning starts."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

LOG_EVERY = 500


def time_btcli_loop(overrides: dict[str, Any], warmup: int, measure: int) -> dict:
    """Train a throwaway run with ``overrides`` for ``warmup + measure`` steps; steps/s measured
    between the first train.csv row after learning starts and the last one."""
    import pandas as pd

    from btcli.config import build_config, to_dict
    from btcli.loop import Trainer
    from btcli.runs import RunDir

    cfg = build_config({
        "steps": warmup + measure, "agent.learning_starts": warmup, "agent.batch_size": 32, "agent.train_freq": 4,
        "train_log_every": LOG_EVERY, "checkpoint_every": 10**9, "eval_episodes": 0,
        "agent.buffer_size": max(10_000, warmup + measure + 1000),
    } | overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(Path(tmp) / "run", to_dict(cfg), ["benchmark"])
        trainer = Trainer(cfg, run, progress=False)
        trainer.train()
        rows = pd.read_csv(run.train_path)
    rows = rows[rows["step"] >= warmup + LOG_EVERY]
    steps = rows["step"].iloc[-1] - rows["step"].iloc[0]
    seconds = rows["time"].iloc[-1] - rows["time"].iloc[0]
    return {"sps": steps / seconds, "num_envs": cfg.env.num_envs, "device": str(trainer.device)}


def add_loop_arguments(p: argparse.ArgumentParser, measure_defaults: str) -> None:
    """The options both throughput benchmarks share (budgets, copies, threads, device, seed)."""
    p.add_argument("--warmup", type=int, default=None, help="random steps before learning (default 1000 Atari, 2000 grid)")
    p.add_argument("--measure", type=int, default=None, help=f"steps timed after learning starts (default {measure_defaults})")
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
