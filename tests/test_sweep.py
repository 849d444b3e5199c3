"""btcli sweep: grid expansion (unit), then small real sweeps (local, resume, interrupt, Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

from btcli.runs import RunDir, RunDirError
from btcli.sweep import SweepError, expand, fill, load_sweep, parse_sweep, select
from btcli.sweep_exec import run_sweep
from btcli.sweep_tasks import make_task

EMPTY = "MiniGrid-Empty-5x5-v0"
DOORKEY = "MiniGrid-DoorKey-5x5-v0"
TINY = {"steps": 800, "eval_episodes": 2, "threads": 1}


def cli_options():
    """The training commands' options, read off btcli's own CLI (what `btcli sweep` gives expand)."""
    from btcli.cli import app
    from btcli.cli_analysis import command_options

    return command_options(app)


def jobs_of(data: dict, out="root"):
    return expand(parse_sweep(data, out=Path(out)), cli_options())


PAPER = {
    "out": "runs/paper",
    "stages": [
        {"name": "pretrain", "command": "pretrain", "grid": {"env": [EMPTY, DOORKEY], "seed": [0, 1]},
         "args": {"objective": "count", "steps": 2000}},
        {"name": "transfer", "command": "transfer",
         "grid": {"env": [EMPTY, DOORKEY], "seed": [0, 1], "mode": ["ft", "bt"]},
         "args": {"steps": 2000, "pretrained": "{run:pretrain}", "num-envs": 2},
         "set": {"agent.lr": [1.0e-4, 5.0e-4], "explore.eps_end": 0.05}},
    ],
}


# ----------------------------------------------------------------------------- expansion


def test_crossing_order_names_and_arguments():
    jobs = jobs_of(PAPER, out="runs/paper")
    pre, tr = jobs[:4], jobs[4:]
    assert [j.stage for j in jobs] == ["pretrain"] * 4 + ["transfer"] * 16  # stage order kept
    assert [j.name for j in pre] == [f"pretrain-{e}-s{s}" for e in (EMPTY, DOORKEY) for s in (0, 1)]
    # first key slowest; list-valued set keys are crossed and named, scalars are not
    assert tr[0].name == f"transfer-{EMPTY}-s0-ft-lr0.0001"
    assert tr[1].name == f"transfer-{EMPTY}-s0-ft-lr0.0005"
    assert tr[2].name == f"transfer-{EMPTY}-s0-bt-lr0.0001"
    assert tr[-1].name == f"transfer-{DOORKEY}-s1-bt-lr0.0005"
    assert len({j.name for j in jobs}) == 20 and all(j.run_dir == Path("runs/paper") / j.name for j in jobs)
    a = tr[-1].args
    assert a[a.index("--env") + 1] == DOORKEY and a[a.index("--seed") + 1] == "1" and a[a.index("--mode") + 1] == "bt"
    assert a[a.index("--num-envs") + 1] == "2" and a[a.index("--steps") + 1] == "2000"
    assert "agent.lr=0.0005" in a and "explore.eps_end=0.05" in a
    # {run:pretrain}: the stage-1 run with the same env and seed, and it is a dependency
    assert a[a.index("--pretrained") + 1] == str(Path("runs/paper") / f"pretrain-{DOORKEY}-s1")
    assert tr[-1].needs == [Path("runs/paper") / f"pretrain-{DOORKEY}-s1"]
    assert pre[0].args[:6] == ["--env", EMPTY, "--seed", "0", "--objective", "count"]


def test_plain_templates_name_templates_and_braces():
    data = {"stages": [
        {"name": "pre", "command": "pretrain", "grid": {"env": [EMPTY], "seed": [3]}, "args": {"objective": "rnd"}},
        {"name": "ft", "command": "transfer", "grid": {"seed": [3]}, "run": "ft-{seed}-x",
         "args": {"env": EMPTY, "pretrained": "{out}/pre-{env}-s{seed}", "config": "{{literal}}-{stage}-{name}"}},
    ]}
    pre, ft = jobs_of(data, out="/tmp/o")
    assert ft.name == "ft-3-x" and ft.run_dir == Path("/tmp/o/ft-3-x")
    assert ft.args[ft.args.index("--pretrained") + 1] == f"/tmp/o/pre-{EMPTY}-s3"
    assert ft.needs == [pre.run_dir]  # a plain template naming an earlier run is a dependency too
    assert ft.args[ft.args.index("--config") + 1] == "{literal}-ft-ft-3-x"
    assert fill("{a.b}/{{x}}", {"a.b": 1}, "here") == "1/{x}"


@pytest.mark.parametrize("stage, message", [
    ({"grid": {"learning_rate": [1]}}, "stage 'x': grid: unknown option or config key 'learning_rate'"),
    ({"grid": {"seeds": [1]}}, "did you mean 'seed'"),
    ({"set": {"agent.lr2": [1]}}, "stage 'x': set: unknown config key 'agent.lr2'; did you mean 'agent.lr'"),
    ({"set": {"steps": 5, "mode": "bt"}, "grid": {"out": ["a"]}}, "'out' is set by the sweep itself"),
    ({"args": {"seed": [1, 2]}}, "args.seed must be a single value (put lists in 'grid'"),
    ({"args": {"steps": 5}, "grid": {"steps": [1]}}, "'steps' is given twice (grid and args)"),
    ({"args": {"config": "{nope}"}}, "stage 'x': config: unknown template field '{nope}'"),
    ({"args": {"config": "{run:x}"}}, "{run:x} must name an earlier stage (this is the first stage)"),
    ({"command": "report"}, "'report' is not a btcli training command; choose one of:"),
    ({"grids": {}}, "stage x: unknown key 'grids'; did you mean 'grid'?"),
    ({"grid": {"env": [EMPTY, "MiniGrid-Empty-5x5-v1"]}},
     "stage 'x': env: unknown environment id 'MiniGrid-Empty-5x5-v1'; did you mean"),
    ({"set": {"env.id": "ALE/Breakot-v5"}}, "stage 'x': env.id: unknown environment id 'ALE/Breakot-v5'"),
    ({"args": {"stepz": 5}}, "unknown option or config key 'stepz'; did you mean 'steps'?"),
])
def test_grid_errors(stage, message):
    data = {"stages": [{"name": "x", "command": "transfer", **stage}]}
    with pytest.raises(SweepError) as info:
        jobs_of(data)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_only_selects_matching_runs_and_what_they_read():
    jobs = jobs_of(PAPER, out="runs/paper")
    names = lambda js: [j.name for j in js]  # noqa: E731
    # transfer runs of one env; the pre-training runs they read come along (both seeds), no others
    picked = select(jobs, [f"env={DOORKEY}", "mode=bt"])
    assert names(picked) == [f"pretrain-{DOORKEY}-s0", f"pretrain-{DOORKEY}-s1"] + [
        f"transfer-{DOORKEY}-s{s}-bt-lr{lr}" for s in (0, 1) for lr in ("0.0001", "0.0005")]
    # a key given twice is either value; a key only the pretrain stage lacks drops it unless read
    assert len(select(jobs, ["seed=0", "seed=1", "mode=ft"])) == 4 + 8
    assert names(select(jobs, ["seed=1", f"env={EMPTY}"])) == [f"pretrain-{EMPTY}-s1"] + [
        f"transfer-{EMPTY}-s1-{m}-lr{lr}" for m in ("ft", "bt") for lr in ("0.0001", "0.0005")]
    assert names(select(jobs, ["agent.lr=0.0005", "seed=0", f"env={EMPTY}"]))[0] == f"pretrain-{EMPTY}-s0"
    assert select(jobs, []) == jobs  # nothing asked: the whole sweep, in its order


@pytest.mark.parametrize("only, message", [
    (["seed"], "--only 'seed': give KEY=VALUE"),
    (["sede=0"], "no stage of the sweep crosses 'sede'; its grid keys are agent.lr, env, explore.eps_end, mode, seed"),
    (["seed=7"], "--only seed=7: no run has that value; the sweep's values are 0, 1"),
    (["mode=ft", "agent.lr=0.001"], "no run has that value"),
])
def test_only_errors(only, message):
    with pytest.raises(SweepError) as info:
        select(jobs_of(PAPER), only)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_ambiguous_run_reference_and_duplicate_names():
    data = {"stages": [
        {"name": "pre", "command": "pretrain", "grid": {"seed": [0]}, "args": {"objective": "count"},
         "set": {"agent.lr": [1e-4, 5e-4]}},
        {"name": "tr", "command": "transfer", "grid": {"seed": [0]}, "args": {"pretrained": "{run:pre}"}},
    ]}
    with pytest.raises(SweepError, match=r"\{run:pre\} matches 2 runs for seed=0; they differ in agent.lr"):
        jobs_of(data)
    dup = {"stages": [{"name": "a", "command": "transfer", "grid": {"seed": [0, 1]}, "run": "same"}]}
    with pytest.raises(SweepError, match="would share the directory"):
        jobs_of(dup)


def test_make_task_resumes_with_the_saved_threads(tmp_path):
    (job,) = jobs_of({"stages": [{"name": "a", "command": "transfer", "grid": {"seed": [0]}}]}, out=tmp_path)
    fresh = make_task(job, threads=2)
    assert fresh.argv[:4] == [sys.executable, "-m", "btcli", "transfer"]
    assert not fresh.resume and "--resume" not in fresh.argv and "threads=2" in fresh.argv
    assert fresh.argv[-3:] == ["--out", str(job.run_dir), "--quiet"]
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "config.yaml").write_text(yaml.safe_dump({"threads": 5}))
    resumed = make_task(job, threads=2)
    assert resumed.resume and resumed.argv[-1] == "--resume" and "threads=5" in resumed.argv


def test_cli_errors(btcli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - name: [a\n")
    for args, text in [
        ((str(bad),), f"sweep file '{bad}' is not valid YAML at line"),
        ((str(tmp_path / "none.yaml"),), "does not exist"),
        ((str(bad), "--backend", "pbs"), "invalid value for '--backend': 'pbs' is not one of 'local', 'ray', 'slurm'"),
    ]:
        proc = btcli("sweep", *args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and text in lines[0], proc.stderr


def test_cli_only_dry_run_and_error(btcli, tmp_path):
    grid = tmp_path / "paper.yaml"
    grid.write_text(yaml.safe_dump(PAPER | {"out": str(tmp_path / "runs")}, sort_keys=False))
    proc = btcli("sweep", str(grid), "--only", "mode=ft", "--only", "seed=1", "--dry-run")
    planned = [line.split("/")[1].split(":")[0] for line in proc.stdout.splitlines() if line.startswith("# ")]
    assert proc.returncode == 0 and planned == [f"pretrain-{EMPTY}-s1", f"pretrain-{DOORKEY}-s1"] + [
        f"transfer-{e}-s1-ft-lr{lr}" for e in (EMPTY, DOORKEY) for lr in ("0.0001", "0.0005")], proc.stdout
    assert "6 runs in 2 stage(s)" in proc.stdout
    proc = btcli("sweep", str(grid), "--only", "mode=dqn", "--dry-run")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "--only mode=dqn: no run has that value" in lines[0]


def test_missing_ray_is_one_line(monkeypatch):
    from btcli import sweep_exec

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SweepError, match=r"--backend ray needs Ray: pip install 'ray>=2.9'"):
        sweep_exec.connect_ray(None)


# ----------------------------------------------------------------------------- real sweeps


def write_grid(path: Path, out: Path, seeds=(0, 1), args=None, sets=None) -> Path:
    stage = {"name": "s", "command": "transfer", "grid": {"env": [EMPTY], "seed": list(seeds)},
             "args": {"mode": "scratch", **TINY, **(args or {})}}
    if sets:
        stage["set"] = sets
    path.write_text(yaml.safe_dump({"out": str(out), "stages": [stage]}, sort_keys=False))
    return path


def statuses(stdout: str) -> dict[str, str]:
    """run name -> status, from the sweep's summary table."""
    found = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if len(cells) >= 3 and cells[1].startswith("s-"):
            found[cells[1]] = cells[2]
    return found


