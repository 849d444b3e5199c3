"""Whole-training-loop throughput: btcli's loop against a textbook serial DQN loop.

Both run the same hyperparameters (batch 32, one update every 4 environment steps, Nature CNN
on Atari / MLP on MiniGrid, double DQN unless --no-double) on the same machine in one benchmark run, each in a
fresh process, so the ratio holds when the machine's speed drifts. Steps per second are
measured only after learning starts (updates dominate; the random warm-up is not counted).

    python benchmarks/train_throughput.py                       # Breakout + FourRooms
    python benchmarks/train_throughput.py --env ALE/Breakout-v5 --measure 4000
    python benchmarks/train_throughput.py --variants btcli-fp32,btcli-bf16 --num-envs 8
    python benchmarks/train_throughput.py --no-double   # vanilla DQN targets, as CleanRL's dqn_atari.py
    python benchmarks/train_throughput.py --env ALE/Breakout-v5 --no-double --variants sb3,textbook,btcli-fp32
        # beside Stable-Baselines3's DQN (pip install -e '.[bench]')
    python benchmarks/train_throughput.py --device cuda --variants textbook,btcli-fp32,btcli-fp32-graph
        # on a GPU; '-graph' replays the update as a CUDA graph (agent.cuda_graph)
    python benchmarks/train_throughput.py --variants btcli-fp32,btcli-fp32-lstm,btcli-fp32-lstm4
        # the recurrent learner beside the feed-forward one (see LSTM_TRAIN_FREQ)

The textbook loop is what a single-file DQN does: one environment, a batch-1 forward per
step, a replay buffer storing obs and next_obs stacks, an update every 4 steps with the
default (per-tensor) Adam, and the default allocator settings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loop_timing import add_loop_arguments, run_in_fresh_process, time_btcli_loop  # noqa: E402  (benchmarks/, beside this script)

VARIANTS = ("textbook", "btcli-fp32", "btcli-bf16")


def run_textbook(env_id: str, warmup: int, measure: int, seed: int, threads: int, double: bool, device: str) -> dict:
    import numpy as np
    import torch

    from btcli.agent.dqn import td_targets
    from btcli.agent.networks import build_q_network
    from btcli.config import build_config

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cfg = build_config({"env.id": env_id, "env.num_envs": 1, "env.atari_backend": "gym"})
    from btcli.envs import make_vec_env

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    env = make_vec_env(cfg.env, seed=seed)
    net = build_q_network(env.obs_shape, env.num_actions, torso=cfg.agent.torso, hidden=cfg.agent.hidden).to(dev)
    target = build_q_network(env.obs_shape, env.num_actions, torso=cfg.agent.torso, hidden=cfg.agent.hidden).to(dev)
    target.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, eps=1.5e-4)
    cap = warmup + measure + 10
    obs_buf = np.zeros((cap, *env.obs_shape), dtype=env.obs_dtype)
    next_buf = np.zeros_like(obs_buf)
    act_buf = np.zeros(cap, dtype=np.int64)
    rew_buf = np.zeros(cap, dtype=np.float32)
    done_buf = np.zeros(cap, dtype=np.float32)
    rng = np.random.default_rng(seed)
    obs = env.reset(seed=seed)
    t_start = None
    for t in range(warmup + measure):
        if t == warmup:
            t_start = time.perf_counter()
        if rng.random() < 0.1:
            action = int(rng.integers(env.num_actions))
        else:
            with torch.no_grad():
                action = int(net(torch.from_numpy(obs).to(dev)).argmax(1)[0])
        step = env.step(np.array([action]))
        done = bool(step.terminated[0] or step.truncated[0])
        obs_buf[t], act_buf[t], rew_buf[t] = obs[0], action, np.clip(step.reward[0], -1, 1)
        next_buf[t] = step.final_obs[0] if done else step.obs[0]
        done_buf[t] = float(step.terminated[0])
        obs = step.obs
        if t >= warmup and t % 4 == 0:
            idx = rng.integers(0, t + 1, size=32)
            o, a = torch.from_numpy(obs_buf[idx]).to(dev), torch.from_numpy(act_buf[idx]).to(dev)
            r, d = torch.from_numpy(rew_buf[idx]).to(dev), torch.from_numpy(done_buf[idx]).to(dev)
            n = torch.from_numpy(next_buf[idx]).to(dev)
            with torch.no_grad():
                y = td_targets(r, 0.99 * (1 - d), target(n), net(n) if double else None)
            q = net(o).gather(1, a.unsqueeze(1)).squeeze(1)
            loss = torch.nn.functional.smooth_l1_loss(q, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if t % 1000 == 0:
            target.load_state_dict(net.state_dict())
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t_start
    return {"sps": measure / elapsed, "num_envs": 1, "device": str(dev)}


def run_sb3(env_id: str, warmup: int, measure: int, seed: int, threads: int, device: str) -> dict:
    """Stable-Baselines3's DQN (vanilla targets, no dueling) on the same task and update schedule.

    Optional: ``pip install -e '.[bench]'``. SB3's AtariWrapper does the frame skipping, so the
    v5 env is made with ``frameskip=1``; sticky actions stay at v5's 0.25.
    """
    import ale_py
    import gymnasium as gym
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    torch.set_num_threads(threads)
    env = VecFrameStack(make_atari_env(env_id, n_envs=1, seed=seed, env_kwargs={"frameskip": 1}), n_stack=4)
    model = DQN("CnnPolicy", env, buffer_size=warmup + measure + 10, learning_starts=warmup, batch_size=32,
                train_freq=4, gradient_steps=1, target_update_interval=1000, learning_rate=1e-4,
                optimize_memory_usage=False, device=device, seed=seed, verbose=0)

    class Clock(BaseCallback):
        start: float | None = None

        def _on_step(self) -> bool:
            if self.num_timesteps == warmup:
                self.start = time.perf_counter()
            return True

    clock = Clock()
    model.learn(total_timesteps=warmup + measure, callback=clock)
    return {"sps": measure / (time.perf_counter() - clock.start), "num_envs": 1, "device": str(model.device)}


# '-lstm': the recurrent learner (agent.core=lstm, its default sequences: burn-in 10, 20 learned
# steps), one update of 32 sequences per 80 steps: 640 learned transitions per 80 steps, the
# feed-forward loop's replay ratio (32 per 4 steps). '-lstm4' updates every 4 steps as the
# feed-forward loop does (20x its replay ratio).
LSTM_TRAIN_FREQ = {"lstm": 80, "lstm4": 4}


def run_btcli(env_id: str, warmup: int, measure: int, seed: int, threads: int, precision: str,
              num_envs: int, device: str, double: bool, cuda_graph: bool = False, core: str = "") -> dict:
    extra = {"agent.core": "lstm", "agent.train_freq": LSTM_TRAIN_FREQ[core]} if core else {}
    return time_btcli_loop({"env.id": env_id, "env.num_envs": num_envs, "seed": seed, "threads": threads,
                            "device": device, "agent.precision": precision, "agent.double": double,
                            "agent.cuda_graph": cuda_graph} | extra, warmup, measure)


def child(args) -> None:
    args.env = args.env[0]
    if args.variant == "sb3":
        result = run_sb3(args.env, args.warmup, args.measure, args.seed, args.threads, args.device)
    elif args.variant == "textbook":
        result = run_textbook(args.env, args.warmup, args.measure, args.seed, args.threads, args.double, args.device)
    else:
        parts = args.variant.split("-")  # btcli-<precision>[-graph][-lstm|-lstm4]
        core = next((p for p in parts[2:] if p in LSTM_TRAIN_FREQ), "")
        result = run_btcli(args.env, args.warmup, args.measure, args.seed, args.threads,
                           parts[1], args.num_envs, args.device, args.double, cuda_graph="graph" in parts[2:], core=core)
    print("RESULT " + json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", action="append", help="env id (repeatable; default Breakout and FourRooms)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    add_loop_arguments(p, "3000 Atari, 30000 grid")
    p.add_argument("--no-double", dest="double", action="store_false", help="vanilla DQN targets (2 forward passes)")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads == 0:
        args.threads = len(os.sched_getaffinity(0))
    if args.variant:
        child(args)
        return
    envs = args.env or ["ALE/Breakout-v5", "MiniGrid-FourRooms-v0"]
    print(f"# machine: {os.cpu_count()} CPUs, torch threads {args.threads}, device {args.device}")
    for env_id in envs:
        atari = env_id.startswith("ALE/")
        warmup = args.warmup or (1000 if atari else 2000)
        measure = args.measure or (3000 if atari else 30000)
        results = {}
        for variant in args.variants.split(","):
            if (variant.startswith("btcli-bf16") or variant == "sb3") and not atari:
                continue
            if variant == "sb3" and importlib.util.find_spec("stable_baselines3") is None:
                print("sb3: skipped; install the optional baseline with: pip install -e '.[bench]'")
                continue
            result = run_in_fresh_process(__file__, variant, env_id, warmup, measure, args,
                                 [] if args.double else ["--no-double"])
            if result is not None:
                results[variant] = result
        base = results.get("textbook", {}).get("sps")
        kind = "double DQN" if args.double else "DQN"
        print(f"\n{env_id}: steps/s after learning starts ({measure} steps, {kind}, batch 32, 1 update / 4 steps)")
        for variant, r in results.items():
            ratio = f"{r['sps'] / base:5.2f}x textbook" if base else ""
            print(f"  {variant:16s} envs={r['num_envs']:<3d} {r.get('device', 'cpu'):6s} {r['sps']:9.1f} steps/s  {ratio}")


if __name__ == "__main__":
    main()
