"""Who acts: exploration schedules and behaviour policies over a batch of environment copies.

Three behaviours can choose an action: the learner (greedy in Q_θ), a uniformly random
action (an epsilon step or a repeated-random-action flight), and the frozen pre-trained
policy π_p (a behaviour-transfer flight). ``FlightBehaviour`` decides per copy and per step
which one acts, following the εz-greedy scheme of Dabney et al. (2021) as METHOD.md describes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

LEARNER, PRETRAINED, RANDOM = 0, 1, 2
BEHAVIOURS = ("learner", "pretrained", "random")

Actor = Callable[[np.ndarray], np.ndarray]


Epsilon = float | np.ndarray
"""One epsilon for every copy, or one per copy [num_envs] (explore.ladder)."""


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """Linear interpolation from ``start`` at step 0 to ``end`` at ``duration``, constant after."""
    if duration <= 0 or step >= duration:
        return end
    return start + (end - start) * (step / duration)


def epsilon_ladder(base: float, alpha: float, n: int) -> np.ndarray:
    """Per-copy epsilons [n] of Ape-X (Horgan et al. 2018): copy i gets base^(1 + alpha * i / (n - 1)),
    one copy base**1 when n is 1. Ape-X, R2D2 and NGU use base 0.4, alpha 7."""
    if n == 1:
        return np.array([base])
    return base ** (1.0 + alpha * np.arange(n) / (n - 1))


def epsilon_greedy_explored(greedy: np.ndarray, epsilon: Epsilon, num_actions: int, rng: np.random.Generator
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Each greedy action replaced by a uniform random one with probability ``epsilon``; and which were."""
    explore = rng.random(greedy.shape[0]) < epsilon
    random_actions = rng.integers(0, num_actions, size=greedy.shape[0])
    return np.where(explore, random_actions, greedy).astype(np.int64), explore


def epsilon_greedy(greedy: np.ndarray, epsilon: Epsilon, num_actions: int, rng: np.random.Generator) -> np.ndarray:
    """Replace each greedy action by a uniform random one with probability ``epsilon``."""
    return epsilon_greedy_explored(greedy, epsilon, num_actions, rng)[0]


def capped_zeta(rng: np.random.Generator, mu: float, cap: int, size: int) -> np.ndarray:
    """Flight durations n ~ zeta(mu), P(n) = n^-mu / ζ(mu) for n >= 1, capped at ``cap``.

    zeta(2) has an infinite mean; the cap keeps flights finite (the mass beyond it lands on it).
    """
    return np.minimum(rng.zipf(mu, size=size), cap).astype(np.int64)


@dataclass
class FlightSpec:
    """How flights start and who flies them.

    ``source``: 'none' (plain epsilon-greedy), 'random' (εz-greedy: repeat one random action)
    or 'pretrained' (behaviour transfer: π_p acts, closed-loop).
    ``start``: 'explore' starts a flight on each exploratory step (probability epsilon, greedy
    learner between flights); 'fixed' starts one with probability ``prob`` and lets the learner
    act epsilon-greedily between flights (METHOD.md's pseudo-code).
    ``random_share``: share of pre-trained flights replaced by repeated-random-action flights.
    """

    source: str = "none"
    start: str = "explore"
    prob: float = 0.05
    mu: float = 2.0
    cap: int = 100
    random_share: float = 0.0


@dataclass
class FlightStats:
    """Counts since the last ``drain``: steps taken by each behaviour, durations of finished flights."""

    steps: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))
    durations: list[int] = field(default_factory=list)


