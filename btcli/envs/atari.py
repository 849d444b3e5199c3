"""Atari games under the evaluation protocol of Machado et al. (2018), as ALE v5 defines it.

Both backends present the same task:

- sticky actions with probability ``cfg.sticky_actions`` (0.25), applied per emulator frame;
- the full game: no episode end on a life loss, no FIRE at reset, ``cfg.noop_max`` no-ops at
  reset (0 by default, as ALE v5);
- ``cfg.frame_skip`` (4) emulator frames per agent step, the last two max-pooled;
- 84x84 grayscale frames (area-averaged), ``cfg.frame_stack`` (4) of them stacked:
  obs is uint8 ``[num_envs, frame_stack, 84, 84]``, newest frame LAST, and the slots before an
  episode's first frame are ZERO (a reset obs is ``[0, 0, 0, first_frame]``);
- an episode is truncated after ``cfg.max_episode_frames`` (108 000) emulator frames;
- the minimal action set; rewards are the raw game score (never clipped here).

Backends:

- ``"vector"``: :class:`ale_py.AtariVectorEnv` (C++ threads that release the GIL), in its
  same-step autoreset mode. Checked facts (ale-py 0.12): the final observation of an ended
  episode is in ``info["final_obs"]`` (present only on steps where some copy ended; rows of
  copies that did not end equal ``obs``); its own stack is zero-padded after a reset, newest
  last, so it is used as is; rewards come back as int32; the frame cap counts emulator frames.
  No RAM, so ``probes`` is empty.
- ``"gym"``: one gymnasium ``ALE/<Game>-v5`` env per copy, made with ``frameskip=1`` and
  stepped in a Python loop through its ALE interface; frame skipping, max-pooling,
  grayscale/resizing and stacking are done here in numpy. It exposes RAM probes (Montezuma's
  Revenge: room, x, y) and RGB frames for video, and its episodes in progress can be saved,
  so a checkpoint continues them exactly. That is why it draws sticky actions itself (the same
  rule as ALE: each emulator frame keeps the previous frame's action with probability
  ``sticky_actions``, and a reset makes it NOOP) from the env's ``np_random``: ALE keeps the
  previous action outside the state that ``ALE.cloneState`` returns, so a restored emulator
  would repeat the wrong action.

The gym backend does not use gymnasium's ``AtariPreprocessing`` because that wrapper needs
OpenCV, which btcli does not depend on; the numpy area resize here matches the vector
backend's frames to within 1 grey level on a few pixels.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from .base import EnvConfig, SequentialVecEnv, Step, WithoutEpisodeState

SCREEN_SIZE = 84

# RAM addresses of the probes per game (Montezuma's Revenge: room, x, y).
RAM_PROBES: dict[str, dict[str, int]] = {
    "ALE/MontezumaRevenge-v5": {"room": 3, "x": 42, "y": 43},
}


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """Row-stochastic [n_out, n_in] matrix averaging each output pixel's source interval."""
    scale = n_in / n_out
    w = np.zeros((n_out, n_in), dtype=np.float32)
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
            w[i, j] = (min(hi, j + 1) - max(lo, j)) / scale
    return w