@pytest.mark.slow
def test_local_sweep_skips_finished_and_resumes_unfinished(btcli, tmp_path):
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "out", seeds=(0,), sets={"agent.lr": [1e-4, 5e-4]})
    names = [j.name for j in expand(load_sweep(grid), cli_options())]
    assert names == [f"s-{EMPTY}-s0-lr{lr}" for lr in ("0.0001", "0.0005")]
    a, b = names
    dry = btcli("sweep", str(grid), "--dry-run")
    assert dry.returncode == 0 and dry.stdout.count("--out") == 2 and not (tmp_path / "out").exists()
    first = btcli("sweep", str(grid), "--jobs", "2")
    assert first.returncode == 0, first.stderr
    assert statuses(first.stdout) == {a: "done", b: "done"}
    for run in (tmp_path / "out").iterdir():
        if run.name != "logs":
            assert (run / "summary.json").exists()
            assert json.loads((run / "summary.json").read_text())["steps"] == 800
    log_a = (tmp_path / "out" / "logs" / f"{a}.log").read_text()
    assert "--set threads=1 --out" in log_a and "--resume" not in log_a

    # every run finished: nothing runs again
    again = btcli("sweep", str(grid), "--jobs", "2")
    assert again.returncode == 0 and set(statuses(again.stdout).values()) == {"skipped"}
    assert (tmp_path / "out" / "logs" / f"{a}.log").read_text() == log_a

    # make one run unfinished: only it runs, with --resume
    (tmp_path / "out" / b / "summary.json").unlink()
    third = btcli("sweep", str(grid), "--jobs", "2")
    assert third.returncode == 0, third.stderr
    st = statuses(third.stdout)
    assert st.pop(b) == "done (resumed)" and set(st.values()) == {"skipped"}
    assert (tmp_path / "out" / b / "summary.json").exists()
    headers = [line for line in (tmp_path / "out" / "logs" / f"{b}.log").read_text().splitlines() if line[:1] == "#"]
    assert len(headers) == 2 and "--resume" not in headers[0] and headers[1].endswith("--quiet --resume")


