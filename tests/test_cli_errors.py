"""Bad input gets one clear line on stderr and a non-zero exit, and never loses data."""

import json

import yaml


def one_error_line(proc) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("btcli: error: ")
    return lines[0]


def test_unknown_env_suggests_close_ids(btcli, tmp_path):
    line = one_error_line(btcli("transfer", "--env", "ALE/Breakot-v5", "--out", str(tmp_path / "r")))
    assert "unknown environment id 'ALE/Breakot-v5'" in line and "ALE/Breakout-v5" in line
    assert not (tmp_path / "r").exists()


def test_malformed_yaml(btcli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  lr: [0.1\n")
    line = one_error_line(btcli("transfer", "--config", str(bad), "--out", str(tmp_path / "r")))
    assert f"config file '{bad}' is not valid YAML at line" in line


def test_unknown_key_in_yaml_and_set(btcli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"agent": {"learning_rate": 0.1}}))
    line = one_error_line(btcli("transfer", "--config", str(cfg), "--out", str(tmp_path / "r")))
    assert "unknown config key 'agent.learning_rate'" in line
    line = one_error_line(btcli("transfer", "--set", "explore.eps_ned=0.1", "--out", str(tmp_path / "r")))
    assert "unknown config key 'explore.eps_ned'; did you mean 'explore.eps_end'" in line


def test_wrong_type(btcli, tmp_path):
    line = one_error_line(btcli("transfer", "--set", "agent.batch_size=big", "--out", str(tmp_path / "r")))
    assert "config key 'agent.batch_size' expects int, got str 'big'" in line


def test_bad_choices_and_usage_errors_are_one_line(btcli, tmp_path):
    """Choice options are enums (Click checks them, --help lists them); every usage error Click
    raises is one `btcli: error:` line with exit code 2 instead of a boxed panel."""
    cases = [
        (("transfer", "--mode", "magic"), "invalid value for '--mode': 'magic' is not one of 'scratch', 'ez-greedy', "
                                          "'ft', 'bt', 'bt+ft'; see 'btcli transfer --help'"),
        (("pretrain", "--objective", "counts"), "invalid value for '--objective': 'counts' is not one of 'count'"),
        (("finetune", "--layers", "head"), "invalid value for '--layers': 'head' is not one of 'all', 'torso'"),
        (("transfer", "--device", "gpu"), "invalid value for '--device': 'gpu' is not one of 'auto', 'cpu', 'cuda'"),
        (("compare", "runs", "--metric", "best"), "invalid value for '--metric': 'best' is not one of 'eval-last', 'eval-auc', 'eval', 'final', 'auc'"),
        (("report", "runs", "--format", "jpg"), "invalid value for '--format': 'jpg' is not one of 'png', 'pdf', 'svg'"),
        (("transfer", "--stepz", "3"), "no such option: --stepz"),
        (("transfer", "--steps"), "option '--steps' requires an argument"),
        (("evaluate",), "missing argument 'RUN'; see 'btcli evaluate --help'"),
        (("trasnfer",), "no such command 'trasnfer'. Did you mean 'transfer'?"),
    ]
    for args, expected in cases:
        proc = btcli(*args, "--out", str(tmp_path / "r")) if args[0] == "transfer" and len(args) > 2 else btcli(*args)
        line = one_error_line(proc)
        assert proc.returncode == 2 and expected in line, line
        assert "╭" not in proc.stderr and "Usage:" not in proc.stderr
    assert not (tmp_path / "r").exists()
    assert "--steps" in one_error_line(btcli("transfer", "--stepz", "3"))  # Click's suggestion
    helped = btcli("transfer", "--help")
    assert helped.returncode == 0 and "scratch|ez-greedy|ft|bt|" in helped.stdout and "auto|cpu|cuda" in helped.stdout


