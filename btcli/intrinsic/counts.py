"""Count-based novelty 1/sqrt(N(s)) for small discrete state spaces."""

from __future__ import annotations

import numpy as np
import torch


class CountBonus:
    """Visit counts over integer state keys, shared by all environment copies (life-long).

    ``reward`` records the visits first, so N(s) includes the current one: a first visit
    earns 1, the second 1/sqrt(2), and so on; a key repeated within one batch counts in order.
    """

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def __len__(self) -> int:
        """Distinct keys seen (a coverage diagnostic)."""
        return len(self.counts)

    def count(self, key: int) -> int:
        return self.counts.get(int(key), 0)

    def reward(self, keys: np.ndarray | torch.Tensor) -> np.ndarray:
        """1/sqrt(N(s)) per key [B] (float64), after counting these visits."""
        if isinstance(keys, torch.Tensor):
            keys = keys.cpu().numpy()
        flat = np.asarray(keys).reshape(-1)
        n = np.empty(flat.size, dtype=np.float64)
        for i, key in enumerate(flat.tolist()):
            n[i] = self.counts[key] = self.counts.get(key, 0) + 1
        return 1.0 / np.sqrt(n)

    def state_dict(self) -> dict[str, torch.Tensor]:
        keys = torch.tensor(list(self.counts.keys()), dtype=torch.int64)
        return {"keys": keys, "counts": torch.tensor(list(self.counts.values()), dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.counts = dict(zip(state["keys"].tolist(), state["counts"].tolist()))


class EpisodicCountBonus:
    """Visit counts per environment copy within its current episode: 1/sqrt(n_episode(s)).

    ``start`` begins a copy's episode with its first cell counted once, so stepping back onto
    it earns 1/sqrt(2).
    """

    def __init__(self, num_envs: int) -> None:
        self.counts: list[dict[int, int]] = [{} for _ in range(num_envs)]

    def started(self, env_index: int) -> bool:
        return bool(self.counts[env_index])

    def start(self, env_index: int, key: int) -> None:
        """Begin copy ``env_index``'s episode in cell ``key``."""
        self.counts[env_index] = {int(key): 1}

    def end(self, env_index: int) -> None:
        """Forget copy ``env_index``'s episode (the next ``start`` begins a new one)."""
        self.counts[env_index] = {}

    def state_dict(self) -> dict[str, list[list[int]]]:
        """Each copy's counts this episode, as (cell, count) pairs."""
        return {"counts": [[[k, n] for k, n in seen.items()] for seen in self.counts]}

    def load_state_dict(self, state: dict[str, list[list[int]]]) -> None:
        if len(state["counts"]) != len(self.counts):
            raise ValueError(f"episode counts of {len(state['counts'])} copies do not fit {len(self.counts)}")
        self.counts = [{int(k): int(n) for k, n in pairs} for pairs in state["counts"]]

    def reward(self, keys: np.ndarray) -> np.ndarray:
        """1/sqrt(n) per copy [num_envs] (float64) for entering cell ``keys[i]``, after counting it."""
        out = np.empty(len(self.counts), dtype=np.float64)
        for i, key in enumerate(np.asarray(keys).reshape(-1).tolist()):
            seen = self.counts[i]
            n = seen[key] = seen.get(key, 0) + 1
            out[i] = 1.0 / np.sqrt(n)
        return out
