"""The `export-logs` command (registered on the main Typer app by :func:`register`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from btcli.errors import BtcliError


class Target(str, Enum):
    """Where `export-logs` replays a run's CSV logs."""

    tensorboard = "tensorboard"
    wandb = "wandb"


class WandbMode(str, Enum):
    """W&B's mode: offline writes a folder to upload later with `wandb sync`."""

    offline = "offline"
    online = "online"


def export_logs(
    runs: list[Path] = typer.Argument(..., metavar="RUN...", help="run directories, or folders holding runs"),
    to: Target = typer.Option(..., "--to", help="TensorBoard event files, or a W&B run"),
    out: Path | None = typer.Option(None, "--out", help="tensorboard: write OUT/<run name>/ (default RUN/tensorboard/); "
                                    "wandb: the folder W&B writes its wandb/ folder in (default RUN)"),
    force: bool = typer.Option(False, "--force", help="tensorboard: replace event files already in the target folder"),
    wandb_mode: WandbMode = typer.Option(WandbMode.offline, "--wandb-mode", help="offline (no network) or online"),
    wandb_project: str = typer.Option("btcli", "--wandb-project", help="W&B project"),
    wandb_entity: str = typer.Option("", "--wandb-entity", help="W&B entity (default: yours)"),
    wandb_group: str = typer.Option("", "--wandb-group", help="W&B group"),
) -> None:
    """Replay runs' CSV logs (metrics, train, eval) and config into TensorBoard or W&B (e.g. runs made offline)."""
    from btcli.console import err, fail
    from btcli.console import out as stdout

    try:
        from btcli.analysis import find_run_dirs
        from btcli.runs import RunDirError
        from btcli.trackers import export_run

        found: list[Path] = []
        for path in runs:
            try:
                found += find_run_dirs(path)
            except RunDirError as e:
                raise BtcliError(str(e)) from None
        if not found:
            raise BtcliError(f"no btcli run directories (folders with config.yaml) under {', '.join(map(str, runs))}")
        done = 0
        for run in dict.fromkeys(found):
            try:
                where = export_run(run, to.value, out=out, force=force, wandb_mode=wandb_mode.value,
                                   project=wandb_project, entity=wandb_entity, group=wandb_group)
            except BtcliError as e:
                if len(found) == 1:
                    raise
                err.print(f"warning: skipped '{run}': {e}", soft_wrap=True, markup=False)
                continue
            done += 1
            stdout.print(f"{run}: wrote {where}", soft_wrap=True, markup=False)
        if not done:
            raise BtcliError(f"none of the {len(found)} runs could be exported (see the warnings above)")
    except BtcliError as e:
        fail(e)


def register(app: typer.Typer) -> None:
    """Add `export-logs` to the btcli app."""
    app.command("export-logs")(export_logs)
