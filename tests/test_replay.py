"""Replay buffer tests against hand-built vectorised episodes.

Frames are constant arrays whose value is a frame id (unique per env), so a stack shows which
frames it holds; zero is never a real frame id, so zero padding is visible. Actions carry a
unique transition id (>= 1), which identifies a sampled transition; final-frame entries hold
action 0 and would show up as an unknown id if they were ever sampled.
"""

from __future__ import annotations

import numpy as np
import pytest

from btcli.agent.replay import Batch, ReplayBuffer


class FakeVecEnv:
    """Scripted same-step-autoreset vector env. ``ends[e]`` maps step -> 'term' | 'trunc'."""

    def __init__(self, num_envs, frame_stack, frame_shape, ends, dtype=np.uint8, id_base=100):
        self.n, self.s, self.fs, self.ends, self.dtype = num_envs, frame_stack, tuple(frame_shape), ends, dtype
        self.next_id = [1 + id_base * e for e in range(num_envs)]
        self.stacks = [self._reset_stack(e) for e in range(num_envs)]
        self.t = 0
        self.records = {}  # action id -> dict(env, t, obs, reward, term, trunc, next_obs)
        self.order = [[] for _ in range(num_envs)]  # action ids per env, in order

    def _frame(self, e):
        f = np.full(self.fs, self.next_id[e], dtype=self.dtype)
        self.next_id[e] += 1
        return f

    def _reset_stack(self, e):
        stack = np.zeros((self.s, *self.fs), dtype=self.dtype)
        stack[-1] = self._frame(e)
        return stack

    def _obs(self, stack):
        return stack.copy() if self.s > 1 else stack[0].copy()

    def step(self, reward_fn=lambda e, t: float(t + 1)):
        n, t = self.n, self.t
        obs = np.stack([self._obs(st) for st in self.stacks])
        actions = np.array([t * n + e + 1 for e in range(n)], dtype=np.int64)
        rewards = np.array([reward_fn(e, t) for e in range(n)], dtype=np.float32)
        term = np.array([self.ends[e].get(t) == "term" for e in range(n)])
        trunc = np.array([self.ends[e].get(t) == "trunc" for e in range(n)])
        final = np.zeros_like(obs)
        for e in range(n):
            nxt = np.concatenate([self.stacks[e][1:], self._frame(e)[None]])
            if term[e] or trunc[e]:
                final[e] = self._obs(nxt)
                self.stacks[e] = self._reset_stack(e)
            else:
                self.stacks[e] = nxt
            self.records[int(actions[e])] = dict(
                env=e, t=t, obs=obs[e], reward=float(rewards[e]), term=bool(term[e]),
                trunc=bool(trunc[e]), next_obs=self._obs(nxt),
            )
            self.order[e].append(int(actions[e]))
        self.t += 1
        return obs, actions, rewards, term, trunc, final

    def run(self, buf, steps, **kw):
        for _ in range(steps):
            buf.add(*self.step(**kw))

    def nstep_reference(self, aid, n, gamma):
        """Brute-force n-step target from the recorded episode."""
        rec = self.records[aid]
        seq = self.order[rec["env"]]
        k = seq.index(aid)
        ret, m = 0.0, 0
        while True:
            r = self.records[seq[k + m]]
            ret += gamma**m * r["reward"]
            m += 1
            if r["term"]:
                return ret, 0.0, r["next_obs"]
            if r["trunc"] or m == n:
                return ret, gamma**m, r["next_obs"]


def sample_all(buf, draws=40, batch=64):
    """Sample repeatedly; return {action id: (obs, next_obs, return, discount)} and all ids seen."""
    seen, ids = {}, []
    for _ in range(draws):
        b = buf.sample(batch)
        assert isinstance(b, Batch)
        for i, a in enumerate(b.actions):
            seen[int(a)] = (b.obs[i], b.next_obs[i], float(b.returns[i]), float(b.discounts[i]))
            ids.append(int(a))
    return seen, ids


def stack(*ids):
    """A [4, 2, 2] uint8 stack with frames of the given ids (0 = padding), oldest first."""
    return np.stack([np.full((2, 2), i, dtype=np.uint8) for i in ids])


# ---------------------------------------------------------------------------- frame stacks


