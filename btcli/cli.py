"""The `btcli` command line: parse, resolve a config, call one function per subcommand.

No RL logic lives here. Every user-fixable problem becomes one line on stderr and a
non-zero exit code.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from btcli.config import (
    ATARI_PRESET,
    MINIGRID_PRESET,
    OBJECTIVES,
    RunConfig,
    all_keys,
    get_key,
    help_text,
    load_yaml_overrides,
    parse_set_items,
    preset_for,
)
from btcli.console import err, fail, out
from btcli.errors import BtcliError
from btcli.intrinsic.registry import objectives
from btcli.launch import train_command
from btcli.modes import TRANSFER_MODES, mode_help

app = typer.Typer(
    no_args_is_help=True, pretty_exceptions_enable=False,  # --install-completion: shell completion
    help="Behavior Transfer experiments: pre-train without rewards, transfer by FT, BT or BT+FT.",
)



def _version(value: bool) -> None:
    if value:
        import btcli

        print(f"btcli {btcli.__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Behavior Transfer experiments: pre-train without rewards, transfer by FT, BT or BT+FT."""


def _overrides(config: Path | None, flags: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Flat overrides in precedence order: YAML file, then flags that were given, then --set."""
    merged: dict[str, Any] = {}
    if config is not None:
        merged.update(load_yaml_overrides(config))
    merged.update({k: v for k, v in flags.items() if v is not None})
    merged.update(parse_set_items(sets))
    return merged


def _choices(name: str, values) -> type[Enum]:
    """A str Enum whose values are the words an option accepts (``--help`` lists them, shells complete them)."""
    return Enum(name, {v: v for v in values}, type=str)


Mode = _choices("Mode", TRANSFER_MODES)
Objective = _choices("Objective", OBJECTIVES)
_OBJECTIVE_HELP = " | ".join(f"{o.name}: {o.help}" for o in objectives().values())
Device = _choices("Device", ("auto", "cpu", "cuda"))
Layers = _choices("Layers", ("all", "torso"))
Freeze = _choices("Freeze", ("none", "torso"))
ReportFormat = _choices("ReportFormat", ("png", "pdf", "svg"))


def _word(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


# Options shared by the training commands (transfer, finetune, pretrain).
EnvOpt = Annotated[str | None, typer.Option("--env", help="environment id, e.g. ALE/Breakout-v5 or MiniGrid-FourRooms-v0")]
StepsOpt = Annotated[int | None, typer.Option(help="environment steps to train for")]
SeedOpt = Annotated[int | None, typer.Option(help="seed of networks, exploration and environments")]
OutOpt = Annotated[Path | None, typer.Option(help="run directory (default runs/<command>-<mode or objective>-<env>-s<seed>)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file of config keys (see `btcli keys`)")]
SetOpt = Annotated[list[str], typer.Option("--set", help="override a config key: --set agent.lr=1e-4 (repeatable)")]
DeviceOpt = Annotated[Device | None, typer.Option(help="'auto': a CUDA GPU when torch sees one")]
NumEnvsOpt = Annotated[int | None, typer.Option("--num-envs", help="environment copies stepped together")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last complete checkpoint")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the final summary as JSON on stdout")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")]
PrintConfigOpt = Annotated[bool, typer.Option("--print-config", help="print the resolved config as YAML and exit; "
                                              "nothing is run or written")]
PretrainedOpt = Annotated[Path | None, typer.Option(
    "--pretrained", help="pre-trained run directory (or a checkpoints/step_* folder of one, or a `btcli export` "
    "folder); modes ft, bt, bt+ft")]


@app.command()
def transfer(
    # no command-line default: a --config file's mode (or a resumed run's) holds unless --mode is given
    mode: Mode | None = typer.Option(None, help=f"{mode_help()} (default scratch)"),
    pretrained: PretrainedOpt = None,
    env: EnvOpt = None, steps: StepsOpt = None, seed: SeedOpt = None, out: OutOpt = None,
    config: ConfigOpt = None, set_: SetOpt = [], device: DeviceOpt = None,  # noqa: B006 (typer reads it)
    num_envs: NumEnvsOpt = None, resume: ResumeOpt = False, json_out: JsonOpt = False, quiet: QuietOpt = False,
    print_config: PrintConfigOpt = False,
) -> None:
    """Learn the rewarded task, from scratch or from a pre-trained run (FT, BT, BT+FT)."""
    flags = {"mode": _word(mode), "command": "transfer", "transfer.pretrained": _path(pretrained)}
    _train(flags, config, set_, _common(env, steps, seed, device, num_envs), out, resume, json_out, quiet, print_config)


@app.command()
def finetune(
    pretrained: PretrainedOpt = None,
    layers: Layers | None = typer.Option(None, help="pre-trained weights copied: all (default), or torso (fresh Q head)"),
    freeze: Freeze | None = typer.Option(None, help="weights kept frozen: none (default) or torso"),
    lr: float | None = typer.Option(None, help="learning rate of the fine-tuning (agent.lr)"),
    zero_values: bool | None = typer.Option(None, "--zero-values/--copy-values",
                                            help="start at state values of 0 (default) or copy the pre-trained values "
                                                 "(transfer.ft_zero_values)"),
    env: EnvOpt = None, steps: StepsOpt = None, seed: SeedOpt = None, out: OutOpt = None,
    config: ConfigOpt = None, set_: SetOpt = [], device: DeviceOpt = None,  # noqa: B006 (typer reads it)
    num_envs: NumEnvsOpt = None, resume: ResumeOpt = False, json_out: JsonOpt = False, quiet: QuietOpt = False,
    print_config: PrintConfigOpt = False,
) -> None:
    """Fine-tune pre-trained weights on the rewarded task (the same code as `transfer --mode ft`)."""
    flags = {"mode": "ft", "command": "finetune", "transfer.pretrained": _path(pretrained),
             "transfer.ft_layers": _word(layers), "transfer.freeze": _word(freeze), "agent.lr": lr,
             "transfer.ft_zero_values": zero_values}
    _train(flags, config, set_, _common(env, steps, seed, device, num_envs), out, resume, json_out, quiet, print_config)


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


@app.command()
def pretrain(
    objective: Objective | None = typer.Option(None, help=f"intrinsic reward to maximise: {_OBJECTIVE_HELP} "
                                               "(or intrinsic.objective in --config)"),
    env: EnvOpt = None, steps: StepsOpt = None, seed: SeedOpt = None, out: OutOpt = None,
    config: ConfigOpt = None, set_: SetOpt = [], device: DeviceOpt = None,  # noqa: B006 (typer reads it)
    num_envs: NumEnvsOpt = None, resume: ResumeOpt = False, json_out: JsonOpt = False, quiet: QuietOpt = False,
    print_config: PrintConfigOpt = False,
) -> None:
    """Pre-train without rewards: the learner maximises an intrinsic reward; the task's score is only logged."""
    flags = {"intrinsic.objective": _word(objective), "command": "pretrain"}
    _train(flags, config, set_, _common(env, steps, seed, device, num_envs), out, resume, json_out, quiet, print_config)


def _common(env, steps, seed, device, num_envs) -> dict[str, Any]:
    return {"env.id": env, "steps": steps, "seed": seed, "device": _word(device), "env.num_envs": num_envs}


def _train(flags: dict[str, Any], config: Path | None, sets: list[str], common: dict[str, Any], out: Path | None,
           resume: bool, json_out: bool, quiet: bool, print_config: bool) -> None:
    """A training command: its flags and the shared options over --config, --set over both; bad input
    ends in one error line."""
    try:
        train_command(_overrides(config, flags | common, sets), out, resume, json_out, quiet, print_config)
    except BtcliError as e:
        fail(e)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="a run directory"),
    episodes: int = typer.Option(10, help="evaluation episodes"),
    checkpoint: str | None = typer.Option(None, help="checkpoint folder or step (default: the newest complete one)"),
    epsilon: float | None = typer.Option(None, help="evaluation epsilon (default: the run's explore.eps_eval)"),
    seed: int = typer.Option(12345, help="seed of the evaluation environments"),
    env: str | None = typer.Option(None, "--env", help="evaluate on another task with the same observation and "
                                   "action spaces (e.g. a pre-trained policy's zero-shot score on a transfer task)"),
    video: bool = typer.Option(False, "--video", help="also record one episode as RUN/videos/<checkpoint>.gif"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON on stdout"),
) -> None:
    """Evaluate a run's greedy policy under the evaluation protocol; appends to RUN/eval.csv."""
    try:
        from btcli.evaluate_cmd import evaluate_run

        result = evaluate_run(run_dir, episodes=episodes, checkpoint=checkpoint, epsilon=epsilon, seed=seed,
                              video=video, device=device, env_id=env)
        if json_out:
            print(json.dumps(result, indent=2))
        else:
            out.print(f"{result['env_id']}  checkpoint {result['checkpoint']}  step {result['step']}: "
                      f"return {result['return_mean']:.2f} ± {result['return_std']:.2f} over "
                      f"{result['episodes']} episodes (epsilon {result['epsilon']})")
            if result.get("video"):
                out.print(f"video: {result['video']}")
    except BtcliError as e:
        fail(e)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="a run directory"),
    out_dir: Path = typer.Option(..., "--out", help="folder to write (must not exist or be empty)"),
    checkpoint: str | None = typer.Option(None, help="checkpoint folder or step (default: the newest complete one)"),
    json_out: bool = typer.Option(False, "--json", help="print policy.json and the export's SHA-256 as JSON on stdout"),
) -> None:
    """Export a run's network as a shareable policy: safetensors weights, policy.json, a model card."""
    try:
        from btcli.export import export_run

        done = export_run(run_dir, out_dir, checkpoint=checkpoint)
        if json_out:
            print(json.dumps({"path": str(done.path), "sha256": done.sha256, "policy": done.spec}, indent=2))
        else:
            src = done.spec["source"]
            out.print(f"exported {src['checkpoint']} (step {src['step']}) of '{run_dir}' to '{done.path}': "
                      f"policy.json SHA-256 {done.sha256}", soft_wrap=True)
    except BtcliError as e:
        fail(e)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="a run directory, or a folder holding run directories"),
    json_out: bool = typer.Option(False, "--json", help="print the summary (a list for a folder) as JSON on stdout"),
    no_files: bool = typer.Option(False, "--no-files", help="do not write report.png / report.md"),
    fmt: ReportFormat = typer.Option(ReportFormat.png, "--format", help="format of the figure: RUN/report.png, "
                                     ".pdf or .svg"),
) -> None:
    """Summarise runs: a table, and RUN/report.png (learning curve) and RUN/report.md per run."""
    try:
        from btcli.analysis import find_run_dirs, render_runs_table, render_summary_table, report_run
        from btcli.runs import RunDirError

        try:
            runs = find_run_dirs(run_dir)
            if not runs:
                raise BtcliError(f"no btcli run directories (folders with config.yaml) under '{run_dir}'")
            if len(runs) == 1:
                summaries = [report_run(runs[0], write_files=not no_files, fmt=fmt.value)]
            else:  # a folder: a damaged run is skipped with a warning, the others reported
                summaries = []
                for path in runs:
                    try:
                        summaries.append(report_run(path, write_files=not no_files, fmt=fmt.value))
                    except RunDirError as e:
                        err.print(f"warning: skipped '{path}': {e}", soft_wrap=True)
                if not summaries:
                    raise BtcliError(f"none of the {len(runs)} run directories under '{run_dir}' could be read")
        except RunDirError as e:
            raise BtcliError(str(e)) from None
        if json_out:
            single = len(summaries) == 1 and runs[0] == run_dir
            print(json.dumps(summaries[0] if single else summaries, indent=2, allow_nan=False))
            return
        if len(summaries) == 1:
            out.print(render_summary_table(summaries[0]))
        else:
            out.print(render_runs_table(summaries))
        for summary in summaries:
            for path in summary.get("files", {}).values():
                out.print(f"wrote {path}")
    except BtcliError as e:
        fail(e)


