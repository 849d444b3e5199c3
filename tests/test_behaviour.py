"""Who acts: capped zeta flight durations, flights of π_p and random actions, behaviour shares."""

import numpy as np
import pytest
from scipy import special, stats

from btcli.behaviour import (
    LEARNER,
    PRETRAINED,
    RANDOM,
    FlightBehaviour,
    FlightSpec,
    capped_zeta,
    epsilon_greedy,
    epsilon_ladder,
    linear_schedule,
)


def capped_zeta_pmf(mu: float, cap: int) -> np.ndarray:
    """P(n) for n = 1..cap of min(zeta(mu), cap), from the Riemann zeta function."""
    n = np.arange(1, cap + 1, dtype=np.float64)
    pmf = n**-mu / special.zeta(mu)
    pmf[-1] = 1.0 - pmf[:-1].sum()  # the tail beyond the cap lands on the cap
    return pmf


def learner_zero(obs):
    return np.zeros(len(obs), dtype=np.int64)


def test_linear_schedule_and_epsilon_greedy():
    assert linear_schedule(1.0, 0.1, 100, 0) == 1.0
    assert linear_schedule(1.0, 0.1, 100, 50) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 100, 500) == 0.1
    rng = np.random.default_rng(0)
    greedy = np.full(100_000, 7)
    acts = epsilon_greedy(greedy, 0.2, 4, rng)
    # a random action replaces the greedy one 20% of the time and is never 7 (4 actions)
    assert abs((acts != 7).mean() - 0.2) < 0.01


def test_epsilon_ladder_is_apex_per_copy_epsilons():
    # by hand: 0.4^(1 + 7 i / 3) for i = 0..3 -> 0.4, 0.4^(10/3), 0.4^(17/3), 0.4^8
    want = [0.4, 0.047156, 0.0055591, 0.00065536]
    assert epsilon_ladder(0.4, 7.0, 4) == pytest.approx(want, rel=1e-4)
    assert epsilon_ladder(0.4, 7.0, 1).tolist() == [0.4]
    # the linear decay reaches each copy's own end
    halfway = linear_schedule(1.0, epsilon_ladder(0.4, 7.0, 4), 100, 50)
    assert halfway == pytest.approx([(1 + w) / 2 for w in want], rel=1e-4)


def test_per_copy_epsilons_explore_per_copy():
    # copy 0 never explores, copy 1 always, copy 2 half of the time; with and without flights
    n, reps = 3, 4000
    eps = np.array([0.0, 1.0, 0.5])
    for spec in (FlightSpec(), FlightSpec(source="random", start="explore", cap=1)):
        beh = FlightBehaviour(spec, n, 4, np.random.default_rng(8))
        who = np.stack([beh.act(np.zeros((n, 1)), eps, lambda o: np.full(len(o), 3))[1] for _ in range(reps)])
        random_share = (who == RANDOM).mean(axis=0)
        assert random_share[0] == 0 and random_share[1] == 1
        assert random_share[2] == pytest.approx(0.5, abs=0.03)


def test_capped_zeta_follows_its_law():
    mu, cap, size = 2.0, 20, 200_000
    draws = capped_zeta(np.random.default_rng(1), mu, cap, size)
    assert draws.min() == 1 and draws.max() == cap
    pmf = capped_zeta_pmf(mu, cap)
    # by hand: P(1) = 1/ζ(2) = 6/π² ≈ 0.6079
    assert pmf[0] == pytest.approx(6 / np.pi**2)
    observed = np.bincount(draws, minlength=cap + 1)[1:]
    chi2 = stats.chisquare(observed, pmf * size)
    assert chi2.pvalue > 1e-3, chi2
    # and the test has power: an uncapped-at-10 sample or zeta(3) is rejected
    other = capped_zeta(np.random.default_rng(2), 3.0, cap, size)
    assert stats.chisquare(np.bincount(other, minlength=cap + 1)[1:], pmf * size).pvalue < 1e-6


def test_flight_share_matches_flight_probability():
    # flights start with probability p at each step outside a flight; a flight lasts n ~ capped zeta.
    # A renewal argument gives the share of steps in flights: p E[n] / ((1 - p) + p E[n]).
    p, mu, cap, n_envs, steps = 0.1, 2.0, 10, 8, 20_000
    spec = FlightSpec(source="random", start="fixed", prob=p, mu=mu, cap=cap)
    beh = FlightBehaviour(spec, n_envs, 4, np.random.default_rng(3))
    obs = np.zeros((n_envs, 1))
    for _ in range(steps):
        beh.act(obs, 0.0, learner_zero)
    mean_n = (np.arange(1, cap + 1) * capped_zeta_pmf(mu, cap)).sum()
    expected = p * mean_n / ((1 - p) + p * mean_n)
    share = beh.totals()["behaviour_share"]["random"]
    assert share == pytest.approx(expected, abs=0.01)
    assert beh.totals()["flight_len_mean"] == pytest.approx(mean_n, rel=0.05)
    assert beh.totals()["flight_len_max"] == cap