def test_stacks_rebuilt_with_zero_padding_across_truncation_and_termination():
    # env 0: truncated at step 2, terminated at step 6; env 1: terminated at step 0 (one-step
    # episode), truncated at step 4.
    env = FakeVecEnv(2, 4, (2, 2), ends=[{2: "trunc", 6: "term"}, {0: "term", 4: "trunc"}])
    buf = ReplayBuffer(64, 2, (4, 2, 2), frame_stack=4, n_step=1, gamma=0.9, seed=1)
    env.run(buf, 10)
    seen, ids = sample_all(buf)
    a = lambda e, t: t * 2 + e + 1  # action id of env e at step t

    # env 0 frame ids: obs_0..obs_2 = 1,2,3; final of step 2 = 4; obs_3 = 5 (reset), obs_4..6 = 6,7,8;
    # final of step 6 = 9; obs_7 = 10 (reset).
    assert np.array_equal(seen[a(0, 0)][0], stack(0, 0, 0, 1))
    assert np.array_equal(seen[a(0, 2)][0], stack(0, 1, 2, 3))
    assert np.array_equal(seen[a(0, 2)][1], stack(1, 2, 3, 4))  # next_obs = final obs (truncation)
    assert np.array_equal(seen[a(0, 3)][0], stack(0, 0, 0, 5))  # new episode: older frames zero
    assert np.array_equal(seen[a(0, 4)][0], stack(0, 0, 5, 6))
    assert np.array_equal(seen[a(0, 6)][0], stack(5, 6, 7, 8))
    assert np.array_equal(seen[a(0, 6)][1], stack(6, 7, 8, 9))  # final obs (termination)
    assert seen[a(0, 6)][3] == 0.0 and seen[a(0, 2)][3] == pytest.approx(0.9)
    assert np.array_equal(seen[a(0, 7)][0], stack(0, 0, 0, 10))
    # env 1 ids start at 101: obs_0 = 101, final of step 0 = 102, obs_1 = 103 (reset), ...
    assert np.array_equal(seen[a(1, 0)][0], stack(0, 0, 0, 101))
    assert np.array_equal(seen[a(1, 0)][1], stack(0, 0, 101, 102))
    assert np.array_equal(seen[a(1, 1)][0], stack(0, 0, 0, 103))
    assert np.array_equal(seen[a(1, 4)][0], stack(103, 104, 105, 106))
    assert np.array_equal(seen[a(1, 4)][1], stack(104, 105, 106, 107))
    assert np.array_equal(seen[a(1, 5)][0], stack(0, 0, 0, 108))

    # every sampled transition equals what the agent saw; final-frame entries (action 0) never come
    assert set(ids) <= set(env.records)
    for aid, (obs, nxt, _, _) in seen.items():
        assert np.array_equal(obs, env.records[aid]["obs"])
        assert np.array_equal(nxt, env.records[aid]["next_obs"])
    # all complete transitions are reachable: steps 0..8 (step 9's next obs is not stored yet)
    assert set(seen) == {a(e, t) for e in range(2) for t in range(9)}
    assert len(buf) == 20  # 10 steps x 2 envs; final-frame entries excluded


# ---------------------------------------------------------------------------- n-step targets


def test_nstep_returns_and_discounts_by_hand():
    # one env, vector obs (frame_stack 1); rewards r_t = t + 1; episode A terminates at step 4,
    # episode B truncates at step 7. Obs ids: obs_0..4 = 1..5, final_4 = 6, obs_5..7 = 7..9,
    # final_7 = 10, obs_t = t + 3 for t >= 8.
    env = FakeVecEnv(1, 1, (1,), ends=[{4: "term", 7: "trunc"}], dtype=np.float32)
    buf = ReplayBuffer(32, 1, (1,), obs_dtype=np.float32, n_step=3, gamma=0.5, seed=0)
    env.run(buf, 13)
    seen, _ = sample_all(buf)
    a = lambda t: t + 1
    expect = {
        # t: (return, discount, next_obs id)
        0: (1 + 0.5 * 2 + 0.25 * 3, 0.125, 4),  # window inside the episode
        2: (3 + 0.5 * 4 + 0.25 * 5, 0.0, 6),  # termination at the window's last step
        3: (4 + 0.5 * 5, 0.0, 6),  # cut by termination after 2 steps: partial sum, no bootstrap
        4: (5.0, 0.0, 6),
        5: (6 + 0.5 * 7 + 0.25 * 8, 0.125, 10),  # truncation at the window's last step
        6: (7 + 0.5 * 8, 0.25, 10),  # cut by truncation: bootstrap gamma^2 from the final obs
        7: (8.0, 0.5, 10),
        9: (10 + 0.5 * 11 + 0.25 * 12, 0.125, 15),
    }
    for t, (ret, disc, nxt) in expect.items():
        obs, next_obs, r, d = seen[a(t)]
        assert r == pytest.approx(ret), t
        assert d == pytest.approx(disc), t
        assert next_obs[0] == nxt, t
        assert obs[0] == env.records[a(t)]["obs"][0]
    # steps 10..12 have no stored obs at t + 3 yet: never sampled
    assert set(seen) == {a(t) for t in range(10)}


