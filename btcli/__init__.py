"""btcli: Behavior Transfer experiments from the command line."""

__version__ = "0.1.0"