class FlightBehaviour:
    """Per environment copy and step: the learner, a random action, or a flight, acts."""

    def __init__(self, spec: FlightSpec, num_envs: int, num_actions: int, rng: np.random.Generator):
        self.spec = spec
        self.num_envs, self.num_actions, self.rng = num_envs, num_actions, rng
        self.n_left = np.zeros(num_envs, dtype=np.int64)  # steps left in the current flight
        self.kind = np.full(num_envs, LEARNER, dtype=np.int64)  # who flies the current flight
        self.action = np.zeros(num_envs, dtype=np.int64)  # the repeated action of a random flight
        self.length = np.zeros(num_envs, dtype=np.int64)  # steps flown so far in the current flight
        self.stats = FlightStats()  # since the last drain (a train.csv row)
        self.total_steps = np.zeros(3, dtype=np.int64)  # whole run, saved in checkpoints
        self.total_flights = 0
        self.total_flight_steps = 0
        self.longest_flight = 0

    def flight_prob(self, epsilon: Epsilon) -> Epsilon:
        """The probability that an idle copy starts a flight at this step."""
        s = self.spec
        if s.source == "none":
            return 0.0
        return epsilon if s.start == "explore" else s.prob

    def act(self, obs: np.ndarray, epsilon: Epsilon, learner: Actor, pretrained: Actor | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """Actions [num_envs] for ``obs`` and who chose each (LEARNER, PRETRAINED or RANDOM)."""
        n, s = self.num_envs, self.spec
        if s.source == "none":
            return self._learner_step(obs, np.ones(n, dtype=bool), epsilon, learner)
        idle = self.n_left == 0
        starting = idle & (self.rng.random(n) < self.flight_prob(epsilon))
        if starting.any():
            self._start_flights(np.flatnonzero(starting))
        flying = self.n_left > 0
        learner_eps = 0.0 if s.start == "explore" else epsilon
        actions, who = self._learner_step(obs, ~flying, learner_eps, learner)
        by_pi = flying & (self.kind == PRETRAINED)
        if by_pi.any():
            actions[by_pi] = pretrained(obs)[by_pi]
            who[by_pi] = PRETRAINED
        by_random = flying & (self.kind == RANDOM)
        actions[by_random] = self.action[by_random]
        who[by_random] = RANDOM
        # count the step flown now; a flight whose last step this is ends here
        self.n_left[flying] -= 1
        self.length[flying] += 1
        landed = flying & (self.n_left == 0)
        if landed.any():
            self._land(landed)
        self._count(who)
        return actions, who

    def hand_off(self, obs: np.ndarray, actions: np.ndarray, who: np.ndarray, pretrained: Actor) -> np.ndarray:
        """Environment actions when the learner's last action means "let π_p act this step"
        (``transfer.pretrained_action``): those steps take π_p's action and count as π_p's.
        ``actions`` (the learner's choices, what replay stores) is left as it is; ``who`` is updated."""
        handed = actions == self.num_actions - 1
        if not handed.any():
            return actions
        env_actions = actions.copy()
        env_actions[handed] = pretrained(obs)[handed]
        moved = np.bincount(who[handed], minlength=3)
        for counts in (self.stats.steps, self.total_steps):
            counts -= moved
            counts[PRETRAINED] += int(handed.sum())
        who[handed] = PRETRAINED
        return env_actions

    def end_episodes(self, ended: np.ndarray) -> None:
        """Flights never outlive an episode: those of copies whose episode ``ended`` stop now."""
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[ended] = True
        cut = mask & (self.n_left > 0)
        if cut.any():
            self._land(cut)

    def totals(self) -> dict[str, object]:
        """Whole-run figures: share of steps per behaviour, number and lengths of flights."""
        taken = max(int(self.total_steps.sum()), 1)
        return {
            "behaviour_share": {name: round(float(x) / taken, 4) for name, x in zip(BEHAVIOURS, self.total_steps)},
            "flights": self.total_flights,
            "flight_len_mean": round(self.total_flight_steps / self.total_flights, 3) if self.total_flights else None,
            "flight_len_max": self.longest_flight if self.total_flights else None,
        }

    def state_dict(self) -> dict[str, object]:
        """The whole-run counts and the counts since the last drain (flights in progress are the
        episodes': :meth:`episode_state_dict`)."""
        return {"steps": self.total_steps.tolist(), "flights": self.total_flights,
                "flight_steps": self.total_flight_steps, "longest": self.longest_flight,
                "since_drain": {"steps": self.stats.steps.tolist(), "durations": list(self.stats.durations)}}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.total_steps = np.asarray(state["steps"], dtype=np.int64)
        self.total_flights = int(state["flights"])
        self.total_flight_steps = int(state["flight_steps"])
        self.longest_flight = int(state["longest"])
        if "since_drain" in state:
            self.stats = FlightStats(np.asarray(state["since_drain"]["steps"], dtype=np.int64),
                                     list(state["since_drain"]["durations"]))

    def episode_state_dict(self) -> dict[str, list[int]]:
        """The flights in progress (they never outlive an episode)."""
        return {"n_left": self.n_left.tolist(), "kind": self.kind.tolist(), "action": self.action.tolist(),
                "length": self.length.tolist()}

    def load_episode_state_dict(self, state: dict[str, list[int]] | None) -> None:
        """Continue the saved flights; None: no copy is in a flight (the episodes restart)."""
        for key in ("n_left", "kind", "action", "length"):  # 0 everywhere: no flight, LEARNER acts
            getattr(self, key)[...] = 0 if state is None else state[key]

    def drain(self) -> FlightStats:
        """The counts since the last drain (for a train.csv row)."""
        stats, self.stats = self.stats, FlightStats()
        return stats

    def _learner_step(self, obs: np.ndarray, acting: np.ndarray, epsilon: Epsilon, learner: Actor
                      ) -> tuple[np.ndarray, np.ndarray]:
        n = self.num_envs
        greedy = learner(obs) if np.any(np.asarray(epsilon) < 1.0) and acting.any() else np.zeros(n, dtype=np.int64)
        actions, explore = epsilon_greedy_explored(greedy, epsilon, self.num_actions, self.rng)
        who = np.where(explore, RANDOM, LEARNER).astype(np.int64)
        if self.spec.source == "none":
            self._count(who)
        return actions, who

    def _count(self, who: np.ndarray) -> None:
        counts = np.bincount(who, minlength=3)
        self.stats.steps += counts
        self.total_steps += counts

    def _start_flights(self, envs: np.ndarray) -> None:
        s, k = self.spec, envs.size
        self.n_left[envs] = capped_zeta(self.rng, s.mu, s.cap, k)
        if s.source == "random":
            self.kind[envs] = RANDOM
        else:
            self.kind[envs] = np.where(self.rng.random(k) < s.random_share, RANDOM, PRETRAINED)
        self.action[envs] = self.rng.integers(0, self.num_actions, size=k)
        self.length[envs] = 0

    def _land(self, mask: np.ndarray) -> None:
        durations = self.length[mask].tolist()
        self.stats.durations.extend(durations)
        self.total_flights += len(durations)
        self.total_flight_steps += sum(durations)
        self.longest_flight = max(self.longest_flight, *durations)
        self.n_left[mask] = 0
        self.length[mask] = 0
