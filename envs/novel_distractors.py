"""Pick-up task with novel distractors, after the RIMs paper's Sec. 4.2 (Goyal et al., arXiv 1909.10893).

The agent sees a partial egocentric view and a mission ``"pick up the {color} {type}"`` naming one target
object; other objects in the room are distractors. Training uses a few distractors from one set of
(type, colour) pairs; the held-out environment uses more distractors from a disjoint set, with kinds and
colours never seen in training, so success there measures robustness to novel distractors rather than
memorisation.

Registered on ``import envs``:

- ``RIMs-NovelDistractors-Train-v0``: targets {key, ball} x {red, green}; 2 distractors from
  {key, ball} x {blue, purple}; 8x8 grid (6x6 interior), ``max_steps`` 5 * 8**2 = 320.
- ``RIMs-NovelDistractors-Heldout-v0``: same targets; 4 distractors from {key, ball, box} x {yellow, grey}
  (the box kind and both colours never appear in training); same grid and ``max_steps``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
from minigrid.core.constants import COLOR_NAMES
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Ball, Box, Key, WorldObj
from minigrid.minigrid_env import MiniGridEnv

__all__ = [
    "HELDOUT_DISTRACTORS",
    "HELDOUT_ID",
    "TARGETS",
    "TRAIN_DISTRACTORS",
    "TRAIN_ID",
    "NovelDistractorsEnv",
    "register_novel_distractors",
]

OBJECT_CLASSES: dict[str, type[WorldObj]] = {"key": Key, "ball": Ball, "box": Box}

TRAIN_ID = "RIMs-NovelDistractors-Train-v0"
HELDOUT_ID = "RIMs-NovelDistractors-Heldout-v0"

#: (types, colours) of the targets, shared by both registered envs.
TARGETS = (("key", "ball"), ("red", "green"))
#: (types, colours) of the training distractors.
TRAIN_DISTRACTORS = (("key", "ball"), ("blue", "purple"))
#: (types, colours) of the held-out distractors: disjoint from TRAIN_DISTRACTORS and TARGETS.
HELDOUT_DISTRACTORS = (("key", "ball", "box"), ("yellow", "grey"))


def _pairs(types: Sequence[str], colors: Sequence[str], what: str) -> list[tuple[str, str]]:
    if not types or not colors:
        raise ValueError(f"expected non-empty {what} types and colours, got types={types}, colours={colors}")
    for t in types:
        if t not in OBJECT_CLASSES:
            raise ValueError(f"expected {what} types in {sorted(OBJECT_CLASSES)}, got {t!r}")
    for c in colors:
        if c not in COLOR_NAMES:
            raise ValueError(f"expected {what} colours in {COLOR_NAMES}, got {c!r}")
    return list(itertools.product(types, colors))


class NovelDistractorsEnv(MiniGridEnv):
    """Pick up the object named by the mission among distractors, in one walled room.

    Each reset places one target (type, colour) drawn from ``target_types`` x ``target_colors`` and
    ``num_distractors`` objects drawn with replacement from ``distractor_types`` x ``distractor_colors``, then
    the agent at a random cell and direction. The two sets of pairs must be disjoint, so the mission always
    names exactly one object in the room.

    Reward and termination: picking up the target ends the episode with ``1 - 0.9 * step_count / max_steps``
    (MiniGrid's ``_reward()``); picking up any other object ends it with 0; otherwise it is truncated at
    ``max_steps``. The action space is MiniGrid's full Discrete(7) (``toggle`` on a box opens and removes it).

    :param size: grid side, walls included (the room interior is ``size - 2`` square)
    :param target_types: object kinds the target may be (of ``key``, ``ball``, ``box``)
    :param target_colors: colours the target may have (of minigrid's ``COLOR_NAMES``)
    :param distractor_types: object kinds of the distractors
    :param distractor_colors: colours of the distractors
    :param num_distractors: number of distractor objects per episode (>= 0)
    :param max_steps: episode step limit; ``None`` means ``5 * size**2`` as in MiniGrid's Fetch
    :param kwargs: passed to :class:`minigrid.minigrid_env.MiniGridEnv` (``agent_view_size``, ``render_mode``)
    """

    def __init__(
        self,
        size: int = 8,
        target_types: Sequence[str] = TARGETS[0],
        target_colors: Sequence[str] = TARGETS[1],
        distractor_types: Sequence[str] = TRAIN_DISTRACTORS[0],
        distractor_colors: Sequence[str] = TRAIN_DISTRACTORS[1],
        num_distractors: int = 2,
        max_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.target_pairs = _pairs(target_types, target_colors, "target")
        self.distractor_pairs = _pairs(distractor_types, distractor_colors, "distractor")
        overlap = sorted(set(self.target_pairs) & set(self.distractor_pairs))
        if overlap:
            raise ValueError(f"expected disjoint target and distractor (type, colour) pairs, got {overlap}")
        if num_distractors < 0:
            raise ValueError(f"expected num_distractors >= 0, got {num_distractors}")
        if size < 4:
            raise ValueError(f"expected size >= 4, got {size}")
        if num_distractors + 2 > (size - 2) ** 2:
            raise ValueError(
                f"expected room for the target, {num_distractors} distractors and the agent in a "
                f"{size - 2}x{size - 2} interior, got too many distractors"
            )
        self.num_distractors = num_distractors
        self.size = size
        self.target_type: str = ""
        self.target_color: str = ""
        self.distractors: list[tuple[str, str]] = []
        mission_space = MissionSpace(
            mission_func=self._gen_mission,
            ordered_placeholders=[sorted(set(target_colors)), sorted(set(target_types))],
        )
        super().__init__(
            mission_space=mission_space,
            width=size,
            height=size,
            see_through_walls=True,  # a single room: nothing to hide behind walls, and faster
            max_steps=5 * size**2 if max_steps is None else max_steps,
            **kwargs,
        )

    @staticmethod
    def _gen_mission(color: str, obj_type: str) -> str:
        return f"pick up the {color} {obj_type}"

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)

        self.target_type, self.target_color = self._rand_elem(self.target_pairs)
        self.place_obj(OBJECT_CLASSES[self.target_type](self.target_color))
        self.distractors = []
        for _ in range(self.num_distractors):
            obj_type, color = self._rand_elem(self.distractor_pairs)
            self.place_obj(OBJECT_CLASSES[obj_type](color))
            self.distractors.append((obj_type, color))

        self.place_agent()
        self.mission = self._gen_mission(self.target_color, self.target_type)

    def step(self, action: int) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        if self.carrying is not None:
            success = self.carrying.type == self.target_type and self.carrying.color == self.target_color
            reward = self._reward() if success else 0.0
            terminated = True
            info = {**info, "success": success}
        return obs, reward, terminated, truncated, info


def register_novel_distractors() -> None:
    """Register :data:`TRAIN_ID` and :data:`HELDOUT_ID` with gymnasium (idempotent)."""
    entry_point = f"{__name__}:NovelDistractorsEnv"
    specs = {
        TRAIN_ID: dict(
            distractor_types=TRAIN_DISTRACTORS[0], distractor_colors=TRAIN_DISTRACTORS[1], num_distractors=2
        ),
        HELDOUT_ID: dict(
            distractor_types=HELDOUT_DISTRACTORS[0],
            distractor_colors=HELDOUT_DISTRACTORS[1],
            num_distractors=4,
        ),
    }
    for env_id, kwargs in specs.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point=entry_point,
                kwargs={"size": 8, "target_types": TARGETS[0], "target_colors": TARGETS[1], **kwargs},
            )
