"""Progress display: a rich bar on a terminal, plain periodic lines in a log file or pipe."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)


class ProgressReporter:
    """Reports ``step`` out of ``total`` with a few named figures (steps/s, recent return)."""

    def __init__(self, total: int, description: str, *, enabled: bool = True, plain_every_s: float = 10.0,
                 stream=None):
        self.total = total
        self.description = description
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.plain_every_s = plain_every_s
        self._rich: Progress | None = None
        self._task = None
        self._last_plain = 0.0

    def __enter__(self) -> ProgressReporter:
        if self.enabled and self.stream.isatty():
            self._rich = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total, info="")
        return self

    def update(self, step: int, info: dict[str, float | int | None]) -> None:
        """Show progress; cheap enough to call every few hundred steps."""
        if not self.enabled:
            return
        text = "  ".join(f"{k} {_fmt(v)}" for k, v in info.items() if v is not None)
        if self._rich is not None:
            self._rich.update(self._task, completed=min(step, self.total), info=text)
            return
        now = time.monotonic()
        if now - self._last_plain >= self.plain_every_s or step >= self.total:
            self._last_plain = now
            pct = 100.0 * step / max(self.total, 1)
            print(f"[{self.description}] step {step}/{self.total} ({pct:.0f}%)  {text}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"
