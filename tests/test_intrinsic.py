"""Intrinsic-reward modules against values computed by hand (arithmetic in the comments)."""

import math

import numpy as np
import pytest
import torch

from btcli.agent.replay import TensorBatch
from btcli.envs.base import Step
from btcli.intrinsic import (
    RND,
    CountBonus,
    EpisodicMemory,
    InverseDynamics,
    RunningMean,
    RunningMeanStd,
    episodic_kernel_reward,
    lifelong_modulation,
)
from btcli.intrinsic.objectives.ngu import NGUSource
from btcli.intrinsic.registry import build_source

C = 1e-3  # NGU's kernel constant c; an empty memory scores 1/c


# --- running statistics -------------------------------------------------------------------

def test_running_mean_std_batched_equals_concatenation():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (n, 3)) for n in (1, 4, 7)]
    rms = RunningMeanStd((3,))
    rms.update(batches[0])
    rms.update(torch.as_tensor(batches[1], dtype=torch.float32))
    rms.update(batches[2])
    # float32 rounding of the torch batch only: compare to the same rounding
    allx = np.concatenate([batches[0], batches[1].astype(np.float32).astype(np.float64), batches[2]])
    np.testing.assert_allclose(rms.mean, allx.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rms.var, allx.var(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rms.std, allx.std(axis=0), rtol=1e-12)
    assert rms.count == 12


def test_running_mean_std_scalar_known_values():
    rms = RunningMeanStd()
    assert rms.mean == 0.0 and rms.var == 1.0 and rms.count == 0
    rms.update(np.array([1.0, 3.0]))  # mean 2, var ((1-2)² + (3-2)²)/2 = 1
    assert rms.mean == pytest.approx(2.0) and rms.var == pytest.approx(1.0)
    rms.update(np.array([5.0]))  # {1,3,5}: mean 3, var (4 + 0 + 4)/3 = 8/3
    assert rms.mean == pytest.approx(3.0) and rms.var == pytest.approx(8 / 3) and rms.count == 3
    rms.update(np.zeros(0))  # an empty batch changes nothing
    assert rms.count == 3 and rms.mean == pytest.approx(3.0)


def test_running_mean_std_rejects_wrong_shape():
    with pytest.raises(ValueError):
        RunningMeanStd((3,)).update(np.zeros((4, 2)))


def test_running_mean_std_state_dict_round_trip():
    rms = RunningMeanStd((2,))
    rms.update(np.array([[0.0, 1.0], [2.0, 5.0]]))
    other = RunningMeanStd((2,))
    other.load_state_dict(rms.state_dict())
    np.testing.assert_array_equal(other.mean, [1.0, 3.0])
    np.testing.assert_array_equal(other.var, [1.0, 4.0])
    assert other.count == 2
    with pytest.raises(ValueError):
        RunningMeanStd((3,)).load_state_dict(rms.state_dict())


def test_running_mean():
    rm = RunningMean()
    rm.update(np.array([1.0, 2.0, 3.0]))
    rm.update(torch.tensor([10.0]))  # (1+2+3+10)/4 = 4
    assert rm.mean == pytest.approx(4.0) and rm.count == 4
    other = RunningMean()
    other.load_state_dict(rm.state_dict())
    assert other.mean == pytest.approx(4.0) and other.count == 4


# --- NGU kernel ---------------------------------------------------------------------------

def test_kernel_three_neighbours():
    # running mean 2: d_n = [0.0081, 0.0083, 0.0083]; minus ξ=0.008: [1e-4, 3e-4, 3e-4]
    # K = 1e-4/(1e-4+1e-4), 1e-4/(3e-4+1e-4), ... = [0.5, 0.25, 0.25]; ΣK = 1
    # s = sqrt(1) + 0.001 = 1.001; r = 1/1.001 = 0.999000999...
    d2 = np.array([0.0162, 0.0166, 0.0166])
    assert episodic_kernel_reward(d2, 2.0) == pytest.approx(0.999000999000999, rel=1e-9)
    assert episodic_kernel_reward(torch.tensor(d2, dtype=torch.float64), 2.0) == pytest.approx(0.999000999, rel=1e-8)
    # only the k nearest count: a 4th, nearer neighbour (d²=0, K=1) replaces 0.0166 when k=3
    # K = [1, 0.5, 0.25]; s = sqrt(1.75) + 0.001 = 1.3238...; r = 0.75540...
    four = np.array([0.0162, 0.0166, 0.0166, 0.0])
    assert episodic_kernel_reward(four, 2.0, k=3) == pytest.approx(1 / (math.sqrt(1.75) + C), rel=1e-9)


def test_kernel_s_max_cutoff():
    # 64 identical neighbours: K = 1 each, s = sqrt(64) + 0.001 = 8.001 > 8 -> 0
    assert episodic_kernel_reward(np.zeros(64), 1.0, k=64) == 0.0
    # 63: s = sqrt(63) + 0.001 = 7.93825... <= 8 -> r = 0.125972...
    assert episodic_kernel_reward(np.zeros(63), 1.0, k=63) == pytest.approx(0.1259722866534295, rel=1e-9)
    # k = 10 caps s at sqrt(10) + 0.001 = 3.16328 < 8, so only a lower s_max cuts
    assert episodic_kernel_reward(np.zeros(10), 1.0) == pytest.approx(1 / 3.1632776601683794, rel=1e-9)
    assert episodic_kernel_reward(np.zeros(10), 1.0, s_max=3.0) == 0.0


def test_kernel_xi_clustering():
    # d² = 0.001 with mean 1: d_n = 0.001 < ξ -> 0 -> K = 1, same as an identical neighbour
    # s = 1 + 0.001; r = 1/1.001
    assert episodic_kernel_reward(np.array([0.001]), 1.0) == pytest.approx(1 / 1.001, rel=1e-9)
    assert episodic_kernel_reward(np.array([0.0]), 1.0) == pytest.approx(1 / 1.001, rel=1e-9)
    # d² = 0.009: d_n - ξ = 0.001; K = 1e-4/1.1e-3 = 1/11; s = sqrt(1/11) + 0.001 = 0.302511; r = 3.30566
    assert episodic_kernel_reward(np.array([0.009]), 1.0) == pytest.approx(1 / (math.sqrt(1 / 11) + C), rel=1e-6)


def test_kernel_empty_memory_and_zero_mean():
    # no neighbours: ΣK = 0, s = c = 0.001 <= 8, r = 1/c = 1000
    assert episodic_kernel_reward(np.zeros(0), 1.0) == pytest.approx(1000.0)
    # running mean 0 (every distance 0): d_n = 0, K = [1, 1], r = 1/(sqrt(2) + 0.001)
    assert episodic_kernel_reward(np.zeros(2), 0.0) == pytest.approx(1 / (math.sqrt(2) + C), rel=1e-9)


# --- episodic memory ----------------------------------------------------------------------

def test_memory_repeated_embedding_and_reset():
    mem = EpisodicMemory(num_envs=2, dim=3, capacity=100)
    e = np.ones((2, 3), dtype=np.float32)
    # step 1: empty memory -> 1/c = 1000
    # step 2: one neighbour at d² = 0, running mean 0 -> K = [1] -> 1/(1 + 0.001)
    # step 3: two at d² = 0 -> 1/(sqrt(2) + 0.001)
    expected = [1000.0, 1 / (1 + C), 1 / (math.sqrt(2) + C)]
    for want in expected:
        np.testing.assert_allclose(mem.add_and_reward(e), [want, want], rtol=1e-9)
    mem.reset([0])  # env 0 starts an episode; env 1 goes on (three copies held)
    np.testing.assert_allclose(mem.add_and_reward(e), [1000.0, 1 / (math.sqrt(3) + C)], rtol=1e-9)
    mem.reset(np.array([True, True]))
    np.testing.assert_allclose(mem.add_and_reward(e), [1000.0, 1000.0], rtol=1e-9)


def test_memory_running_mean_of_knn_distances():
    mem = EpisodicMemory(num_envs=1, dim=1, capacity=100)
    assert mem.add_and_reward(np.array([[0.0]]))[0] == pytest.approx(1000.0)  # empty: 1/c, mean untouched
    assert mem.d2_mean.count == 0
    # x = 2 vs {0}: d² = [4]; mean 4; d_n = 1 - ξ = 0.992; K = 1e-4/0.9921 = 1.00796e-4
    # s = sqrt(1.00796e-4) + 0.001 = 0.0110397; r = 90.5819
    assert mem.add_and_reward(np.array([[2.0]]))[0] == pytest.approx(90.58187960577563, rel=1e-9)
    # x = 2 vs {0, 2}: d² = [0, 4]; mean over [4, 0, 4] = 8/3; d_n = [0, 1.5] -> [0, 1.492]
    # K = [1, 1e-4/1.4921 = 6.70196e-5]; s = sqrt(1.0000670) + 0.001 = 1.0010335; r = 0.998968
    assert mem.add_and_reward(np.array([[2.0]]))[0] == pytest.approx(0.9989675577816484, rel=1e-9)
    assert mem.d2_mean.mean == pytest.approx(8 / 3)


def test_memory_batch_updates_mean_before_normalising():
    mem = EpisodicMemory(num_envs=2, dim=1, capacity=10)
    mem.add_and_reward(np.zeros((2, 1)))
    # env 0: d² = 1; env 1: d² = 9; running mean over both = 5
    # env 0: d_n = 0.2 - ξ = 0.192; K = 1e-4/0.1921 = 5.20562e-4; s = 0.0228158 + 0.001; r = 41.9889
    # env 1: d_n = 1.8 - ξ = 1.792; K = 1e-4/1.7921 = 5.58005e-5; s = 0.00747 + 0.001; r = 118.064
    np.testing.assert_allclose(mem.add_and_reward(np.array([[1.0], [3.0]])),
                               [41.98887462978607, 118.06416722356335], rtol=1e-9)


def test_memory_capacity_overwrites_oldest():
    mem = EpisodicMemory(num_envs=1, dim=1, capacity=2)
    for x in (0.0, 10.0, 20.0):  # d² seen: [] ; [100] ; [400, 100] -> sum 600 over 3
        mem.add_and_reward(np.array([[x]]))
    # memory is now {20, 10}: 0 was overwritten. x = 0: d² = [400, 100]; mean = 1100/5 = 220
    # d_n = [1.81818 - ξ, 0.454545 - ξ] = [1.81018, 0.446545]; K = [5.52400e-5, 2.23891e-4]
    # s = sqrt(2.79131e-4) + 0.001 = 0.0177072; r = 56.4741 (had 0 survived, K≈1 and r≈1)
    assert mem.add_and_reward(np.array([[0.0]]))[0] == pytest.approx(56.474134281116164, rel=1e-9)
    assert mem.sizes[0] == 2


def test_memory_knn_dist2():
    mem = EpisodicMemory(num_envs=1, dim=2, k=2, capacity=10)
    for p in ([3.0, 4.0], [1.0, 0.0], [0.0, 2.0]):
        mem.add_and_reward(np.array([p]))
    # from the origin: d² = 25, 1, 4 -> the 2 nearest, ascending: [1, 4]
    np.testing.assert_allclose(mem.knn_dist2(np.zeros((1, 2))), [[1.0, 4.0]])
    small = EpisodicMemory(num_envs=1, dim=2, k=3, capacity=10)
    small.add_and_reward(np.array([[3.0, 4.0]]))
    np.testing.assert_array_equal(small.knn_dist2(np.zeros((1, 2))), [[25.0, np.inf, np.inf]])
    with pytest.raises(ValueError):
        small.add_and_reward(np.zeros((2, 2)))


def test_memory_state_dict_round_trip():
    mem = EpisodicMemory(num_envs=1, dim=1, capacity=10)
    for x in (0.0, 2.0, 2.0):
        mem.add_and_reward(np.array([[x]]))
    other = EpisodicMemory(num_envs=1, dim=1, capacity=10)
    other.add_and_reward(np.array([[5.0]]))
    state = mem.state_dict()
    other.load_state_dict(state)
    other.load_episode_state_dict(mem.episode_state_dict())
    assert other.d2_mean.mean == pytest.approx(8 / 3) and other.d2_mean.count == 3
    # the episode in progress continues: its 3 entries are back, so 1.0 has neighbours at d² 1, 1, 1
    np.testing.assert_array_equal(other.knn_dist2(np.array([[1.0]])), [[1.0, 1.0, 1.0] + [np.inf] * 7])
    # a resume whose episodes restart: empty memories, the running mean kept
    fresh = EpisodicMemory(num_envs=1, dim=1, capacity=10)
    fresh.add_and_reward(np.array([[5.0]]))
    fresh.load_state_dict(state)
    fresh.load_episode_state_dict(None)
    assert fresh.sizes[0] == 0 and fresh.d2_mean.count == 3
    assert "memory" not in state  # the episodes' part is not in the state: an explicit pair


def test_memory_state_dict_after_wrapping_continues_exactly():
    """A full memory (oldest entries overwritten) saved mid-episode goes on scoring and
    overwriting exactly as the original."""
    rng = np.random.default_rng(0)
    mem = EpisodicMemory(num_envs=2, dim=3, capacity=5, k=3)
    for _ in range(7):  # wraps: copy heads at 2
        mem.add_and_reward(rng.normal(size=(2, 3)))
    mem.reset([1])
    mem.add(rng.normal(size=(1, 3)), [1])  # copy 1 holds 1 entry, copy 0 five
    other = EpisodicMemory(num_envs=2, dim=3, capacity=5, k=3)
    other.load_state_dict(mem.state_dict())
    other.load_episode_state_dict(mem.episode_state_dict())
    assert other.sizes.tolist() == [5, 1] and other.heads.tolist() == [2, 1]
    for _ in range(6):
        q = rng.normal(size=(2, 3))
        np.testing.assert_array_equal(other.add_and_reward(q), mem.add_and_reward(q))
    np.testing.assert_array_equal(other.memory, mem.memory)


def test_memory_add_stores_without_scoring():
    mem = EpisodicMemory(num_envs=3, dim=1, capacity=10)
    mem.add(np.array([[1.0], [2.0]]), [0, 2])
    mem.add(np.array([[4.0]]), np.array([False, True, False]))
    assert mem.sizes.tolist() == [1, 1, 1] and mem.d2_mean.count == 0  # nothing scored
    # env 0 holds {1}, env 1 {4}, env 2 {2}: from 0, d² = 1, 16, 4
    np.testing.assert_allclose(mem.knn_dist2(np.zeros((3, 1)))[:, 0], [1.0, 16.0, 4.0])
    with pytest.raises(ValueError):
        mem.add(np.zeros((1, 1)), [0, 1])


@pytest.mark.parametrize("held", [15, 300, 2_500])  # all candidates; argpartition; torch topk
def test_memory_knn_matches_brute_force(held):
    rng = np.random.default_rng(held)
    mem = EpisodicMemory(num_envs=2, dim=4, capacity=3_000, k=10)
    points = rng.integers(-3, 4, size=(held, 2, 4)).astype(np.float32)  # a small lattice: many exact ties
    for i in range(held):
        mem.add(points[i], [0, 1])
    mem.reset([1])
    for i in range(7):  # env 1 restarted: it holds only 7 entries (stale slots must not count)
        mem.add(points[i, 1:2], [1])
    q = rng.integers(-3, 4, size=(2, 4)).astype(np.float32)
    got = mem.knn_dist2(q)
    want0 = np.sort(((points[:, 0] - q[0]) ** 2).sum(axis=1))[:10]
    want1 = np.sort(((points[:7, 1] - q[1]) ** 2).sum(axis=1))
    np.testing.assert_array_equal(got[0], want0)
    np.testing.assert_array_equal(got[1], np.concatenate([want1, [np.inf] * 3]))


# --- inverse dynamics, modulation ---------------------------------------------------------

def test_inverse_dynamics_shapes_and_learning():
    torch.manual_seed(0)
    net = InverseDynamics((4,), num_actions=3, embed_dim=8)
    obs = torch.randn(30, 4)
    actions = torch.arange(30) % 3
    next_obs = obs.clone()
    next_obs[:, 0] += actions.float() - 1.0  # the action moves feature 0 by -1, 0 or +1
    emb = net.embed(obs)
    assert emb.shape == (30, 8) and not emb.requires_grad
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = net.loss(obs, next_obs, actions)
    assert first.item() == pytest.approx(math.log(3), abs=0.3)  # near-uniform guess at init
    for _ in range(60):
        opt.zero_grad()
        net.loss(obs, next_obs, actions).backward()
        opt.step()
    assert net.loss(obs, next_obs, actions).item() < 0.3 * first.item()


def test_inverse_dynamics_cnn_uses_newest_frame():
    torch.manual_seed(0)
    net = InverseDynamics((4, 84, 84), num_actions=6)
    assert net.kind == "cnn"
    obs = torch.zeros(2, 4, 84, 84, dtype=torch.uint8)
    other = obs.clone()
    other[:, :3] = 255  # older frames differ, the newest does not
    torch.testing.assert_close(net.embed(obs), net.embed(other))
    assert net.embed(obs).shape == (2, 32)
    loss = net.loss(obs, other, np.array([0, 5]))
    loss.backward()
    assert loss.ndim == 0 and net.encoder[0][0].weight.grad is not None


def test_lifelong_modulation():
    # α = 1 + (err - 2)/0.5: err 2 -> 1; err 1 -> -1 -> clipped to 1; err 3 -> 3; err 10 -> 17 -> L = 5
    assert lifelong_modulation(2.0, 2.0, 0.5) == 1.0
    assert lifelong_modulation(1.0, 2.0, 0.5) == 1.0
    assert lifelong_modulation(3.0, 2.0, 0.5) == pytest.approx(3.0)
    assert lifelong_modulation(10.0, 2.0, 0.5) == 5.0
    assert lifelong_modulation(10.0, 2.0, 0.5, L=20.0) == pytest.approx(17.0)
    np.testing.assert_allclose(lifelong_modulation(np.array([1.0, 3.0, 10.0]), np.float64(2.0), 0.5), [1, 3, 5])
    torch.testing.assert_close(lifelong_modulation(torch.tensor([1.0, 3.0, 10.0]), np.float64(2.0), np.float64(0.5)),
                               torch.tensor([1.0, 3.0, 5.0]))


# --- counts -------------------------------------------------------------------------------

def test_count_bonus():
    counts = CountBonus()
    for n in (1, 2, 3):  # N counts the current visit: 1, 1/sqrt(2), 1/sqrt(3)
        np.testing.assert_allclose(counts.reward(np.array([7])), [1 / math.sqrt(n)])
    # within one batch a repeated key counts in order; key 7 is at N = 4 now
    np.testing.assert_allclose(counts.reward(np.array([9, 9, 7])), [1.0, 1 / math.sqrt(2), 0.5])
    assert len(counts) == 2 and counts.count(7) == 4 and counts.count(8) == 0
    other = CountBonus()
    other.load_state_dict(counts.state_dict())
    np.testing.assert_allclose(other.reward(torch.tensor([9, 3])), [1 / math.sqrt(3), 1.0])


# --- RND ----------------------------------------------------------------------------------

def test_rnd_obs_normalisation_and_clip():
    rnd = RND((2,), feature_dim=8, hidden=16)
    assert rnd.kind == "mlp"
    rnd.update_obs_stats(np.array([[0.0, 0.0], [2.0, 4.0]]))  # mean [1, 2], var [1, 4] -> std [1, 2]
    # [3, 2] -> [(3-1)/1, (2-2)/2] = [2, 0]; [1, 30] -> [0, 28/2 = 14 -> clip 5]; [-9, 2] -> [-10 -> -5, 0]
    x = rnd.normalise_obs(np.array([[3.0, 2.0], [1.0, 30.0], [-9.0, 2.0]]))
    torch.testing.assert_close(x, torch.tensor([[2.0, 0.0], [0.0, 5.0], [-5.0, 0.0]]))


def test_rnd_cnn_normalises_newest_frame():
    torch.manual_seed(0)
    rnd = RND((4, 84, 84))
    assert rnd.kind == "cnn" and rnd.obs_rms.shape == (1, 84, 84)
    obs = torch.full((2, 4, 84, 84), 200, dtype=torch.uint8)
    obs[0, -1], obs[1, -1] = 10, 30  # newest frames: per-pixel mean 20, var 100, std 10
    rnd.update_obs_stats(obs)
    x = rnd.normalise_obs(obs)  # (10-20)/10 = -1, (30-20)/10 = +1
    assert x.shape == (2, 1, 84, 84)
    torch.testing.assert_close(x[:, 0, 0, 0], torch.tensor([-1.0, 1.0]))
    assert rnd.reward(obs).shape == (2,)


def test_rnd_reward_scaling():
    rnd = RND((2,), feature_dim=8, hidden=16)
    assert rnd.normalise_reward(np.array([7.0]))[0] == 7.0  # one reward: std undefined, unscaled
    rnd = RND((2,), feature_dim=8, hidden=16)
    # rewards [0, 4]: std = sqrt(((0-2)² + (4-2)²)/2) = 2 -> [0, 2]
    np.testing.assert_allclose(rnd.normalise_reward(np.array([0.0, 4.0])), [0.0, 2.0], rtol=1e-6)
    # without update the std stays 2: 6 -> 3
    torch.testing.assert_close(rnd.normalise_reward(torch.tensor([6.0]), update=False), torch.tensor([3.0]))
    assert rnd.reward_rms.count == 2


def test_rnd_reward_is_prediction_error_and_training_lowers_it():
    torch.manual_seed(0)
    rnd = RND((5, 5, 2), feature_dim=16, hidden=32)  # a MiniGrid-like uint8 grid, flattened
    obs = torch.randint(0, 11, (6, 5, 5, 2), dtype=torch.uint8)
    rnd.update_obs_stats(obs)
    r = rnd.reward(obs)
    x = rnd.normalise_obs(obs)
    with torch.no_grad():
        want = ((rnd.predictor(x) - rnd.target(x)) ** 2).sum(dim=1)
    torch.testing.assert_close(r, want)
    assert r.shape == (6,) and not r.requires_grad
    count = rnd.obs_rms.count
    opt = torch.optim.Adam(rnd.parameters(), lr=1e-3)
    target_before = [p.clone() for p in rnd.target.parameters()]
    for _ in range(30):
        opt.zero_grad()
        rnd.loss(obs).backward()
        opt.step()
    assert rnd.obs_rms.count == count and rnd.reward_rms.count == 0  # reward/loss update no statistic
    assert all(torch.equal(a, b) for a, b in zip(target_before, rnd.target.parameters()))
    assert rnd.reward(obs).mean() < 0.5 * r.mean()


def test_rnd_state_dict_round_trip():
    torch.manual_seed(0)
    rnd = RND((3,), feature_dim=8, hidden=16)
    obs = torch.randn(4, 3)
    rnd.update_obs_stats(obs)
    rnd.normalise_reward(np.array([1.0, 3.0]))
    torch.manual_seed(1)
    other = RND((3,), feature_dim=8, hidden=16)
    assert not torch.allclose(other.reward(obs), rnd.reward(obs))
    other.load_state_dict(rnd.state_dict())
    torch.testing.assert_close(other.reward(obs), rnd.reward(obs))
    np.testing.assert_array_equal(other.obs_rms.mean, rnd.obs_rms.mean)
    assert other.reward_rms.count == 2 and other.reward_rms.var == pytest.approx(1.0)


# --- NGU source: episodic novelty per transition, memory per episode ----------------------

def _step(obs, ended=None, final_obs=None):
    """A vector step whose next observations are ``obs``; ``ended`` copies reset to ``obs``."""
    obs = np.asarray(obs, dtype=np.uint8)
    n = len(obs)
    ended = np.zeros(n, dtype=bool) if ended is None else np.asarray(ended)
    final = obs.copy() if final_obs is None else np.asarray(final_obs, dtype=np.uint8)
    return Step(obs=obs, reward=np.zeros(n, np.float32), terminated=ended, truncated=np.zeros(n, dtype=bool),
                final_obs=final)


def _one_hot_ngu(num_envs, cells=4, normalise=False, **kw):
    """An NGU source whose embedding is fixed: the one-hot code of the cell number in obs[:, 0];
    raw kernel rewards unless ``normalise``."""
    src = NGUSource((1,), num_actions=3, num_envs=num_envs, device=torch.device("cpu"), embed_dim=cells,
                    normalise=normalise, **kw)
    src.idm.embed = lambda obs: np.eye(cells, dtype=np.float32)[np.asarray(obs)[:, 0]]
    return src


def test_ngu_revisit_within_episode_earns_less_than_a_new_cell():
    src = _one_hot_ngu(1)
    a, b, new = [[0]], [[1]], [[2]]  # distinct one-hot cells: d² = 2 between any two, 0 to itself
    acts = np.zeros(1, dtype=np.int64)
    # reset at a (stored, not scored). a -> b: memory {a}, d² = [2]; mean 2; d_n = 1 - ξ = 0.992
    # K = 1e-4/0.9921; r = 1/(sqrt(K) + c) = 90.5819
    r1 = src.rewards(np.array(a), acts, _step(b))
    assert r1[0] == pytest.approx(90.58187960577563, rel=1e-6)
    # b -> a (revisit): memory {a, b}, d² = [0, 2]; mean over [2, 0, 2] = 4/3; d_n = [0, 1.492]
    # K = [1, 1e-4/1.4921]; r = 1/(sqrt(1.0000670) + c) = 0.998968
    r2 = src.rewards(np.array(b), acts, _step(a))
    assert r2[0] == pytest.approx(0.9989675577816484, rel=1e-6)
    # a -> new: memory {a, b, a}, d² = [2, 2, 2]; mean over [2, 0, 2, 2, 2, 2] = 5/3
    # d_n = 1.2 - ξ = 1.192 each; ΣK = 3e-4/1.1921; r = 1/(sqrt(ΣK) + c) = 59.299
    r3 = src.rewards(np.array(a), acts, _step(new))
    assert r3[0] == pytest.approx(1 / (math.sqrt(3e-4 / 1.1921) + C), rel=1e-6)
    assert r2[0] < r3[0] < r1[0]
    assert r1.dtype == np.float32 and src.memory.sizes[0] == 4


def test_ngu_episode_end_scores_final_obs_then_restarts_memory_with_reset_obs():
    src = _one_hot_ngu(2)
    acts = np.zeros(2, dtype=np.int64)
    # both copies start in cell 0. Copy 0 moves to 1; copy 1's episode ends back in cell 0
    # (final_obs) and the new episode starts in cell 3 (step.obs).
    step = _step([[1], [3]], ended=[False, True], final_obs=[[1], [0]])
    r = src.rewards(np.array([[0], [0]]), acts, step)
    # d² = [2] (copy 0) and [0] (copy 1: final_obs, not the reset obs 3 whose d² would be 2)
    # mean 1. copy 0: d_n = 2 - ξ = 1.992, K = 1e-4/1.9921, r = 1/(sqrt(K) + c);
    # copy 1: d_n = 0, K = 1, r = 1/(1 + c)
    np.testing.assert_allclose(r, [1 / (math.sqrt(1e-4 / 1.9921) + C), 1 / (1 + C)], rtol=1e-6)
    # copy 1's memory was emptied and holds only its new episode's first embedding
    assert src.memory.sizes.tolist() == [2, 1]
    np.testing.assert_array_equal(src.memory.memory[1, 0], [0, 0, 0, 1])
    # staying in the reset cell scores against that one entry (d² = 0): 1/(1 + c), never 1/c
    r = src.rewards(np.array([[1], [3]]), acts, _step([[1], [3]]))
    assert r[1] == pytest.approx(1 / (1 + C), rel=1e-6) and r.max() < 1 / C
    assert src.memory.sizes.tolist() == [3, 2]


def test_ngu_resume_reseeds_memories():
    src = _one_hot_ngu(1)
    acts = np.zeros(1, dtype=np.int64)
    src.rewards(np.array([[0]]), acts, _step([[1]]))
    other = _one_hot_ngu(1)
    other.load_state_dict(src.state_dict())
    other.load_episode_state_dict(None)  # what the loop loads when the episodes restart
    assert other.memory.sizes[0] == 0 and other.memory.d2_mean.count == 1
    # the first step after a resume stores the loop's reset observation first: not 1/c
    r = other.rewards(np.array([[2]]), acts, _step([[2]]))
    assert r[0] == pytest.approx(1 / (1 + C), rel=1e-6) and other.memory.sizes[0] == 2


def test_ngu_state_continues_its_episodes_and_ring():
    """A full state (episodes continuing) gives the same rewards after loading as before; the
    inverse-dynamics ring travels only with ``save_ring``."""
    acts = np.zeros(2, dtype=np.int64)
    src = _one_hot_ngu(2, idm_buffer=3, save_ring=True)
    obs = np.array([[0], [0]])
    for nxt in ([[1], [2]], [[2], [2]], [[3], [1]], [[1], [0]]):  # 4 pairs per copy: the ring of 3 wraps
        src.rewards(obs, acts, _step(nxt))
        obs = np.array(nxt)
    other = _one_hot_ngu(2, idm_buffer=3)
    other.load_state_dict(src.state_dict())
    other.load_episode_state_dict(src.episode_state_dict())
    assert other.memory.sizes.tolist() == [5, 5] and other._seeded
    # revisits and a new cell: reseeded memories (a restarting resume) would score these differently
    for nxt in ([[2], [2]], [[0], [3]]):
        np.testing.assert_array_equal(other.rewards(obs, acts, _step(nxt)), src.rewards(obs, acts, _step(nxt)))
        obs = np.array(nxt)
    ring, back = src.ring, other.ring
    assert back.size == ring.size == 3 and back.head == ring.head
    np.testing.assert_array_equal(back.obs, ring.obs)
    np.testing.assert_array_equal(back.next_obs, ring.next_obs)
    no_ring = _one_hot_ngu(2, idm_buffer=3)
    no_ring.rewards(np.array([[0], [0]]), acts, _step([[1], [1]]))
    assert "ring" not in no_ring.state_dict() and "ring" in src.state_dict()


def test_ngu_normalise_divides_by_the_running_std_of_raw_rewards():
    raw, scaled = _one_hot_ngu(2), _one_hot_ngu(2, normalise=True)
    acts = np.zeros(2, dtype=np.int64)
    seen, out = [], []
    obs = np.array([[0], [0]])
    for nxt in ([[1], [0]], [[0], [2]], [[3], [2]]):
        r_raw = raw.rewards(obs, acts, _step(nxt))
        r_scaled = scaled.rewards(obs, acts, _step(nxt))
        seen.append(r_raw.astype(np.float64))
        out.append(r_scaled)
        # every raw reward so far, this step's included: r / sqrt(var + 1e-8), no mean removed
        std = np.concatenate(seen).std()
        np.testing.assert_allclose(r_scaled, r_raw / np.sqrt(std**2 + 1e-8), rtol=1e-5)
        obs = np.array(nxt)
    # step 1: copy 0 enters a new cell (d² = 2), copy 1 stays (d² = 0); mean 1
    # raw: [1/(sqrt(1e-4/1.9921) + c), 1/(1 + c)] = [123.688, 0.999]; std = (123.688 - 0.999)/2 = 61.344
    # scaled: [2.0163, 0.0163]
    np.testing.assert_allclose(seen[0], [123.688, 0.999], rtol=1e-4)
    np.testing.assert_allclose(out[0], [2.0163, 0.0163], rtol=1e-3)
    other = _one_hot_ngu(2, normalise=True)
    other.load_state_dict(scaled.state_dict())
    assert other.reward_rms.count == 6 and other.reward_rms.var == pytest.approx(np.concatenate(seen).var())


def test_ngu_rnd_is_ngu_times_the_modulation():
    torch.manual_seed(0)
    shape = (5, 5, 2)
    plain = NGUSource(shape, num_actions=3, num_envs=2, device=torch.device("cpu"), normalise=False)
    modulated = NGUSource(shape, num_actions=3, num_envs=2, device=torch.device("cpu"), lifelong=True,
                          normalise=False)
    modulated.idm.load_state_dict(plain.idm.state_dict())  # the same embedding f
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 11, (2, *shape), dtype=np.uint8)
    errors, mods = [], []
    for t in range(6):
        nxt = rng.integers(0, 11, (2, *shape), dtype=np.uint8)
        ended = np.array([False, t == 2])
        final = nxt.copy()
        final[1] = rng.integers(0, 11, shape, dtype=np.uint8)
        step = Step(obs=nxt, reward=np.zeros(2, np.float32), terminated=ended, truncated=np.zeros(2, dtype=bool),
                    final_obs=final if ended.any() else nxt)
        acts = rng.integers(0, 3, 2)
        r_plain = plain.rewards(obs, acts, step)
        r_mod = modulated.rewards(obs, acts, step)
        # by hand: the RND error of x_{t+1} (final_obs where ended), its running mean/std over
        # every error so far, α = 1 + (err - μ)/σ, clipped to [1, 5]
        x_next = final if ended.any() else nxt
        err = modulated.rnd.reward(x_next).double().numpy()
        errors.append(err)
        seen = np.concatenate(errors)
        mod = np.clip(1 + (err - seen.mean()) / seen.std(), 1.0, 5.0)
        mods.append(mod)
        np.testing.assert_allclose(r_mod, r_plain * mod, rtol=1e-5)
        obs = nxt
    # two errors: μ their mean, σ half their gap, so the larger one has α = 2 exactly
    assert mods[0].max() == pytest.approx(2.0)
    assert np.concatenate(mods).min() == 1.0


