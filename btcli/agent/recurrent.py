"""A recurrent Q-learner in the manner of R2D2 (Kapturowski et al. 2019): an LSTM core between
the torso and the head, learned from replayed sequences with a burn-in.

- :class:`RecurrentQNetwork`: ``Q(h_t, ·) = head(h_t)``, ``(h_t, c_t) = LSTM(torso(o_t), (h_{t-1},
  c_{t-1}))``, the state zeroed before the first observation of every episode. A state is one
  tensor ``[B, 2, core_size]`` (h then c), so it is stored, reset and checkpointed as one array.
  With ``prev_inputs`` the LSTM's input is ``[torso(o_t), onehot(a_{t-1}), r_{t-1}]`` as in NGU
  (Badia et al. 2020): the previous action and the reward the learner learns from (all zero at
  an episode's first observation), so a low recent novelty can say "this area is done".
- :class:`RecurrentActor`: greedy actions for N environment copies, each carrying its own state
  from step to step and reset at its episode's end.
- :class:`R2D2Learner`: the DQN update on a :class:`btcli.agent.sequence_replay.SequenceBatch`.
  Each sequence starts from the state the actor had at its first entry (R2D2's "stored state");
  the first ``burn_in`` steps only rebuild the state (no gradient, no loss), the next ``seq_len``
  steps carry the loss. Targets are n-step returns inside the sequence, bootstrapped from the
  target network unrolled over the same sequence from the same stored state (double Q: the
  online unroll picks the action). The loss is the Huber TD error averaged over the learned
  steps that are transitions; with ``demo_margin`` (the kickstart, ``transfer.kickstart``) plus
  w · the mean of DQfD's large-margin loss toward π_p's actions on the same steps, which the
  replay recorded when each step was taken (``SequenceReplay(demos=True)``).

Our choices, not R2D2's: uniform replay (no priorities), no value rescaling h(x) (rewards are
clipped as for the feed-forward DQN), sequences starting at any entry (R2D2: every 40 steps).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from btcli.agent.dqn import DQNLearner, clip_grad_norm, large_margin_loss
from btcli.agent.networks import QHead


class RecurrentQNetwork(nn.Module):
    """torso -> LSTM cell -> (dueling) head, unrolled over time with resets at episode starts."""

    recurrent = True

    def __init__(self, torso: nn.Module, core_size: int, num_actions: int, dueling: bool,
                 prev_inputs: bool = False):
        super().__init__()
        self.torso = torso
        self.prev_inputs, self.num_actions = bool(prev_inputs), int(num_actions)
        self.core = nn.LSTMCell(torso.out_features + (num_actions + 1 if prev_inputs else 0), core_size)
        self.head = QHead(core_size, num_actions, dueling)
        self.core_size = core_size

    def prev_features(self, actions: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """``[..., A + 1]``: one-hot of the previous ``actions`` (all zero where it is -1, before an
        episode's first action) and the previous ``rewards``."""
        actions = actions.long()
        onehot = F.one_hot(actions.clamp_min(0), self.num_actions).float() * (actions >= 0).unsqueeze(-1)
        return torch.cat((onehot, rewards.float().unsqueeze(-1)), -1)

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The state before an episode's first observation: zeros ``[batch, 2, core_size]``."""
        return torch.zeros(batch, 2, self.core_size, device=device)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """The torso's parameter-free input transform."""
        return self.torso.encode(obs)

    def unroll(self, x: torch.Tensor, first: torch.Tensor, state: torch.Tensor,
               prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Q-values ``[B, T, A]`` of encoded inputs ``x [B, T, ...]`` from ``state [B, 2, H]``, and the
        state after the last step. ``first [B, T]`` (bool) zeroes the state entering that step;
        ``prev [B, T, A + 1]`` (:meth:`prev_features`) is required with ``prev_inputs``."""
        batch, steps = first.shape
        feats = self.torso.features(x.flatten(0, 1)).unflatten(0, (batch, steps))
        if self.prev_inputs:
            if prev is None:
                raise ValueError("this recurrent network also takes the previous action and reward (prev)")
            feats = torch.cat((feats, prev.to(feats.dtype)), 2)
        keep = (~first).to(feats.dtype).unsqueeze(2)  # [B, T, 1]
        h, c = state[:, 0], state[:, 1]
        outs = []
        for t in range(steps):
            k = keep[:, t]
            h, c = self.core(feats[:, t], (h * k, c * k))
            outs.append(h)
        q = self.head(torch.stack(outs, 1).flatten(0, 1)).unflatten(0, (batch, steps))
        return q, torch.stack((h, c), 1)

    def step(self, obs: torch.Tensor, state: torch.Tensor,
             prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step for a batch of raw observations ``[B, *obs_shape]`` (and ``prev [B, A + 1]``):
        (Q ``[B, A]``, next state)."""
        first = torch.zeros(obs.shape[0], 1, dtype=torch.bool, device=obs.device)
        q, state = self.unroll(self.encode(obs).unsqueeze(1), first, state,
                               None if prev is None else prev.unsqueeze(1))
        return q[:, 0], state

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        raise TypeError("a recurrent Q-network needs its state: use step(obs, state), unroll or RecurrentActor")


class RecurrentActor:
    """Greedy actions of a recurrent network for ``num_envs`` copies, each copy's state carried.

    Call it once per environment step with every copy's observation (whoever acts: the state
    must see every observation of the episode); :meth:`reset` the copies whose episode ended.
    ``before`` is the state each copy had when it received the latest observation (what replay
    stores with that entry); ``state`` the one after it. A training run saves ``state`` with
    its episodes in progress (:meth:`episode_state_dict`), so a resume continues them exactly.

    A network with ``prev_inputs`` also needs each copy's previous action and reward: the
    training loop passes them with :meth:`observe_step` after every step; elsewhere (an
    evaluation, π_p in a transfer) :meth:`after_step` computes the rewards with ``scorer``, a
    frozen NGU source (``scorer.rewards(obs, actions, step)``) whose episodic memories are part
    of the episodes in progress (:meth:`episode_state_dict`).
    """

    def __init__(self, net: RecurrentQNetwork, num_envs: int, device: torch.device | str, scorer=None):
        self.net, self.device = net, torch.device(device)
        self.state = net.initial_state(num_envs, self.device)
        self.before = self.state
        self.prev = bool(getattr(net, "prev_inputs", False))
        self.scorer = scorer
        self.prev_actions = np.full(num_envs, -1, dtype=np.int64)  # -1: no action yet this episode
        self.prev_rewards = np.zeros(num_envs, dtype=np.float32)
        self.fed = (self.prev_actions.copy(), self.prev_rewards.copy())  # what the latest call saw

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        self.before = self.state
        prev = None
        if self.prev:
            self.fed = (self.prev_actions.copy(), self.prev_rewards.copy())
            prev = self.net.prev_features(*(torch.from_numpy(v).to(self.device) for v in self.fed))
        q, self.state = self.net.step(torch.from_numpy(obs).to(self.device), self.state, prev)
        return q.argmax(dim=1).cpu().numpy()

    def observe_step(self, actions: np.ndarray, rewards: np.ndarray) -> None:
        """The actions taken and rewards earned since the latest call (before any :meth:`reset`)."""
        if self.prev:
            self.prev_actions[:] = actions
            self.prev_rewards[:] = rewards

    def after_step(self, obs: np.ndarray, actions: np.ndarray, step) -> None:
        """:meth:`observe_step` with the rewards the network learned from (``scorer``'s), for the
        transition ``obs --actions--> step`` of every copy (call it before :meth:`reset`)."""
        if self.prev:
            if self.scorer is None:
                raise ValueError("a network with agent.prev_inputs needs the rewards it learned from to act")
            self.observe_step(actions, self.scorer.rewards(obs, actions, step))

    def reset(self, copies) -> None:
        """Zero the state of ``copies`` (their next observation starts an episode)."""
        idx = np.asarray(copies, dtype=np.int64)
        state = self.state.clone()
        state[torch.as_tensor(idx, device=self.device)] = 0.0
        self.state = state
        self.prev_actions[idx], self.prev_rewards[idx] = -1, 0.0

    def replay_fields(self) -> dict[str, np.ndarray]:
        """What sequence replay stores beside the latest step: each copy's state before and after it
        (and, with ``prev_inputs``, the previous action and reward that step was fed)."""
        fields = {"states": self.before.cpu().numpy(), "final_states": self.state.cpu().numpy()}
        if self.prev:
            fields |= {"prev_actions": self.fed[0], "prev_rewards": self.fed[1]}
        return fields

    def state_dict(self) -> dict:
        """What outlives an episode: nothing but a scorer's own statistics (its running mean of
        k-NN distances moves as it scores)."""
        return {"scorer": self.scorer.state_dict()} if self.scorer is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scorer is not None and "scorer" in state:
            self.scorer.load_state_dict(state["scorer"])

    def episode_state_dict(self) -> dict:
        state = {"state": self.state.detach().cpu().clone(), "prev_actions": self.prev_actions.copy(),
                 "prev_rewards": self.prev_rewards.copy()}
        if self.scorer is not None:
            state["scorer"] = self.scorer.episode_state_dict()
        return state

    def load_episode_state_dict(self, state: dict | None) -> None:
        """Continue the saved states; None (the episodes restart): every state zero."""
        fresh = self.net.initial_state(self.state.shape[0], self.device)
        self.state = fresh if state is None else torch.as_tensor(state["state"]).to(self.device, torch.float32)
        self.before = self.state
        saved = state is not None and "prev_actions" in state
        self.prev_actions[:] = np.asarray(state["prev_actions"]) if saved else -1
        self.prev_rewards[:] = np.asarray(state["prev_rewards"]) if saved else 0.0
        if self.scorer is not None:
            self.scorer.load_episode_state_dict(state.get("scorer") if state is not None else None)


class R2D2Learner(DQNLearner):
    """:class:`DQNLearner` whose update takes sequences (see the module docstring)."""

    def __init__(self, online: RecurrentQNetwork, *, burn_in: int, **kwargs):
        kwargs["cuda_graph"] = False  # the unroll's Python loop is not captured
        super().__init__(online, **kwargs)
        self.burn_in = int(burn_in)

    def update(self, batch, demo=None, demo_weight=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient step on a sequence batch; returns (TD loss, mean Q of the taken actions).

        A learner built with ``demo_margin`` needs ``demo`` (π_p's actions ``[B, L]`` at the learned
        steps, as ``batch.demo_actions``) and ``demo_weight`` (a 0-d tensor w)."""
        if self.demo_margin is not None and (demo is None or demo_weight is None):
            raise ValueError("this learner has a demo margin: every update needs demo and demo_weight")
        if self.demo_margin is None and demo is not None:
            raise ValueError("this learner was built without a demo margin: it takes no demonstrations")
        self.updates += 1
        return self._sequence_step(batch, demo, demo_weight)

    def sequence_loss(self, batch, demo=None, demo_weight=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, TD loss over the learned steps, their mean Q) for a :class:`SequenceTensorBatch`;
        the loss adds ``demo_weight`` · the masked mean large-margin loss toward ``demo``."""
        obs, first, state0 = batch.obs, batch.first, batch.state0
        b, steps = first.shape
        burn = self.burn_in
        x = self.online.encode(obs.flatten(0, 1))
        x = x.unflatten(0, (b, steps))
        prev = self.online.prev_features(batch.prev_actions, batch.prev_rewards) if self.online.prev_inputs else None
        part = (lambda lo, hi: None) if prev is None else (lambda lo, hi: prev[:, lo:hi])  # noqa: E731
        with torch.no_grad(), self._autocast():
            state = self.online.unroll(x[:, :burn], first[:, :burn], state0, part(0, burn))[1] if burn else state0
            q_target = self.target.unroll(x, first, state0, prev)[0].float()  # [B, T, A]
        with self._autocast():
            q_online = self.online.unroll(x[:, burn:], first[:, burn:], state, part(burn, None))[0].float()
        learned = batch.actions.shape[1]
        q = q_online[:, :learned].gather(2, batch.actions.unsqueeze(2)).squeeze(2)  # [B, L]
        with torch.no_grad():
            actions = q_online.shape[2]
            at_boot = (batch.boot - burn).unsqueeze(2).expand(-1, -1, actions)
            next_target = q_target.gather(1, batch.boot.unsqueeze(2).expand(-1, -1, actions))
            selector = q_online.detach().gather(1, at_boot) if self.double else next_target
            best = selector.argmax(dim=2, keepdim=True)
            target = batch.returns + batch.discounts * next_target.gather(2, best).squeeze(2)
        mask = batch.mask
        count = mask.sum().clamp_min(1.0)
        td = (F.smooth_l1_loss(q, target, reduction="none") * mask).sum() / count
        loss = td
        if demo is not None:
            margin = large_margin_loss(q_online[:, :learned].flatten(0, 1), demo.flatten(), self.demo_margin)
            loss = td + demo_weight * (margin * mask.flatten()).sum() / count
        return loss, td, (q.detach() * mask).sum() / count

    def _sequence_step(self, batch, demo=None, demo_weight=None) -> tuple[torch.Tensor, torch.Tensor]:
        loss, td, q = self.sequence_loss(batch, demo, demo_weight)
        for p in self._params:
            p.grad = None
        loss.backward()
        if self.max_grad_norm > 0:
            clip_grad_norm(self._params, self.max_grad_norm)
        self.optimizer.step()
        return td.detach(), q
