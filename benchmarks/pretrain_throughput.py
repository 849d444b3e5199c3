"""Pre-training throughput: `btcli pretrain` with each intrinsic objective against `transfer --mode scratch`.

Every variant runs btcli's own loop (the Trainer) on the same environment with the same
learner settings (the domain preset, batch 32, one update every 4 environment steps), each in a
fresh process, so the ratios hold when the machine's speed drifts. Steps per second are
measured only after learning starts (the random warm-up is not counted): between the first
train.csv row after learning starts and the last one. The objectives add their reward
computation per vector step and their own training (RND predictor, NGU's inverse dynamics)
per gradient update.

    python benchmarks/pretrain_throughput.py                                   # FourRooms
    python benchmarks/pretrain_throughput.py --env ALE/MontezumaRevenge-v5 --measure 2000
    python benchmarks/pretrain_throughput.py --variants scratch,ngu+rnd --threads 1 --repeats 3

``count`` needs grid cells and is skipped on Atari. On a shared or busy machine use
``--repeats``: the variants then run in turn, round after round, and the median of each is
reported (with the range), so a slow spell hits every variant alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loop_timing import add_loop_arguments, run_in_fresh_process, time_btcli_loop  # noqa: E402  (benchmarks/, beside this script)

VARIANTS = ("scratch", "count", "rnd", "ngu", "ngu+rnd")


def run_variant(variant: str, env_id: str, warmup: int, measure: int, seed: int, threads: int, num_envs: int,
                device: str) -> dict:
    overrides = {"env.id": env_id, "env.num_envs": num_envs, "seed": seed, "threads": threads, "device": device}
    if variant != "scratch":
        overrides |= {"command": "pretrain", "intrinsic.objective": variant}
    return time_btcli_loop(overrides, warmup, measure)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", action="append", help="env id (repeatable; default MiniGrid-FourRooms-v0)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: scratch and objectives")
    add_loop_arguments(p, "2000 Atari, 20000 grid")
    p.add_argument("--repeats", type=int, default=1, help="rounds over all variants; the median is reported")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads == 0:
        args.threads = len(os.sched_getaffinity(0))
    if args.variant:
        result = run_variant(args.variant, args.env[0], args.warmup, args.measure, args.seed, args.threads,
                             args.num_envs, args.device)
        print("RESULT " + json.dumps(result))
        return
    envs = args.env or ["MiniGrid-FourRooms-v0"]
    print(f"# machine: {os.cpu_count()} CPUs, torch threads {args.threads}, device {args.device}")
    for env_id in envs:
        atari = env_id.startswith("ALE/")
        warmup = args.warmup or (1000 if atari else 2000)
        measure = args.measure or (2000 if atari else 20000)
        variants = [v for v in args.variants.split(",") if not (v == "count" and atari)]
        sps: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for variant in variants:
                result = run_in_fresh_process(__file__, variant, env_id, warmup, measure, args)
                if result is not None:
                    sps[variant].append(result["sps"])
        med = {v: statistics.median(x) for v, x in sps.items() if x}
        base = med.get("scratch")
        rounds = f", median of {args.repeats} rounds" if args.repeats > 1 else ""
        print(f"\n{env_id}: steps/s after learning starts ({measure} steps after {warmup} warm-up, "
              f"{args.num_envs} envs, batch 32, 1 update / 4 steps{rounds})")
        for variant, value in med.items():
            label = "transfer scratch" if variant == "scratch" else f"pretrain {variant}"
            ratio = f"{value / base:5.2f}x scratch" if base else ""
            spread = f"  (range {min(sps[variant]):.1f}-{max(sps[variant]):.1f})" if args.repeats > 1 else ""
            print(f"  {label:18s} {value:9.1f} steps/s  {ratio}{spread}")


if __name__ == "__main__":
    main()
