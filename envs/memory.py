"""Tasks that cannot be solved without memory, for testing and benchmarking recurrent cores.

- :class:`VelocityMask` hides the velocities of a classic-control env. On CartPole (the memory test that
  sb3-contrib ships for its RecurrentPPO, ``CartPoleNoVelEnv`` in its tests) the observation keeps the cart
  position and the pole angle; a feed-forward policy, which cannot infer which way the pole is moving, stays near
  50 of the 500 steps, while a recurrent policy can reach 500.
- :class:`CueMemoryEnv` (id ``RIMs-MemoryS7Cue-v0``): MiniGrid's Memory task (``MiniGrid-MemoryS7-v0``) with the
  agent always starting beside the cue, facing the hallway, so the cue is in view at the first step and out of
  view from the second. At the hallway's end the agent must step to the object that matches the cue: a
  feed-forward policy sees both objects but not the cue and can only guess (about half the optimal return).
  MiniGrid's own S7 starts the agent anywhere in the hallway, facing away from the cue, which adds a hard
  exploration problem (turn back to look) on top of the memory one.

>>> import gymnasium as gym
>>> env = VelocityMask(gym.make("CartPole-v1"))
>>> obs, _ = env.reset(seed=0)
>>> obs.shape
(2,)
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minigrid.envs import MemoryEnv

__all__ = ["CUE_MEMORY_ID", "VELOCITY_INDICES", "CueMemoryEnv", "VelocityMask", "register_memory_envs"]

#: Gymnasium id of :class:`CueMemoryEnv`.
CUE_MEMORY_ID = "RIMs-MemoryS7Cue-v0"

#: Observation entries that are velocities, per env id (Gymnasium's documented observation layouts).
VELOCITY_INDICES: dict[str, tuple[int, ...]] = {
    "CartPole-v1": (1, 3),  # cart velocity, pole angular velocity
    "Pendulum-v1": (2,),  # angular velocity
}


class VelocityMask(gym.ObservationWrapper):
    """Drop the velocity entries of a Box observation.

    :param env: an env whose spec id is a key of :data:`VELOCITY_INDICES` (its observation is ``(D,)``).
    :return: observations ``(D - V,)`` with the ``V`` velocity entries removed.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        env_id = env.spec.id if env.spec is not None else None
        if env_id not in VELOCITY_INDICES:
            raise ValueError(f"expected an env id among {sorted(VELOCITY_INDICES)}, got {env_id!r}")
        box = env.observation_space
        assert isinstance(box, spaces.Box)
        self._keep = np.setdiff1d(np.arange(box.shape[0]), VELOCITY_INDICES[env_id])
        self.observation_space = spaces.Box(box.low[self._keep], box.high[self._keep], dtype=box.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self._keep]


class CueMemoryEnv(MemoryEnv):
    """MiniGrid's Memory task of size ``size`` with the agent starting next to the cue, facing the hallway.

    :param size: the grid's side (odd; 7 is MiniGrid's smallest Memory task).
    :param kwargs: further :class:`minigrid.envs.MemoryEnv` arguments (``max_steps``, ``render_mode``).
    """

    def __init__(self, size: int = 7, **kwargs: object) -> None:
        super().__init__(size=size, random_length=False, **kwargs)  # type: ignore[arg-type]  # MiniGridEnv kwargs

    def _gen_grid(self, width: int, height: int) -> None:
        super()._gen_grid(width, height)
        self.agent_pos = np.array((1, height // 2))  # the cue sits at (1, height // 2 - 1): in view, to the left
        self.agent_dir = 0


def register_memory_envs() -> None:
    """Register :data:`CUE_MEMORY_ID` with gymnasium (idempotent)."""
    if CUE_MEMORY_ID not in gym.registry:
        gym.register(CUE_MEMORY_ID, entry_point="rims_rl.envs.memory:CueMemoryEnv")
