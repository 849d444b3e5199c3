"""btcli: Behavior Transfer experiments from the command line, and the Python API behind it.

    import btcli
    summary = btcli.train({"env.id": "MiniGrid-Empty-5x5-v0", "steps": 20000}, "runs/a")
    df = btcli.load_runs("runs/")                       # one long pandas DataFrame, config columns
    result = btcli.compare_groups(["runs/*"], by="mode")  # what `btcli compare --json` prints
    policy = btcli.load_policy("exports/a")             # a `btcli export` folder -> a callable

Importing btcli (or any of its modules) changes no process-wide setting: torch threads, BLAS
threads and malloc stay as they are. The command line sets them (:func:`configure_process`),
and ``btcli.train(..., configure_process=True)`` does the same when asked.
"""

from __future__ import annotations

__version__ = "0.1.0"

# name -> module: loaded on first use, so `import btcli` stays cheap (no torch until needed)
_API = {
    "train": "btcli.api",
    "load_runs": "btcli.api",
    "compare_groups": "btcli.api",
    "export_policy": "btcli.api",
    "RunResult": "btcli.api",
    "load_policy": "btcli.policy",
    "Policy": "btcli.policy",
    "PolicyOutput": "btcli.policy",
    "configure_process": "btcli.process",
    "BtcliError": "btcli.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'btcli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
