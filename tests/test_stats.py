"""Tests for btcli.stats; scipy supplies independent reference values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from btcli import stats


def _poi_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + 0.5 P(X = Y) per task by explicit pairwise counting, averaged over tasks."""
    per_task = []
    for t in range(x.shape[1]):
        wins = 0.0
        for a in x[:, t]:
            for b in y[:, t]:
                wins += 1.0 if a > b else 0.5 if a == b else 0.0
        per_task.append(wins / (x.shape[0] * y.shape[0]))
    return float(np.mean(per_task))


# ----------------------------------------------------------------------------- point metrics


@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (3, 1), (5, 1), (4, 4), (5, 3), (7, 2), (10, 13), (3, 11)])
def test_iqm_matches_scipy_trim_mean(shape):
    x = np.random.default_rng(sum(shape)).normal(size=shape) ** 3  # skewed, so trimming matters
    assert stats.iqm(x) == pytest.approx(sps.trim_mean(x.ravel(), 0.25), rel=1e-12, abs=1e-12)


def test_iqm_by_hand():
    assert stats.iqm(np.arange(1, 9, dtype=float).reshape(4, 2)) == pytest.approx(4.5)  # mean(3, 4, 5, 6)
    # n = 10: int(2.5) = 2 cut from each end -> mean(3..8) = 5.5; an outlier does not move it.
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 8, 9, 1e9]) == pytest.approx(5.5)


def test_iqm_is_batched_over_leading_axis():
    rng = np.random.default_rng(1)
    stack = rng.normal(size=(6, 5, 3))
    expected = [sps.trim_mean(m.ravel(), 0.25) for m in stack]
    np.testing.assert_allclose(stats.iqm(stack), expected)
    np.testing.assert_allclose(stats.mean(stack), [m.mean() for m in stack])
    np.testing.assert_allclose(stats.median(stack), [np.median(m.mean(axis=0)) for m in stack])


def test_mean_median_by_hand():
    x = np.array([[0.0, 10.0], [2.0, 3.0], [1.0, 4.0]])
    assert stats.mean(x) == pytest.approx(20.0 / 6)
    # rliable's median: of the task means, 1 and 17/3 (the median of two values is their mean)
    assert stats.median(x) == pytest.approx((1.0 + 17.0 / 3) / 2)
    # the example: task means 3, 3, 9 -> 3 (the median of all nine entries would be 9)
    assert stats.median(np.array([[0, 0, 9], [0, 0, 9], [9, 9, 9]], dtype=float)) == pytest.approx(3.0)
    assert stats.median([4.0, 1.0, 3.0]) == pytest.approx(3.0)  # a plain list: its median


def test_optimality_gap_by_hand():
    x = np.array([[0.2, 1.5], [1.0, -0.5]])
    # shortfalls below 1: 0.8, 0, 0, 1.5 -> 2.3 / 4
    assert stats.optimality_gap(x) == pytest.approx(2.3 / 4)
    # threshold 2: 1.8, 0.5, 1.0, 2.5 -> 5.8 / 4
    assert stats.optimality_gap(x, threshold=2.0) == pytest.approx(5.8 / 4)
    assert stats.optimality_gap(np.full((3, 2), 7.0)) == 0.0


# ----------------------------------------------------------------------------- probability of improvement


def test_poi_matches_loops_and_mannwhitneyu_with_ties():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 5, size=(7, 4)).astype(float)  # small integer range -> many ties
    y = rng.integers(0, 5, size=(5, 4)).astype(float)
    u = [sps.mannwhitneyu(x[:, t], y[:, t]).statistic / (7 * 5) for t in range(4)]
    got = stats.probability_of_improvement(x, y)
    assert got == pytest.approx(_poi_by_loops(x, y), abs=1e-12)
    assert got == pytest.approx(np.mean(u), abs=1e-12)


def test_poi_ties_count_half_and_is_antisymmetric():
    x = np.array([[1.0], [2.0]])
    y = np.array([[1.0], [3.0]])
    # pairs: 1v1 tie (0.5), 1v3 loss, 2v1 win, 2v3 loss -> 1.5 / 4
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.375)
    assert stats.probability_of_improvement(y, x) == pytest.approx(0.625)
    assert stats.probability_of_improvement(x, x) == pytest.approx(0.5)


def test_poi_ci_brackets_point_and_separates_clear_winner():
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 1.0, size=(10, 3))
    y = rng.normal(0.0, 1.0, size=(8, 3))
    point, lo, hi = stats.poi_ci(x, y, reps=500, seed=0)
    assert point == pytest.approx(stats.probability_of_improvement(x, y))
    assert lo <= point <= hi
    assert lo > 0.5 and hi <= 1.0
    assert stats.poi_ci(x, y, reps=500, seed=0) == (point, lo, hi)  # deterministic


