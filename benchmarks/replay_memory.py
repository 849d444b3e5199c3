"""Replay buffer memory and speed on Atari shapes.

Prints bytes per stored transition (and the ratio against naive storage of obs and next_obs
stacks, 2 * 4 * 84 * 84 bytes), the time of sample(32) and of add() per vector step.

    python benchmarks/replay_memory.py [--capacity 100000] [--num-envs 4] [--fill 40000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from btcli.agent.replay import ReplayBuffer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capacity", type=int, default=100_000)
    ap.add_argument("--num-envs", type=int, default=4)
    ap.add_argument("--fill", type=int, default=40_000, help="transitions to add before timing sample()")
    ap.add_argument("--n-step", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--episode-len", type=int, default=500, help="mean episode length (random ends)")
    args = ap.parse_args()

    n, shape = args.num_envs, (4, 84, 84)
    buf = ReplayBuffer(args.capacity, n, shape, frame_stack=4, n_step=args.n_step, gamma=0.99, num_actions=18)
    naive = 2 * int(np.prod(shape))
    per = buf.nbytes / buf.capacity
    print(f"storage: {buf.nbytes / 2**20:.1f} MiB for {buf.capacity} entries")
    print(f"bytes per stored transition: {per:.1f} (naive obs+next_obs stacks: {naive}, ratio {naive / per:.2f}x)")

    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, size=(64, n, *shape), dtype=np.uint8)  # recycled observations
    steps = max(1, args.fill // n)
    p_end = 1.0 / args.episode_len
    ends = rng.random((steps, n)) < p_end
    terms = ends & (rng.random((steps, n)) < 0.5)
    actions = rng.integers(0, 18, size=(steps, n))
    rewards = rng.normal(size=(steps, n)).astype(np.float32)

    t0 = time.perf_counter()
    for i in range(steps):
        obs = pool[i % 64]
        buf.add(obs, actions[i], rewards[i], terms[i], ends[i] & ~terms[i], pool[(i + 1) % 64])
    add_us = (time.perf_counter() - t0) / steps * 1e6
    print(f"add(): {add_us:.1f} us per vector step ({n} envs), {steps} steps; len={len(buf)}")

    for _ in range(50):
        buf.sample(args.batch)  # warm up
    reps = 2000
    t0 = time.perf_counter()
    for _ in range(reps):
        buf.sample(args.batch)
    sample_us = (time.perf_counter() - t0) / reps * 1e6
    print(f"sample({args.batch}): {sample_us:.1f} us")


if __name__ == "__main__":
    main()