@pytest.mark.slow
def test_failed_run_is_named_with_its_log(btcli, tmp_path):
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "out", seeds=(0,), sets={"agent.gamma": [2.0]})
    proc = btcli("sweep", str(grid))
    lines = [line for line in proc.stderr.splitlines() if line.startswith("btcli: error:")]
    log = tmp_path / "out" / "logs" / f"s-{EMPTY}-s0.log"  # a single value is not part of the name
    assert proc.returncode == 2 and len(lines) == 1
    assert f"1 of 1 runs failed: s-{EMPTY}-s0 (exit code 2; log {log})" in lines[0]
    assert "agent.gamma" in log.read_text()  # the run's own error line is in its log


@pytest.mark.slow
def test_interrupted_sweep_finishes_on_rerun(tmp_path):
    # one job at a time: a long run is stopped mid-training while a short one still waits
    stage = {"name": "s", "command": "transfer", "grid": {"env": [EMPTY], "seed": [0], "steps": [5000, 800]},
             "args": {"mode": "scratch", "eval_episodes": 0, "threads": 1}}
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "stages": [stage]}))
    long, short = (tmp_path / "out" / f"s-{EMPTY}-s0-steps{n}" for n in (5000, 800))
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    cmd = [sys.executable, "-m", "btcli", "sweep", str(grid), "--jobs", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the run is training (episodes logged)
        m = long / "metrics.csv"
        if m.exists() and len(m.read_text().splitlines()) > 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "sweep interrupted: 2 run(s) not finished" in stderr
    assert (long / "config.yaml").exists() and not (long / "summary.json").exists() and not short.exists()
    assert statuses(stdout) == {long.name: "interrupted", short.name: "interrupted"}

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert statuses(rerun.stdout) == {long.name: "done (resumed)", short.name: "done"}
    m = pd.read_csv(long / "metrics.csv")
    assert m["episode"].is_unique and m["step"].is_monotonic_increasing
    assert json.loads((long / "summary.json").read_text())["steps"] == 5000


@pytest.mark.slow
def test_killed_sweep_stops_its_runs(tmp_path):
    # SIGKILL gives the sweep no chance to forward anything: its runs must still stop, with a
    # checkpoint, rather than train on as orphans that a restarted sweep would race
    stage = {"name": "s", "command": "transfer", "grid": {"env": [EMPTY], "seed": [0]},
             "args": {"mode": "scratch", "steps": 400_000, "eval_episodes": 0, "threads": 1},
             "set": {"checkpoint_every": [1000]}}
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "stages": [stage]}))
    run = RunDir(tmp_path / "out" / f"s-{EMPTY}-s0")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "btcli", "sweep", str(grid)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while run.latest_checkpoint() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.latest_checkpoint() is not None
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the run holds its lock until it exits
        try:
            run.lock()
            break
        except RunDirError:
            time.sleep(0.1)
    else:
        raise AssertionError("the run kept training after its sweep was killed")
    log = (tmp_path / "out" / "logs" / f"s-{EMPTY}-s0.log").read_text()
    assert "checkpoint saved" in log and not run.is_complete()