class AreaResize:
    """Area-averaging downscale of a grayscale frame (what OpenCV's INTER_AREA computes)."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int] = (SCREEN_SIZE, SCREEN_SIZE)):
        self.wy = _area_weights(in_hw[0], out_hw[0])
        self.wx_t = np.ascontiguousarray(_area_weights(in_hw[1], out_hw[1]).T)

    def __call__(self, frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        small = self.wy @ frame.astype(np.float32) @ self.wx_t
        res = np.rint(small, out=small)
        if out is None:
            return res.astype(np.uint8)
        out[...] = res
        return out


def rom_name(env_id: str) -> str:
    """The ROM name ale-py uses for an ``ALE/<Game>-v5`` id (e.g. ``montezuma_revenge``)."""
    import gymnasium as gym

    return gym.spec(env_id).kwargs["game"]


def _init_common(env, cfg: EnvConfig, seed: int) -> None:
    """Attributes both Atari backends share: id, copies, stacked 84x84 uint8 observations."""
    env.env_id = cfg.id
    env.num_envs = cfg.num_envs
    env.frame_stack = cfg.frame_stack
    env.obs_shape = (cfg.frame_stack, SCREEN_SIZE, SCREEN_SIZE)
    env.obs_dtype = np.dtype(np.uint8)
    env._seed = seed
    env._started = False


class AtariVectorBackend(WithoutEpisodeState):
    """``cfg.num_envs`` copies of one game in :class:`ale_py.AtariVectorEnv` (C++ threads)."""

    def __init__(self, cfg: EnvConfig, seed: int):
        import ale_py
        from gymnasium.vector import AutoresetMode

        _init_common(self, cfg, seed)
        self._env = ale_py.AtariVectorEnv(
            rom_name(cfg.id),
            cfg.num_envs,
            num_threads=max(1, min(cfg.num_envs, os.cpu_count() or 1)),
            max_num_frames_per_episode=cfg.max_episode_frames,
            repeat_action_probability=cfg.sticky_actions,
            full_action_space=False,
            autoreset_mode=AutoresetMode.SAME_STEP,
            img_height=SCREEN_SIZE,
            img_width=SCREEN_SIZE,
            grayscale=True,
            stack_num=cfg.frame_stack,
            frameskip=cfg.frame_skip,
            maxpool=True,
            noop_max=cfg.noop_max,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=False,
        )
        actions = self._env.ale.get_action_set()
        self.num_actions = len(actions)
        self.action_meanings = [a.name for a in actions]

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every copy; copy i is seeded with ``seed + i`` (default: the construction seed
        on the first reset; later resets without a seed continue each copy's RNG)."""
        if seed is None and not self._started:
            seed = self._seed
        obs, _ = self._env.reset(seed=seed)
        self._started = True
        return obs

    def step(self, actions: np.ndarray) -> Step:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.int32).reshape(self.num_envs)
        obs, reward, terminated, truncated, info = self._env.step(actions)
        final_obs = info.get("final_obs", obs)
        return Step(
            obs=obs,
            reward=reward.astype(np.float32),
            terminated=terminated.astype(bool),
            truncated=truncated.astype(bool),
            final_obs=final_obs,
        )

    def last_probes(self) -> dict[str, np.ndarray]:
        """No RAM access in this backend: always empty."""
        return {}

    def render_rgb(self) -> np.ndarray:
        raise NotImplementedError("the 'vector' Atari backend has no RGB frames; make the env with render=True")

    def close(self) -> None:
        self._env.close()