def test_flight_probability_zero_or_cap_one_reduce_to_plain_steps():
    beh = FlightBehaviour(FlightSpec(source="random", start="fixed", prob=0.3, cap=1), 1000, 4,
                          np.random.default_rng(4))
    obs = np.zeros((1000, 1))
    who = np.concatenate([beh.act(obs, 0.0, learner_zero)[1] for _ in range(20)])
    # flights of one step started with probability 0.3: exactly an epsilon-greedy with epsilon 0.3
    assert (who == RANDOM).mean() == pytest.approx(0.3, abs=0.01)
    assert beh.totals()["flight_len_max"] == 1


def test_explore_start_uses_epsilon_and_greedy_between_flights():
    beh = FlightBehaviour(FlightSpec(source="random", start="explore", cap=1), 2000, 4, np.random.default_rng(5))
    obs = np.zeros((2000, 1))
    actions, who = beh.act(obs, 0.25, lambda o: np.full(len(o), 3))
    assert beh.flight_prob(0.25) == 0.25
    assert (who == RANDOM).mean() == pytest.approx(0.25, abs=0.03)
    # between flights the learner acts greedily (no second epsilon)
    assert (actions[who == LEARNER] == 3).all()


def test_fixed_start_keeps_epsilon_greedy_between_flights():
    beh = FlightBehaviour(FlightSpec(source="pretrained", start="fixed", prob=0.0), 4000, 4, np.random.default_rng(6))
    obs = np.zeros((4000, 1))
    _, who = beh.act(obs, 0.5, learner_zero, learner_zero)
    assert (who == PRETRAINED).sum() == 0
    assert (who == RANDOM).mean() == pytest.approx(0.5, abs=0.03)


def test_pretrained_flights_follow_pi_closed_loop_and_random_flights_repeat_one_action():
    n = 64
    beh = FlightBehaviour(FlightSpec(source="pretrained", start="fixed", prob=1.0, cap=1000, random_share=0.5),
                          n, 5, np.random.default_rng(7))
    # π_p reads the observation: its action changes as the observation does (closed loop)
    pi = lambda o: (o[:, 0].astype(np.int64) % 5)  # noqa: E731
    first_random_action = None
    for t in range(6):
        obs = np.full((n, 1), t, dtype=np.float32) + np.arange(n)[:, None]
        actions, who = beh.act(obs, 0.0, learner_zero, pi)
        flying_pi = who == PRETRAINED
        assert (actions[flying_pi] == pi(obs)[flying_pi]).all()
        if t == 0:
            first_random_action = actions.copy()
            random_now = who == RANDOM
            assert 0.3 < random_now.mean() < 0.7  # random_share 0.5 of the flights
        still_random = random_now & (beh.length == t + 1)  # the same flight since step 0
        assert (who[still_random] == RANDOM).all()
        assert (actions[still_random] == first_random_action[still_random]).all()


def test_flights_end_at_episode_ends_and_record_their_realised_length():
    beh = FlightBehaviour(FlightSpec(source="random", start="fixed", prob=1.0, cap=10_000), 3, 4,
                          np.random.default_rng(8))
    obs = np.zeros((3, 1))
    beh.n_left[:] = 50  # three flights of 50 steps in progress
    beh.kind[:] = RANDOM
    for _ in range(4):
        beh.act(obs, 0.0, learner_zero)
    beh.end_episodes(np.array([1]))
    assert beh.n_left[1] == 0 and beh.length[1] == 0
    assert list(beh.n_left[[0, 2]]) == [46, 46] and list(beh.length[[0, 2]]) == [4, 4]
    stats = beh.drain()
    assert stats.durations == [4]  # four steps flown, cut by the episode end
    # the next step of copy 1 starts a new flight (prob 1) rather than continuing the old one
    _, who = beh.act(obs, 0.0, learner_zero)
    assert (who == RANDOM).all() and beh.length[1] <= 1 and list(beh.length[[0, 2]]) == [5, 5]


def test_state_dict_round_trip_keeps_whole_run_counts():
    beh = FlightBehaviour(FlightSpec(source="random", start="fixed", prob=0.5), 4, 4, np.random.default_rng(9))
    for _ in range(200):
        beh.act(np.zeros((4, 1)), 0.1, learner_zero)
    again = FlightBehaviour(beh.spec, 4, 4, np.random.default_rng(0))
    again.load_state_dict(beh.state_dict())
    assert again.totals() == beh.totals()
    assert sum(again.total_steps) == 800


def test_hand_off_lets_pi_choose_and_moves_the_counts():
    from btcli.pretrained_policy import HandingOff

    beh = FlightBehaviour(FlightSpec(), 4, 5, np.random.default_rng(10))  # 4 env actions + the hand-off
    obs = np.arange(4)[:, None]
    actions, who = beh.act(obs, 0.0, lambda o: np.array([4, 1, 4, 2]))
    pi = lambda o: o[:, 0] % 4  # noqa: E731
    env_actions = beh.hand_off(obs, actions, who, pi)
    assert env_actions.tolist() == [0, 1, 2, 2] and actions.tolist() == [4, 1, 4, 2]
    assert who.tolist() == [PRETRAINED, LEARNER, PRETRAINED, LEARNER]
    assert beh.totals()["behaviour_share"] == {"learner": 0.5, "pretrained": 0.5, "random": 0.0}
    # the evaluation policy does the same translation
    assert HandingOff(lambda o: np.array([4, 1, 4, 2]), pi, 4)(obs).tolist() == [0, 1, 2, 2]
