"""MiniGrid worlds as pure JAX functions: navix 0.7.4's layouts and moves, MiniGrid's observation, reward and ends.

navix (https://github.com/epignatelli/navix) builds the worlds; this module makes one navix env behave like the
MiniGrid env it stands for (:data:`rims_rl.envs.jax.ids.JAX_ENVS`):

- observation: MiniGrid's 7x7x3 egocentric (object, colour, state) view, indexed ``image[i, j]`` with the agent at
  ``(3, 6)`` facing ``j = 0``, the carried object in the agent's cell and, in the worlds where MiniGrid sets
  ``see_through_walls=False`` (DoorKey, KeyCorridor, FourRooms), cells hidden behind walls and closed doors as
  ``(0, 0, 0)`` (MiniGrid's ``Grid.process_vis``). navix's ``symbolic_first_person`` has no
  occlusion, shows a picked-up key in the top-right wall and is indexed ``[j, i]``.
- reward and ends: ``1 - 0.9 * t / max_steps`` on success, ``-1`` for walking into an obstacle
  (Dynamic-Obstacles), else 0; ``max_steps`` is MiniGrid's. navix's own defaults are ``max_steps = 100``, a reward
  of ``1 - 0.01`` per action and, for KeyCorridor, an episode that never succeeds (its pickup ignores balls).
- actions: MiniGrid's seven (left, right, forward, pickup, drop, toggle, done); pickup needs empty hands, drop
  puts the key in the empty cell in front and toggle closes an open door, as in MiniGrid (navix 0.7.4's pickup
  overwrites the pocket, its drop keeps the key in the pocket and its toggle only opens).
- KeyCorridor: navix 0.7.4 places the doors on wall cells and creates the locked door open (``open = 2``);
  every reset here puts floor under the doors and closes the locked one.
- auto-reset: the step that ends an episode returns the next episode's first state and observation.

Symbols: V = 7 (view size), H x W (grid height x width), N (entities of one kind).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import navix
from jax import Array
from navix.components import EMPTY_POCKET_ID, HasColour
from navix.entities import Ball, Entities
from navix.environments.dynamic_obstacles import DynamicObstacles
from navix.environments.environment import Timestep
from navix.grid import positions_equal, translate
from navix.rendering.cache import RenderingCache
from navix.states import State

from rims_rl.envs.jax.ids import validate_jax_env_id

__all__ = ["EnvState", "JaxEnv", "Obs", "make"]

EnvState: TypeAlias = Timestep
"""One env's state (navix's ``Timestep``: step count ``t`` and world ``state``); opaque to callers."""
Obs = dict[str, Array]
"""``{"image": uint8 (V, V, 3), "direction": int32 ()}``, MiniGrid's ``image`` and ``direction``."""