def test_nstep_matches_reference_on_random_episodes_with_two_envs():
    rng = np.random.default_rng(3)
    ends = [{t: rng.choice(["term", "trunc"]) for t in range(200) if rng.random() < 0.15} for _ in range(2)]
    env = FakeVecEnv(2, 4, (2, 2), ends=ends, dtype=np.int32, id_base=10_000)
    buf = ReplayBuffer(1000, 2, (4, 2, 2), obs_dtype=np.int32, frame_stack=4, n_step=3, gamma=0.7, seed=5)
    env.run(buf, 200, reward_fn=lambda e, t: float(rng.normal()))
    seen, _ = sample_all(buf, draws=60)
    assert len(seen) > 300
    for aid, (obs, nxt, r, d) in seen.items():
        ret, disc, ref_next = env.nstep_reference(aid, 3, 0.7)
        assert r == pytest.approx(ret, rel=1e-5, abs=1e-5)
        assert d == pytest.approx(disc)
        assert np.array_equal(obs, env.records[aid]["obs"])
        assert np.array_equal(nxt, ref_next)


# ---------------------------------------------------------------------------- wraparound


def expected_sampleable(env, e, cap, stack_len, n):
    """Transition ids of env e that may be sampled: simulate the stream as a list of entries."""
    entries = []  # action id, or None for a final-frame entry
    for aid in env.order[e]:
        entries.append(aid)
        if env.records[aid]["term"] or env.records[aid]["trunc"]:
            entries.append(None)
    oldest = max(0, len(entries) - cap)
    ok = set()
    for i in range(oldest, len(entries)):
        aid = entries[i]
        if aid is None or (len(entries) > cap and i - oldest < stack_len - 1):
            continue
        m, complete = 0, False
        while i + m < len(entries):  # walk the window until an episode end or n steps
            rec = env.records[entries[i + m]]
            m += 1
            if rec["term"] or rec["trunc"] or m == n:
                complete = True
                break
        if complete and i + m <= len(entries) - 1:  # the obs at t + m is stored too
            ok.add(aid)
    return ok


@pytest.mark.parametrize("steps", [23, 40, 57])
def test_wraparound_never_samples_incomplete_or_overwritten(steps):
    ends = [{3: "term", 9: "trunc", 10: "term", 20: "trunc", 31: "term", 44: "trunc"}, {6: "trunc", 25: "term"}]
    env = FakeVecEnv(2, 4, (2, 2), ends=ends, dtype=np.int32, id_base=1000)
    buf = ReplayBuffer(24, 2, (4, 2, 2), obs_dtype=np.int32, frame_stack=4, n_step=3, gamma=0.5, seed=2)
    env.run(buf, steps)
    seen, ids = sample_all(buf, draws=60)
    want = set().union(*(expected_sampleable(env, e, 12, 4, 3) for e in range(2)))
    assert set(ids) == want  # nothing else (incomplete window, lost history, final frames) ever
    for aid, (obs, nxt, r, d) in seen.items():
        ret, disc, ref_next = env.nstep_reference(aid, 3, 0.5)
        assert np.array_equal(obs, env.records[aid]["obs"])
        assert np.array_equal(nxt, ref_next)
        assert r == pytest.approx(ret) and d == pytest.approx(disc)
    # both streams wrapped (12 entries each); len counts held transitions, not final frames
    assert buf.written.min() > 12
    held = 0
    for e in range(2):
        entries = []
        for aid in env.order[e]:
            entries += [aid, None] if env.records[aid]["term"] or env.records[aid]["trunc"] else [aid]
        held += sum(x is not None for x in entries[-12:])
    assert len(buf) == held