def test_poi_rejects_task_mismatch():
    with pytest.raises(ValueError, match="same number of tasks"):
        stats.probability_of_improvement(np.zeros((3, 2)), np.zeros((3, 3)))


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_coverage_of_known_mean():
    # Percentile bootstrap with only 10 runs per task undercovers a little (nominal 95%); with
    # 200 repetitions the observed rate's standard error is ~1.5 points, so [0.88, 0.99] is
    # loose enough not to flake yet catches a broken interval (e.g. one built from 1 task).
    mu, hits, repetitions = 0.7, 0, 200
    rng = np.random.default_rng(4)
    for i in range(repetitions):
        scores = rng.normal(mu, 1.0, size=(10, 3))
        _, lo, hi = stats.stratified_bootstrap_ci(scores, stats.mean, reps=500, seed=i)
        hits += lo <= mu <= hi
    assert 0.88 <= hits / repetitions <= 0.99


def test_bootstrap_point_and_interval_shape():
    scores = np.random.default_rng(5).normal(size=(6, 4))
    point, lo, hi = stats.stratified_bootstrap_ci(scores, stats.iqm, reps=300)
    assert point == pytest.approx(stats.iqm(scores))
    assert lo < point < hi


def test_stratified_resamples_never_mix_tasks():
    # Task t holds values in [100 t, 100 t + 9]: any mixing would put a foreign value in a column.
    scores = np.arange(8)[:, None] + 100.0 * np.arange(3)[None, :]
    seen: list[np.ndarray] = []

    def record(batch: np.ndarray) -> np.ndarray:
        if batch.ndim == 3:
            seen.append(batch.copy())
        return stats.mean(batch)

    stats.stratified_bootstrap_ci(scores, record, reps=200)
    batch = np.concatenate(seen)
    assert batch.shape == (200, 8, 3)
    for t in range(3):
        assert np.isin(batch[:, :, t], scores[:, t]).all()
    # Resampling with replacement within a task: some resample repeats a run.
    assert any(len(np.unique(m[:, 0])) < 8 for m in batch)


def test_constant_tasks_give_zero_width_interval():
    # Each task constant, different per task: stratified resampling keeps every task's value,
    # so the mean cannot move (unstratified resampling over all entries would).
    scores = np.tile([0.0, 10.0, 20.0], (5, 1))
    point, lo, hi = stats.stratified_bootstrap_ci(scores, stats.mean, reps=300)
    assert point == lo == hi == pytest.approx(10.0)


def test_unbatched_statistic_needs_flag():
    scores = np.random.default_rng(6).normal(size=(5, 2))
    with pytest.raises(ValueError, match="batched=False"):
        stats.stratified_bootstrap_ci(scores, lambda s: float(np.mean(s)), reps=50)
    a = stats.stratified_bootstrap_ci(scores, lambda s: float(np.mean(s)), reps=50, batched=False)
    b = stats.stratified_bootstrap_ci(scores, stats.mean, reps=50)
    assert a == pytest.approx(b)  # same seed, same resamples


# ----------------------------------------------------------------------------- performance profile


def test_performance_profile_by_hand():
    scores = np.array([[0.0, 2.0], [1.0, 3.0]])
    taus = np.array([-1.0, 0.0, 0.5, 1.0, 2.5, 3.0])
    np.testing.assert_allclose(stats.performance_profile(scores, taus), [1.0, 0.75, 0.75, 0.5, 0.25, 0.0])


def test_performance_profile_band_monotone():
    scores = np.random.default_rng(7).normal(size=(10, 5))
    taus = np.linspace(-3, 3, 41)
    profile, lo, hi = stats.performance_profile_ci(scores, taus, reps=300)
    assert profile.shape == lo.shape == hi.shape == (41,)
    for curve in (profile, lo, hi):
        assert np.all(np.diff(curve) <= 0)
    assert np.all(lo <= profile) and np.all(profile <= hi)
    assert profile[0] == 1.0 and profile[-1] == 0.0


# ----------------------------------------------------------------------------- normalisation and validation


def test_normalise_breakout_random_and_human():
    low, high = stats.ATARI_RANDOM_HUMAN["ALE/Breakout-v5"]
    np.testing.assert_allclose(stats.normalise([[low], [high]], low, high), [[0.0], [1.0]])


