"""Shared by the throughput benchmarks: steps/s of btcli's own training loop after learning starts."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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
    from btcli.process import configure_process
    from btcli.runs import RunDir

    cfg = build_config({
        "steps": warmup + measure, "agent.learning_starts": warmup, "agent.batch_size": 32, "agent.train_freq": 4,
        "train_log_every": LOG_EVERY, "checkpoint_every": 10**9, "eval_episodes": 0,
        "agent.buffer_size": max(10_000, warmup + measure + 1000),
    } | overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(Path(tmp) / "run", to_dict(cfg), ["benchmark"])
        configure_process(cfg.threads)  # as the CLI does before its Trainer
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


def run_in_fresh_process(script: str, variant: str, env_id: str, warmup: int, measure: int, args: argparse.Namespace,
                extra: list[str] | None = None) -> dict | None:
    """Run one variant of a benchmark script in a fresh process; its RESULT dict, or None (printed) on failure."""
    cmd = [sys.executable, script, "--variant", variant, "--env", env_id, "--warmup", str(warmup),
           "--measure", str(measure), "--num-envs", str(args.num_envs), "--threads", str(args.threads),
           "--device", args.device, "--seed", str(args.seed), *(extra or [])]
    # one BLAS thread for every variant: the gym backend's frame resize is a numpy matmul, and
    # threaded OpenBLAS spinning beside torch's OpenMP threads slows both 4-5x
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        print(f"{env_id} {variant}: FAILED\n{proc.stderr[-2000:]}")
        return None
    return json.loads(line[0][7:])