@app.command()
def envs(filter: str = typer.Argument("", help="only ids containing this text")) -> None:
    """List the environment ids btcli can run."""
    from btcli.envs import list_env_ids

    for env_id in list_env_ids():
        if filter.lower() in env_id.lower():
            print(env_id)


def _shown(value: Any) -> str:
    """A config value as it is written in YAML or --set ('' for an unset text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return '""' if value == "" else str(value)


@app.command()
def keys(env: str | None = typer.Option(None, "--env", help="show the preset of this environment's domain "
                                         "(default: both presets)")) -> None:
    """List every config key with its default, the domain presets' values and its help (for --set and --config)."""
    try:
        defaults = RunConfig()
        if env is None:
            presets = {"atari preset": ATARI_PRESET, "minigrid preset": MINIGRID_PRESET}
        else:
            from btcli.envs import resolve_env_id

            try:
                env_id = resolve_env_id(env)
            except ValueError as e:
                raise BtcliError(str(e)) from None
            domain = "atari" if env_id.startswith("ALE/") else "minigrid" if env_id.startswith("MiniGrid") else None
            presets = {f"{domain or env_id} preset": preset_for(env_id)}
        columns = ["key", "default", *presets, "help"]
        rows = [[key, _shown(get_key(defaults, key)), *(_shown(p[key]) if key in p else "" for p in presets.values()),
                 help_text(key)] for key in all_keys()]
        widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns) - 1)]
        for row in [columns, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    except BtcliError as e:
        fail(e)


from btcli.cli_analysis import register as _register_analysis  # noqa: E402
from btcli.cli_logs import register as _register_logs  # noqa: E402

_register_analysis(app)
_register_logs(app)


def _usage_line(e: Exception) -> str:
    """A Click usage error as one line: Click's message (with its "did you mean"), then where to look."""
    message = " ".join(e.format_message().split()).replace("Value error, ", "").rstrip(".")
    ctx = getattr(e, "ctx", None)
    where = f"; see '{ctx.command_path} --help'" if ctx is not None and ctx.command_path else ""
    return f"btcli: error: {message[:1].lower() + message[1:]}{where}"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: usage errors (unknown option, missing argument, bad choice) are
    one ``btcli: error:`` line and exit code 2, like every other error, instead of a boxed panel."""
    from typer.main import get_command

    # Typer >= 0.24 carries its own copy of Click; its exceptions live where BadParameter does
    clicks = sys.modules[typer.BadParameter.__module__]
    no_args_help = getattr(clicks, "NoArgsIsHelpError", ())
    try:
        code = get_command(app).main(args=argv, prog_name="btcli", standalone_mode=False)
    except clicks.UsageError as e:
        if isinstance(e, no_args_help):  # bare `btcli`: the help, as before
            e.show()
        else:
            print(_usage_line(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except clicks.ClickException as e:
        print(f"btcli: error: {' '.join(e.format_message().split())}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Abort:
        print("btcli: error: aborted", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
