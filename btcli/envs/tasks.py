"""btcli's own MiniGrid tasks: a small four-room layout for laptop-scale behaviour transfer, and
a memory task for recurrent learners (``MiniGrid-CueCorridor-v0``, :class:`CueCorridor`).

``SmallFourRooms`` is an 11x11 grid split into four 4x4 rooms by walls with one doorway each
(fixed doorways, so one reward-free pre-training run learns one layout). All tasks share the
layout, the observation shape and the actions, so one pre-training run on the reward-free
layout serves every task (transfer with ``transfer.allow_other_env``):

- ``MiniGrid-SmallFourRooms-v0``: start and goal drawn at random each episode (the layout
  to pre-train in; a task in its own right).
- ``MiniGrid-SmallFourRoomsFar-v0``: start in the top-left corner, goal in the far corner of
  the bottom-right room, two doorways away: a sparse reward that needs structured exploration.
- ``MiniGrid-SmallFourRoomsNear-v0``: the same start, the goal two cells away in the start
  room. (Once called misaligned; it is not: a coverage policy sweeps its start room first and
  steps on this goal in almost every episode.)
- ``MiniGrid-SmallFourRoomsMisaligned-v0``: the same start, the goal on the cell the pre-trained
  coverage policies of experiments/bt_minigrid reach least often: measured, before any transfer
  run, by experiments/bt_minigrid/visitation.py over all 67 cells (results/visitation.json). Their
  zero-shot return there is near 0 while the goal is 9 steps from the start: the pre-trained
  behaviour is *misaligned* with this reward by construction (METHOD.md).

Rewards are MiniGrid's ``1 - 0.9 * steps / max_steps`` on reaching the goal; ``max_steps`` 200.
"""

from __future__ import annotations

from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Ball, Goal, Key, Wall
from minigrid.minigrid_env import MiniGridEnv

SIZE = 11
MID = SIZE // 2  # the walls between rooms run along x = MID and y = MID
# one doorway per wall segment: (x, y)
DOORWAYS = ((MID, 2), (MID, 8), (3, MID), (7, MID))
START = (1, 1)
TASKS = {
    "MiniGrid-SmallFourRooms-v0": {},
    "MiniGrid-SmallFourRoomsFar-v0": {"agent_pos": START, "goal_pos": (SIZE - 2, SIZE - 2)},
    "MiniGrid-SmallFourRoomsNear-v0": {"agent_pos": START, "goal_pos": (3, 2)},
    # the lowest mean zero-shot return of π_p seeds 0-4 (0.082; per seed 0.08 0 0 0.33 0)
    "MiniGrid-SmallFourRoomsMisaligned-v0": {"agent_pos": START, "goal_pos": (8, 3)},
}


class SmallFourRooms(MiniGridEnv):
    """Four 4x4 rooms with fixed doorways; optional fixed start (facing right) and goal."""

    def __init__(self, agent_pos: tuple[int, int] | None = None, goal_pos: tuple[int, int] | None = None,
                 max_steps: int = 200, **kwargs):
        self._start, self._goal = agent_pos, goal_pos
        super().__init__(mission_space=MissionSpace(mission_func=SmallFourRooms._mission), grid_size=SIZE,
                         see_through_walls=True, max_steps=max_steps, **kwargs)

    @staticmethod
    def _mission() -> str:  # a named function, not a lambda, so the env pickles (exact resume)
        return "reach the goal"

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        self.grid.vert_wall(MID, 0, height)
        self.grid.horz_wall(0, MID, width)
        for x, y in DOORWAYS:
            self.grid.set(x, y, None)
        if self._goal is None:
            self.place_obj(Goal())
        else:
            self.put_obj(Goal(), *self._goal)
        if self._start is None:
            self.place_agent()
        else:
            self.agent_pos, self.agent_dir = self._start, 0
        self.mission = "reach the goal"


class CueCorridor(MiniGridEnv):
    """A T-maze that needs memory: the cue is shown at the start only, and needed at the end.

        #####     The agent starts at A facing up; the cue c (a key or a ball, drawn each
        #G.G#     episode) lies beside it and vanishes after the first step. Both arms end
        ##.##     in a goal cell: the key's is the left one, the ball's the right one. The
        ##.##     right goal ends the episode with MiniGrid's 1 - 0.9 * steps / max_steps
        #cA##     (0.775 in the shortest 5 steps), the wrong one ends it with 0.
        #####

    Once the cue is gone, what an agent sees at the junction is the same whichever cue it was
    (the corridor leaves no way to keep the cue in its position or direction), so a policy
    without memory succeeds in at most half the episodes. Use ``env.actions=navigation``.
    """

    CUE, LEFT_GOAL, RIGHT_GOAL, START = (1, 4), (1, 1), (3, 1), (2, 4)
    OPEN = ((1, 1), (2, 1), (3, 1), (2, 2), (2, 3), (2, 4), (1, 4))

    def __init__(self, max_steps: int = 20, **kwargs):
        self._correct = self.LEFT_GOAL
        super().__init__(mission_space=MissionSpace(mission_func=CueCorridor._mission), width=5, height=6,
                         see_through_walls=True, max_steps=max_steps, **kwargs)

    @staticmethod
    def _mission() -> str:
        return "remember the cue, take its arm"

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        for x in range(width):
            for y in range(height):
                if (x, y) not in self.OPEN:
                    self.grid.set(x, y, Wall())
        self.put_obj(Goal(), *self.LEFT_GOAL)
        self.put_obj(Goal(), *self.RIGHT_GOAL)
        key = bool(self.np_random.integers(2))
        self.put_obj(Key() if key else Ball(), *self.CUE)
        self._correct = self.LEFT_GOAL if key else self.RIGHT_GOAL
        self.agent_pos, self.agent_dir = self.START, 3
        self.mission = self._mission()

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.grid.get(*self.CUE) is not None:  # shown at the start only
            self.grid.set(*self.CUE, None)
        if terminated and tuple(self.agent_pos) != self._correct:
            reward = 0.0
        return obs, reward, terminated, truncated, info


def register_tasks() -> None:
    """Register btcli's tasks with gymnasium (idempotent)."""
    import gymnasium as gym

    for env_id, kwargs in TASKS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="btcli.envs.tasks:SmallFourRooms", kwargs=kwargs)
    if "MiniGrid-CueCorridor-v0" not in gym.registry:
        gym.register("MiniGrid-CueCorridor-v0", entry_point="btcli.envs.tasks:CueCorridor")
