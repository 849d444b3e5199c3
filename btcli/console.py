"""The command line's two consoles and its one way to fail (shared by every command module).

Progress and messages go to stderr (``err``), results to stdout (``out``). In a pipe or a log
file rich would wrap tables at 80 columns; there they get 160.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from btcli.errors import BtcliError

err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def fail(e: BtcliError) -> None:
    """One ``btcli: error:`` line on stderr, then exit with the error's code."""
    err.print(f"btcli: error: {e}", soft_wrap=True)
    raise typer.Exit(e.exit_code)
