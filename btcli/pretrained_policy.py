"""π_p inside a run: the frozen pre-trained network's greedy actions, feed-forward or recurrent.

A feed-forward π_p is asked only when it acts (a flight, a handed-off step). A recurrent π_p
must see every observation of the episode, whoever acts, as the learner's own state does:
:meth:`PretrainedPolicy.observe` steps its state once per environment step, and a call returns
that step's actions. So a flight starts from a state that has followed the whole episode so
far (our choice: the alternative, a state zeroed at each flight's start, forgets what the
learner's steps showed), and :meth:`reset` zeroes it where an episode ended. The state is
saved with the episodes in progress, so an exact resume continues it.

A π_p pre-trained with ``agent.prev_inputs`` is also fed, after every step, the action the
environment executed and the NGU reward its own pre-training objective gives that step,
scored by a frozen copy of its run's NGU source (:meth:`PretrainedPolicy.after_step`): what
it was fed when it learned. That copy's episodic memories belong to the episodes in progress.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from btcli.evaluation import actor_for

Actor = Callable[[np.ndarray], np.ndarray]


class PretrainedPolicy:
    """π_p's greedy actions for ``num_envs`` copies (see the module docstring)."""

    def __init__(self, net: torch.nn.Module, device: torch.device, num_envs: int, intrinsic=None):
        self.net, self.device, self.intrinsic = net, device, intrinsic
        self.recurrent = bool(getattr(net, "recurrent", False))
        self._actor = actor_for(net, device, num_envs, intrinsic=intrinsic)
        self._actions: np.ndarray | None = None

    def observe(self, obs: np.ndarray) -> None:
        """Every environment step, before anyone acts: a recurrent π_p takes in ``obs``."""
        if self.recurrent:
            self._actions = self._actor(obs)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if not self.recurrent:
            return self._actor(obs)
        if self._actions is None:
            raise RuntimeError("a recurrent π_p acts on the observation it was last shown: call observe(obs) first")
        return self._actions

    def after_step(self, obs: np.ndarray, actions: np.ndarray, step) -> None:
        """Every environment step, before :meth:`reset`: a π_p with ``prev_inputs`` takes in the
        executed ``actions`` and its objective's rewards for ``obs --actions--> step``."""
        if self.recurrent:
            self._actor.after_step(obs, actions, step)

    def reset(self, copies) -> None:
        """The copies whose episode ended: a recurrent π_p's state starts again at zero."""
        if self.recurrent:
            self._actor.reset(copies)

    def demonstrations(self, batch, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(π_p's greedy actions on a replayed batch, ``weight`` as a tensor): the kickstart term's
        input. A sequence batch carries the actions π_p chose when its steps were taken
        (``demo_actions``); for a batch of single steps a feed-forward π_p is asked now (at weight
        0 it is not asked: any action does)."""
        recorded = getattr(batch, "demo_actions", None)
        if recorded is not None:
            return recorded, torch.tensor(weight, device=self.device)
        obs = batch.obs
        if weight > 0.0:
            with torch.no_grad():  # not inference_mode: the loss indexes with these actions under autograd
                demo = self.net(obs).argmax(dim=1)
        else:
            demo = torch.zeros(obs.shape[0], dtype=torch.int64, device=self.device)
        return demo, torch.tensor(weight, device=self.device)

    def for_evaluation(self, num_envs: int) -> Actor:
        """A fresh greedy actor of π_p for an evaluation's ``num_envs`` copies (reset by evaluate())."""
        return actor_for(self.net, self.device, num_envs, intrinsic=self.intrinsic)

    def state_dict(self) -> dict:
        return self._actor.state_dict() if self.recurrent else {}  # a scorer's statistics; else nothing

    def load_state_dict(self, state: dict) -> None:
        if self.recurrent:
            self._actor.load_state_dict(state)

    def episode_state_dict(self) -> dict | None:
        return self._actor.episode_state_dict() if self.recurrent else None

    def load_episode_state_dict(self, state: dict | None) -> None:
        if self.recurrent:
            self._actor.load_episode_state_dict(state)


class HandingOff:
    """A greedy policy over the learner's actions whose index ``handoff`` means "π_p chooses"
    (``transfer.pretrained_action``), for evaluation. Both actors see every observation and are
    reset together, so a recurrent learner or π_p keeps its state right."""

    def __init__(self, act: Actor, pretrained: Actor, handoff: int):
        self.act, self.pretrained, self.handoff = act, pretrained, handoff
        self._pretrained_recurrent = hasattr(pretrained, "reset")

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        actions = self.act(obs)
        handed = actions == self.handoff
        if handed.any() or self._pretrained_recurrent:
            chosen = self.pretrained(obs)
            actions = np.where(handed, chosen, actions)
        return actions

    def after_step(self, obs: np.ndarray, actions: np.ndarray, step) -> None:
        """Both actors take in the executed ``actions`` (those fed their previous action and reward)."""
        for actor in (self.act, self.pretrained):
            if hasattr(actor, "after_step"):
                actor.after_step(obs, actions, step)

    def reset(self, copies) -> None:
        for actor in (self.act, self.pretrained):
            if hasattr(actor, "reset"):
                actor.reset(copies)
