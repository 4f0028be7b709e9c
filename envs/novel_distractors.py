"""Pick-up task with novel distractors, after the RIMs paper's Sec. 4.2 (Goyal et al., arXiv 1909.10893).

The agent sees a partial egocentric view and a mission ``"pick up the {color} {type}"`` naming one target
object; other objects in the room are distractors. The held-out environment of each split uses more
distractors, of (type, colour) pairs never seen in training, so success there measures robustness to novel
distractors rather than memorisation.

Registered on ``import rims_rl.envs`` (split ``novel_distractors``):

- ``RIMs-NovelDistractors-Train-v0``: targets {key, ball} x {red, green}; 2 distractors from
  {key, ball} x {blue, purple}; 8x8 grid (6x6 interior), ``max_steps`` 5 * 8**2 = 320.
- ``RIMs-NovelDistractors-Heldout-v0``: same targets; 4 distractors from {key, ball, box} x {yellow, grey}
  (the box kind and both colours never appear in training); same grid and ``max_steps``.

In that split no distractor ever has a target colour, so an agent can succeed by picking up the red or green
object without reading the mission, and an LSTM saturates both envs. Split ``novel_distractors_hard`` makes the
mission necessary and the novelty compositional:

- ``RIMs-NovelDistractorsHard-Train-v0``: target from :data:`HARD_TRAIN_PAIRS` (12 of the 18 pairs of
  {key, ball, box} x minigrid's 6 colours); 2 distractors from the same pairs, each sharing the target's type or
  its colour (never both); 8x8 grid, ``max_steps`` 320 as above.
- ``RIMs-NovelDistractorsHard-Heldout-v0``: same targets; 6 distractors from :data:`HARD_HELDOUT_PAIRS` (the
  other 6 pairs: every type and colour was seen in training, never in these combinations), each sharing the
  target's type or colour; same grid and ``max_steps``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
from gymnasium.core import ActType
from minigrid.core.constants import COLOR_NAMES
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Ball, Box, Key, WorldObj
from minigrid.minigrid_env import MiniGridEnv

__all__ = [
    "HARD_HELDOUT_ID",
    "HARD_HELDOUT_PAIRS",
    "HARD_TRAIN_ID",
    "HARD_TRAIN_PAIRS",
    "HELDOUT_DISTRACTORS",
    "HELDOUT_ID",
    "TARGETS",
    "TRAIN_DISTRACTORS",
    "TRAIN_ID",
    "NovelDistractorsEnv",
    "product_pairs",
    "register_novel_distractors",
]

OBJECT_CLASSES: dict[str, Callable[[str], WorldObj]] = {"key": Key, "ball": Ball, "box": Box}

TRAIN_ID = "RIMs-NovelDistractors-Train-v0"
HELDOUT_ID = "RIMs-NovelDistractors-Heldout-v0"
HARD_TRAIN_ID = "RIMs-NovelDistractorsHard-Train-v0"
HARD_HELDOUT_ID = "RIMs-NovelDistractorsHard-Heldout-v0"

#: (types, colours) of the targets, shared by both registered envs.
TARGETS = (("key", "ball"), ("red", "green"))
#: (types, colours) of the training distractors.
TRAIN_DISTRACTORS = (("key", "ball"), ("blue", "purple"))
#: (types, colours) of the held-out distractors: disjoint from TRAIN_DISTRACTORS and TARGETS.
HELDOUT_DISTRACTORS = (("key", "ball", "box"), ("yellow", "grey"))


#: (type, colour) pairs of the hard split's held-out distractors: each colour once, each type twice, so every
#: type and colour also occurs in :data:`HARD_TRAIN_PAIRS`.
HARD_HELDOUT_PAIRS = (
    ("key", "red"),
    ("key", "purple"),
    ("ball", "blue"),
    ("ball", "grey"),
    ("box", "green"),
    ("box", "yellow"),
)


def _check_pairs(pairs: Sequence[tuple[str, str]], what: str) -> list[tuple[str, str]]:
    pairs = [(str(t), str(c)) for t, c in pairs]
    if not pairs:
        raise ValueError(f"expected non-empty {what} pairs, got {pairs}")
    for t, c in pairs:
        if t not in OBJECT_CLASSES:
            raise ValueError(f"expected {what} types in {sorted(OBJECT_CLASSES)}, got {t!r}")
        if c not in COLOR_NAMES:
            raise ValueError(f"expected {what} colours in {COLOR_NAMES}, got {c!r}")
    return pairs


def product_pairs(types: Iterable[str], colors: Iterable[str]) -> list[tuple[str, str]]:
    """Every (type, colour) pair of ``types`` x ``colors``, types outermost.

    :param types: object kinds (of ``key``, ``ball``, ``box``)
    :param colors: colours (of minigrid's ``COLOR_NAMES``)
    :return: the pairs, of length ``len(types) * len(colors)``

    >>> product_pairs(("key", "ball"), ("red",))
    [('key', 'red'), ('ball', 'red')]
    """
    return _check_pairs(list(itertools.product(types, colors)), "product")


#: The hard split's training pairs (targets and distractors): the 12 pairs of {key, ball, box} x ``COLOR_NAMES``
#: not in :data:`HARD_HELDOUT_PAIRS`.
HARD_TRAIN_PAIRS = tuple(p for p in product_pairs(OBJECT_CLASSES, COLOR_NAMES) if p not in HARD_HELDOUT_PAIRS)


def _shares(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether two (type, colour) pairs share exactly one of type and colour."""
    return (a[0] == b[0]) != (a[1] == b[1])


class NovelDistractorsEnv(MiniGridEnv):
    """Pick up the object named by the mission among distractors, in one walled room.

    Each reset places one target (type, colour) drawn from ``target_pairs`` and ``num_distractors`` objects drawn
    with replacement from the distractor pairs eligible for that target: ``distractor_pairs`` minus the target's
    own pair, and with ``share_attribute`` only those with the target's type or its colour. The agent is then
    placed at a random cell and direction. The mission always names exactly one object in the room.

    Reward and termination: picking up the target ends the episode with ``1 - 0.9 * step_count / max_steps``
    (MiniGrid's ``_reward()``); picking up any other object ends it with 0; otherwise it is truncated at
    ``max_steps``. The action space is MiniGrid's full Discrete(7) (``toggle`` on a box opens and removes it).

    :param size: grid side, walls included (the room interior is ``size - 2`` square)
    :param target_pairs: (type, colour) pairs the target may be (types of ``key``, ``ball``, ``box``; colours of
        minigrid's ``COLOR_NAMES``)
    :param distractor_pairs: (type, colour) pairs the distractors may be; may overlap ``target_pairs``
    :param num_distractors: number of distractor objects per episode (>= 0)
    :param share_attribute: if true, every distractor has the target's type or its colour (not both), so the
        agent must read both words of the mission
    :param max_steps: episode step limit; ``None`` means ``5 * size**2`` as in MiniGrid's Fetch
    :param kwargs: passed to :class:`minigrid.minigrid_env.MiniGridEnv` (``agent_view_size``, ``render_mode``)
    """

    def __init__(
        self,
        size: int = 8,
        target_pairs: Sequence[tuple[str, str]] = product_pairs(*TARGETS),
        distractor_pairs: Sequence[tuple[str, str]] = product_pairs(*TRAIN_DISTRACTORS),
        num_distractors: int = 2,
        share_attribute: bool = False,
        max_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.target_pairs = _check_pairs(target_pairs, "target")
        distractor_pairs = _check_pairs(distractor_pairs, "distractor")
        if num_distractors < 0:
            raise ValueError(f"expected num_distractors >= 0, got {num_distractors}")
        if size < 4:
            raise ValueError(f"expected size >= 4, got {size}")
        if num_distractors + 2 > (size - 2) ** 2:
            raise ValueError(
                f"expected room for the target, {num_distractors} distractors and the agent in a "
                f"{size - 2}x{size - 2} interior, got too many distractors"
            )
        #: target pair -> the distractor pairs it may be shown with (order kept, so draws are reproducible)
        self.eligible_distractors: dict[tuple[str, str], list[tuple[str, str]]] = {
            target: [d for d in distractor_pairs if d != target and (not share_attribute or _shares(d, target))]
            for target in self.target_pairs
        }
        lacking = [target for target, pairs in self.eligible_distractors.items() if not pairs]
        if num_distractors > 0 and lacking:
            raise ValueError(
                f"expected at least one distractor pair other than the target (sharing its type or colour: "
                f"{share_attribute}) for every target, got none for {lacking}"
            )
        self.num_distractors = num_distractors
        self.share_attribute = share_attribute
        self.size = size
        self.target_type: str = ""
        self.target_color: str = ""
        self.distractors: list[tuple[str, str]] = []
        mission_space = MissionSpace(
            mission_func=self._gen_mission,
            ordered_placeholders=[sorted({c for _, c in self.target_pairs}), sorted({t for t, _ in self.target_pairs})],
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
        # rejection sampling, as BabyAI's check_objs_reachable: redraw a level whose objects wall off the target
        # or the agent (about 0.1-1.5% of levels, more with more distractors)
        while True:
            self.grid = Grid(width, height)
            self.grid.wall_rect(0, 0, width, height)
            target = self._rand_elem(self.target_pairs)
            self.target_type, self.target_color = target
            target_pos = self.place_obj(OBJECT_CLASSES[self.target_type](self.target_color))
            self.distractors = []
            for _ in range(self.num_distractors):
                obj_type, color = self._rand_elem(self.eligible_distractors[target])
                self.place_obj(OBJECT_CLASSES[obj_type](color))
                self.distractors.append((obj_type, color))
            self.place_agent()
            if self._reachable_from_agent(target_pos):
                break
        self.mission = self._gen_mission(self.target_color, self.target_type)

    def _reachable_from_agent(self, pos: tuple[int, int]) -> bool:
        """Whether the agent can walk over empty cells to a cell next to ``pos`` (and so face and pick it up)."""
        start = (int(self.agent_pos[0]), int(self.agent_pos[1]))
        reached, frontier = {start}, [start]
        while frontier:
            x, y = frontier.pop()
            for cell in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if cell not in reached and self.grid.get(*cell) is None:
                    reached.add(cell)
                    frontier.append(cell)
        x, y = pos
        return bool(reached & {(x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)})

    def step(self, action: ActType) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        if self.carrying is not None:
            success = self.carrying.type == self.target_type and self.carrying.color == self.target_color
            reward = self._reward() if success else 0.0
            terminated = True
            info = {**info, "success": success}
        return obs, reward, terminated, truncated, info


def register_novel_distractors() -> None:
    """Register :data:`TRAIN_ID`, :data:`HELDOUT_ID`, :data:`HARD_TRAIN_ID` and :data:`HARD_HELDOUT_ID` with
    gymnasium (idempotent)."""
    targets = product_pairs(*TARGETS)
    hard = dict(size=8, target_pairs=HARD_TRAIN_PAIRS, share_attribute=True)
    specs: dict[str, dict[str, Any]] = {
        TRAIN_ID: dict(
            size=8, target_pairs=targets, distractor_pairs=product_pairs(*TRAIN_DISTRACTORS), num_distractors=2
        ),
        HELDOUT_ID: dict(
            size=8, target_pairs=targets, distractor_pairs=product_pairs(*HELDOUT_DISTRACTORS), num_distractors=4
        ),
        HARD_TRAIN_ID: dict(hard, distractor_pairs=HARD_TRAIN_PAIRS, num_distractors=2),
        HARD_HELDOUT_ID: dict(hard, distractor_pairs=HARD_HELDOUT_PAIRS, num_distractors=6),
    }
    for env_id, kwargs in specs.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=f"{__name__}:NovelDistractorsEnv", kwargs=kwargs)
