"""MiniGrid tasks with a compact, fully observable encoding, stepped in-process.

Observation per copy: uint8 ``[H, W, 2]`` over the whole grid, indexed ``[y, x]``:

- channel 0: object type, minigrid's ``OBJECT_TO_IDX`` (1 empty, 2 wall, 4 door, 5 key, 8 goal,
  9 lava, ...); the agent's cell holds 10 (agent), hiding what it stands on (an open door);
- channel 1: state: for doors ``STATE_TO_IDX`` (0 open, 1 closed, 2 locked); for the agent's
  cell its direction 0..3 (right, down, left, up); 0 otherwise.

Colour is dropped, and so are the carried object and the mission text. What is carried can be
read off the grid (a picked-up key is no longer on it), and door states are kept, so the
navigation/exploration tasks (Empty, FourRooms, DoorKey, MultiRoom, KeyCorridor, LockedRoom,
Crossing, LavaGap, Dynamic-Obstacles, ...) stay fully observable. Tasks whose goal is named by
colour or by the mission text (Fetch, GoToObject, GoToDoor, PutNear, RedBlueDoors) are not.
``frame_stack`` is always 1 (``obs_shape = (H, W, 2)``), whatever ``cfg.frame_stack`` says.

With ``cfg.visited`` channel 1 also carries a mark, +4, on every cell the agent has stood on
in the current episode (its current cell included). A feed-forward Q-network then sees which
cells an episode has covered, so an episodic-novelty reward is a function of the observation
and its greedy policy can learn to cover rather than to oscillate.

Speed: the full grid is encoded once per reset; after each step only the cells that can have
changed are re-encoded: the agent's old and new cells, the cell in front of it (toggled doors,
boxes) and every cell written through ``grid.set`` during the step (pickup, drop, moving
obstacles: each reset's grid gets an instance-level ``set`` that records the cells it writes,
so tasks with moving objects stay exact without a full re-encode). A grid object replaced
mid-episode triggers a full re-encode. The env's own partially observable ``gen_obs`` (about
85% of a plain ``step``) is replaced by a stub returning ``None``: btcli never reads it.

Actions: all 7 of minigrid's by default; ``cfg.actions`` may select a subset (agent action k is
the k-th name listed), e.g. ``navigation``: left, right, forward.

Rewards are the task's own (raw). An episode is truncated at the task's step limit; a positive
``cfg.max_episode_steps`` replaces that limit (it is set as the task's ``max_steps``, which the
success reward ``1 - 0.9 * steps / max_steps`` also uses).

Probes: ``Step.probes["cell"]`` is ``y * W + x`` of the agent after the action (for a copy whose
episode ended: its final cell, matching ``Step.final_obs``); :meth:`MiniGridVecEnv.last_probes`
gives the cells behind the latest returned obs (the new episode's first cell for copies just reset).
"""

from __future__ import annotations

import pickle

import numpy as np

from .base import EnvConfig, SequentialVecEnv, Step

AGENT_IDX = 10
EMPTY_IDX = 1
VISITED_MARK = 4  # added to channel 1 of visited cells with cfg.visited


# MiniGrid's action names in the order of its Actions enum (the env's action index)
MINIGRID_ACTIONS = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
MINIGRID_ACTION_SETS = {"all": MINIGRID_ACTIONS, "navigation": ("left", "right", "forward")}


def minigrid_action_names(spec: str) -> tuple[str, ...]:
    """The action names an ``env.actions`` value selects; ``ValueError`` (one line) on a bad one."""
    if spec in MINIGRID_ACTION_SETS:
        return MINIGRID_ACTION_SETS[spec]
    names = tuple(n.strip() for n in spec.split(","))
    unknown = [n for n in names if n not in MINIGRID_ACTIONS]
    if unknown:
        raise ValueError(f"env.actions has unknown action {unknown[0]!r}; use 'all', "
                         f"'navigation' or names from {', '.join(MINIGRID_ACTIONS)} joined by commas")
    if len(set(names)) != len(names):
        raise ValueError(f"env.actions names an action twice in {spec!r}; list each once")
    return names


def _cell_code(v) -> tuple[int, int]:
    """(type, state) of one grid cell's content."""
    if v is None:
        return EMPTY_IDX, 0
    t, _colour, s = v.encode()
    return t, s


