"""Process-level settings: device choice, torch threads, seeding, allocator tuning."""

from __future__ import annotations

import ctypes
import os
import random
import sys

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from btcli.errors import BtcliError

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Keep glibc from returning freed tensor memory to the OS after every update.

    With the default dynamic thresholds every batch of activations is mmap'd and unmapped
    again, and the page faults cost 20-28% of the loop's steps per second on a 2-core CPU.
    A fixed 32 MiB mmap threshold and no trimming remove them. No-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    except (OSError, AttributeError):
        return False
    return bool(ok)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without one is an error.

    On CUDA, cuDNN is told to pick deterministic convolution algorithms (and not to autotune),
    so the same seed gives the same numbers on the same GPU, as it does on a CPU.
    """
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        raise BtcliError(f"unknown device '{name}'; use --device auto, cpu or cuda")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BtcliError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BtcliError(f"unknown device '{name}'; use --device auto, cpu or cuda (or cuda:N)") from None
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return device


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions and matmuls natively (AVX512-BF16 or AMX) on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precision_warning(precision: str, device: torch.device) -> str | None:
    """One line for a reduced-precision update that this device can only emulate, else None."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        return ("warning: agent.precision=bf16 on a CPU without native bf16 (AVX512-BF16 or AMX) is emulated and "
                "several times slower than fp32 (7x measured on an AVX2 CPU); use agent.precision=fp32 here")
    return None


def configure_torch(threads: int) -> int:
    """Set torch's CPU thread count (0: all cores) and numpy's BLAS to one thread; returns
    torch's count.

    btcli's numpy matmuls are small (the gym Atari backend's frame resize, NGU's neighbour
    search). A multi-threaded OpenBLAS wakes its threads for each of them, and on a busy
    machine (a sweep with --jobs 2 on 2 cores) a call waits for a descheduled thread
    (measured: experiments/RESULTS.md).
    """
    threadpool_limits(1, user_api="blas")
    if threads > 0:
        count = threads
    elif hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count() or 1
    torch.set_num_threads(count)
    return count


def configure_process(threads: int = 0) -> int:
    """What every btcli training process runs before its first step (:mod:`btcli.process`): malloc
    tuned, torch's CPU threads (``threads``; 0: all cores this process may use), numpy's BLAS on one
    thread; returns torch's thread count."""
    tune_malloc()
    return configure_torch(threads)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch; return the numpy generator the loop draws from."""
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
