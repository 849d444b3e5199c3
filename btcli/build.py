"""A run's components built from its config, with no side effect on the process or the disk.

Training (:class:`btcli.loop.Trainer`), ``btcli evaluate``, ``btcli export`` and the pre-trained
policy loader all build their networks here, so a network is rebuilt one way everywhere.
Process-wide settings (threads, malloc) are :func:`btcli.runtime.configure_process`'s, applied by
the command line; files are :mod:`btcli.runs`'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from btcli.agent.dqn import DQNLearner
from btcli.agent.networks import QNetwork, build_q_network
from btcli.agent.recurrent import R2D2Learner, RecurrentQNetwork
from btcli.agent.replay import ReplayBuffer
from btcli.agent.sequence_replay import SequenceReplay
from btcli.behaviour import FlightBehaviour, FlightSpec
from btcli.config import AgentConfig, RunConfig
from btcli.envs import make_vec_env
from btcli.envs.base import VecEnv
from btcli.intrinsic.registry import build_source
from btcli.modes import flight_source


def checkpoint_identity(cfg: RunConfig, env: VecEnv) -> dict[str, Any]:
    """What a checkpoint says about the task it was trained on (checked by resume and transfer)."""
    return {"env_id": cfg.env.id, "obs_shape": list(env.obs_shape), "num_actions": int(env.num_actions),
            "action_meanings": list(env.action_meanings), "visited_marks": bool(cfg.env.visited)}


def q_network(agent: AgentConfig | dict[str, Any], obs_shape: tuple[int, ...], num_actions: int,
              device: torch.device | None = None, *, channels_last: bool | None = None
              ) -> QNetwork | RecurrentQNetwork:
    """The Q-network an agent config describes (``agent`` may be a saved config's dict), on ``device``:
    recurrent with ``core`` 'lstm' (the same torso, then the LSTM). channels_last (the agent's,
    unless given) applies on a CPU only."""
    get = agent.get if isinstance(agent, dict) else lambda key, default=None: getattr(agent, key, default)
    on_cpu = device is None or torch.device(device).type == "cpu"
    wanted = bool(get("channels_last", False)) if channels_last is None else channels_last
    net = build_q_network(tuple(obs_shape), num_actions, torso=get("torso"), hidden=get("hidden"),
                          dueling=get("dueling"), channels_last=wanted and on_cpu)
    if (get("core") or "none") != "none":  # configs from before agent.core are feed-forward
        net = RecurrentQNetwork(net.torso, int(get("core_size")), num_actions, bool(get("dueling")),
                                prev_inputs=bool(get("prev_inputs", False)))
    return net if device is None else net.to(device)


def learner_actions(cfg: RunConfig, env: VecEnv) -> int:
    """The learner's outputs: the task's actions, plus "let π_p choose" with transfer.pretrained_action."""
    return int(env.num_actions) + int(cfg.transfer.pretrained_action)


@dataclass
class Components:
    """Everything a training run acts and learns with (the pre-trained policy is applied later)."""

    env: VecEnv
    learner: DQNLearner
    replay: ReplayBuffer
    behaviour: FlightBehaviour
    intrinsic: Any  # an IntrinsicSource, or None outside pre-training
    num_actions: int  # the learner's outputs


def build_components(cfg: RunConfig, device: torch.device, rng: np.random.Generator) -> Components:
    """The environment copies, learner, replay, behaviour and intrinsic reward source of a run."""
    env = make_vec_env(cfg.env, seed=cfg.seed)
    a, t = cfg.agent, cfg.transfer
    actions = learner_actions(cfg, env)
    net = q_network(a, env.obs_shape, actions, device)
    common = dict(lr=a.lr, adam_eps=a.adam_eps, double=a.double, max_grad_norm=a.max_grad_norm,
                  precision=a.precision, device=device)
    storage = dict(frame_stack=env.frame_stack, n_step=a.n_step, gamma=a.gamma, seed=cfg.seed, num_actions=actions)
    margin = t.kickstart_margin if t.kickstart > 0 else None
    if isinstance(net, RecurrentQNetwork):
        learner: DQNLearner = R2D2Learner(net, burn_in=a.burn_in, demo_margin=margin, **common)
        replay: ReplayBuffer = SequenceReplay(a.buffer_size, cfg.env.num_envs, env.obs_shape, env.obs_dtype,
                                              state_shape=(2, a.core_size), burn_in=a.burn_in, seq_len=a.seq_len,
                                              prev_inputs=a.prev_inputs, demos=margin is not None, **storage)
    else:
        learner = DQNLearner(net, cuda_graph=a.cuda_graph, demo_margin=margin, **common)
        replay = ReplayBuffer(a.buffer_size, cfg.env.num_envs, env.obs_shape, env.obs_dtype, **storage)
    spec = FlightSpec(source=flight_source(cfg.mode, t.flights), start=t.flight_start, prob=t.flight_prob,
                      mu=t.flight_mu, cap=t.flight_cap, random_share=t.random_flight_share)
    behaviour = FlightBehaviour(spec, cfg.env.num_envs, actions, rng)
    intrinsic = build_source(cfg.intrinsic, env, device, save_buffers=cfg.save_replay)
    return Components(env, learner, replay, behaviour, intrinsic, actions)
