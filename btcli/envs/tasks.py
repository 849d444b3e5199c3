"""btcli's own MiniGrid tasks: a small four-room layout for laptop-scale behaviour transfer.

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
from minigrid.core.world_object import Goal
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


def register_tasks() -> None:
    """Register btcli's tasks with gymnasium (idempotent)."""
    import gymnasium as gym

    for env_id, kwargs in TASKS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="btcli.envs.tasks:SmallFourRooms", kwargs=kwargs)