VIEW_SIZE = 7
NUM_ACTIONS = 7  # MiniGrid's Actions: left, right, forward, pickup, drop, toggle, done
FORWARD, PICKUP = 2, 3
# MiniGrid's OBJECT_TO_IDX / COLOR_TO_IDX / STATE_TO_IDX (navix's EntityIds and PALETTE use the same numbers)
UNSEEN = jnp.asarray([0, 0, 0], dtype=jnp.uint8)
EMPTY = jnp.asarray([1, 0, 0], dtype=jnp.uint8)
WALL = jnp.asarray([2, 5, 0], dtype=jnp.uint8)  # grey
WALL_ID, DOOR_ID, KEY_ID = 2, 4, 5
# MiniGrid's DIR_TO_VEC as (x, y): 0 east, 1 south, 2 west, 3 north (navix's direction numbers are the same)
DIR_TO_VEC = jnp.asarray([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=jnp.int32)


@dataclass(frozen=True)
class JaxEnv:
    """One MiniGrid world as pure functions of one env (callers ``jax.vmap`` them).

    :param env_id: the JAX env id (navix's name, a key of :data:`rims_rl.envs.jax.ids.JAX_ENVS`)
    :param num_actions: 7, MiniGrid's action set
    :param max_steps: MiniGrid's episode length limit
    :param reset: ``key -> (state, obs)``
    :param step: ``(state, action int32 (), key) -> (state, obs, reward f32 (), terminated bool (), truncated
        bool ())``; when the episode ends (terminated or truncated, which MiniGrid can report together) the
        returned state and obs are the next episode's first, drawn with ``key``, and reward and flags are the
        ending step's. Success is terminated with reward > 0.
    """

    env_id: str
    num_actions: int
    max_steps: int
    reset: Callable[[Array], tuple[EnvState, Obs]]
    step: Callable[[EnvState, Array, Array], tuple[EnvState, Obs, Array, Array, Array]]


def make(env_id: str, level_seeds: Sequence[int] | None = None) -> JaxEnv:
    """Build a JAX env.

    :param env_id: a JAX env id, e.g. ``"Navix-DoorKey-5x5-v0"``
    :param level_seeds: if given, every episode (reset and auto-reset) plays the level that
        ``jax.random.PRNGKey(seed)`` generates, for a seed drawn uniformly from this list; these are navix's
        levels, not MiniGrid's levels of the same seeds
    :return: the env
    :raises ValueError: for an unknown id (with the closest ids) or an empty ``level_seeds``
    """
    spec = validate_jax_env_id(env_id)
    if level_seeds is not None and len(level_seeds) == 0:
        raise ValueError("expected level_seeds to be None (any level) or a non-empty list, got []")
    world = navix.make(
        env_id,
        max_steps=spec.max_steps,
        observation_fn=navix.observations.none,  # the view is built from the state, below
        reward_fn=_no_reward,
        termination_fn=_never,
        action_set=_MINIGRID_ACTIONS,
    )
    obstacles = isinstance(world, DynamicObstacles)  # its balls are obstacles; KeyCorridor's is the target
    seeds = None if level_seeds is None else jnp.asarray(level_seeds, dtype=jnp.uint32)

    def reset(key: Array) -> tuple[EnvState, Obs]:
        if seeds is not None:
            key = jax.random.PRNGKey(jax.random.choice(key, seeds))
        timestep = world.reset(key, cache=_NO_RENDERING)
        # navix's episode return starts weakly typed; a float32 one keeps the state's type the same across steps
        timestep = timestep.replace(state=_fix_doors(timestep.state), info={"return": jnp.zeros((), jnp.float32)})
        return timestep, observe(timestep.state, spec.see_through_walls)

    def step(state: EnvState, action: Array, key: Array) -> tuple[EnvState, Obs, Array, Array, Array]:
        before = state.state
        after = world._step(state, action)  # navix's step without its one-step-late auto-reset
        succeeded = after.state.events.goal_reached.happened | _picked_up_ball(before, action)
        collided = _walked_into_ball(before, action) if obstacles else jnp.asarray(False)
        terminated = succeeded | collided | after.state.events.lava_fall.happened
        truncated = after.t >= spec.max_steps
        reward = jnp.where(succeeded, 1.0 - 0.9 * after.t / spec.max_steps, jnp.where(collided, -1.0, 0.0))
        next_state, next_obs = reset(key)
        obs = observe(after.state, spec.see_through_walls)
        done = terminated | truncated
        state, obs = jax.tree.map(lambda a, b: jnp.where(done, a, b), (next_state, next_obs), (after, obs))
        return state, obs, reward.astype(jnp.float32), terminated, truncated

    return JaxEnv(env_id=env_id, num_actions=NUM_ACTIONS, max_steps=spec.max_steps, reset=reset, step=step)


def observe(state: State, see_through_walls: bool) -> Obs:
    """MiniGrid's observation of a navix state (``MiniGridEnv.gen_obs``).

    :param state: one navix world state
    :param see_through_walls: if False, hide the cells that MiniGrid's ``Grid.process_vis`` hides
    :return: ``{"image": uint8 (V, V, 3), "direction": int32 ()}``
    """
    grid = _symbolic_grid(state)
    height, width = grid.shape[:2]
    player = state.get_player(idx=0)
    y, x = player.position[0], player.position[1]
    forward = DIR_TO_VEC[player.direction]
    right = jnp.stack([-forward[1], forward[0]])
    i = jnp.arange(VIEW_SIZE)[:, None]  # across, agent at column V // 2
    j = jnp.arange(VIEW_SIZE)[None, :]  # depth, agent at row V - 1
    world_x = x + forward[0] * (VIEW_SIZE - 1 - j) + right[0] * (i - VIEW_SIZE // 2)
    world_y = y + forward[1] * (VIEW_SIZE - 1 - j) + right[1] * (i - VIEW_SIZE // 2)
    inside = (world_x >= 0) & (world_x < width) & (world_y >= 0) & (world_y < height)
    image = grid[jnp.clip(world_y, 0, height - 1), jnp.clip(world_x, 0, width - 1)]
    image = jnp.where(inside[..., None], image, WALL)  # Grid.slice pads with walls
    if not see_through_walls:
        image = jnp.where(_visible(image)[..., None], image, UNSEEN)
    image = image.at[VIEW_SIZE // 2, VIEW_SIZE - 1].set(_carried(state))
    return {"image": image, "direction": jnp.asarray(player.direction, dtype=jnp.int32)}


def _symbolic_grid(state: State) -> Array:
    """:return: uint8 (H, W, 3), MiniGrid's encoding of every cell, indexed [y, x], without the agent"""
    height = state.grid.shape[0]
    grid = jnp.where(state.grid[..., None] == -1, WALL, EMPTY)  # navix's base map: -1 wall, 0 floor
    for kind, entity in state.entities.items():
        if kind == Entities.PLAYER:
            continue
        position = entity.position.reshape(-1, 2)  # (N, 2) rows, cols
        colour = entity.colour if isinstance(entity, HasColour) else jnp.zeros(entity.shape)
        symbol = jnp.stack([entity.tag, colour, entity.symbolic_state], axis=-1).astype(jnp.uint8).reshape(-1, 3)
        rows = jnp.where(position[:, 1] < 0, height, position[:, 0])  # navix's carried items sit at (0, -1)
        grid = grid.at[rows, position[:, 1]].set(symbol, mode="drop")
    return grid


def _visible(image: Array) -> Array:
    """MiniGrid's ``Grid.process_vis`` from the agent at (V // 2, V - 1), row by row from the agent's row: light
    spreads sideways and one row forward from every visible cell that can be seen behind (not a wall, not a closed
    door). Each row's two sweeps (rightwards, then leftwards) are computed at once: cell i is lit from cell k if no
    cell strictly between them on the way, nor k itself, blocks the light.

    :param image: uint8 (V, V, 3), indexed [i, j]
    :return: bool (V, V), indexed [i, j]
    """
    see_behind = ~((image[..., 0] == WALL_ID) | ((image[..., 0] == DOOR_ID) & (image[..., 2] != 0)))
    cells = jnp.arange(VIEW_SIZE)
    rightwards, leftwards = cells[:, None] <= cells[None, :], cells[:, None] >= cells[None, :]  # [from k, to i]
    lit = cells == VIEW_SIZE // 2  # the agent's cell
    rows = []
    for j in reversed(range(VIEW_SIZE)):
        clear = see_behind[:, j]
        blocked = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(~clear)])  # blockers among cells 0 .. i - 1
        # rightwards from k to i: cells k .. i - 1 clear; leftwards from k to i: cells i + 1 .. k clear
        right = jnp.any(lit[:, None] & rightwards & (blocked[None, :-1] == blocked[:-1, None]), axis=0)
        row = jnp.any(right[:, None] & leftwards & (blocked[1:, None] == blocked[None, 1:]), axis=0)
        rows.append(row)
        # the next row gets light from where each sweep passed: the right sweep from cells 0 .. V - 2 (to i and
        # i + 1), the left sweep from cells 1 .. V - 1 (to i and i - 1)
        from_right = right & clear & (cells < VIEW_SIZE - 1)
        from_left = row & clear & (cells > 0)
        lit = from_right | jnp.roll(from_right, 1) | from_left | jnp.roll(from_left, -1)
    return jnp.stack(rows[::-1], axis=1)


def _carried(state: State) -> Array:
    """:return: uint8 (3,), the carried key's encoding, or empty"""
    pocket = state.get_player(idx=0).pocket
    if Entities.KEY not in state.entities:
        return EMPTY
    keys = state.get_keys()
    held = keys.id == pocket
    colour = jnp.sum(jnp.where(held, keys.colour, 0))
    return jnp.where(jnp.any(held), jnp.stack([KEY_ID, colour, 0]).astype(jnp.uint8), EMPTY)


def _front(state: State) -> Array:
    player = state.get_player(idx=0)
    return translate(player.position, player.direction)


def _ball_in_front(state: State) -> Array:
    """Balls by type: navix 0.7.4's KeyCorridor files its ball under ``"goal"``."""
    front = _front(state)
    in_front = jnp.asarray(False)
    for entity in state.entities.values():
        if isinstance(entity, Ball):
            in_front = in_front | jnp.any(positions_equal(front, entity.position.reshape(-1, 2)))
    return in_front


def _walked_into_ball(state: State, action: Array) -> Array:
    """MiniGrid's DynamicObstaclesEnv: ``forward`` into an obstacle ends the episode with reward -1."""
    return (action == FORWARD) & _ball_in_front(state)


def _picked_up_ball(state: State, action: Array) -> Array:
    """MiniGrid's KeyCorridorEnv: picking up the ball (hands empty) is the success."""
    hands_free = state.get_player(idx=0).pocket == EMPTY_POCKET_ID
    return (action == PICKUP) & hands_free & _ball_in_front(state)


def _pickup(state: State) -> State:
    """MiniGrid's pickup: only with empty hands (navix's pickup overwrites the pocket)."""
    hands_free = state.get_player(idx=0).pocket == EMPTY_POCKET_ID
    return jax.lax.cond(hands_free, navix.actions.pickup, lambda s: s, state)


def _drop(state: State) -> State:
    """MiniGrid's drop: the carried key goes to the cell in front if that cell is empty (navix 0.7.4's drop
    leaves the key in the pocket)."""
    if Entities.KEY not in state.entities:
        return state
    front = _front(state)
    empty = state.grid[front[0], front[1]] == 0
    for kind, entity in state.entities.items():
        if kind != Entities.PLAYER:
            empty = empty & ~jnp.any(positions_equal(front, entity.position.reshape(-1, 2)))
    player = state.get_player(idx=0)
    keys = state.get_keys()
    dropped = (keys.id == player.pocket) & (player.pocket != EMPTY_POCKET_ID) & empty
    keys = keys.replace(position=jnp.where(dropped[:, None], front, keys.position))
    player = player.replace(pocket=jnp.where(jnp.any(dropped), EMPTY_POCKET_ID, player.pocket))
    entities = {**state.entities, Entities.PLAYER: player[None], Entities.KEY: keys}
    return state.replace(entities=entities)


def _toggle(state: State) -> State:
    """MiniGrid's toggle: opens the door in front (a locked one with its key) or closes it if it is open (navix
    0.7.4 only opens)."""
    if Entities.DOOR not in state.entities:
        return state
    doors = state.get_doors()
    was_open = positions_equal(_front(state), doors.position) & doors.open
    state = navix.actions.toggle(state)
    doors = state.get_doors()
    return state.replace(entities={**state.entities, Entities.DOOR: doors.replace(open=doors.open & ~was_open)})


def _fix_doors(state: State) -> State:
    """Put floor under every door, make its ``open`` a bool and close the locked ones: navix 0.7.4's KeyCorridor
    places its doors on wall cells (no door can be passed) and creates the locked one with ``open = 2``, which
    navix reads as open."""
    if Entities.DOOR not in state.entities:
        return state
    doors = state.get_doors()
    position = doors.position.reshape(-1, 2)
    grid = state.grid.at[position[:, 0], position[:, 1]].set(0)
    doors = doors.replace(open=(doors.open != 0) & (doors.requires == EMPTY_POCKET_ID))
    return state.replace(grid=grid, entities={**state.entities, Entities.DOOR: doors})


_MINIGRID_ACTIONS = (
    navix.actions.rotate_ccw,
    navix.actions.rotate_cw,
    navix.actions.forward,
    _pickup,
    _drop,
    _toggle,
    navix.actions.done,
)


def _no_reward(prev_state: State, action: Array, state: State) -> Array:
    return jnp.asarray(0.0, dtype=jnp.float32)


def _never(prev_state: State, action: Array, state: State) -> Array:
    return jnp.asarray(False)


# navix keeps RGB tiles of the whole map in every state ((H * W + 1) x 32 x 32 x 3 bytes) for rendering; the
# symbolic view never reads them, so every state carries this one-byte stand-in instead.
_NO_RENDERING: Any = RenderingCache(patches=jnp.zeros((1,), dtype=jnp.uint8))
