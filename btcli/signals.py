"""SIGINT/SIGTERM as requests to stop cleanly rather than as sudden deaths."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator


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