def test_shell_completion_offers_choices(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO), _BTCLI_COMPLETE="complete_bash", COMP_WORDS="btcli transfer --mode b",
               COMP_CWORD="3")
    proc = subprocess.run([sys.executable, "-m", "btcli"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert proc.returncode == 0 and proc.stdout.split() == ["bt", "bt+ft"], proc.stderr


def test_print_config_prints_the_resolved_config_and_writes_nothing(btcli, tmp_path):
    out = tmp_path / "r"
    proc = btcli("transfer", "--env", "MiniGrid-Empty-5x5-v0", "--mode", "ez-greedy", "--set", "agent.n_step=5",
                 "--out", str(out), "--print-config")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["mode"] == "ez-greedy" and cfg["agent"]["n_step"] == 5
    assert cfg["agent"]["lr"] == 5e-4 and cfg["env"]["num_envs"] == 4  # the MiniGrid preset, resolved
    assert not out.exists() and not (tmp_path / "runs").exists()
    saved = tmp_path / "c.yaml"
    saved.write_text(proc.stdout)  # a valid --config file: the same config again
    again = btcli("transfer", "--config", str(saved), "--print-config")
    assert again.returncode == 0 and yaml.safe_load(again.stdout) == cfg
    line = one_error_line(btcli("pretrain", "--env", "MiniGrid-Empty-5x5-v0", "--print-config"))
    assert "pretrain needs an objective" in line  # the same checks as a real start


def test_keys_show_defaults_and_presets(btcli):
    proc = btcli("keys")
    assert proc.returncode == 0
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:6] == ["key", "default", "atari", "preset", "minigrid", "preset"]
    lr = next(r for r in rows if r.startswith("agent.lr "))
    assert lr.split()[:4] == ["agent.lr", "0.0001", "0.0001", "0.0005"] and "Adam learning rate" in lr
    proc = btcli("keys", "--env", "MiniGrid-Empty-5x5-v0")
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:4] == ["key", "default", "minigrid", "preset"]
    assert next(r for r in rows if r.startswith("agent.reward_clip ")).split()[:3] == ["agent.reward_clip", "1.0", "0.0"]
    assert next(r for r in rows if r.startswith("seed ")).split()[:2] == ["seed", "0"]
    assert "did you mean: ALE/Breakout-v5" in one_error_line(btcli("keys", "--env", "breakout"))


