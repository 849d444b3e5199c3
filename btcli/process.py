"""Process-wide settings that make training fast, applied by the command line, never on import.

:func:`configure_process` is what every btcli training process runs before its first step:
glibc malloc tuning (no page faults per update), torch's CPU thread count, numpy's BLAS on one
thread. They are process-wide and stay set; a notebook calls it only if it wants them
(``btcli.train(..., configure_process=True)``).
"""

from __future__ import annotations

import os


def prepare_cli_environment() -> None:
    """Environment variables a btcli command sets before numpy loads (entry points only).

    numpy's OpenBLAS threads spin-wait between calls and fight torch's OpenMP threads for the
    cores (measured: experiments/RESULTS.md); btcli's numpy work is small per call, so one BLAS
    thread is right.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def configure_process(threads: int = 0) -> int:
    """Tune malloc, set torch's CPU threads (``threads``; 0: all cores this process may use) and
    numpy's BLAS to one thread, for the rest of the process; returns torch's thread count."""
    from btcli.runtime import configure_process as configure

    return configure(threads)


def main() -> None:
    """The `btcli` console script: environment first, then the Typer app."""
    prepare_cli_environment()
    from btcli.cli import main as cli_main

    cli_main()
