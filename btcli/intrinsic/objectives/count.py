"""Count-based novelty on MiniGrid's grid cells (``--objective count``).

``scope=lifelong``: 1/sqrt(N(cell)) for the agent's cell after the action, N counted over the
run by every copy together. ``scope=episode``: 1 when the agent enters a cell for the first time
in its episode, else 0; with the visited cells marked in the observation (``env.visited``) this
reward is a function of the observation, and its return is the number of cells an episode covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from btcli.envs.base import _f
from btcli.envs.minigrid import AGENT_IDX
from btcli.errors import BtcliError
from btcli.intrinsic.registry import NoEpisodeState, SourceSpec, Untrained, objective, options


@options("count")
@dataclass
class CountOptions:
    scope: str = _f("lifelong", "objective count: 'lifelong' 1/sqrt(N(cell)) over the run, or 'episode': 1 for a "
                    "cell first entered in this episode, else 0 (pair with env.visited)")

    def validate(self) -> None:
        if self.scope not in ("lifelong", "episode"):
            raise ValueError(f"intrinsic.count.scope is '{self.scope}'; choose one of: lifelong, episode")


class CountSource(NoEpisodeState):
    """1/sqrt(N(cell)) on the agent's grid cell after the action (life-long counts)."""

    def __init__(self) -> None:
        from btcli.intrinsic.counts import CountBonus

        self.counts = CountBonus()

    def rewards(self, obs: np.ndarray, actions: np.ndarray, step) -> np.ndarray:
        return self.counts.reward(step.probes["cell"]).astype(np.float32)

    def learn(self, batch) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return self.counts.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts.load_state_dict(state)


class EpisodeCoverageSource(Untrained):
    """1 when the agent enters a grid cell for the first time in its episode, else 0.

    The first cell of an episode is read off the observation the episode starts with.
    """

    def __init__(self, num_envs: int, width: int) -> None:
        from btcli.intrinsic.counts import EpisodicCountBonus

        self.counts = EpisodicCountBonus(num_envs)
        self.width = width

    def rewards(self, obs: np.ndarray, actions: np.ndarray, step) -> np.ndarray:
        for i in range(len(obs)):
            if not self.counts.started(i):
                ys, xs = np.nonzero(obs[i, :, :, 0] == AGENT_IDX)
                self.counts.start(i, int(ys[0]) * self.width + int(xs[0]))
        first_visit = self.counts.reward(step.probes["cell"]) == 1.0
        for i in np.flatnonzero(step.terminated | step.truncated):
            self.counts.end(int(i))
        return first_visit.astype(np.float32)

    def episode_state_dict(self) -> dict[str, Any]:
        return self.counts.state_dict()

    def load_episode_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self.counts.counts = [{} for _ in self.counts.counts]
        else:
            self.counts.load_state_dict(state)


@objective("count", sections=("count",), help="visit counts of MiniGrid's grid cells (life-long or per episode)")
def build(spec: SourceSpec):
    env, opts = spec.env, spec.options["count"]
    if "cell" not in env.last_probes():
        raise BtcliError(f"objective 'count' needs discrete grid cells, which {env.env_id} does not expose; "
                         "use a MiniGrid task or --objective rnd")
    if opts.scope == "episode":
        return EpisodeCoverageSource(int(env.num_envs), int(env.obs_shape[1]))
    return CountSource()
