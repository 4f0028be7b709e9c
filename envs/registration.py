"""The one function that registers every custom environment id of this package with gymnasium.

The env factory (in each worker process too) and the split checks call it, so an id works wherever it is used;
a new custom env adds its registration here.
"""

from __future__ import annotations

import minigrid  # noqa: F401  (registers the MiniGrid-* ids)

from rims_rl.envs.memory import register_memory_envs
from rims_rl.envs.novel_distractors import register_novel_distractors

__all__ = ["register_envs"]


def register_envs() -> None:
    """Register MiniGrid's ids and this package's own (``RIMs-NovelDistractors-*``, ``RIMs-MemoryS7Cue-v0``) with
    gymnasium (idempotent).

    >>> import gymnasium as gym
    >>> register_envs()
    >>> ids = ("RIMs-NovelDistractors-Train-v0", "RIMs-MemoryS7Cue-v0", "MiniGrid-Empty-5x5-v0")
    >>> all(env_id in gym.registry for env_id in ids)
    True
    """
    register_novel_distractors()
    register_memory_envs()