def test_ngu_learn_trains_embedding_and_predictor_every_train_every_calls():
    torch.manual_seed(0)
    shape = (5, 5, 2)
    src = NGUSource(shape, num_actions=3, num_envs=2, device=torch.device("cpu"), lifelong=True, train_every=3)
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 11, (2, *shape), dtype=np.uint8)
    for _ in range(4):  # 8 transitions in the ring
        nxt = rng.integers(0, 11, (2, *shape), dtype=np.uint8)
        src.rewards(obs, rng.integers(0, 3, 2), _step(nxt))
        obs = nxt
    batch = TensorBatch(*(torch.as_tensor(x) for x in (obs, np.zeros(2), np.zeros(2), np.ones(2), obs)))
    params = lambda: [p.detach().clone() for p in [*src.idm.parameters(), *src.rnd.parameters()]]  # noqa: E731
    before = params()
    target = [p.detach().clone() for p in src.rnd.target.parameters()]
    src.learn(batch)
    src.learn(batch)
    assert all(torch.equal(a, b) for a, b in zip(params(), before))  # calls 1 and 2: no step
    src.learn(batch)
    after = params()
    n_idm = len(list(src.idm.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(after[:n_idm], before[:n_idm]))  # f trained
    assert any(not torch.equal(a, b) for a, b in zip(after[n_idm:], before[n_idm:]))  # predictor trained
    assert all(torch.equal(a, b) for a, b in zip(src.rnd.target.parameters(), target))  # target frozen
    assert src.learn_calls == 3


def test_registry_builds_ngu_objectives_from_their_config_sections():
    from btcli.config import build_config

    class Env:
        env_id, obs_shape, num_actions, num_envs = "MiniGrid-Empty-5x5-v0", (5, 5, 2), 7, 3

    cfg = build_config({"env.id": "MiniGrid-Empty-5x5-v0", "command": "pretrain", "intrinsic.objective": "ngu",
                        "intrinsic.ngu.k": 5, "intrinsic.rnd.feature_dim": 16})
    ngu = build_source(cfg.intrinsic, Env(), torch.device("cpu"))
    assert isinstance(ngu, NGUSource) and not ngu.lifelong and ngu.memory.k == 5 and ngu.memory.num_envs == 3
    cfg.intrinsic.objective = "ngu+rnd"
    both = build_source(cfg.intrinsic, Env(), torch.device("cpu"))
    assert both.lifelong and both.rnd.predictor[-1].out_features == 16
    cfg.intrinsic.objective = "none"
    assert build_source(cfg.intrinsic, Env(), torch.device("cpu")) is None
