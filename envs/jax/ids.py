"""The JAX env ids, as plain strings: importing this module never imports jax.

Each id is navix's (https://github.com/epignatelli/navix, release 0.7.4) and names the MiniGrid env it stands for,
with MiniGrid's ``max_steps`` for it (navix's own default is 100 for every env).
"""

from __future__ import annotations

import difflib
from typing import NamedTuple

__all__ = ["JAX_ENVS", "JaxEnvSpec", "validate_jax_env_id"]


class JaxEnvSpec(NamedTuple):
    """What a JAX env id stands for.

    :param minigrid_id: the MiniGrid (gymnasium) id of the same world
    :param max_steps: MiniGrid's episode length limit for that world
    :param see_through_walls: MiniGrid's flag for that world: if False, cells hidden behind walls and closed doors
        are observed as unseen
    """

    minigrid_id: str
    max_steps: int
    see_through_walls: bool


def _sized(name: str, sizes: tuple[int, ...], steps_per_cell: int, see_through_walls: bool) -> dict[str, JaxEnvSpec]:
    return {
        f"Navix-{name}-{n}x{n}-v0": JaxEnvSpec(f"MiniGrid-{name}-{n}x{n}-v0", steps_per_cell * n * n, see_through_walls)
        for n in sizes
    }


JAX_ENVS: dict[str, JaxEnvSpec] = {
    **_sized("Empty", (5, 6, 8, 16), 4, True),  # MiniGrid EmptyEnv: 4 * size**2
    **_sized("DoorKey", (5, 6, 8, 16), 10, False),  # DoorKeyEnv: 10 * size**2
    **_sized("Dynamic-Obstacles", (5, 6, 8, 16), 4, True),  # DynamicObstaclesEnv: 4 * size**2
    # KeyCorridorEnv: 30 * room_size**2
    **{
        f"Navix-KeyCorridorS{s}R{r}-v0": JaxEnvSpec(f"MiniGrid-KeyCorridorS{s}R{r}-v0", 30 * s * s, False)
        for s, r in ((3, 1), (3, 2), (3, 3), (4, 3), (5, 3), (6, 3))
    },
    "Navix-FourRooms-v0": JaxEnvSpec("MiniGrid-FourRooms-v0", 100, False),
    # DistShiftEnv: 9 wide, 7 high, 4 * width * height
    "Navix-DistShift1-v0": JaxEnvSpec("MiniGrid-DistShift1-v0", 4 * 9 * 7, True),
    "Navix-DistShift2-v0": JaxEnvSpec("MiniGrid-DistShift2-v0", 4 * 9 * 7, True),
}
"""Every JAX env id (navix's name) and the MiniGrid world it stands for."""


def validate_jax_env_id(env_id: str) -> JaxEnvSpec:
    """:param env_id: a JAX env id (a key of :data:`JAX_ENVS`)
    :return: its spec
    :raises ValueError: if it is unknown; the message lists the closest ids

    >>> validate_jax_env_id("Navix-DoorKey-5x5-v0").max_steps
    250
    >>> validate_jax_env_id("MiniGrid-DoorKey-5x5-v0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown JAX env id 'MiniGrid-DoorKey-5x5-v0'; closest JAX env ids: ['Navix-DoorKey-5x5-v0', ...
    """
    if env_id in JAX_ENVS:
        return JAX_ENVS[env_id]
    close = difflib.get_close_matches(str(env_id), list(JAX_ENVS), n=5, cutoff=0.6)
    hint = f"closest JAX env ids: {close}" if close else f"known JAX env ids: {sorted(JAX_ENVS)}"
    raise ValueError(f"unknown JAX env id {env_id!r}; {hint}")
