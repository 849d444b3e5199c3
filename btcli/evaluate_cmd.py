"""`btcli evaluate`: load a run's checkpoint and evaluate its greedy policy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from btcli.build import checkpoint_identity, q_network
from btcli.config import from_dict
from btcli.envs import make_vec_env, resolve_env_id
from btcli.errors import BtcliError
from btcli.evaluation import actor_for, checkpoint_rewards, evaluate
from btcli.pretrained import load_pretrained
from btcli.pretrained_policy import HandingOff
from btcli.runs import EVAL_COLUMNS, CsvLog, RunDir, find_checkpoint, load_checkpoint
from btcli.runtime import configure_torch, resolve_device


def evaluate_run(run_dir: Path, *, episodes: int, checkpoint: str | None, epsilon: float | None, seed: int,
                 video: bool, device: str, env_id: str | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint of a run; append rows to RUN/eval.csv and return the figures.

    ``env_id`` evaluates the policy on another task with the same observation and action spaces
    (e.g. a pre-trained policy's zero-shot score on a transfer task); its rows name that task.
    """
    if episodes <= 0:
        raise BtcliError(f"--episodes must be positive, got {episodes}")
    if epsilon is not None and not 0.0 <= epsilon <= 1.0:
        raise BtcliError(f"--epsilon must be in [0, 1], got {epsilon}")
    run = RunDir.open_existing(run_dir, resuming=False)
    cfg = from_dict(run.read_config())
    dev = resolve_device(device)
    configure_torch(cfg.threads)
    path = find_checkpoint(run, checkpoint)
    state = load_checkpoint(path, map_location=str(dev))
    if env_id is not None:
        try:
            env_id = resolve_env_id(env_id)
        except ValueError as e:
            raise BtcliError(str(e)) from None
    env_cfg = replace(cfg.env, id=env_id or cfg.env.id, num_envs=min(cfg.env.num_envs, episodes))
    try:
        env = make_vec_env(env_cfg, seed=seed)
    except ValueError as e:
        raise BtcliError(f"--env {env_cfg.id}: {e}") from None
    ident = checkpoint_identity(replace(cfg, env=env_cfg), env)
    for key, value in ident.items():
        if key == "env_id" and env_id is not None:
            continue  # another task on purpose; its spaces are checked below
        if state.get(key) != value:
            env.close()
            where = f"{env_cfg.id} has" if env_id is not None else "the evaluation env has"
            raise BtcliError(f"checkpoint '{path}' was trained with {key}={state.get(key)!r}, "
                             f"but {where} {value!r}; it cannot be evaluated there")
    extra = int(cfg.transfer.pretrained_action)
    net = q_network(cfg.agent, env.obs_shape, env.num_actions + extra, channels_last=False)
    net.load_state_dict(state["learner"]["online"])
    net.to(dev).eval()
    eps = cfg.explore.eps_eval if epsilon is None else epsilon
    act = actor_for(net, dev, env.num_envs,
                    intrinsic=checkpoint_rewards(net, cfg, state, env.obs_shape, env.num_actions, dev))
    if extra:  # the learner's last action hands the step to π_p: load exactly the pinned checkpoint
        pinned = run.read_config()["provenance"]["pretrained"]
        pre = load_pretrained(pinned["checkpoint"], sha256=pinned["sha256"], device=str(dev))
        pre_net = pre.network(env.obs_shape, env.num_actions, dev)
        act = HandingOff(act, actor_for(pre_net, dev, env.num_envs, intrinsic=pre.reward_source(pre_net, dev)),
                         env.num_actions)
    results = evaluate(act, env, episodes, eps, seed=seed)
    env.close()
    step = int(state["step"])
    log = CsvLog(run.eval_path, EVAL_COLUMNS, hint="evaluate needs write access to the run directory")
    log.write([[step, k, r.ret, r.length, eps, path.name, r.coverage, "learner", env_cfg.id]
               for k, r in enumerate(results)])
    log.close()
    returns = np.array([r.ret for r in results])
    result: dict[str, Any] = {
        "run": str(run.path), "env_id": env_cfg.id, "trained_on": cfg.env.id, "checkpoint": path.name, "step": step,
        "episodes": len(results), "epsilon": eps, "return_mean": float(returns.mean()),
        "return_std": float(returns.std()), "return_min": float(returns.min()), "return_max": float(returns.max()),
        "length_mean": float(np.mean([r.length for r in results])),
        "coverage_mean": (float(np.mean([r.coverage for r in results])) if results[0].coverage is not None
                          else None),
        "objective": cfg.intrinsic.objective,
        # per episode, in eval.csv's order, for scripts that want more than the means
        "returns": returns.tolist(),
        "coverages": [r.coverage for r in results] if results[0].coverage is not None else None,
    }
    if video:
        result["video"] = str(record_video(run, path.name, replace(cfg, env=env_cfg), act, eps, seed))
    return result


def record_video(run: RunDir, name: str, cfg, act, epsilon: float, seed: int, max_frames: int = 20_000) -> Path:
    """Record one evaluation episode of copy 0 as an animated GIF (Pillow; no extra dependency)."""
    from PIL import Image

    from btcli.behaviour import epsilon_greedy

    env = make_vec_env(replace(cfg.env, num_envs=1), seed=seed, render=True)
    rng = np.random.default_rng(seed)
    obs = env.reset(seed=seed)
    frames = [env.render_rgb()]
    while len(frames) < max_frames:
        step = env.step(epsilon_greedy(act(obs), epsilon, env.num_actions, rng))
        if step.terminated[0] or step.truncated[0]:
            break
        frames.append(env.render_rgb())
        obs = step.obs
    env.close()
    out_dir = run.path / "videos"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"{name}.gif"
    images = [Image.fromarray(f) for f in frames]
    images[0].save(out, save_all=True, append_images=images[1:], duration=33, loop=0)
    return out
