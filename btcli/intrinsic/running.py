"""Running statistics over a stream of batches (observation normalisation, reward scaling)."""

from __future__ import annotations

import numpy as np
import torch


def _as_float64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


class RunningMeanStd:
    """Mean and (population) variance of every sample seen, per feature of ``shape``.

    Batches are merged with the parallel form of Welford's update (Chan et al. 1979), in
    float64, so the result equals ``np.mean``/``np.var`` over the concatenated batches.
    ``shape=()`` tracks a scalar. Before the first update ``mean`` is 0 and ``var`` is 1.
    """

    def __init__(self, shape: tuple[int, ...] = ()):
        self.shape = tuple(shape)
        self.mean = np.zeros(self.shape, dtype=np.float64)
        self.var = np.ones(self.shape, dtype=np.float64)
        self.count = 0

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    def update(self, x: np.ndarray | torch.Tensor) -> None:
        """Merge a batch ``x`` of shape ``[..., *shape]``; all leading axes are batch axes."""
        if x.ndim < len(self.shape) or tuple(x.shape[x.ndim - len(self.shape):]) != self.shape:
            raise ValueError(f"batch of shape {tuple(x.shape)} does not end in {self.shape}")
        batch = _as_float64(x).reshape(-1, *self.shape)
        n = batch.shape[0]
        if n == 0:
            return
        b_mean, b_var = batch.mean(axis=0), batch.var(axis=0)
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta**2 * (self.count * n / total)
        # np.asarray keeps shape () a 0-d array rather than a numpy scalar
        self.mean = np.asarray(self.mean + delta * (n / total))
        self.var = np.asarray(m2 / total)
        self.count = total

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": torch.from_numpy(self.mean.copy()), "var": torch.from_numpy(self.var.copy()),
                "count": torch.tensor(self.count, dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        mean = _as_float64(state["mean"])
        if mean.shape != self.shape:
            raise ValueError(f"state of shape {mean.shape}, expected {self.shape}")
        self.mean, self.var = mean.copy(), _as_float64(state["var"]).copy()
        self.count = int(state["count"])


class RunningMean:
    """Exact mean of every scalar seen so far (NGU's running mean of k-NN squared distances)."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.count = 0

    def update(self, x: np.ndarray | torch.Tensor) -> None:
        values = _as_float64(x).reshape(-1)
        if values.size == 0:
            return
        total = self.count + values.size
        self.mean += (values.sum() - values.size * self.mean) / total
        self.count = total

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": torch.tensor(self.mean, dtype=torch.float64),
                "count": torch.tensor(self.count, dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean, self.count = float(state["mean"]), int(state["count"])