@pytest.mark.slow
def test_ray_backend_matches_local(tmp_path):
    # Ray is an extra (btcli[ray]); CI installs it and sets BTCLI_REQUIRE_RAY so this never skips there
    ray = __import__("ray") if os.environ.get("BTCLI_REQUIRE_RAY") else pytest.importorskip("ray")
    grids = {}
    for backend in ("local", "ray"):
        spec = write_grid(tmp_path / f"{backend}.yaml", tmp_path / backend, args={"steps": 1500})
        grids[backend] = expand(load_sweep(spec), cli_options())
    outcomes, interrupted = run_sweep(grids["local"], backend="local", jobs=2)
    assert not interrupted and [o.status for o in outcomes] == ["done", "done"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcomes, interrupted = run_sweep(grids["ray"], backend="ray")
    finally:
        ray.shutdown()
    assert not interrupted and [o.status for o in outcomes] == ["done", "done"]
    for local_job, ray_job in zip(grids["local"], grids["ray"]):
        assert local_job.name == ray_job.name
        assert "(ray)" in ray_job.log.read_text()
        for name in ("metrics.csv", "eval.csv"):
            a, b = pd.read_csv(local_job.run_dir / name), pd.read_csv(ray_job.run_dir / name)
            # identical numbers; only wall-clock time may differ
            pd.testing.assert_frame_equal(a.drop(columns=["time"], errors="ignore"),
                                          b.drop(columns=["time"], errors="ignore"))
        assert len(a) > 0
        s = json.loads((ray_job.run_dir / "summary.json").read_text())
        assert s["updates"] > 0  # past learning_starts: the networks were trained


# ----------------------------------------------------------------------------- slurm backend


def test_slurm_options_from_file_and_flags():
    from btcli.sweep_slurm import slurm_options

    opts = slurm_options({"partition": "cpu", "time": 30, "cpus": 4, "setup": ["module load python"]},
                         partition="gpu", time=None, cpus=None, mem=16)
    assert (opts.partition, opts.time, opts.cpus, opts.mem, opts.setup) == ("gpu", 30, 4, 16, ["module load python"])
    assert opts.cluster == "slurm"
    for section, message in [
        ({"partiton": "x"}, "slurm: unknown key 'partiton'; did you mean 'partition'?"),
        ({"time": "1:00:00"}, "slurm: 'time' must be int, got '1:00:00'"),
        ({"cpus": 0}, "slurm: 'cpus' must be at least 1"),
        ({"cluster": "pbs"}, "slurm: cluster 'pbs' is not one of: slurm, local"),
    ]:
        with pytest.raises(SweepError, match=message):
            slurm_options(section)


def test_slurm_backend_refusals(btcli, tmp_path, monkeypatch):
    from btcli.sweep_slurm import SlurmOptions, make_executor

    grid = write_grid(tmp_path / "g.yaml", tmp_path / "out", seeds=(0,))
    env_path = os.environ.get("PATH", "")
    if not any((Path(p) / "sbatch").exists() for p in env_path.split(os.pathsep) if p):
        proc = btcli("sweep", str(grid), "--backend", "slurm")
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1
        assert "--backend slurm: no Slurm on this machine (sbatch not found)" in lines[0]
        assert not (tmp_path / "out").exists()
    proc = btcli("sweep", str(grid), "--partition", "gpu")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "apply to --backend slurm only" in lines[0]
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(SweepError, match=r"--backend slurm needs submitit: pip install 'btcli\[slurm\]'"):
        make_executor(SlurmOptions(cluster="local"), tmp_path / "slurm")


@pytest.mark.slow
def test_slurm_backend_matches_local(tmp_path):
    """Six runs through submitit's local executor give the local backend's numbers, and a rerun
    skips finished runs and resumes unfinished ones, as with every backend."""
    pytest.importorskip("submitit")
    from btcli.sweep_slurm import SlurmOptions

    grids = {}
    for backend in ("local", "slurm"):
        spec = write_grid(tmp_path / f"{backend}.yaml", tmp_path / backend, seeds=(0, 1, 2),
                          args={"steps": 400, "agent.learning_starts": 100, "train_log_every": 100},
                          sets={"agent.lr": [1e-4, 5e-4]})
        grids[backend] = expand(load_sweep(spec), cli_options())
    assert len(grids["slurm"]) == 6
    outcomes, interrupted = run_sweep(grids["local"], backend="local", jobs=2)
    assert not interrupted and [o.status for o in outcomes] == ["done"] * 6
    opts = SlurmOptions(cluster="local", cpus=1)
    outcomes, interrupted = run_sweep(grids["slurm"], backend="slurm", jobs=2, slurm=opts)
    assert not interrupted and [o.status for o in outcomes] == ["done"] * 6, [o.note for o in outcomes]
    for local_job, slurm_job in zip(grids["local"], grids["slurm"]):
        assert local_job.name == slurm_job.name
        assert "(slurm job " in slurm_job.log.read_text()
        for name in ("metrics.csv", "train.csv", "eval.csv"):
            a, b = pd.read_csv(local_job.run_dir / name), pd.read_csv(slurm_job.run_dir / name)
            drop = ["time", "sps"] if name == "train.csv" else ["time"]
            pd.testing.assert_frame_equal(a.drop(columns=drop, errors="ignore"), b.drop(columns=drop, errors="ignore"))
            assert len(a) > 0
        assert json.loads((slurm_job.run_dir / "summary.json").read_text())["updates"] > 0
    assert list((tmp_path / "slurm" / "logs" / "slurm").glob("*_0_log.out"))  # submitit's own files

    # idempotent: finished runs are skipped; an unfinished one is resumed
    (grids["slurm"][1].run_dir / "summary.json").unlink()
    outcomes, _ = run_sweep(grids["slurm"], backend="slurm", slurm=opts)
    assert [o.status for o in outcomes] == ["skipped", "done", "skipped", "skipped", "skipped", "skipped"]
    assert outcomes[1].resumed and grids["slurm"][1].log.read_text().count("--resume") == 1


@pytest.mark.slow
def test_slurm_job_at_its_time_limit_checkpoints_and_resubmits_resuming(tmp_path):
    """What submitit calls before a requeue: the run stops with a checkpoint, and the resubmitted
    job continues it with --resume to the end."""
    import threading

    from btcli.sweep_slurm import SlurmRun
    from btcli.sweep_tasks import _child_env

    run = tmp_path / "r"
    argv = [sys.executable, "-m", "btcli", "transfer", "--env", EMPTY, "--steps", "4000", "--set", "threads=1",
            "--set", "eval_episodes=0", "--out", str(run), "--quiet"]
    body = SlurmRun(argv, str(tmp_path / "logs" / "r.log"), {"PYTHONPATH": _child_env()["PYTHONPATH"]}, str(run))
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("first", body()))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = run / "metrics.csv"
        if m.exists() and len(m.read_text().splitlines()) > 3:
            break
        time.sleep(0.05)
    again = body.checkpoint().function
    thread.join(timeout=60)
    assert result["first"][0] == 130 and not (run / "summary.json").exists()
    assert RunDir(run).latest_checkpoint() is not None
    assert again.argv == [*argv, "--resume"]
    rc, _ = again()
    assert rc == 0 and json.loads((run / "summary.json").read_text())["steps"] == 4000
    log = (tmp_path / "logs" / "r.log").read_text()
    assert "checkpoint saved" in log and log.count("(slurm job ") == 2