def encode_full(env, out: np.ndarray | None = None) -> np.ndarray:
    """Encode a MiniGrid env's whole state as uint8 [H, W, 2] from its grid, agent_pos, agent_dir."""
    grid = env.grid
    w, h = grid.width, grid.height
    if out is None:
        out = np.empty((h, w, 2), dtype=np.uint8)
    codes = [_cell_code(v) for v in grid.grid]  # grid.grid is row-major: index y * w + x
    out[...] = np.asarray(codes, dtype=np.uint8).reshape(h, w, 2)
    x, y = env.agent_pos
    out[y, x, 0] = AGENT_IDX
    out[y, x, 1] = env.agent_dir
    return out


def _no_partial_obs():
    return None


class MiniGridVecEnv(SequentialVecEnv):
    """``cfg.num_envs`` copies of one MiniGrid task with same-step autoreset (see module doc)."""

    frame_stack = 1
    obs_dtype = np.dtype(np.uint8)

    def __init__(self, cfg: EnvConfig, seed: int, *, verify: bool = False):
        import gymnasium as gym
        import minigrid  # noqa: F401  (registers the ids)

        from btcli.envs.tasks import register_tasks

        register_tasks()

        self.env_id = cfg.id
        self.num_envs = cfg.num_envs
        self.verify = verify  # test aid: compare every incremental update with a full encode
        self._seed = seed
        self._started = False
        self._envs = []
        for _ in range(cfg.num_envs):
            env = gym.make(cfg.id).unwrapped
            if cfg.max_episode_steps > 0:
                env.max_steps = cfg.max_episode_steps
            env.gen_obs = _no_partial_obs
            self._envs.append(env)
        first = self._envs[0]
        self.width, self.height = first.width, first.height
        self.obs_shape = (self.height, self.width, 2)
        # agent action k is the task's action self._action_ids[k] (env.actions may select a subset)
        names = minigrid_action_names(cfg.actions)
        self._action_ids = [first.actions[name].value for name in names]
        self.num_actions = len(names)
        self.action_meanings = list(names)
        self._limit = cfg.max_episode_steps if cfg.max_episode_steps > 0 else None
        self._obs = np.zeros((self.num_envs, *self.obs_shape), dtype=np.uint8)
        self._cell = np.zeros(self.num_envs, dtype=np.int64)
        self._grids: list = [None] * self.num_envs
        self._dirty: list[list[tuple[int, int]]] = [[] for _ in range(self.num_envs)]
        self.marks_visited = bool(cfg.visited)
        self._visited = np.zeros((self.num_envs, self.height, self.width), dtype=np.uint8)

    # -- one copy ------------------------------------------------------------------------
    def _watch_grid(self, i: int) -> None:
        """Record every cell the task writes through ``grid.set`` until the next reset."""
        grid = self._envs[i].grid
        dirty = self._dirty[i]
        dirty.clear()
        base_set = type(grid).set.__get__(grid)

        def recording_set(x, y, v, _set=base_set, _dirty=dirty):
            _set(x, y, v)
            _dirty.append((x, y))

        grid.set = recording_set
        self._grids[i] = grid

    def _reset_one(self, i: int, seed: int | None) -> None:
        env = self._envs[i]
        env.reset(seed=seed)
        encode_full(env, self._obs[i])
        self._watch_grid(i)
        x, y = env.agent_pos
        self._cell[i] = y * self.width + x
        self._visited[i] = 0
        self._visited[i, y, x] = VISITED_MARK

    # -- VecEnv ----------------------------------------------------------------------------
    def _current_obs(self) -> np.ndarray:
        return self._marked(self._obs.copy())

    def _marked(self, obs: np.ndarray, copy: int | None = None) -> np.ndarray:
        """``obs`` (of all copies, or of one copy) with the visited marks, when they are on."""
        if self.marks_visited:
            obs[..., 1] |= self._visited if copy is None else self._visited[copy]
        return obs

    def step(self, actions: np.ndarray) -> Step:
        self._require_started()
        actions = np.asarray(actions).reshape(self.num_envs)
        n, width = self.num_envs, self.width
        reward = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        step_cell = np.zeros(n, dtype=np.int64)
        obs_all = self._obs
        final_obs = None
        for i in range(n):
            env = self._envs[i]
            x0, y0 = env.agent_pos
            _, r, term, trunc, _ = env.step(self._action_ids[actions[i]])
            obs = obs_all[i]
            grid = env.grid
            if grid is not self._grids[i]:  # the task built a new grid: start over
                encode_full(env, obs)
                self._watch_grid(i)
            else:
                get = grid.get
                dirty = self._dirty[i]
                t, s = _cell_code(get(x0, y0))
                obs[y0, x0, 0] = t
                obs[y0, x0, 1] = s
                if dirty:
                    for cx, cy in dirty:
                        t, s = _cell_code(get(cx, cy))
                        obs[cy, cx, 0] = t
                        obs[cy, cx, 1] = s
                    dirty.clear()
                fx, fy = env.front_pos
                if 0 <= fx < width and 0 <= fy < self.height:
                    t, s = _cell_code(get(fx, fy))
                    obs[fy, fx, 0] = t
                    obs[fy, fx, 1] = s
            x1, y1 = env.agent_pos
            obs[y1, x1, 0] = AGENT_IDX
            obs[y1, x1, 1] = env.agent_dir
            if self.verify:
                expected = encode_full(env)
                if not np.array_equal(obs, expected):
                    raise AssertionError(f"incremental MiniGrid encoding diverged in copy {i} at step {env.step_count}")
            step_cell[i] = y1 * width + x1
            self._visited[i, y1, x1] = VISITED_MARK
            reward[i] = r
            if not term and self._limit is not None and env.step_count >= self._limit:
                trunc = True
            if term or trunc:
                terminated[i] = bool(term)
                truncated[i] = not term
                if final_obs is None:
                    final_obs = obs_all.copy()
                else:
                    final_obs[i] = obs
                self._marked(final_obs[i], i)
                self._reset_one(i, None)
            else:
                self._cell[i] = step_cell[i]
        obs_out = self._marked(obs_all.copy())
        if final_obs is None:
            final_obs = obs_out
        else:
            done = terminated | truncated
            final_obs[~done] = obs_out[~done]
        return Step(obs_out, reward, terminated, truncated, final_obs, {"cell": step_cell})

    def state_dict(self) -> dict | None:
        """Every copy's episode in progress (task state, RNG, encoded grid, visited marks), or None
        when a task's state does not pickle; ``load_state_dict`` continues exactly from it."""
        if not self._started:
            return None
        snapshots = []
        for env in self._envs:
            grid = env.grid
            recording_set = grid.__dict__.pop("set", None)  # a closure: rebuilt by _watch_grid on load
            try:
                snapshots.append(pickle.dumps(env, protocol=pickle.HIGHEST_PROTOCOL))
            except (pickle.PicklingError, AttributeError, TypeError):
                return None
            finally:
                if recording_set is not None:
                    grid.set = recording_set
        return {"env_id": self.env_id, "envs": snapshots, "obs": self._obs.copy(), "cell": self._cell.copy(),
                "visited": self._visited.copy()}

    def load_state_dict(self, state: dict) -> np.ndarray:
        """Continue the episodes that :meth:`state_dict` saved (same task and number of copies);
        returns the observations to act on, as the last step returned them."""
        if state["env_id"] != self.env_id or len(state["envs"]) != self.num_envs:
            raise ValueError(f"environment state of {len(state['envs'])} x {state['env_id']} does not fit "
                             f"{self.num_envs} x {self.env_id}")
        for i, snapshot in enumerate(state["envs"]):
            self._envs[i].close()
            self._envs[i] = pickle.loads(snapshot)
            self._watch_grid(i)
        self._obs[...] = state["obs"]
        self._cell[...] = state["cell"]
        self._visited[...] = state["visited"]
        self._started = True
        return self._current_obs()

    def last_probes(self) -> dict[str, np.ndarray]:
        """``{"cell": y * W + x}`` of the agent in the latest returned obs, per copy."""
        return {"cell": self._cell.copy()}

    def render_rgb(self, tile_size: int = 16) -> np.ndarray:
        """RGB picture of copy 0's whole grid, uint8 [H * tile_size, W * tile_size, 3]."""
        return self._envs[0].get_frame(highlight=False, tile_size=tile_size)

    def close(self) -> None:
        for e in self._envs:
            e.close()
