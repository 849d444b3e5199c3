"""Environment layer: ids, the same-step-autoreset contract, seeding, encodings."""

from __future__ import annotations

import numpy as np
import pytest

from btcli.envs import (
    EnvConfig,
    UnknownEnvError,
    is_atari,
    list_env_ids,
    make_vec_env,
    resolve_env_id,
)

BACKENDS = ["vector", "gym"]


def _atari(backend: str, game: str = "ALE/Breakout-v5", **kw) -> EnvConfig:
    return EnvConfig(id=game, atari_backend=backend, **{"num_envs": 2, **kw})


# -- ids ------------------------------------------------------------------------------------


def test_unknown_id_is_one_line_with_suggestions():
    with pytest.raises(UnknownEnvError) as err:
        resolve_env_id("ALE/Breakot-v5")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("unknown environment id 'ALE/Breakot-v5'; did you mean: ALE/Breakout-v5")
    assert msg.endswith("? (list ids with: btcli envs)")
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    "typed, expected",
    [("breakout", "ALE/Breakout-v5"), ("BreakoutNoFrameskip-v4", "ALE/Breakout-v5"), ("fourrooms", "MiniGrid-FourRooms-v0")],
)
def test_suggestions_are_case_insensitive(typed, expected):
    with pytest.raises(UnknownEnvError, match="did you mean: " + expected):
        resolve_env_id(typed)


def test_unsupported_family_names_the_supported_ones():
    with pytest.raises(UnknownEnvError) as err:
        resolve_env_id("CartPole-v1")
    msg = str(err.value)
    assert "\n" not in msg and "not supported" in msg
    assert "ALE/<Game>-v5" in msg and "MiniGrid-" in msg


def test_known_ids_resolve_and_listing():
    ids = list_env_ids()
    assert resolve_env_id("ALE/Breakout-v5") == "ALE/Breakout-v5"
    assert resolve_env_id("MiniGrid-DoorKey-5x5-v0") == "MiniGrid-DoorKey-5x5-v0"
    assert "ALE/MontezumaRevenge-v5" in ids and "MiniGrid-FourRooms-v0" in ids
    assert all((i.startswith("ALE/") and i.endswith("-v5")) or i.startswith("MiniGrid-") for i in ids)
    assert "CartPole-v1" not in ids and "Breakout-v4" not in ids
    assert is_atari("ALE/Pong-v5") and not is_atari("MiniGrid-FourRooms-v0")


def test_make_rejects_bad_config():
    with pytest.raises(UnknownEnvError):
        make_vec_env(EnvConfig(id="ALE/Breakot-v5"), seed=0)
    with pytest.raises(ValueError, match="atari_backend"):
        make_vec_env(EnvConfig(id="ALE/Breakout-v5", atari_backend="envpool"), seed=0)
    with pytest.raises(ValueError, match="num_envs"):
        make_vec_env(EnvConfig(id="MiniGrid-FourRooms-v0", num_envs=0), seed=0)


# -- Atari ----------------------------------------------------------------------------------


