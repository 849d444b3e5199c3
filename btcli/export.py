"""`btcli export`: one checkpoint's network as a policy folder anyone can load without pickle.

An export folder holds::

    policy.json        everything needed to rebuild the network and feed it observations
    model.safetensors  the online Q-network's weights (safetensors: tensors only, no code)
    README.md          a short model card: env, objective or mode, steps, scores, provenance

The export's identity is the SHA-256 of its ``policy.json``, which itself pins the weights by
their SHA-256; :func:`read_export` checks both, so a changed file is refused, not used.
:func:`btcli.policy.load_policy` turns a folder into a callable; ``btcli transfer --pretrained``
and ``btcli finetune --pretrained`` accept a folder as well as a run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from btcli.errors import BtcliError

POLICY_FILE = "policy.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
FORMAT = "btcli-policy"
FORMAT_VERSION = 1

# What an observation is, per domain, in words (policy.json, the model card, the README).
MINIGRID_ENCODING = (
    "uint8 [H, W, 2] over the whole grid, indexed [y, x]: channel 0 the object type (minigrid's OBJECT_TO_IDX: "
    "1 empty, 2 wall, 4 door, 5 key, 8 goal, 9 lava, ...; 10 on the agent's cell), channel 1 the door state "
    "(0 open, 1 closed, 2 locked) or, on the agent's cell, its direction (0 right, 1 down, 2 left, 3 up); "
    "0 elsewhere. Colour, the carried object and the mission are not encoded. With visited_marks, channel 1 "
    "also has +4 on every cell the agent stood on in the current episode, its current cell included. "
    "A gymnasium MiniGrid env wrapped in minigrid.wrappers.FullyObsWrapper gives the same grid as "
    "image[x, y, (0, 2)] (Policy.encode converts it).")
ATARI_ENCODING = (
    "uint8 [frame_stack, 84, 84]: the last frame_stack agent steps' screens, newest last, zeros before the "
    "episode's first; each screen is the pixel-wise max of the last two of frame_skip emulator frames, "
    "grayscale, area-resized from 210x160 to 84x84. ALE v5 protocol: sticky actions, the full game, minimal "
    "action set. Only btcli's Atari env produces it (Policy.make_env).")


class ExportError(BtcliError):
    """The run cannot be exported, or a folder is not a valid btcli export."""


@dataclass
class Export:
    """A verified export folder: its policy.json, its weights and its identity hash."""

    path: Path
    spec: dict[str, Any]
    weights: dict[str, Any]  # tensor name -> torch.Tensor (CPU)
    sha256: str  # of policy.json


def is_export(path: str | Path) -> bool:
    """True for a folder that holds a ``policy.json`` (and is not a run directory)."""
    path = Path(path)
    return (path / POLICY_FILE).is_file() and not (path / "config.yaml").exists()


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _scores(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    keys = ("final_return_mean", "final_return_episodes", "eval_return_mean", "eval_return_std", "eval_episodes",
            "coverage_total", "episodes", "steps", "behaviour_share", "flights")
    return {k: summary[k] for k in keys if k in summary}


def export_run(run_dir: str | Path, out: str | Path, *, checkpoint: str | None = None) -> Export:
    """Export a run's checkpoint (newest complete, or ``checkpoint``: a step or folder) into ``out``.

    ``out`` must not exist or be empty. The checkpoint is read like any other (no code runs from
    it). Runs with ``transfer.pretrained_action`` are refused: their policy hands steps to their
    own pre-trained policy, so it does not stand alone.
    """
    from safetensors.torch import save_file

    import btcli
    from btcli.agent.networks import build_q_network, resolve_torso
    from btcli.config import from_dict
    from btcli.envs import is_atari
    from btcli.runs import RunDir, find_checkpoint, load_checkpoint, sha256_file

    run = RunDir.open_existing(run_dir, resuming=False)
    saved = run.read_config()
    cfg = from_dict(saved)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"'{out}' already exists; choose another --out (an export never overwrites)")
    if cfg.transfer.pretrained_action:
        raise ExportError(f"run '{run.path}' was trained with transfer.pretrained_action=true: its policy hands steps "
                          "to its pre-trained run's policy, so it cannot be exported alone; export a run without it")
    if cfg.agent.core != "none":
        raise ExportError(f"run '{run.path}' has a recurrent learner (agent.core={cfg.agent.core}); exporting it is not "
                          "built yet: its policy needs its state carried from step to step")
    path = find_checkpoint(run, checkpoint)
    state = load_checkpoint(path)
    if "learner" not in state or "obs_shape" not in state:
        raise ExportError(f"'{path}' is not a btcli DQN checkpoint")
    obs_shape = tuple(int(x) for x in state["obs_shape"])
    meanings = [str(m) for m in state["action_meanings"]]
    a = cfg.agent
    weights = {k: v.detach().cpu().contiguous() for k, v in state["learner"]["online"].items()}
    net = build_q_network(obs_shape, len(meanings), torso=a.torso, hidden=a.hidden, dueling=a.dueling)
    try:
        net.load_state_dict(weights)
    except RuntimeError:
        raise ExportError(f"the weights in '{path}' do not fit the network its run's config describes") from None
    atari = is_atari(cfg.env.id)
    env = cfg.env
    if atari:
        env_action_ids = list(range(len(meanings)))  # ALE v5's minimal action set, in its order
    else:
        from btcli.envs.minigrid import MINIGRID_ACTIONS

        env_action_ids = [MINIGRID_ACTIONS.index(m) for m in meanings]
    summary = json.loads(run.summary_path.read_text()) if run.is_complete() else None
    provenance = saved.get("provenance") or {}
    spec: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "btcli_version": btcli.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "network": {"kind": "dqn", "torso": a.torso, "torso_resolved": resolve_torso(obs_shape, a.torso),
                    "hidden": a.hidden, "dueling": a.dueling, "num_outputs": len(meanings),
                    "parameters": int(sum(v.numel() for v in weights.values())),
                    "output": "Q-values, one per action; the policy is their argmax"},
        "observation": {"shape": list(obs_shape), "dtype": "uint8", "batched": "[B, *shape]",
                        "domain": "atari" if atari else "minigrid",
                        "encoding": ATARI_ENCODING if atari else MINIGRID_ENCODING,
                        "visited_marks": bool(state.get("visited_marks", False)),
                        "frame_stack": env.frame_stack if atari else 1},
        "actions": {"count": len(meanings), "meanings": meanings, "env_action_ids": env_action_ids},
        "env": {"id": env.id, "config": asdict(env)},
        "source": {"run": str(run.path.resolve()), "checkpoint": path.name, "step": int(state["step"]),
                   "checkpoint_sha256": state["checkpoint_sha256"], "command": cfg.command, "mode": cfg.mode,
                   "objective": cfg.intrinsic.objective, "seed": cfg.seed, "steps_budget": cfg.steps,
                   "finished": summary is not None, "pretrained": provenance.get("pretrained"),
                   "git_commit": (saved.get("meta") or {}).get("git_commit"),
                   "versions": (saved.get("meta") or {}).get("versions")},
        "scores": _scores(summary),
        "weights": {"file": WEIGHTS_FILE, "format": "safetensors", "sha256": None},
    }
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        spec["weights"]["sha256"] = sha256_file(tmp / WEIGHTS_FILE)
        text = json.dumps(spec, indent=2) + "\n"
        (tmp / POLICY_FILE).write_text(text)
        sha = _sha256_bytes(text.encode())
        (tmp / CARD_FILE).write_text(model_card(spec, sha))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as e:
        raise ExportError(f"cannot write the export into '{out}': {e.strerror or e}; choose a writable --out") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Export(out, spec, weights, sha)


def _num(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _scores_note(src: dict[str, Any], scores: dict[str, Any]) -> str:
    if not src["finished"]:
        return " (none: the run was unfinished when exported)"
    if scores.get("steps") is not None and scores["steps"] != src["step"]:
        return f" (the finished run's figures, at step {scores['steps']}: not this step-{src['step']} checkpoint's)"
    return " (the finished run's figures, at this checkpoint's step)"


def model_card(spec: dict[str, Any], sha256: str) -> str:
    """The export's README.md: what it is, how well it did, where it came from, how to use it."""
    src, net, obs, env = spec["source"], spec["network"], spec["observation"], spec["env"]
    trained = (f"`btcli pretrain --objective {src['objective']}` (reward-free: the task's reward never reached it)"
               if src["command"] == "pretrain" else f"`btcli {src['command']} --mode {src['mode']}`")
    options = env["config"]
    if obs["domain"] == "minigrid":
        env_opts = f"visited marks: {obs['visited_marks']}, actions: {options.get('actions')}"
    else:
        env_opts = (f"sticky actions {options.get('sticky_actions')}, frame skip {options.get('frame_skip')}, "
                    f"frame stack {options.get('frame_stack')}")
    s = spec["scores"] or {}
    lines = [
        f"# btcli policy: {src['objective'] if src['command'] == 'pretrain' else src['mode']} on {env['id']}",
        "",
        f"- **Environment**: `{env['id']}` ({env_opts})",
        f"- **Trained by**: {trained}, seed {src['seed']}",
        f"- **Steps**: checkpoint at {src['step']} environment steps (run budget {src['steps_budget']}, "
        + ("finished" if src["finished"] else "unfinished when exported") + ")",
        f"- **Scores** (the run's summary.json): final training return {_num(s.get('final_return_mean'))} over the "
        f"last {_num(s.get('final_return_episodes'))} episodes; evaluation return {_num(s.get('eval_return_mean'))} "
        f"± {_num(s.get('eval_return_std'))} over {_num(s.get('eval_episodes'))} episodes"
        + (f"; distinct cells/rooms over the run {s['coverage_total']}" if s.get("coverage_total") is not None else "")
        + _scores_note(src, s),
        f"- **Network**: DQN, torso `{net['torso_resolved']}`, hidden {net['hidden']}, dueling {net['dueling']}, "
        f"{net['parameters']:,} parameters, {net['num_outputs']} actions: {', '.join(spec['actions']['meanings'])}",
        f"- **Observation**: {obs['encoding']}",
        f"- **Provenance**: run `{src['run']}`, checkpoint `{src['checkpoint']}` (SHA-256 {src['checkpoint_sha256']}), "
        f"git {src.get('git_commit')}",
    ]
    if src.get("pretrained"):
        p = src["pretrained"]
        lines.append(f"- **Pre-trained from**: `{p.get('run')}` step {p.get('step')} (SHA-256 {p.get('sha256')})")
    lines += [
        f"- **This export**: `policy.json` SHA-256 {sha256}; `model.safetensors` SHA-256 {spec['weights']['sha256']}",
        "",
        "```python",
        "import btcli",
        "policy = btcli.load_policy('THIS_FOLDER')",
        "env = policy.make_env(num_envs=4, seed=0)      # btcli's env: observations encoded as above",
        "obs = env.reset()",
        "actions, q_values = policy(obs)              # batched numpy in, numpy out",
        "```",
        "",
        "Transfer from it: `btcli transfer --mode bt+ft --pretrained THIS_FOLDER --env " + env["id"] + " ...`.",
        "",
    ]
    return "\n".join(lines)


