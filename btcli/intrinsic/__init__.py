"""Intrinsic rewards for reward-free pre-training: RND, NGU episodic novelty, visit counts.

The objectives themselves are registered in ``btcli/intrinsic/objectives/`` (see registry.py).
The names below load on first use, so reading configs (which lists the objectives' options)
does not import torch.
"""

import importlib

_EXPORTS = {
    "CountBonus": "btcli.intrinsic.counts",
    "EpisodicMemory": "btcli.intrinsic.episodic",
    "InverseDynamics": "btcli.intrinsic.episodic",
    "episodic_kernel_reward": "btcli.intrinsic.episodic",
    "lifelong_modulation": "btcli.intrinsic.episodic",
    "RND": "btcli.intrinsic.rnd",
    "RunningMean": "btcli.intrinsic.running",
    "RunningMeanStd": "btcli.intrinsic.running",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'btcli.intrinsic' has no attribute {name!r}")