def test_existing_run_directory_is_not_touched(btcli, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.yaml").write_text("precious: true\n")
    line = one_error_line(btcli("transfer", "--env", "MiniGrid-Empty-5x5-v0", "--out", str(out)))
    assert f"run directory '{out}' already exists; pass --resume" in line
    assert (out / "config.yaml").read_text() == "precious: true\n"


def test_resume_of_missing_run(btcli, tmp_path):
    line = one_error_line(btcli("transfer", "--resume", "--out", str(tmp_path / "nope")))
    assert "cannot resume" in line and "no such run directory" in line


def test_mode_and_objective_come_from_yaml_and_resume_without_repeating_them(btcli, tmp_path):
    """--mode and --objective have no command-line default: a YAML file's value holds, and
    `--resume --out RUN` alone continues a run of any mode or objective; a changed one is refused."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mode: ez-greedy\nenv: {id: MiniGrid-Empty-5x5-v0}\neval_episodes: 0\nthreads: 1\n")
    out = tmp_path / "ez"
    made = btcli("transfer", "--config", str(cfg), "--steps", "200", "--out", str(out), "-q")
    assert made.returncode == 0, made.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["mode"] == "ez-greedy"
    more = btcli("transfer", "--resume", "--out", str(out), "--steps", "400", "--json")
    assert more.returncode == 0, more.stderr
    assert json.loads(more.stdout)["steps"] == 400 and json.loads(more.stdout)["mode"] == "ez-greedy"
    line = one_error_line(btcli("transfer", "--resume", "--out", str(out), "--mode", "scratch"))
    assert "--resume: 'mode' is 'ez-greedy' in the saved run but 'scratch' on the command line" in line
    pre = tmp_path / "pre"
    made = btcli("pretrain", "--objective", "count", "--env", "MiniGrid-Empty-5x5-v0", "--steps", "200",
                 "--out", str(pre), "-q", "--set", "eval_episodes=0", "--set", "threads=1")
    assert made.returncode == 0, made.stderr
    again = btcli("pretrain", "--resume", "--out", str(pre), "--steps", "400", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["objective"] == "count" and json.loads(again.stdout)["steps"] == 400
    line = one_error_line(btcli("pretrain", "--env", "MiniGrid-Empty-5x5-v0", "--out", str(tmp_path / "none")))
    from btcli.config import OBJECTIVES

    assert f"pretrain needs an objective (--objective {'|'.join(OBJECTIVES)})" in line
    assert "obs-count" in OBJECTIVES  # the registry, not a list in the message, names them


def test_report_and_evaluate_on_non_run(btcli, tmp_path):
    line = one_error_line(btcli("report", str(tmp_path)))
    assert "no btcli run directories (folders with config.yaml)" in line
    line = one_error_line(btcli("evaluate", str(tmp_path)))
    assert "not a btcli run directory" in line


def test_cuda_without_gpu_is_refused(btcli, tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    line = one_error_line(btcli("transfer", "--env", "MiniGrid-Empty-5x5-v0", "--steps", "100",
                                "--device", "cuda", "--out", str(tmp_path / "r")))
    assert "--device cuda" in line and "no CUDA GPU" in line
    assert not (tmp_path / "r").exists()


def test_bf16_warning_only_where_bf16_is_emulated(btcli, tmp_path):
    from btcli.runtime import cpu_has_native_bf16

    proc = btcli("transfer", "--env", "MiniGrid-Empty-5x5-v0", "--steps", "200", "--device", "cpu", "--quiet",
                 "--set", "agent.precision=bf16", "--set", "agent.learning_starts=100", "--set", "eval_episodes=0",
                 "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    warned = "warning: agent.precision=bf16 on a CPU without native bf16" in proc.stderr
    assert warned == (not cpu_has_native_bf16())  # shown even under --quiet, where it applies
    assert (tmp_path / "r" / "summary.json").exists()


def test_extending_or_shortening_a_run_through_resume(btcli, tmp_path):
    """--resume --steps N extends a finished run with one final evaluation (eval_every 0) and
    records the new budget in config.yaml; a budget below the steps done is refused; a run
    resumes only under the command that made it."""
    out = tmp_path / "r"
    made = btcli("transfer", "--env", "MiniGrid-Empty-5x5-v0", "--steps", "600", "--out", str(out), "-q",
                 "--set", "eval_episodes=2", "--set", "threads=1", "--set", "agent.learning_starts=200")
    assert made.returncode == 0, made.stderr
    more = btcli("transfer", "--resume", "--out", str(out), "--steps", "800", "-q")
    assert more.returncode == 0, more.stderr
    evals = [line.split(",")[0] for line in (out / "eval.csv").read_text().splitlines()[1:]]
    assert evals == ["600", "600", "800", "800"]  # before the fix: an evaluation after every step
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["steps"] == 800 and saved["meta"]["steps_changed"][0] | {"time": None} == {
        "from": 600, "to": 800, "at_step": 600, "time": None}
    line = one_error_line(btcli("transfer", "--resume", "--out", str(out), "--steps", "500"))
    assert "--steps 500 is below the 800 steps run" in line
    assert json.loads((out / "summary.json").read_text())["steps"] == 800  # untouched
    line = one_error_line(btcli("pretrain", "--resume", "--out", str(out)))
    assert f"was made by btcli transfer; continue it with btcli transfer --resume --out {out}" in line


def test_a_setting_refused_after_the_directory_exists_leaves_no_directory(btcli, tmp_path):
    """Refusals that only the environment or the trainer can make (an objective the env cannot
    serve) come after the run directory is made: it is removed, so a corrected rerun can start."""
    out = tmp_path / "p"
    line = one_error_line(btcli("pretrain", "--objective", "count", "--env", "ALE/Breakout-v5", "--steps", "100",
                                "--out", str(out)))
    assert "objective 'count' needs discrete grid cells" in line
    assert not out.exists()


def test_out_of_range_values_and_bad_paths_are_one_line(btcli, tmp_path):
    grid = ("--env", "MiniGrid-Empty-5x5-v0", "--steps", "100")
    cases = [
        (("--seed", "-1"), "config key 'seed' must be >= 0, got -1"),
        (("--set", "explore.eps_end=2"), "config key 'explore.eps_end' must be in [0, 1], got 2"),
        (("--set", "agent.learning_starts=-1"), "config key 'agent.learning_starts' must be >= 0"),
        (("--set", "agent.buffer_size=10"), "config key 'agent.buffer_size' is 10, below the 20 that 4 copies"),
        (("--set", "device=gpu"), "config key 'device' is 'gpu'; choose one of: auto, cpu, cuda"),
    ]
    for extra, expected in cases:
        line = one_error_line(btcli("transfer", *grid, *extra, "--out", str(tmp_path / "r")))
        assert expected in line, line
        assert not (tmp_path / "r").exists()
    (tmp_path / "afile").write_text("")
    line = one_error_line(btcli("transfer", *grid, "--out", str(tmp_path / "afile" / "run")))
    assert "cannot write" in line and "Not a directory" in line


def test_evaluate_and_report_refuse_bad_arguments_in_one_line(btcli, tmp_path):
    line = one_error_line(btcli("evaluate", str(tmp_path / "nope")))
    assert "'" + str(tmp_path / "nope") + "': no such directory; give a run directory" in line
    (tmp_path / "f.csv").write_text("x\n")
    line = one_error_line(btcli("report", str(tmp_path / "f.csv")))
    assert "is a file, not a directory" in line
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("steps: 10\n")
    line = one_error_line(btcli("evaluate", str(run), "--epsilon", "1.5"))
    assert "--epsilon must be in [0, 1], got 1.5" in line
    line = one_error_line(btcli("evaluate", str(run), "--device", "gpu"))
    assert "unknown device 'gpu'" in line


def test_interrupt_before_training_says_so_and_leaves_nothing(tmp_path):
    """SIGINT while the command still imports and builds (before its own signal handling)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "btcli", "transfer", "--env", "MiniGrid-Empty-5x5-v0",
                             "--steps", "100000", "--out", str(out), "-q"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:  # the directory exists: the trainer is being built
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    if "interrupted before training started" in err:
        assert not out.exists()
    else:  # the signal came after training began: the trainer's own handling, with a checkpoint
        assert "interrupted at step" in err and (out / "config.yaml").exists()
