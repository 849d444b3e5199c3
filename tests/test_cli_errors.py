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


def test_bad_mode(btcli, tmp_path):
    line = one_error_line(btcli("transfer", "--mode", "magic", "--out", str(tmp_path / "r")))
    assert "unknown --mode 'magic'" in line


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
    assert "pretrain needs an objective (--objective count|rnd|ngu|ngu+rnd)" in line


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
