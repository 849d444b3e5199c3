"""The Python API: train from a dict, a RunConfig or a YAML file; runs into pandas; compare like
`btcli compare --json`; and importing btcli leaves the process's settings alone."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, run_btcli

import btcli
from btcli.config import build_config

ENV = "MiniGrid-Empty-5x5-v0"
KEYS = {"command": "transfer", "mode": "scratch", "steps": 600, "seed": 0, "eval_episodes": 2, "threads": 1,
        "env": {"id": ENV, "num_envs": 2}, "agent": {"learning_starts": 200}}

# Run in a fresh interpreter: what a notebook has before and after `import btcli`, then after
# btcli.configure_process(). malloc: glibc has no getter for its thresholds, so the probe frees a
# 160 MiB heap top and looks whether glibc trimmed it (its default) or kept it (btcli's tuning).
PROBE = r"""
import ctypes, json, os, sys
import numpy, torch
from threadpoolctl import threadpool_info

libc = ctypes.CDLL("libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def heap_trimmed():
    blocks = [libc.malloc(64 << 10) for _ in range(2560)]   # 160 MiB of 64 KiB blocks: heap, not mmap
    peak = libc.mallinfo2().arena
    for b in reversed(blocks):
        libc.free(b)
    return libc.mallinfo2().arena < peak - (100 << 20)

def snapshot():
    return {"torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "blas": sorted([i["internal_api"], i["num_threads"]] for i in threadpool_info() if i["user_api"] == "blas"),
            "openmp": sorted([i["internal_api"], i["num_threads"]] for i in threadpool_info() if i["user_api"] == "openmp"),
            "environ": dict(os.environ), "heap_trimmed": heap_trimmed()}

before = snapshot()
import btcli, btcli.api, btcli.policy, btcli.export, btcli.cli, btcli.loop, btcli.runs, btcli.analysis
import btcli.compare, btcli.sweep, btcli.sweep_exec, btcli.evaluate_cmd, btcli.process, btcli.runtime
btcli.load_runs, btcli.load_policy, btcli.train
after = snapshot()
btcli.configure_process(threads=int(sys.argv[1]))
configured = snapshot()
print(json.dumps({"before": before, "after": after, "configured": configured}))
"""


def test_importing_btcli_changes_no_process_setting():
    threads = 3  # differs from the default on this machine, so the control below can see it
    proc = subprocess.run([sys.executable, "-c", PROBE, str(threads)], capture_output=True, text=True, cwd=REPO,
                          timeout=120, env={k: v for k, v in __import__("os").environ.items()
                                            if k != "OPENBLAS_NUM_THREADS"})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["after"] == seen["before"]
    # the control: configure_process does change them, so the probes would have seen an import do it
    before, configured = seen["before"], seen["configured"]
    assert before["heap_trimmed"] and not configured["heap_trimmed"]
    assert configured["torch_threads"] == threads != before["torch_threads"]
    assert configured["blas"] and all(n == 1 for _, n in configured["blas"])
    if any(n > 1 for _, n in before["blas"]):
        assert configured["blas"] != before["blas"]


def test_train_from_a_dict_is_the_cli_run(tmp_path):
    threads = torch.get_num_threads()
    run = btcli.train(KEYS, tmp_path / "api")
    assert torch.get_num_threads() == threads  # restored after training
    assert run.summary["steps"] == 600 and (tmp_path / "api" / "summary.json").is_file()
    assert run.config["mode"] == "scratch" and run.config["meta"]["argv"] == ["btcli.train"]
    cli = run_btcli("transfer", "--mode", "scratch", "--env", ENV, "--steps", "600", "--seed", "0", "--num-envs", "2",
                "--set", "eval_episodes=2", "--set", "threads=1", "--set", "agent.learning_starts=200",
                "--out", str(tmp_path / "cli"), "-q")
    assert cli.returncode == 0, cli.stderr
    ours, theirs = (pd.read_csv(tmp_path / name / "metrics.csv").drop(columns="time") for name in ("api", "cli"))
    pd.testing.assert_frame_equal(ours, theirs)  # the same seed gives the CLI's numbers
    # resuming a finished run returns it as it is
    assert btcli.train(KEYS, tmp_path / "api", resume=True).summary == run.summary


def test_train_takes_dotted_keys_a_runconfig_or_a_yaml_file(tmp_path):
    dotted = {"command": "pretrain", "intrinsic.objective": "count", "env.id": ENV, "env.num_envs": 1,
              "steps": 300, "agent.learning_starts": 100, "eval_episodes": 1, "threads": 1}
    a = btcli.train(dotted, tmp_path / "dotted")
    assert a.summary["command"] == "pretrain" and a.summary["objective"] == "count"
    cfg = build_config({k: v for k, v in dotted.items()})
    b = btcli.train(cfg, tmp_path / "dataclass")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"command": "pretrain", "intrinsic": {"objective": "count"},
                                                     "env": {"id": ENV, "num_envs": 1}, "steps": 300,
                                                     "agent": {"learning_starts": 100}, "eval_episodes": 1,
                                                     "threads": 1}))
    c = btcli.train(tmp_path / "c.yaml", tmp_path / "yaml")
    frames = [pd.read_csv(r.path / "metrics.csv").drop(columns="time") for r in (a, b, c)]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    pd.testing.assert_frame_equal(frames[0], frames[2])
    with pytest.raises(btcli.BtcliError, match="agent.lrr"):
        btcli.train({"agent.lrr": 1e-4}, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(btcli.BtcliError, match="already exists"):
        btcli.train(dotted, tmp_path / "dotted")


@pytest.mark.slow
def test_api_example_script_trains_loads_and_compares(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "experiments/api_example.py", "--out", str(out), "--steps", "600"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for name in ("scratch-s0", "scratch-s1", "ez-greedy-s0", "ez-greedy-s1"):
        assert name in proc.stdout and (out / name / "summary.json").is_file()
    assert "IQM" in proc.stdout and (out / "export-scratch-s0" / "policy.json").is_file()
    # load_runs: one row per episode of every run, with the config alongside
    df = btcli.load_runs(out)
    metrics = pd.concat([pd.read_csv(out / n / "metrics.csv") for n in sorted(p.name for p in out.iterdir()
                                                                              if (p / "metrics.csv").exists())])
    assert len(df) == len(metrics) and df["run"].nunique() == 4
    assert {"mode", "seed", "env.id", "agent.lr", "return", "step", "finished"} <= set(df.columns)
    assert set(df["mode"]) == {"scratch", "ez-greedy"} and df["env.id"].eq(ENV).all()
    summary = btcli.load_runs([out / "scratch-s0", out / "ez-greedy-s1"], table="summary")
    assert len(summary) == 2 and {"final_return_mean", "behaviour_share.learner", "mode"} <= set(summary.columns)
    # compare_groups is `btcli compare --json`
    cli = run_btcli("compare", str(out), "--by", "mode", "--metric", "auc", "--reps", "300", "--json",
                "--out", str(tmp_path / "cmp"))
    assert cli.returncode == 0, cli.stderr
    api = btcli.compare_groups(out, by="mode", metric="auc", reps=300, out=tmp_path / "cmp")
    assert api == json.loads(cli.stdout)
    assert [g["name"] for g in api["groups"]] == ["ez-greedy", "scratch"]
    with pytest.raises(btcli.BtcliError, match="unknown table"):
        btcli.load_runs(out, table="episodes")