def read_export(path: str | Path) -> Export:
    """Read and verify an export folder (JSON and safetensors only: nothing in it can run code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from btcli.runs import sha256_file

    path = Path(path)
    policy_path = path / POLICY_FILE
    if not policy_path.is_file():
        raise ExportError(f"'{path}' is not a btcli export (no {POLICY_FILE}); make one with btcli export RUN --out DIR")
    try:
        raw = policy_path.read_bytes()
        spec = json.loads(raw)
    except (OSError, ValueError) as e:
        raise ExportError(f"'{policy_path}' cannot be read ({type(e).__name__}); export the run again") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ExportError(f"'{policy_path}' is not a btcli policy file (format {spec.get('format') if isinstance(spec, dict) else None!r})")
    if spec.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"'{policy_path}' has format version {spec.get('format_version')!r}; this btcli reads "
                          f"version {FORMAT_VERSION}: use the btcli that wrote it, or export the run again")
    try:
        weights_file = path / spec["weights"]["file"]
        expected = spec["weights"]["sha256"]
        for key in ("network", "observation", "actions", "env", "source"):
            spec[key]  # noqa: B018 (presence check)
    except (KeyError, TypeError):
        raise ExportError(f"'{policy_path}' lacks required fields; export the run again") from None
    if weights_file.resolve().parent != path.resolve() or not weights_file.is_file():
        raise ExportError(f"'{path}' lacks its weights file {spec['weights']['file']!r}; copy the whole folder")
    if sha256_file(weights_file) != expected:
        raise ExportError(f"'{weights_file}' does not match the SHA-256 in {POLICY_FILE} (changed or damaged); "
                          "get the export again")
    try:
        weights = load_file(str(weights_file), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ExportError(f"'{weights_file}' cannot be read as safetensors ({str(e)[:80]})") from None
    return Export(path, spec, weights, _sha256_bytes(raw))