def test_wrapped_oldest_entries_excluded_by_hand():
    # one env, no episode ends, capacity 8, 20 steps: the stream holds steps 12..19. Steps 12..14
    # lost the frames before them (stack 4); steps 18, 19 have no obs at t + 2 (n = 2) stored.
    env = FakeVecEnv(1, 4, (2, 2), ends=[{}], dtype=np.int32)
    buf = ReplayBuffer(8, 1, (4, 2, 2), obs_dtype=np.int32, frame_stack=4, n_step=2, seed=0)
    env.run(buf, 20)
    _, ids = sample_all(buf)
    assert set(ids) == {t + 1 for t in (15, 16, 17)}
    assert len(buf) == 8


# ---------------------------------------------------------------------------- other paths


def test_frame_stack_1_vector_obs_minigrid_like():
    env = FakeVecEnv(2, 1, (3, 3, 2), ends=[{1: "term", 4: "trunc"}, {2: "trunc"}])
    buf = ReplayBuffer(40, 2, (3, 3, 2), n_step=2, gamma=0.9, seed=0, num_actions=7)
    env.run(buf, 7)
    assert buf.frames.shape == (2, 20, 3, 3, 2) and buf.actions.dtype == np.uint8
    seen, _ = sample_all(buf)
    # env 0: obs_0 = 1, obs_1 = 2, final_1 = 3, obs_2 = 4 (reset): step 0 window cut at step 1 by termination
    obs, nxt, r, d = seen[1]
    assert obs.shape == (3, 3, 2) and np.all(obs == 1) and np.all(nxt == 3)
    assert r == pytest.approx(1 + 0.9 * 2) and d == 0.0
    for aid, (obs, nxt, r, d) in seen.items():
        ret, disc, ref_next = env.nstep_reference(aid, 2, 0.9)
        assert np.array_equal(obs, env.records[aid]["obs"]) and np.array_equal(nxt, ref_next)
        assert r == pytest.approx(ret) and d == pytest.approx(disc)


def test_new_episodes_closes_open_episode_and_pads_next():
    env = FakeVecEnv(1, 4, (2, 2), ends=[{}])
    buf = ReplayBuffer(32, 1, (4, 2, 2), frame_stack=4, n_step=3, gamma=0.5, seed=0)
    env.run(buf, 5)  # obs ids 1..5, episode still open
    buf.new_episodes()
    assert len(buf) == 4  # the last obs became the open episode's final frame
    env.stacks[0] = env._reset_stack(0)  # resume: fresh episode (obs id 7; frame 6 unused)
    env.run(buf, 5)
    seen, _ = sample_all(buf)
    # step 3: cut by the break, bootstraps from obs_4 (id 5) with gamma^1
    assert seen[4][2] == pytest.approx(4.0) and seen[4][3] == pytest.approx(0.5)
    assert np.array_equal(seen[4][1], stack(2, 3, 4, 5))
    # step 2: window 2, 3 then cut: gamma^2
    assert seen[3][2] == pytest.approx(3 + 0.5 * 4) and seen[3][3] == pytest.approx(0.25)
    assert 5 not in seen  # the last obs before the break is not a transition
    assert np.array_equal(seen[6][0], stack(0, 0, 0, 7))  # first obs after the break: zero padded
    assert np.array_equal(seen[7][0], stack(0, 0, 7, 8))


def test_can_sample_and_empty():
    buf = ReplayBuffer(100, 2, (4, 2, 2), frame_stack=4, n_step=3, seed=0)
    assert not buf.can_sample(1)
    with pytest.raises(ValueError):
        buf.sample(1)
    env = FakeVecEnv(2, 4, (2, 2), ends=[{}, {}])
    env.run(buf, 2)
    assert not buf.can_sample(1)
    with pytest.raises(ValueError):
        buf.sample(4)  # no transition has its 3-step window yet
    env.run(buf, 10)
    assert buf.can_sample(8) and not buf.can_sample(64)
    assert buf.sample(8).obs.shape == (8, 4, 2, 2)


