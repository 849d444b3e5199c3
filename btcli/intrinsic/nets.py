"""Small networks and input preparation shared by the intrinsic-reward modules."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

FRAME_SIZE = 84
CONV_OUT = 32 * 7 * 7  # SmallCNN's flattened output for an 84x84 frame


def resolve_kind(obs_shape: tuple[int, ...], kind: str) -> str:
    """``"auto"`` picks ``"cnn"`` for 84x84 frame stacks and ``"mlp"`` for anything else."""
    if kind == "auto":
        is_frames = len(obs_shape) == 3 and obs_shape[-1] == obs_shape[-2] == FRAME_SIZE
        return "cnn" if is_frames else "mlp"
    if kind not in ("cnn", "mlp"):
        raise ValueError(f"kind must be 'auto', 'cnn' or 'mlp', not {kind!r}")
    return kind


def input_shape(obs_shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    """Per-sample shape of what the nets see: the newest frame [1, 84, 84], or a flat vector."""
    return (1, *obs_shape[-2:]) if kind == "cnn" else (math.prod(obs_shape),)


def prepare(obs: np.ndarray | torch.Tensor, kind: str, device: torch.device | str) -> torch.Tensor:
    """Float32 net input on ``device``: the newest frame of a stack [B, 1, 84, 84] (raw 0..255),
    or the observation flattened [B, D] (MiniGrid's uint8 codes become floats)."""
    x = torch.as_tensor(obs, device=device)
    x = x[:, -1:] if kind == "cnn" else x.reshape(x.shape[0], -1)
    return x.float()


def small_cnn(act: type[nn.Module]) -> nn.Sequential:
    """A scaled-down Nature-CNN (16/32/32 filters) for one 84x84 frame; outputs [B, CONV_OUT]."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, stride=4), act(),
        nn.Conv2d(16, 32, 4, stride=2), act(),
        nn.Conv2d(32, 32, 3, stride=1), act(),
        nn.Flatten(),
    )


def mlp(sizes: list[int], act: type[nn.Module]) -> nn.Sequential:
    """Linear layers with ``act`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2)) -> None:
    """Orthogonal weights and zero biases for every conv and linear layer (as RND's code)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, gain)
            nn.init.zeros_(m.bias)
