"""Raw environment throughput: steps per second with uniformly random actions, no learning.

    python benchmarks/env_throughput.py [--seconds S] [--busy N]

Atari (ALE/Breakout-v5): btcli's 'vector' backend (ale_py.AtariVectorEnv, C++ threads) and
'gym' backend (gymnasium envs stepped in a Python loop), with 1 and 4 copies.
MiniGrid (MiniGrid-FourRooms-v0): a plain ``gym.make(...).step`` loop (its own partially
observable obs, reset on episode end) against btcli's vector env, with 1 and 4 copies.
One "step" is one environment transition (a vector step of N copies counts N).

``--busy N`` first starts N processes that spin on a core each (what a sweep with ``--jobs``
does to its neighbours) and adds the gym backend with numpy's BLAS left at its default thread
count beside the one thread btcli sets: the frame resize is a small numpy matmul, and a
multi-threaded BLAS waits for a descheduled thread on busy cores.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from contextlib import nullcontext

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from btcli.envs import EnvConfig, make_vec_env


def _timed(step_once, n_per_call: int, seconds: float) -> float:
    """Steps per second of ``step_once`` (which advances ``n_per_call`` transitions)."""
    for _ in range(20):  # warm up
        step_once()
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(50):
            step_once()
        calls += 50
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * n_per_call / elapsed


def _spin() -> None:
    while True:
        pass


def bench_vec(cfg: EnvConfig, seconds: float, blas_threads: int | None = 1) -> float:
    """Steps/s of btcli's vector env; numpy's BLAS on ``blas_threads`` (None: its default)."""
    from threadpoolctl import threadpool_limits

    with nullcontext() if blas_threads is None else threadpool_limits(blas_threads, user_api="blas"):
        return _bench_vec(cfg, seconds)


def _bench_vec(cfg: EnvConfig, seconds: float) -> float:
    env = make_vec_env(cfg, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.num_actions, size=(4096, cfg.num_envs))
    k = [0]

    def once():
        env.step(actions[k[0] % 4096])
        k[0] += 1

    sps = _timed(once, cfg.num_envs, seconds)
    env.close()
    return sps


def bench_plain_gym(env_id: str, seconds: float) -> float:
    import gymnasium as gym
    import minigrid  # noqa: F401

    env = gym.make(env_id)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    n = int(env.action_space.n)
    actions = rng.integers(0, n, size=4096)
    k = [0]

    def once():
        _, _, term, trunc, _ = env.step(int(actions[k[0] % 4096]))
        k[0] += 1
        if term or trunc:
            env.reset()

    sps = _timed(once, 1, seconds)
    env.close()
    return sps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case")
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on the cores meanwhile")
    args = parser.parse_args()
    s = args.seconds
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    print(f"cpu cores: {os.cpu_count()}; {s:g} s per case; random actions; {args.busy} busy process(es)")
    if args.busy:
        print("\nALE/Breakout-v5, gym backend, 4 envs: numpy BLAS threads")
        default = bench_vec(EnvConfig(id="ALE/Breakout-v5", num_envs=4, atari_backend="gym"), s, None)
        one = bench_vec(EnvConfig(id="ALE/Breakout-v5", num_envs=4, atari_backend="gym"), s, 1)
        print(f"  BLAS default threads: {default:9.0f} steps/s")
        print(f"  BLAS 1 thread (btcli): {one:8.0f} steps/s  ({one / default:.2f}x)")

    print("\nALE/Breakout-v5 (sticky 0.25, frameskip 4, 84x84x4)")
    atari: dict[tuple[str, int], float] = {}
    for backend in ("vector", "gym"):
        for n in (1, 4):
            cfg = EnvConfig(id="ALE/Breakout-v5", num_envs=n, atari_backend=backend)
            atari[backend, n] = bench_vec(cfg, s)
            print(f"  {backend:>6} backend, {n} env(s): {atari[backend, n]:9.0f} steps/s")
    for n in (1, 4):
        print(f"  vector/gym ratio, {n} env(s): {atari['vector', n] / atari['gym', n]:.2f}x")

    print("\nMiniGrid-FourRooms-v0")
    plain = bench_plain_gym("MiniGrid-FourRooms-v0", s)
    print(f"  plain gym.make(...).step, 1 env: {plain:9.0f} steps/s")
    for n in (1, 4):
        sps = bench_vec(EnvConfig(id="MiniGrid-FourRooms-v0", num_envs=n), s)
        print(f"  btcli vector env, {n} env(s):  {sps:9.0f} steps/s  ({sps / plain:.2f}x plain gym)")


if __name__ == "__main__":
    main()
