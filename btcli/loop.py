"""The one acting/learning loop: env -> behaviour -> env step -> replay -> learner -> weights.

The loop owns time: step counters, schedules, evaluation, logging and checkpoints. The
learner owns the math; the run directory owns the files.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from btcli.agent.recurrent import RecurrentActor
from btcli.behaviour import PRETRAINED, RANDOM, Epsilon, epsilon_ladder, linear_schedule
from btcli.build import build_components, checkpoint_identity
from btcli.config import RunConfig, to_dict
from btcli.envs import make_vec_env
from btcli.envs.base import coverage_key
from btcli.errors import Interrupted
from btcli.evaluation import actor_for, clip_rewards, evaluate, greedy_actor
from btcli.modes import MODES
from btcli.pretrained import Pretrained, copy_weights, freeze, load_pretrained, zero_values
from btcli.pretrained_policy import HandingOff, PretrainedPolicy
from btcli.progress import ProgressReporter
from btcli.run_state import (
    CHECKPOINT_FORMAT,
    RECENT_EPISODES,
    Counters,
    Episodes,
    RunRecord,
    Saveable,
    upgrade_checkpoint,
)
from btcli.runs import (
    EVAL_COLUMNS,
    METRICS_COLUMNS,
    TRAIN_COLUMNS,
    CsvLog,
    RunDir,
    RunDirError,
    load_checkpoint,
    truncate_csv_after,
)
from btcli.runtime import precision_warning, resolve_device, seed_everything
from btcli.signals import recorded_signals
from btcli.trackers import open_sink

__all__ = ["Trainer", "checkpoint_identity"]


class Trainer:
    """Runs (or resumes) one training run in a run directory."""

    def __init__(self, cfg: RunConfig, run: RunDir, *, progress: bool = True, pretrained: Pretrained | None = None):
        self.cfg, self.run, self.show_progress = cfg, run, progress
        # process-wide settings (threads, malloc) are the caller's: btcli.process.configure_process
        self.device = resolve_device(cfg.device)
        self.rng = seed_everything(cfg.seed)
        parts = build_components(cfg, self.device, self.rng)
        self.env, self.learner, self.replay = parts.env, parts.learner, parts.replay
        self.behaviour, self.intrinsic, self.learner_actions = parts.behaviour, parts.intrinsic, parts.num_actions
        if self.device.type == "cuda":  # from pinned memory the copy is asynchronous; from pageable it syncs
            self._to_device = lambda x: torch.from_numpy(x).pin_memory().to(self.device, non_blocking=True)
        else:
            self._to_device = torch.from_numpy
        # a recurrent learner acts through an actor that carries each copy's state (saved with the episodes)
        self.actor = RecurrentActor(self.learner.online, cfg.env.num_envs, self.device) \
            if getattr(self.learner.online, "recurrent", False) else None
        self.pretrained, self.pretrained_net, self.pretrained_act = None, None, None
        if cfg.transfer.pretrained:
            self._use_pretrained(pretrained)
        a = cfg.agent
        counters = Counters(next_target_sync=a.learning_starts, next_eval=cfg.eval_every or cfg.steps + 1,
                            next_checkpoint=cfg.checkpoint_every, next_train_log=cfg.train_log_every)
        self.record = RunRecord(counters, self.rng, clock=self._elapsed)
        # pretrain only (validated): the learner bootstraps through the task's terminal states
        self._learn_through_terminal = cfg.intrinsic.bootstrap_terminal
        # coverage: distinct grid cells (MiniGrid) or rooms (Atari RAM probes) per episode and overall
        self._coverage_key = coverage_key(self.env.last_probes())
        self._eval_env = None
        self.episodes: Episodes | None = None  # set by train(), or by restore() when a checkpoint continues them
        self.last_eval: dict[str, Any] | None = None
        self._t0 = time.monotonic()

    # the record's parts, by their old names
    counters = property(lambda self: self.record.counters)
    visited = property(lambda self: self.record.visited)
    recent_returns = property(lambda self: self.record.recent_returns)
    reference_evals = property(lambda self: self.record.reference_evals)

    def parts(self) -> dict[str, Saveable]:
        """What a checkpoint holds, by name: every part saves and restores itself."""
        parts: dict[str, Saveable] = {"learner": self.learner, "behaviour": self.behaviour, "record": self.record}
        if self.intrinsic is not None:
            parts["intrinsic"] = self.intrinsic
        if self.cfg.save_replay:
            parts["replay"] = self.replay
        if self.actor is not None:
            parts["actor"] = self.actor
        if self.pretrained_act is not None and self.pretrained_act.recurrent:
            parts["pretrained_policy"] = self.pretrained_act
        return parts

    def _use_pretrained(self, pretrained: Pretrained | None) -> None:
        """Load (or reload, pinned by hash) the pre-trained run; FT copies its weights, BT keeps π_p."""
        cfg = self.cfg
        recorded = (self.run.read_config().get("provenance") or {}).get("pretrained")
        if recorded:  # a resumed run: exactly the checkpoint it started from
            if pretrained is None or pretrained.sha256 != recorded["sha256"]:
                pretrained = load_pretrained(recorded["checkpoint"], sha256=recorded["sha256"])
        elif pretrained is None:
            pretrained = load_pretrained(cfg.transfer.pretrained)
        pretrained.check_task(checkpoint_identity(cfg, self.env), allow_other_env=cfg.transfer.allow_other_env)
        pretrained.check_teacher(cfg.transfer.kickstart, cfg.agent.core)
        if MODES[cfg.mode].copies_weights:
            pretrained.check_architecture(to_dict(cfg.agent), cfg.transfer.ft_layers)
            copy_weights(self.learner.online, pretrained.state["learner"]["online"], cfg.transfer.ft_layers,
                         extra_actions=int(cfg.transfer.pretrained_action))
            if cfg.transfer.ft_zero_values:
                zero_values(self.learner.online, cfg.transfer.ft_layers)
            self.learner.sync_target()
            freeze(self.learner.online, cfg.transfer.freeze)
        # π_p flies BT's flights, takes handed-off steps, is the kickstart's teacher and the zero-shot reference
        self.pretrained_net = pretrained.network(self.env.obs_shape, self.env.num_actions, self.device)
        self.pretrained_act = PretrainedPolicy(self.pretrained_net, self.device, cfg.env.num_envs,
                                               pretrained.reward_source(self.pretrained_net, self.device))
        if not recorded:
            self.run.record_provenance("pretrained", pretrained.provenance())
        self.pretrained = pretrained

    # --- checkpoints -----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The checkpoint (btcli/run_state.py says what it holds)."""
        header = {"format": CHECKPOINT_FORMAT, "kind": "dqn", **checkpoint_identity(self.cfg, self.env),
                  "command": self.cfg.command, "mode": self.cfg.mode, "step": self.counters.env_steps,
                  "config": to_dict(self.cfg), "objective": self.cfg.intrinsic.objective}
        parts = self.parts()
        state = header | {name: part.state_dict() for name, part in parts.items()}
        state["episodes"] = self._episodes_state(parts)
        return state

    def _episodes_state(self, parts: dict[str, Saveable]) -> dict[str, Any] | None:
        """The episodes in progress, when the environment can save them (MiniGrid: an exact resume)."""
        if self.episodes is None:
            return None
        env_state = self.env.state_dict()
        if env_state is None:
            return None
        held = {name: part.episode_state_dict() for name, part in parts.items() if hasattr(part, "episode_state_dict")}
        return {"env": env_state, "loop": self.episodes.state_dict(),
                "parts": {name: value for name, value in held.items() if value is not None}}

    def save_checkpoint(self) -> None:
        """Checkpoint now; the next periodic checkpoint is due a full interval later."""
        c = self.counters
        while c.next_checkpoint <= c.env_steps:
            c.next_checkpoint += self.cfg.checkpoint_every
        self.run.save_checkpoint(self.counters.env_steps, self.state(), keep=self.cfg.keep_checkpoints)

    def _newest_verified_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest complete checkpoint that passes its checks (content hash, safe loading), and
        its state; a newer one that fails is skipped with a warning naming it and the one used."""
        failed: list[str] = []
        for path in reversed(self.run.complete_checkpoints()):
            try:
                state = load_checkpoint(path, map_location=str(self.device), env_state=True)
            except RunDirError as e:
                failed.append(f"{path.name} ({e})")
                continue
            if failed:
                print(f"warning: skipped checkpoint(s) that fail their checks: {'; '.join(failed)}; resuming from "
                      f"{path.name}, the newest that verifies", file=sys.stderr, flush=True)
            return path, state
        if failed:
            raise RunDirError(f"no checkpoint of '{self.run.path}' passes its checks: {'; '.join(failed)}; "
                              "start the run again in a new directory")
        return None

    def restore(self) -> int:
        """Continue from the newest complete checkpoint that verifies; returns its step (0 when there is none)."""
        found = self._newest_verified_checkpoint()
        if found is None:
            for log in (self.run.metrics_path, self.run.train_path, self.run.eval_path):
                truncate_csv_after(log, 0)
            return 0
        path, state = found
        state = upgrade_checkpoint(state)
        ident = checkpoint_identity(self.cfg, self.env)
        for key, value in ident.items():
            if state.get(key) != value:
                raise RunDirError(
                    f"checkpoint '{path}' has {key}={state.get(key)!r} but this run has {value!r}; "
                    "it belongs to another run")
        episodes = state.get("episodes")
        if episodes is not None:  # continue the episodes in progress where they were
            try:
                obs = self.env.load_state_dict(episodes["env"])
            except Exception as exc:  # unpickling another package version's objects can raise anything
                print(f"warning: the checkpoint's episodes in progress could not be restored ({exc}); "
                      "they restart, so this resume is not exact", file=sys.stderr, flush=True)
                episodes = None
            else:
                self.episodes = Episodes.restored(obs, episodes["loop"])
        held = episodes.get("parts", {}) if episodes is not None else {}
        for name, part in self.parts().items():
            if state.get(name) is not None:
                if name == "record":
                    part.load_state_dict(state[name], device=self.device)
                else:
                    part.load_state_dict(state[name])
            if hasattr(part, "load_episode_state_dict"):
                part.load_episode_state_dict(held.get(name))
        if self.cfg.eval_every == 0:  # evaluations only at the end, wherever a resume moved the end (--steps)
            self.counters.next_eval = self.cfg.steps + 1
        step = self.counters.env_steps
        for log in (self.run.metrics_path, self.run.train_path, self.run.eval_path):
            truncate_csv_after(log, step)
        return step

    # --- the loop --------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.counters.elapsed_s + (time.monotonic() - self._t0)

    def epsilon(self) -> Epsilon:
        """The training epsilon now: one for all copies, or one per copy under explore.ladder."""
        e = self.cfg.explore
        end = epsilon_ladder(e.ladder, e.ladder_alpha, self.cfg.env.num_envs) if e.ladder > 0 else e.eps_end
        return linear_schedule(e.eps_start, end, e.eps_decay_steps, self.counters.env_steps)

    def train(self, *, resume: bool = False) -> dict[str, Any]:
        """Train until ``cfg.steps`` environment steps; returns the summary written last."""
        cfg = self.cfg
        self._t0 = time.monotonic()
        start_step = self.restore() if resume else 0
        c = self.counters
        sink = open_sink(cfg, self.run, start_step, resumed=resume)  # TensorBoard / W&B copies (log.*)
        metrics = CsvLog(self.run.metrics_path, METRICS_COLUMNS, sink=sink)
        train_log = CsvLog(self.run.train_path, TRAIN_COLUMNS, sink=sink)
        eval_log = CsvLog(self.run.eval_path, EVAL_COLUMNS, sink=sink)
        n = cfg.env.num_envs
        continued = self.episodes is not None
        if not continued:  # a fresh run, or a resume whose checkpoint could not hold its episodes
            self.episodes = self._new_episodes(seed=cfg.seed + start_step)
        ep = self.episodes
        obs = ep.obs
        rows = np.arange(n)
        self._window = (time.monotonic(), c.env_steps)
        self._sps = 0.0
        next_progress = c.env_steps
        clip = cfg.agent.reward_clip
        act = greedy_actor(self.learner.online, self.device) if self.actor is None else None

        warning = precision_warning(cfg.agent.precision, self.device)
        if warning:  # also under --quiet: a sweep's log should say why its run is slow
            print(warning, file=sys.stderr, flush=True)
        with recorded_signals() as signals, ProgressReporter(cfg.steps, f"{cfg.command} {cfg.mode}",
                                                            enabled=self.show_progress) as progress:
            if start_step:
                progress.message(f"resumed from step {start_step}, "
                                 + ("its episodes continued" if continued else "its episodes restarted"))
            while c.env_steps < cfg.steps:
                eps = self.epsilon()
                if self.actor is not None:  # the state sees every observation, whoever acts
                    greedy = self.actor(obs)
                    act = lambda _obs, greedy=greedy: greedy  # noqa: E731
                if self.pretrained_act is not None:
                    self.pretrained_act.observe(obs)  # a recurrent π_p's state, likewise
                actions, who = self.behaviour.act(obs, eps, act, self.pretrained_act)
                env_actions = actions
                if cfg.transfer.pretrained_action:
                    env_actions = self.behaviour.hand_off(obs, actions, who, self.pretrained_act)
                ep.who[rows, who] += 1
                step = self.env.step(env_actions)
                if self.pretrained_act is not None:  # π_p with prev_inputs: what was done, and its reward
                    self.pretrained_act.after_step(obs, env_actions, step)
                if self.intrinsic is None:
                    rewards = clip_rewards(step.reward, clip)
                else:  # pre-training: the learner never sees the task's reward
                    rewards = self.intrinsic.rewards(obs, actions, step)
                    ep.intrinsic += rewards
                terminated, truncated = step.terminated, step.truncated
                if self._learn_through_terminal:  # stored as time limits; the episode still ends below
                    terminated, truncated = np.zeros_like(terminated), terminated | truncated
                extra = {} if self.actor is None else self.actor.replay_fields()
                if getattr(self.replay, "demos", False):  # the kickstart's teacher: π_p's action now
                    extra["demo_actions"] = self.pretrained_act(obs)
                self.replay.add(obs, actions, rewards, terminated, truncated, step.final_obs, **extra)
                if self.actor is not None:
                    self.actor.observe_step(actions, rewards)
                ep.ret += step.reward
                ep.length += 1
                c.env_steps += n
                if self._coverage_key is not None:
                    for cells, key in zip(ep.cells, step.probes[self._coverage_key].tolist()):
                        cells.add(key)
                ended = np.flatnonzero(step.terminated | step.truncated)
                if ended.size:
                    self.behaviour.end_episodes(ended)
                    for actor in (self.actor, self.pretrained_act):
                        if actor is not None:
                            actor.reset(ended)
                    self._log_episodes(metrics, ended, ep)
                    self._start_coverage(ep.cells, ended)
                obs = ep.obs = step.obs

                if c.env_steps >= cfg.agent.learning_starts:
                    self._learn(n)
                if c.env_steps >= c.next_train_log:
                    self._log_train(train_log, eps)
                due = c.env_steps >= c.next_eval and cfg.eval_episodes
                if due and self._evaluate(eval_log, progress, stop=lambda: bool(signals)):
                    c.next_eval += cfg.eval_every
                if c.env_steps >= next_progress:
                    recent = float(np.mean(self.recent_returns)) if self.recent_returns else None
                    progress.update(c.env_steps, {"sps": self._sps or None, "return": recent, "eps": float(np.mean(eps))})
                    next_progress = c.env_steps + max(n, 200)
                if signals:
                    self._interrupt(f"at step {c.env_steps}")
                if c.env_steps >= c.next_checkpoint and c.env_steps < cfg.steps:
                    self.save_checkpoint()
            progress.update(c.env_steps, {"sps": self._sps or None})

            if cfg.eval_episodes and (self.last_eval is None or self.last_eval["step"] != c.env_steps):
                self._evaluate(eval_log, progress, stop=lambda: bool(signals))
            if signals:  # stopped during the final evaluation: the resume evaluates and finishes
                self._interrupt("during the final evaluation")
        self.save_checkpoint()
        for log in (metrics, train_log, eval_log, sink):
            log.close()
        summary = self._summary()
        self.run.write_summary(summary)
        self.env.close()
        return summary

    def _new_episodes(self, seed: int) -> Episodes:
        """Reset every environment copy and start counting its episode."""
        n = self.cfg.env.num_envs
        obs = self.env.reset(seed=seed)
        self.replay.new_episodes()
        if self.actor is not None:
            self.actor.load_episode_state_dict(None)
        ep = Episodes.empty(obs)
        self._start_coverage(ep.cells, range(n))
        return ep

    def _learn(self, num_new_steps: int) -> None:
        """The gradient updates owed for ``num_new_steps`` new steps, and the target copy when due."""
        a, c = self.cfg.agent, self.counters
        c.update_credit += num_new_steps / a.train_freq
        while c.update_credit >= 1.0 and self.replay.can_sample(a.batch_size):
            c.update_credit -= 1.0
            batch = self.replay.sample(a.batch_size).to(self._to_device)
            loss, q = self.learner.update(batch, *self._kickstart(batch))
            if self.intrinsic is not None:
                self.intrinsic.learn(batch.transitions())
            self.record.losses.append(loss)  # tensors: no device sync per update
            self.record.qs.append(q)
        if c.env_steps >= c.next_target_sync:
            self.learner.sync_target()
            c.next_target_sync += a.target_update

    def kickstart_weight(self) -> float:
        """The kickstart loss weight now: ``transfer.kickstart`` decayed linearly to 0 over
        ``kickstart_steps``, or constant when that is 0."""
        t = self.cfg.transfer
        if t.kickstart_steps == 0:
            return t.kickstart
        return linear_schedule(t.kickstart, 0.0, t.kickstart_steps, self.counters.env_steps)

    def _kickstart(self, batch) -> tuple:
        """(π_p's greedy actions, weight) for a learner with a demo margin; () for the others."""
        if self.learner.demo_margin is None:
            return ()
        return self.pretrained_act.demonstrations(batch, self.kickstart_weight())

    def _start_coverage(self, ep_cells: list[set], envs) -> None:
        """Begin the coverage sets of new episodes with the cell (room) they start in."""
        if self._coverage_key is None:
            return
        start = self.env.last_probes()[self._coverage_key]
        for i in envs:
            ep_cells[i] = {int(start[i])}

    def _log_episodes(self, metrics: CsvLog, ended: np.ndarray, ep: Episodes) -> None:
        c = self.counters
        now = round(self._elapsed(), 3)
        rows = []
        for i in ended:
            c.episodes += 1
            coverage = len(ep.cells[i]) if self._coverage_key is not None else None
            self.visited.update(ep.cells[i])
            intrinsic = round(float(ep.intrinsic[i]), 5) if self.intrinsic is not None else None
            shares = [round(float(x), 4) for x in ep.who[i] / max(int(ep.length[i]), 1)]
            rows.append([c.env_steps, c.episodes, int(i), float(ep.ret[i]), int(ep.length[i]), now,
                         intrinsic, coverage, *shares])
            self.recent_returns.append(float(ep.ret[i]))
        metrics.write(rows)
        del self.recent_returns[:-RECENT_EPISODES]
        ep.restart(ended)

    def _log_train(self, train_log: CsvLog, eps: Epsilon) -> None:
        c = self.counters
        now, (then, then_step) = time.monotonic(), self._window
        self._sps = (c.env_steps - then_step) / max(now - then, 1e-9)
        self._window = (now, c.env_steps)
        r = self.record
        loss = torch.stack(r.losses).mean().item() if r.losses else None
        q = torch.stack(r.qs).mean().item() if r.qs else None
        r.losses.clear()
        r.qs.clear()
        fl = self.behaviour.drain()
        taken = max(int(fl.steps.sum()), 1)
        flight_cols = [round(float(np.mean(self.behaviour.flight_prob(eps))), 5), len(fl.durations),
                       round(float(np.mean(fl.durations)), 3) if fl.durations else None,
                       max(fl.durations) if fl.durations else None,
                       round(fl.steps[PRETRAINED] / taken, 4), round(fl.steps[RANDOM] / taken, 4)]
        train_log.write([[c.env_steps, round(self._elapsed(), 3), round(self._sps, 1), round(float(np.mean(eps)), 5), loss, q,
                          self.learner.updates, len(self.replay), *flight_cols]])
        c.next_train_log += self.cfg.train_log_every

    def _interrupt(self, where: str) -> None:
        self.save_checkpoint()
        raise Interrupted(f"interrupted {where}; checkpoint saved; continue with the same command plus "
                          f"--resume (run directory '{self.run.path}')")

    def _evaluate(self, eval_log: CsvLog, progress: ProgressReporter, stop) -> bool:
        """Evaluate the online network (and π_p beside it, on the same episodes, when
        ``transfer.eval_pretrained`` asks); False when a signal stopped it (nothing is written)."""
        cfg = self.cfg
        if self._eval_env is None:
            self._eval_env = make_vec_env(cfg.env, seed=cfg.seed + 1_000_003)
        step = self.counters.env_steps
        n = self._eval_env.num_envs
        act = actor_for(self.learner.online, self.device, n, intrinsic=self.intrinsic, reward_clip=cfg.agent.reward_clip)
        if cfg.transfer.pretrained_action:
            act = HandingOff(act, self.pretrained_act.for_evaluation(n), self.env.num_actions)
        policies = {"learner": act}
        when = cfg.transfer.eval_pretrained
        if self.pretrained_act is not None and (when == "every" or (when == "final" and step >= cfg.steps)):
            policies["pretrained"] = self.pretrained_act.for_evaluation(n)
        results = {}
        for name, policy in policies.items():
            results[name] = evaluate(policy, self._eval_env, cfg.eval_episodes, cfg.explore.eps_eval,
                                     seed=cfg.seed + 1_000_003 + step, should_stop=stop)
            if results[name] is None:
                return False
        for name, rows in results.items():
            eval_log.write([[step, k, r.ret, r.length, cfg.explore.eps_eval, "", r.coverage, name, cfg.env.id]
                            for k, r in enumerate(rows)])
        returns = [r.ret for r in results["learner"]]
        self.last_eval = {"step": step, "return_mean": float(np.mean(returns)),
                          "return_std": float(np.std(returns)), "episodes": len(returns)}
        line = f"eval at step {step}: return {np.mean(returns):.2f} ± {np.std(returns):.2f} over {len(returns)} episodes"
        if "pretrained" in results:
            ref = [r.ret for r in results["pretrained"]]
            self.reference_evals.append({"step": step, "return_mean": float(np.mean(ref)), "episodes": len(ref)})
            line += f" (π_p zero-shot {np.mean(ref):.2f})"
        progress.message(line)
        return True

    def _reference_summary(self) -> dict[str, Any] | None:
        """π_p's zero-shot score on this task: every evaluation episode of it, pooled (it is frozen)."""
        if not self.reference_evals:
            return None
        n = sum(e["episodes"] for e in self.reference_evals)
        total = sum(e["return_mean"] * e["episodes"] for e in self.reference_evals)
        last = self.reference_evals[-1]
        return {"return_mean": total / n, "episodes": n, "evaluations": len(self.reference_evals),
                "last_step": last["step"], "last_return_mean": last["return_mean"]}

    def _summary(self) -> dict[str, Any]:
        c = self.counters
        wall = self._elapsed()
        return {
            "status": "complete", "command": self.cfg.command, "mode": self.cfg.mode,
            "env_id": self.cfg.env.id,
            "seed": self.cfg.seed,
            "steps": c.env_steps,
            "episodes": c.episodes,
            "updates": self.learner.updates,
            "wall_time_s": round(wall, 2),
            "mean_sps": round(c.env_steps / max(wall, 1e-9), 1),
            "final_return_mean": float(np.mean(self.recent_returns)) if self.recent_returns else None,
            "final_return_episodes": len(self.recent_returns),
            "eval_return_mean": self.last_eval["return_mean"] if self.last_eval else None,
            "eval_return_std": self.last_eval["return_std"] if self.last_eval else None,
            "eval_episodes": self.last_eval["episodes"] if self.last_eval else 0,
            "pretrained_eval": self._reference_summary(),
            "device": str(self.device),
            "objective": self.cfg.intrinsic.objective,
            "coverage_total": len(self.visited) if self._coverage_key is not None else None,
            **self.behaviour.totals(),
            "pretrained": self.pretrained.provenance() if self.pretrained is not None else None,
        }