class AtariGymBackend(SequentialVecEnv):
    """``cfg.num_envs`` gymnasium ``ALE/<Game>-v5`` envs stepped in a Python loop.

    Probes: ``Step.probes`` holds, per copy, the probe values of the state the action led to
    (for a copy whose episode ended: its final state, matching ``Step.final_obs``).
    :meth:`last_probes` returns the probes of the state behind the latest returned ``obs``
    (after ``reset()``, or the new episode's first state for copies that were just reset).
    For games without RAM probes both are empty dicts.
    """

    def __init__(self, cfg: EnvConfig, seed: int):
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        _init_common(self, cfg, seed)
        self.frame_skip = cfg.frame_skip
        self.noop_max = cfg.noop_max
        self._envs = [
            gym.make(
                cfg.id,
                frameskip=1,
                repeat_action_probability=0.0,  # drawn here: see the module docstring
                full_action_space=False,
                max_num_frames_per_episode=cfg.max_episode_frames,
                obs_type="grayscale",
            ).unwrapped
            for _ in range(cfg.num_envs)
        ]
        self._ales = [e.ale for e in self._envs]
        self._action_set = list(self._envs[0]._action_set)
        self.sticky = float(cfg.sticky_actions)
        self._noop = self._action_set[0]  # ALE's minimal action sets start with NOOP
        self._applied = [self._noop] * self.num_envs  # the action each emulator ran on its last frame
        self.num_actions = len(self._action_set)
        self.action_meanings = self._envs[0].get_action_meanings()
        h, w = self._ales[0].getScreenDims()
        self._resize = AreaResize((h, w))
        self._screens = np.zeros((2, h, w), dtype=np.uint8)  # the last two emulator frames
        self._stack = np.zeros((self.num_envs, *self.obs_shape), dtype=np.uint8)
        self._ram_probes = RAM_PROBES.get(cfg.id, {})
        self._probes = {k: np.zeros(self.num_envs, dtype=np.int64) for k in self._ram_probes}

    # -- one copy ------------------------------------------------------------------------
    def _frame(self, i: int, pooled: bool) -> np.ndarray:
        ale = self._ales[i]
        if pooled:
            ale.getScreenGrayscale(self._screens[1])
            screen = np.maximum(self._screens[0], self._screens[1])
        else:
            ale.getScreenGrayscale(self._screens[1])
            screen = self._screens[1]
        return self._resize(screen)

    def _read_probes(self, i: int, into: dict[str, np.ndarray]) -> None:
        if self._ram_probes:
            ram = self._ales[i].getRAM()
            for k, addr in self._ram_probes.items():
                into[k][i] = int(ram[addr])

    def _reset_one(self, i: int, seed: int | None) -> None:
        env, ale = self._envs[i], self._ales[i]
        env.reset(seed=seed)  # with a seed: seeds the ALE and the env's np_random, reloads the ROM
        self._applied[i] = self._noop
        if self.noop_max > 0:
            for _ in range(int(env.np_random.integers(1, self.noop_max + 1))):
                ale.act(self._action_set[0])
                if ale.game_over(with_truncation=True):
                    env.reset()
        self._stack[i] = 0
        self._stack[i, -1] = self._frame(i, pooled=False)
        self._read_probes(i, self._probes)

    # -- VecEnv ----------------------------------------------------------------------------
    def _current_obs(self) -> np.ndarray:
        return self._stack

    def step(self, actions: np.ndarray) -> Step:
        self._require_started()
        actions = np.asarray(actions).reshape(self.num_envs)
        n, skip = self.num_envs, self.frame_skip
        reward = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        final_obs = None
        step_probes = {k: np.zeros(n, dtype=np.int64) for k in self._ram_probes}
        for i in range(n):
            ale = self._ales[i]
            a = self._action_set[int(actions[i])]
            rng = self._envs[i].np_random
            r = 0
            pooled = False
            for k in range(skip):
                if not self.sticky or rng.random() >= self.sticky:
                    self._applied[i] = a
                r += ale.act(self._applied[i])
                if ale.game_over(with_truncation=True):
                    break
                if k == skip - 2:
                    ale.getScreenGrayscale(self._screens[0])
                    pooled = True
            frame = self._frame(i, pooled=pooled and k == skip - 1)
            self._stack[i, :-1] = self._stack[i, 1:]
            self._stack[i, -1] = frame
            reward[i] = r
            self._read_probes(i, step_probes)
            if ale.game_over(with_truncation=True):
                terminated[i] = ale.game_over(with_truncation=False)
                truncated[i] = not terminated[i]
                if final_obs is None:
                    final_obs = self._stack.copy()
                else:
                    final_obs[i] = self._stack[i]
                self._reset_one(i, None)
            else:
                for key in self._probes:
                    self._probes[key][i] = step_probes[key][i]
        obs = self._stack.copy()
        if final_obs is None:
            final_obs = obs
        else:
            done = terminated | truncated
            final_obs[~done] = obs[~done]
        return Step(obs, reward, terminated, truncated, final_obs, step_probes)

    def last_probes(self) -> dict[str, np.ndarray]:
        """Probes of the state behind the latest returned obs (see the class docstring)."""
        return {k: v.copy() for k, v in self._probes.items()}

    def state_dict(self) -> dict | None:
        """Every copy's episode in progress: emulator state, the action its last frame ran, the
        sticky-action and no-op RNG, frame stack and probes; ``load_state_dict`` continues
        exactly from it."""
        if not self._started:
            return None
        return {"env_id": self.env_id,
                "ales": [pickle.dumps(ale.cloneState(include_rng=True), protocol=pickle.HIGHEST_PROTOCOL)
                         for ale in self._ales],
                "applied": [a.value for a in self._applied],
                "np_random": [env.np_random.bit_generator.state for env in self._envs],
                "stack": self._stack.copy(), "probes": {k: v.copy() for k, v in self._probes.items()}}

    def load_state_dict(self, state: dict) -> np.ndarray:
        """Continue the episodes that :meth:`state_dict` saved (same game and number of copies);
        returns the observations to act on, as the last step returned them."""
        if state["env_id"] != self.env_id or len(state["ales"]) != self.num_envs:
            raise ValueError(f"environment state of {len(state['ales'])} x {state['env_id']} does not fit "
                             f"{self.num_envs} x {self.env_id}")
        for env, ale, saved, rng in zip(self._envs, self._ales, state["ales"], state["np_random"]):
            ale.restoreState(pickle.loads(saved))
            env.np_random.bit_generator.state = rng
        self._applied = [type(self._noop)(a) for a in state["applied"]]
        self._stack[...] = state["stack"]
        for key, values in state["probes"].items():
            self._probes[key][...] = values
        self._started = True
        return self._current_obs().copy()

    def render_rgb(self) -> np.ndarray:
        """RGB screen of copy 0, uint8 [210, 160, 3]."""
        return self._ales[0].getScreenRGB()

    def close(self) -> None:
        for e in self._envs:
            e.close()