def _run(env, steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [env.step(rng.integers(0, env.num_actions, env.num_envs)) for _ in range(steps)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_contract_and_same_step_autoreset(backend):
    # 200 emulator frames = 50 agent steps, then the episode is truncated.
    env = make_vec_env(_atari(backend, max_episode_frames=200), seed=0)
    assert env.obs_shape == (4, 84, 84) and env.obs_dtype == np.uint8 and env.frame_stack == 4
    assert env.num_actions == 4 and env.action_meanings == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    first = env.reset()
    assert first.shape == (2, 4, 84, 84) and first.dtype == np.uint8
    # Zero padding before an episode's first frame, newest frame last.
    assert (first[:, :3] == 0).all() and (first[:, 3] > 0).any(axis=(1, 2)).all()
    prev = first
    for t in range(1, 51):
        s = env.step(np.full(2, t % 4))
        assert s.reward.dtype == np.float32 and s.terminated.dtype == bool and s.truncated.dtype == bool
        assert s.obs.shape == (2, 4, 84, 84) and s.final_obs.shape == (2, 4, 84, 84)
        if t < 50:
            assert not (s.terminated | s.truncated).any()
            np.testing.assert_array_equal(s.obs[:, :3], prev[:, 1:])  # the stack slides by one
            prev = s.obs
    # Step 50 hit the frame cap: truncated, not terminated, and obs is already the new episode.
    assert s.truncated.all() and not s.terminated.any()
    np.testing.assert_array_equal(s.final_obs[:, :3], prev[:, 1:])  # last obs of the old episode
    assert (s.obs[:, :3] == 0).all()  # a fresh, zero-padded stack
    np.testing.assert_array_equal(s.obs, first)  # Breakout always starts on the same screen
    assert not np.array_equal(s.final_obs, s.obs)
    # The next step continues the new episode: one real frame plus the first one.
    s2 = env.step(np.zeros(2, dtype=np.int64))
    assert (s2.obs[:, :2] == 0).all() and np.array_equal(s2.obs[:, 2], first[:, 3])
    env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_random_episode_scores_are_game_scores(backend):
    env = make_vec_env(_atari(backend), seed=1)
    env.reset()
    rng = np.random.default_rng(1)
    returns, running = [], np.zeros(2)
    for _ in range(5000):
        if len(returns) >= 4:
            break
        s = env.step(rng.integers(0, env.num_actions, 2))
        running += s.reward
        done = s.terminated | s.truncated
        assert not s.truncated.any()  # a random Breakout game ends long before 108k frames
        for i in np.flatnonzero(done):
            returns.append(running[i])
            running[i] = 0
            assert (s.obs[i, :3] == 0).all() and not np.array_equal(s.final_obs[i], s.obs[i])
    assert len(returns) >= 4, "random Breakout games should end within 5000 steps"
    returns = np.array(returns)
    assert (returns >= 0).all() and (returns < 50).all() and (returns == np.round(returns)).all()
    env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_rewards_are_not_clipped(backend):
    env = make_vec_env(_atari(backend, game="ALE/MsPacman-v5", num_envs=1), seed=0)
    env.reset()
    rewards = np.concatenate([s.reward for s in _run(env, 150)])
    assert rewards.max() >= 10  # a pellet is worth 10 points
    env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_is_deterministic_per_seed_with_sticky_actions(backend):
    def rollout(seed):
        env = make_vec_env(_atari(backend, sticky_actions=0.25), seed=seed)
        obs = [env.reset()]
        steps = _run(env, 150)
        env.close()
        return np.stack(obs + [s.obs for s in steps]), np.stack([s.reward for s in steps])

    obs_a, rew_a = rollout(3)
    obs_b, rew_b = rollout(3)
    obs_c, _ = rollout(4)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    assert not np.array_equal(obs_a, obs_c)


def test_atari_backends_agree_without_sticky_actions():
    envs = [make_vec_env(_atari(b, num_envs=1, sticky_actions=0.0), seed=0) for b in BACKENDS]
    o_vec, o_gym = (e.reset() for e in envs)
    assert np.abs(o_vec.astype(int) - o_gym).max() <= 1
    rng = np.random.default_rng(0)
    for _ in range(120):
        a = rng.integers(0, 4, 1)
        s_vec, s_gym = (e.step(a) for e in envs)
        assert np.abs(s_vec.obs.astype(int) - s_gym.obs).max() <= 1  # resize rounding only
        assert s_vec.reward[0] == s_gym.reward[0]
    for e in envs:
        e.close()


def test_atari_gym_backend_ram_probes_and_render():
    env = make_vec_env(EnvConfig(id="ALE/MontezumaRevenge-v5", num_envs=1), seed=0, render=True)
    env.reset()
    probes = env.last_probes()
    assert set(probes) == {"room", "x", "y"} and probes["room"][0] == 1  # the game starts in room 1
    x0 = probes["x"][0]
    for _ in range(10):
        s = env.step(np.array([env.action_meanings.index("RIGHT")]))
    assert set(s.probes) == {"room", "x", "y"} and s.probes["x"].shape == (1,)
    assert s.probes["x"][0] > x0  # walking right moves the player right
    np.testing.assert_array_equal(env.last_probes()["x"], s.probes["x"])
    frame = env.render_rgb()
    assert frame.shape == (210, 160, 3) and frame.dtype == np.uint8 and frame.any()
    env.close()


def test_atari_gym_sticky_actions_repeat_the_previous_frames_action():
    """Always sticky, every frame repeats the reset's NOOP: whatever the agent asks, the game
    plays as under NOOPs (Breakout's ball is never served); never sticky, it follows the agent."""
    always = make_vec_env(_atari("gym", num_envs=1, sticky_actions=1.0), seed=0)
    never = make_vec_env(_atari("gym", num_envs=1, sticky_actions=0.0), seed=0)
    noops = make_vec_env(_atari("gym", num_envs=1, sticky_actions=0.0), seed=0)
    for env in (always, never, noops):
        env.reset()
    fire_right = np.array([always.action_meanings.index("FIRE")]), np.array([always.action_meanings.index("RIGHT")])
    differs = False
    for t in range(40):
        a = fire_right[t % 2]
        s_always, s_never, s_noop = always.step(a), never.step(a), noops.step(np.zeros(1, dtype=np.int64))
        np.testing.assert_array_equal(s_always.obs, s_noop.obs)
        differs |= not np.array_equal(s_never.obs, s_noop.obs)
    assert differs


def continue_from_saved_state(cfg: EnvConfig, steps: int, saved_at: int) -> tuple[dict, int]:
    """Step an env ``saved_at`` times, load its state into another (another seed, already reset:
    everything must come from the state) and check both give the same steps until ``steps``.
    Returns the state and the number of episode ends after the load."""
    first = make_vec_env(cfg, seed=5)
    first.reset()
    acts = np.random.default_rng(1).integers(0, first.num_actions, size=(steps, cfg.num_envs))
    for a in acts[:saved_at]:
        first.step(a)
    state = first.state_dict()
    second = make_vec_env(cfg, seed=77)
    second.reset()
    np.testing.assert_array_equal(second.load_state_dict(state), first._current_obs())
    for key, values in first.last_probes().items():
        np.testing.assert_array_equal(second.last_probes()[key], values)
    ends = 0
    for a in acts[saved_at:]:
        x, y = first.step(a), second.step(a)
        for field in ("obs", "reward", "terminated", "truncated", "final_obs"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
        for key in x.probes:
            np.testing.assert_array_equal(x.probes[key], y.probes[key])
        ends += int((x.terminated | x.truncated).sum())
    return state, ends


@pytest.mark.parametrize("game", ["ALE/Breakout-v5", "ALE/MontezumaRevenge-v5"])
def test_atari_gym_state_dict_continues_episodes_exactly(game):
    """The gym backend's saved episodes continue exactly in another env: sticky actions (the
    emulator's RNG), frame caps, resets with random no-ops, frame stacks and RAM probes."""
    cfg = _atari("gym", game, num_envs=4, max_episode_frames=400, noop_max=30, sticky_actions=0.5)
    state, ends = continue_from_saved_state(cfg, steps=400, saved_at=70)
    assert ends >= 8  # every copy went through resets drawn after the load
    with pytest.raises(ValueError, match="does not fit"):
        make_vec_env(_atari("gym", game, num_envs=2), seed=0).load_state_dict(state)
    assert make_vec_env(_atari("vector", game), seed=0).state_dict() is None  # the C++ backend cannot


def test_step_before_reset_is_an_error():
    env = make_vec_env(EnvConfig(id="MiniGrid-Empty-5x5-v0", num_envs=1), seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, dtype=np.int64))


# -- MiniGrid -------------------------------------------------------------------------------


def reference_encoding(env) -> np.ndarray:
    """[H, W, 2] from minigrid's own full ``grid.encode()`` (type, state), agent overlaid."""
    full = env.grid.encode()  # [W, H, 3]: type, colour, state
    out = np.stack([full[:, :, 0].T, full[:, :, 2].T], axis=-1).astype(np.uint8)
    x, y = env.agent_pos
    out[y, x] = (10, env.agent_dir)
    return out


@pytest.mark.parametrize("env_id", ["MiniGrid-DoorKey-5x5-v0", "MiniGrid-FourRooms-v0", "MiniGrid-Dynamic-Obstacles-6x6-v0"])
def test_minigrid_incremental_encoding_equals_full_encode(env_id):
    env = make_vec_env(EnvConfig(id=env_id, num_envs=2), seed=0)
    obs = env.reset()
    for i in range(2):
        np.testing.assert_array_equal(obs[i], reference_encoding(env._envs[i]))
    rng = np.random.default_rng(0)
    # Mostly forward/pickup/toggle so that keys get picked up and doors opened.
    p = np.array([2, 2, 4, 2, 1, 2, 0][: env.num_actions], dtype=float)
    changed_cells = 0
    for _ in range(400):
        before = obs
        s = env.step(rng.choice(env.num_actions, size=2, p=p / p.sum()))
        obs = s.obs
        for i in range(2):
            np.testing.assert_array_equal(obs[i], reference_encoding(env._envs[i]))
            if not (s.terminated[i] or s.truncated[i]):
                # count non-agent cells whose content changed (pickup, door toggles, obstacles)
                moved = (before[i, :, :, 0] != obs[i, :, :, 0]) & (before[i, :, :, 0] != 10) & (obs[i, :, :, 0] != 10)
                changed_cells += int(moved.sum() + ((before[i, :, :, 1] != obs[i, :, :, 1]) & (obs[i, :, :, 0] == 4)).sum())
    if env_id != "MiniGrid-FourRooms-v0":
        assert changed_cells > 0  # the test did exercise pickups / toggles / moving obstacles


def test_minigrid_contract_probes_and_truncation():
    env = make_vec_env(EnvConfig(id="MiniGrid-Empty-16x16-v0", num_envs=3, max_episode_steps=5), seed=0)
    assert env.obs_shape == (16, 16, 2) and env.obs_dtype == np.uint8 and env.frame_stack == 1
    assert env.num_actions == 7 and env.action_meanings[:3] == ["left", "right", "forward"]
    obs = env.reset()
    assert obs.shape == (3, 16, 16, 2) and obs.dtype == np.uint8

    def agent_cell(o):
        ys, xs = np.nonzero(o[:, :, 0] == 10)
        assert len(ys) == 1  # exactly one agent
        return ys[0] * 16 + xs[0]

    np.testing.assert_array_equal(env.last_probes()["cell"], [agent_cell(o) for o in obs])
    for t in range(1, 6):
        s = env.step(np.array([2, 1, 2]))  # forward, turn, forward
        assert s.reward.dtype == np.float32 and s.probes["cell"].dtype == np.int64
        np.testing.assert_array_equal(s.probes["cell"], [agent_cell(o) for o in s.final_obs])
        np.testing.assert_array_equal(env.last_probes()["cell"], [agent_cell(o) for o in s.obs])
        if t < 5:
            assert not (s.truncated | s.terminated).any()
            assert s.final_obs is s.obs or np.array_equal(s.final_obs, s.obs)
    # Step 5 hit the limit: truncated (not terminated), obs is a new episode's first obs.
    assert s.truncated.all() and not s.terminated.any()
    assert not np.array_equal(s.final_obs, s.obs)
    assert (s.final_obs[1, :, :, 1][s.final_obs[1, :, :, 0] == 10] != obs[1, :, :, 1][obs[1, :, :, 0] == 10]).all()
    for i in range(3):
        np.testing.assert_array_equal(s.obs[i], reference_encoding(env._envs[i]))
        assert env._envs[i].step_count == 0


def test_minigrid_task_truncation_and_reward():
    env = make_vec_env(EnvConfig(id="MiniGrid-Empty-5x5-v0", num_envs=1), seed=0)
    env.reset()
    limit = env._envs[0].max_steps
    for t in range(1, limit + 1):
        s = env.step(np.array([0]))  # keep turning: never reaches the goal
    assert s.truncated[0] and not s.terminated[0] and s.reward[0] == 0
    # Reaching the goal in Empty-5x5 (agent (1,1) facing right, goal (3,3)): raw reward 1 - 0.9*n/limit.
    env.reset(seed=0)
    for a in [2, 2, 1, 2]:
        s = env.step(np.array([a]))
    s = env.step(np.array([2]))
    assert s.terminated[0] and not s.truncated[0]
    assert s.reward[0] == pytest.approx(1 - 0.9 * 5 / limit)


def test_minigrid_seeding_is_deterministic():
    def rollout(seed, n):
        env = make_vec_env(EnvConfig(id="MiniGrid-DoorKey-8x8-v0", num_envs=n, max_episode_steps=30), seed=seed)
        obs = [env.reset()]
        rng = np.random.default_rng(0)
        acts = rng.integers(0, env.num_actions, size=(200, 1)).repeat(n, axis=1)
        steps = [env.step(a) for a in acts]
        return np.stack(obs + [s.obs for s in steps]), np.stack([s.reward for s in steps])

    a_obs, a_rew = rollout(7, 2)
    b_obs, b_rew = rollout(7, 2)
    np.testing.assert_array_equal(a_obs, b_obs)
    np.testing.assert_array_equal(a_rew, b_rew)
    # copy 1 of seed 7 is copy 0 of seed 8, including the episodes after autoresets
    c_obs, _ = rollout(8, 1)
    np.testing.assert_array_equal(a_obs[:, 1], c_obs[:, 0])
    assert not np.array_equal(a_obs[:, 0], a_obs[:, 1])
    # reset(seed) reseeds
    env = make_vec_env(EnvConfig(id="MiniGrid-DoorKey-8x8-v0", num_envs=2), seed=123)
    np.testing.assert_array_equal(env.reset(seed=7), a_obs[0])


@pytest.mark.parametrize("env_id", ["MiniGrid-SmallFourRooms-v0", "MiniGrid-DoorKey-5x5-v0"])
def test_minigrid_state_dict_continues_episodes_exactly(env_id):
    """A copy loaded from another's state steps identically, across autoresets (the task's RNG
    draws new starts and goals) and with visited marks and picked-up keys (dirty cells)."""
    cfg = EnvConfig(id=env_id, num_envs=3, max_episode_steps=25, visited=True)
    state, ends = continue_from_saved_state(cfg, steps=260, saved_at=37)
    assert ends >= 20
    with pytest.raises(ValueError, match="does not fit"):
        make_vec_env(EnvConfig(id=env_id, num_envs=2), seed=0).load_state_dict(state)


def test_minigrid_render_rgb():
    env = make_vec_env(EnvConfig(id="MiniGrid-DoorKey-5x5-v0", num_envs=1), seed=0, render=True)
    env.reset()
    frame = env.render_rgb()
    assert frame.shape == (5 * 16, 5 * 16, 3) and frame.dtype == np.uint8 and frame.any()


def test_minigrid_visited_marks_follow_the_episode():
    cfg = EnvConfig(id="MiniGrid-FourRooms-v0", num_envs=2, max_episode_steps=30, visited=True)
    env = make_vec_env(cfg, seed=3)
    plain = make_vec_env(EnvConfig(id="MiniGrid-FourRooms-v0", num_envs=2, max_episode_steps=30), seed=3)
    env.reset()
    plain.reset()
    cells = [{int(c)} for c in env.last_probes()["cell"]]

    def marked(o):
        ys, xs = np.nonzero(o[:, :, 1] & 4)
        return {int(y) * 19 + int(x) for y, x in zip(ys, xs)}

    rng = np.random.default_rng(0)
    for t in range(30):
        a = rng.choice([0, 1, 2, 2, 2], size=2)
        s, p = env.step(a), plain.step(a)
        # the marks are the only difference from the plain encoding
        np.testing.assert_array_equal(s.obs[..., 0], p.obs[..., 0])
        np.testing.assert_array_equal(s.obs[..., 1] & 3, p.obs[..., 1])
        for i in range(2):
            cells[i].add(int(s.probes["cell"][i]))
            assert marked(s.final_obs[i]) == cells[i]  # every cell stood on this episode, no other
            if s.terminated[i] or s.truncated[i]:  # a new episode starts with one marked cell
                cells[i] = {int(env.last_probes()["cell"][i])}
                assert marked(s.obs[i]) == cells[i] and len(cells[i]) == 1
    assert s.truncated.any()  # step 30 is the limit


def test_small_four_rooms_tasks_share_one_layout():
    grids = {}
    for task in ("MiniGrid-SmallFourRooms-v0", "MiniGrid-SmallFourRoomsFar-v0", "MiniGrid-SmallFourRoomsNear-v0"):
        env = make_vec_env(EnvConfig(id=task, num_envs=1), seed=0)
        obs = env.reset()[0]
        assert env.obs_shape == (11, 11, 2) and env.num_actions == 7
        walls = obs[:, :, 0] == 2
        grids[task] = walls
        # 4 rooms of 4x4 plus 4 doorways are free; everything else is wall
        assert (~walls).sum() == 68
        if task != "MiniGrid-SmallFourRooms-v0":
            assert obs[1, 1, 0] == 10  # the agent starts top-left
            goal = np.argwhere(obs[:, :, 0] == 8).tolist()
            assert goal == ([[9, 9]] if task.endswith("Far-v0") else [[2, 3]])
    first = grids["MiniGrid-SmallFourRooms-v0"]
    assert all((g == first).all() for g in grids.values())


def test_minigrid_action_subset_maps_to_the_tasks_actions():
    from minigrid.core.actions import Actions

    from btcli.envs.minigrid import MINIGRID_ACTIONS

    assert tuple(a.name for a in Actions) == MINIGRID_ACTIONS  # the order is minigrid's own
    # 'toggle,forward': agent action 0 is minigrid's toggle (5), 1 its forward (2)
    cfg = EnvConfig(id="MiniGrid-Empty-8x8-v0", num_envs=2, actions="toggle,forward")
    sub, full = make_vec_env(cfg, seed=3), make_vec_env(EnvConfig(id="MiniGrid-Empty-8x8-v0", num_envs=2), seed=3)
    assert sub.num_actions == 2 and sub.action_meanings == ["toggle", "forward"]
    sub.reset(), full.reset()
    for sub_actions, full_actions in [([1, 0], [2, 5]), ([1, 1], [2, 2]), ([0, 1], [5, 2])]:
        a, b = sub.step(np.array(sub_actions)), full.step(np.array(full_actions))
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.probes["cell"], b.probes["cell"])
    nav = make_vec_env(EnvConfig(id="MiniGrid-Empty-8x8-v0", num_envs=1, actions="navigation"), seed=0)
    assert nav.action_meanings == ["left", "right", "forward"]


@pytest.mark.parametrize("env_id, actions, message", [
    ("MiniGrid-Empty-8x8-v0", "left,jump", "unknown action 'jump'"),
    ("MiniGrid-Empty-8x8-v0", "left,left", "names an action twice"),
    ("ALE/Breakout-v5", "navigation", "MiniGrid tasks only"),
])
def test_bad_action_sets_are_one_line_errors(env_id, actions, message):
    with pytest.raises(ValueError, match=message) as err:
        make_vec_env(EnvConfig(id=env_id, actions=actions), seed=0)
    assert "\n" not in str(err.value)
