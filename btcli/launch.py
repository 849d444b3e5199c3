"""Running one training command (transfer, finetune, pretrain): resolve its config, prepare or
reopen its run directory, build the trainer and train. The command line and the Python API
(:func:`btcli.api.train`) both come through here.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from btcli.config import RunConfig, all_keys, build_config, from_dict, get_key, to_dict
from btcli.console import err
from btcli.errors import BtcliError, Interrupted
from btcli.modes import MODES


def _default_out(cfg: RunConfig) -> Path:
    env = cfg.env.id.replace("ALE/", "").replace("/", "-")
    what = cfg.intrinsic.objective if cfg.command == "pretrain" else cfg.mode
    return Path("runs") / f"{cfg.command}-{what}-{env}-s{cfg.seed}"


def new_config(overrides: dict[str, Any]) -> RunConfig:
    """The config of a new run: the overrides resolved, the env id checked (one line if unknown)."""
    from btcli.envs import resolve_env_id

    cfg = build_config(overrides)
    try:
        cfg.env.id = resolve_env_id(cfg.env.id)
    except ValueError as e:
        raise BtcliError(str(e)) from None
    return cfg


def _resume_config(run_dir: Path, overrides: dict[str, Any]) -> RunConfig:
    """The saved config of a run; the command line may extend ``steps`` but change nothing else."""
    from btcli.runs import RunDir

    saved = RunDir.open_existing(run_dir).read_config()
    cfg = build_config(overrides, base=from_dict(saved))
    before = from_dict(saved)
    for key in all_keys():
        old, new = get_key(before, key), get_key(cfg, key)
        if old != new and key != "steps" and not key.startswith("log."):  # logging changes no number
            raise BtcliError(
                f"--resume: '{key}' is {old!r} in the saved run but {new!r} on the command line; "
                "drop the option (a run keeps its config) or start a new run with another --out")
    return cfg





def train_command(overrides: dict[str, Any], out: Path | None, resume: bool, json_out: bool, quiet: bool,
           print_config: bool = False) -> None:
    if print_config:
        _print_config(overrides, out, resume)
        return
    from btcli.runtime import configure_process
    from btcli.signals import die_with_parent

    die_with_parent()
    try:
        configure_process(_threads(overrides, out, resume))
        prepared = _prepare_run(overrides, out, resume, json_out, quiet)
    except KeyboardInterrupt:  # training handles its own signals; before it, only this says what happened
        raise Interrupted("interrupted before training " + ("resumed; the run is as it was" if resume else
                                                             "started; nothing was saved")) from None
    if prepared is None:
        return
    trainer, run = prepared
    summary = trainer.train(resume=resume)
    if json_out:
        print(json.dumps(summary, indent=2))
    elif not quiet:
        _print_run_summary(summary, run.path)


def _print_config(overrides: dict[str, Any], out: Path | None, resume: bool) -> None:
    """--print-config: the config the run would use, as YAML on stdout (a valid --config file);
    reads what it must (a resumed run's config.yaml), writes nothing and trains nothing."""
    import yaml


    if resume:
        if out is None or not out.exists():
            raise BtcliError("--resume needs --out: an existing run directory to continue")
        cfg = _resume_config(out, {k: v for k, v in overrides.items() if k != "command"})
    else:
        cfg = new_config(overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")


def _threads(overrides: dict[str, Any], out: Path | None, resume: bool) -> int:
    """The run's ``threads`` key (a resumed run keeps its saved one) for configure_process."""
    value = overrides.get("threads")
    if resume and out is not None and (out / "config.yaml").is_file():
        from btcli.runs import RunDir

        value = RunDir(out).read_config().get("threads", value)
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0  # a malformed value: the config check names it next


def _prepare_run(overrides: dict[str, Any], out: Path | None, resume: bool, json_out: bool, quiet: bool):
    """The trainer of a new or resumed run, with its directory locked; None when a resumed run is
    already complete. A new run's directory is removed again if the trainer cannot be built, and
    the lock is released whenever no trainer is returned (``btcli.train`` may try again in-process)."""
    held: list = []
    try:
        prepared = _prepare_locked(overrides, out, resume, json_out, quiet, held)
    except BaseException:
        for run in held:
            run.unlock()
        raise
    if prepared is None:
        for run in held:
            run.unlock()
    return prepared


def _prepare_locked(overrides: dict[str, Any], out: Path | None, resume: bool, json_out: bool, quiet: bool,
                    held: list):
    from btcli.loop import Trainer
    from btcli.runs import RunDir
    from btcli.runtime import resolve_device
    from btcli.trackers import require as require_loggers

    pretrained = None
    if resume:
        if out is None:
            raise BtcliError("--resume needs --out: the run directory to continue")
        if not out.exists():
            raise BtcliError(f"cannot resume '{out}': no such run directory; start it without --resume")
        cfg = _resume_config(out, {k: v for k, v in overrides.items() if k not in ("command",)})
        if overrides.get("command", cfg.command) != cfg.command:
            raise BtcliError(f"run '{out}' was made by btcli {cfg.command}; continue it with "
                             f"btcli {cfg.command} --resume --out {out}")
        run = RunDir.open_existing(out)
        run.lock()
        held.append(run)
        done = run.steps_done()
        require_loggers(cfg.log)
        if cfg.steps < done:
            raise BtcliError(f"--steps {cfg.steps} is below the {done} steps run '{out}' has done; "
                             f"give --steps {done} or more, or leave --steps out")
        if run.is_complete():
            summary = json.loads(run.summary_path.read_text())
            if summary.get("steps", 0) >= cfg.steps:
                err.print(f"run '{out}' is already complete ({summary.get('steps')} steps); nothing to do")
                if json_out:
                    print(json.dumps(summary, indent=2))
                return None
        if cfg.steps != run.read_config().get("steps"):
            run.extend_steps(cfg.steps, done)  # config.yaml states the budget the run now has
        if run.is_complete():
            run.summary_path.unlink()
    else:
        cfg = new_config(overrides)
        resolve_device(cfg.device)  # fail before anything is written
        require_loggers(cfg.log)
        pretrained = _check_pretrained(cfg) if cfg.transfer.pretrained else None
        out = out or _default_out(cfg)
    # a new run's directory is absent or empty now: on failure it goes back to that
    fresh = not resume and (not out.exists() or (out.is_dir() and not any(out.iterdir())))
    try:
        if not resume:
            run = RunDir.create(out, to_dict(cfg), sys.argv)
            run.lock()
            held.append(run)
        return Trainer(cfg, run, progress=not quiet, pretrained=pretrained), run
    except BaseException as e:
        if fresh:  # nothing was trained: leave nothing that only --resume could reopen
            _empty(out)
        if isinstance(e, ValueError):  # a setting the environment or a component refused
            raise BtcliError(str(e)) from None
        raise


def _empty(path: Path) -> None:
    """Remove a failed start's run directory (absent or empty before the start) and what it holds."""
    if path.is_dir():
        for child in path.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        if not any(path.iterdir()):
            path.rmdir()


def _check_pretrained(cfg: RunConfig):
    """Load the pre-trained run and check it fits this task, before any run directory is made."""
    from btcli.build import checkpoint_identity
    from btcli.envs import make_vec_env
    from btcli.pretrained import load_pretrained

    pretrained = load_pretrained(cfg.transfer.pretrained)
    env = make_vec_env(cfg.env, seed=cfg.seed)
    try:
        pretrained.check_task(checkpoint_identity(cfg, env), allow_other_env=cfg.transfer.allow_other_env)
    finally:
        env.close()
    if MODES[cfg.mode].copies_weights:
        pretrained.check_architecture(to_dict(cfg.agent), cfg.transfer.ft_layers)
    pretrained.check_teacher(cfg.transfer.kickstart, cfg.agent.core)
    return pretrained


def _print_run_summary(summary: dict[str, Any], path: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{path}", show_header=False)
    for key in ("env_id", "mode", "seed", "steps", "episodes", "final_return_mean", "eval_return_mean",
                "wall_time_s", "mean_sps"):
        value = summary.get(key)
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    err.print(table)