def test_normalise_per_task_with_atari_bounds():
    envs = ["ALE/Breakout-v5", "ALE/Pong-v5"]
    low, high = stats.atari_bounds(envs)
    np.testing.assert_allclose(low, [1.7, -20.7])
    np.testing.assert_allclose(high, [30.5, 14.6])
    got = stats.normalise([[1.7, 14.6], [30.5, -20.7]], low, high)
    np.testing.assert_allclose(got, [[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(KeyError):
        stats.atari_bounds(["ALE/NoSuchGame-v5"])


def test_atari_table_has_required_games():
    for game in ["Breakout", "Pong", "MontezumaRevenge", "Seaquest", "SpaceInvaders", "Qbert", "BeamRider",
                 "Enduro", "PrivateEye", "Pitfall", "Venture", "Gravitar", "Freeway", "Solaris"]:
        low, high = stats.ATARI_RANDOM_HUMAN[f"ALE/{game}-v5"]
        assert low < high


@pytest.mark.parametrize(
    "call",
    [
        lambda x: stats.iqm(x),
        lambda x: stats.mean(x),
        lambda x: stats.median(x),
        lambda x: stats.optimality_gap(x),
        lambda x: stats.performance_profile(x, np.array([0.0])),
        lambda x: stats.probability_of_improvement(x, np.zeros((2, 2))),
        lambda x: stats.stratified_bootstrap_ci(x, stats.mean, reps=10),
        lambda x: stats.normalise(x, 0.0, 1.0),
    ],
)
def test_nan_rejected(call):
    x = np.array([[1.0, np.nan], [0.5, 2.0]])
    with pytest.raises(ValueError, match="NaN"):
        call(x)


def test_bad_level_rejected():
    with pytest.raises(ValueError, match="level"):
        stats.stratified_bootstrap_ci(np.ones((3, 2)), stats.mean, level=1.5)


RLIABLE = json.loads((Path(__file__).parent / "fixtures" / "rliable_aggregates.json").read_text())
AGGREGATE_FUNCTIONS = {"median": stats.median, "iqm": stats.iqm, "mean": stats.mean,
                       "optimality_gap": stats.optimality_gap}


@pytest.mark.parametrize("case", RLIABLE["cases"], ids=[c["name"] for c in RLIABLE["cases"]])
def test_aggregates_and_intervals_agree_with_rliable(case):
    """rliable 1.2's values (tests/fixtures/make_rliable_fixtures.py): points exactly; the intervals
    within the Monte Carlo error of two percentile bootstraps with other random streams."""
    x = np.array(case["scores"])
    for name, fn in AGGREGATE_FUNCTIONS.items():
        point, lo, hi = stats.stratified_bootstrap_ci(x, fn, reps=RLIABLE["reps"], seed=0)
        assert point == pytest.approx(case["point"][name], abs=1e-12), name
        assert lo == pytest.approx(case["lo"][name], abs=0.01), name
        assert hi == pytest.approx(case["hi"][name], abs=0.01), name


def test_probability_of_improvement_agrees_with_rliable():
    p = RLIABLE["poi"]
    point, lo, hi = stats.poi_ci(np.array(p["x"]), np.array(p["y"]), reps=RLIABLE["reps"], seed=0)
    assert point == pytest.approx(p["point"], abs=1e-12)
    assert lo == pytest.approx(p["lo"], abs=0.01) and hi == pytest.approx(p["hi"], abs=0.01)


def test_step_bins_cut_zero_to_upper_into_equal_bins():
    # [0, 100] in 4 bins of 25: 0 and 24.9 -> 0, 25 -> 1, 99 -> 3, 100 and 130 (past the budget) -> 3
    got = stats.step_bins([0, 24.9, 25, 99, 100, 130], 100, 4)
    assert got.tolist() == [0, 0, 1, 3, 3, 3]
    assert stats.step_bins([5, 7], 0, 4).tolist() == [0, 0]


def test_binned_mean_by_hand_weighted_and_empty_bins():
    means, totals = stats.binned_mean([10, 20, 60, 90], [1.0, 3.0, 5.0, 7.0], 100, 4)
    assert totals.tolist() == [2, 0, 1, 1]
    assert means[0] == 2.0 and np.isnan(means[1]) and means[2] == 5.0 and means[3] == 7.0
    # weights 1 and 3 in bin 0: (1*1 + 3*3) / 4 = 2.5
    means, totals = stats.binned_mean([10, 20], [1.0, 3.0], 100, 4, weights=[1.0, 3.0])
    assert means[0] == 2.5 and totals[0] == 4.0


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # resamples of only the NaN row
def test_bootstrap_mean_ci_is_the_resampled_row_means_percentiles():
    x = np.array([[1.0, np.nan], [2.0, 4.0], [6.0, 8.0]])
    point, lo, hi = stats.bootstrap_mean_ci(x, reps=400, level=0.9, seed=3)
    assert point[0] == 3.0 and point[1] == 6.0  # NaN left out of the second column's mean
    rng = np.random.default_rng(3)
    boots = np.array([np.nanmean(x[rng.integers(0, 3, size=3)], axis=0) for _ in range(400)])
    assert np.allclose(lo, np.nanpercentile(boots, 5, axis=0)) and np.allclose(hi, np.nanpercentile(boots, 95, axis=0))
    one = stats.bootstrap_mean_ci(np.arange(50.0), reps=100, seed=1)
    assert one[1] < one[0] < one[2]
