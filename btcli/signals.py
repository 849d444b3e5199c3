"""SIGINT/SIGTERM as requests to stop cleanly rather than as sudden deaths."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator

PARENT_PID_ENV = "BTCLI_PARENT_PID"  # set by `btcli sweep` for the runs it starts
_PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def recorded_signals(on_signal: Callable[[int], None] | None = None) -> Iterator[list[int]]:
    """While inside, SIGINT/SIGTERM are appended to the yielded list (and passed to ``on_signal``)
    instead of interrupting; the caller checks the list at safe points and stops there."""
    received: list[int] = []

    def handler(signum, _frame):
        received.append(signum)
        if on_signal is not None:
            on_signal(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def die_with_parent() -> None:
    """In a run started by `btcli sweep`: get SIGTERM when the sweep dies, even by SIGKILL.

    SIGTERM makes the run checkpoint and exit, so a killed sweep leaves no orphan training on
    that a restarted sweep would race for the same run directory. Linux only; no-op elsewhere
    and outside a sweep.
    """
    parent = os.environ.pop(PARENT_PID_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the sweep died before the call above
        os.kill(os.getpid(), signal.SIGTERM)
