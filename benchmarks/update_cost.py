"""What one DQN update of experiments/bt_minigrid's learner costs, and what would make it cheaper.

    .venv/bin/python benchmarks/update_cost.py            # one torch thread, as every sweep run has

Prints milliseconds per update (batch 32, the egocentric grid torso on SmallFourRooms' 11x11
grid) for three things, each against a baseline timed in the same process:
1. btcli's own update (``DQNLearner._step``) at hidden widths 256 (the experiment's), 128 and 64;
2. the first layer's matmuls alone, and the GFLOP/s they reach (how close one core is to its peak);
3. seeds stacked into one update (S independent networks as batched matmuls, the shape a
   vectorized multi-seed learner would have): milliseconds per seed-update for S = 1, 5 and 10.
If (3) stays flat in S, the update is bound by arithmetic, not by Python's per-op overhead, and
batching seeds cannot shorten a sweep; only less arithmetic can.
"""

from __future__ import annotations

import argparse
import time

import torch

from btcli.agent.dqn import DQNLearner
from btcli.agent.networks import GRID_OBJECT_TYPES, GRID_STATES, build_q_network

SHAPE, ACTIONS, BATCH = (11, 11, 2), 7, 32


def timed(fn, repeats: int) -> float:
    """Milliseconds per call, after a warm-up."""
    for _ in range(max(10, repeats // 10)):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def grid_batch(n: int) -> torch.Tensor:
    obs = torch.randint(0, 3, (n, *SHAPE), dtype=torch.uint8)
    obs[:, 3, 4] = torch.tensor([10, 1], dtype=torch.uint8)  # one agent per grid, facing down
    return obs


def btcli_update_ms(hidden: int, repeats: int) -> float:
    learner = DQNLearner(build_q_network(SHAPE, ACTIONS, torso="gridego", hidden=hidden), lr=5e-4, adam_eps=1.5e-4)
    obs, next_obs = grid_batch(BATCH), grid_batch(BATCH)
    actions = torch.randint(0, ACTIONS, (BATCH,))
    returns, discounts = torch.zeros(BATCH), torch.full((BATCH,), 0.99)
    return timed(lambda: learner._step(obs, actions, returns, discounts, next_obs), repeats)


class StackedMLP(torch.nn.Module):
    """S independent copies of the torso's MLP and dueling head as batched matmuls ([S, N, features])."""

    def __init__(self, seeds: int, inputs: int, hidden: int):
        super().__init__()
        def weight(i: int, o: int) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.randn(seeds, i, o) / i ** 0.5)
        self.w1, self.w2, self.wa, self.wv = weight(inputs, hidden), weight(hidden, hidden), weight(hidden, ACTIONS), \
            weight(hidden, 1)
        self.b1, self.b2 = torch.nn.Parameter(torch.zeros(seeds, 1, hidden)), torch.nn.Parameter(torch.zeros(seeds, 1, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.baddbmm(self.b1, x, self.w1))
        h = torch.relu(torch.baddbmm(self.b2, h, self.w2))
        adv = h @ self.wa
        return h @ self.wv + adv - adv.mean(-1, keepdim=True)


def stacked_update_ms(seeds: int, hidden: int, repeats: int) -> float:
    """A double-DQN update of S stacked networks: target and online forwards, backward, per-seed clip, Adam."""
    inputs = (2 * (SHAPE[0] - 2) - 1) ** 2 * 4
    online, target = StackedMLP(seeds, inputs, hidden), StackedMLP(seeds, inputs, hidden).requires_grad_(False)
    table = torch.nn.Parameter(torch.randn(seeds * GRID_OBJECT_TYPES * GRID_STATES, 4))
    params = [*online.parameters(), table]
    optimizer = torch.optim.Adam(params, lr=5e-4, fused=True)
    codes = torch.randint(0, GRID_OBJECT_TYPES * GRID_STATES, (2, seeds, BATCH, inputs // 4))
    codes += (torch.arange(seeds) * GRID_OBJECT_TYPES * GRID_STATES).view(1, seeds, 1, 1)
    actions = torch.randint(0, ACTIONS, (seeds, BATCH, 1))

    def step() -> None:
        x, next_x = (table.index_select(0, c.reshape(-1)).view(seeds, BATCH, inputs) for c in codes)
        with torch.no_grad():
            best = online(next_x).argmax(-1, keepdim=True)
            goal = 0.99 * target(next_x).gather(-1, best).squeeze(-1)
        q = online(x).gather(-1, actions).squeeze(-1)
        loss = torch.nn.functional.smooth_l1_loss(q, goal, reduction="none").mean(1).sum()
        for p in params:
            p.grad = None
        loss.backward()
        norms = torch.stack([p.grad.reshape(seeds, -1).norm(dim=1) for p in params]).norm(dim=0)
        scale = (10.0 / (norms + 1e-6)).clamp(max=1.0).view(seeds, 1)
        for p in params:
            p.grad.view(seeds, -1).mul_(scale)
        optimizer.step()

    return timed(step, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {BATCH}, grid {SHAPE}")
    base = btcli_update_ms(256, args.repeats)
    print(f"1. btcli update, hidden 256 (the experiment's): {base:.2f} ms")
    for hidden in (128, 64):
        ms = btcli_update_ms(hidden, args.repeats)
        print(f"   hidden {hidden}: {ms:.2f} ms ({base / ms:.2f}x faster than 256)")
    inputs = (2 * (SHAPE[0] - 2) - 1) ** 2 * 4
    layer = torch.nn.Linear(inputs, 256)
    x = torch.randn(BATCH, inputs)
    ms = timed(lambda: layer(x), args.repeats * 4)
    print(f"2. first layer forward, {BATCH} x {inputs} -> 256: {ms:.3f} ms, "
          f"{2 * BATCH * inputs * 256 / ms / 1e6:.1f} GFLOP/s")
    one = stacked_update_ms(1, 256, args.repeats)
    print(f"3. stacked update, hidden 256: S=1 {one:.2f} ms per seed-update")
    for seeds in (5, 10):
        ms = stacked_update_ms(seeds, 256, max(20, args.repeats // seeds)) / seeds
        print(f"   S={seeds}: {ms:.2f} ms per seed-update ({one / ms:.2f}x S=1)")


if __name__ == "__main__":
    main()