def test_state_dict_round_trip_identical_samples(tmp_path):
    rng = np.random.default_rng(0)
    ends = [{t: "term" for t in range(0, 60, 7)}, {t: "trunc" for t in range(3, 60, 11)}]
    env = FakeVecEnv(2, 4, (2, 2), ends=ends, dtype=np.uint8, id_base=120)
    buf = ReplayBuffer(40, 2, (4, 2, 2), frame_stack=4, n_step=3, gamma=0.9, seed=7)
    env.run(buf, 30, reward_fn=lambda e, t: float(rng.normal()))
    buf.sample(16)  # advance the RNG
    np.savez(tmp_path / "replay.npz", **buf.state_dict())
    other = ReplayBuffer(40, 2, (4, 2, 2), frame_stack=4, n_step=3, gamma=0.9, seed=123)
    with np.load(tmp_path / "replay.npz") as d:
        other.load_state_dict(d)
    assert len(other) == len(buf)
    for _ in range(3):
        x, y = buf.sample(32), other.sample(32)
        for f in ("obs", "actions", "returns", "discounts", "next_obs", "indices"):
            assert np.array_equal(getattr(x, f), getattr(y, f)), f
    step = env.step()
    buf.add(*step), other.add(*step)
    assert np.array_equal(buf.sample(32).indices, other.sample(32).indices)
    with pytest.raises(ValueError):
        ReplayBuffer(44, 2, (4, 2, 2), frame_stack=4).load_state_dict(buf.state_dict())


def test_state_dict_of_a_part_filled_buffer_holds_only_written_slots():
    """Streams of 50 slots after 12 and 9 entries: the state holds 12 slots per stream and loads
    into a fresh buffer, into a used one, and from a state of every slot (older checkpoints)."""
    ends = [{5: "term"}, {}]
    env = FakeVecEnv(2, 4, (2, 2), ends=ends, dtype=np.uint8, id_base=40)
    buf = ReplayBuffer(100, 2, (4, 2, 2), frame_stack=4, n_step=2, seed=1)
    env.run(buf, 11)  # stream 0: 11 transitions + 1 final-frame entry; stream 1: 11
    state = buf.state_dict()
    assert buf.written.tolist() == [12, 11]
    assert state["frames"].shape == (2, 12, 2, 2) and state["flags"].shape == (2, 12)
    used = ReplayBuffer(100, 2, (4, 2, 2), frame_stack=4, n_step=2, seed=5)
    FakeVecEnv(2, 4, (2, 2), ends=[{}, {}], dtype=np.uint8, id_base=200).run(used, 30)  # entries past slot 12 to clear
    full = {k: v for k, v in state.items()} | {
        k: getattr(buf, k).copy() for k in ("frames", "actions", "rewards", "flags")}
    for source in (state, full):
        for other in (ReplayBuffer(100, 2, (4, 2, 2), frame_stack=4, n_step=2, seed=9), used):
            other.load_state_dict(source)
            for key in ("frames", "actions", "rewards", "flags", "written", "num_transitions"):
                np.testing.assert_array_equal(getattr(other, key), getattr(buf, key))
    x, y = buf.sample(16), used.sample(16)
    np.testing.assert_array_equal(x.obs, y.obs)
    np.testing.assert_array_equal(x.next_obs, y.next_obs)


@pytest.mark.parametrize("num_actions", [18, None])
def test_memory_per_transition_atari(num_actions):
    buf = ReplayBuffer(100_000, 4, (4, 84, 84), frame_stack=4, n_step=3, num_actions=num_actions)
    per = buf.nbytes / buf.capacity
    assert 84 * 84 <= per <= 7200
    assert buf.frames.shape == (4, 25_000, 84, 84)


def test_batch_dtypes_and_shapes():
    env = FakeVecEnv(2, 4, (2, 2), ends=[{3: "term"}, {}])
    buf = ReplayBuffer(40, 2, (4, 2, 2), frame_stack=4, n_step=2, seed=0)
    env.run(buf, 8)
    b = buf.sample(5)
    assert b.obs.dtype == np.uint8 and b.obs.shape == (5, 4, 2, 2) == b.next_obs.shape
    assert b.actions.dtype == np.int64 and b.indices.dtype == np.int64
    assert b.returns.dtype == np.float32 and b.discounts.dtype == np.float32
    assert b.returns.shape == b.discounts.shape == (5,)
    assert np.all((b.indices >= 0) & (b.indices < buf.capacity))
