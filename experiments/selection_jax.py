"""Selection rasters of the JAX backend (``backend=jax``): the episodes of :mod:`rims_rl.experiments.selection`, played
with the trained parameters of every seed of a job in one jitted program per env.

At the end of training, for a core that sows its active units (``intermediates/core/active``, as
:class:`rims_rl.jax.RIM`), :func:`record_selection` plays one episode (sampled actions, keys from the evaluation
seed) on each given env, for every seed, and writes each seed's ``selection/<env>.json`` and
``selection_raster.png`` with :func:`rims_rl.experiments.selection.write_selection`: the files, format and figure of the
torch backend, so ``rims-rl-report`` reads both alike.

An episode is :func:`play_episode`: a ``jax.lax.scan`` of ``max_steps`` steps of batch one, steps after the episode's
end masked out (an episode always ends by ``max_steps``, the time limit); with ``jax.vmap`` over seeds it is one
compiled program per env. For a small RIM (``hidden_size=12``, 3 units) on DoorKey-5x5, two seeds, one pinned CPU
thread on a loaded machine: tracing 1.5 s, compiling 8.5 s, playing 250 steps 13 ms.

Events (:data:`rims_rl.experiments.selection.EVENTS`, :func:`step_with_events`) are read from the navix state before and
after each step, with :func:`rims_rl.experiments.selection.step_events`'s meanings: ``key``, the agent's pocket becomes
a key; ``door``, a door's ``open`` turns true; ``goal``, a positive reward; ``end``, terminated or truncated. An event
at step ``t`` is caused by the action of step ``t``. One case is not seen: a key picked up or a door opened by the
action that the time limit cuts off, because :class:`rims_rl.envs.jax.JaxEnv` returns the next episode's first state
from an ending step (the actions that end an episode otherwise, walking onto the goal or into lava or an obstacle and
picking up KeyCorridor's ball, pick up no key and open no door).

Symbols: S seeds, T steps of the episode, M ``max_steps``, L layers, U units per layer.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from navix.entities import Entities

from rims_rl.agents.jax.ppo import PPOConfig, make_policy
from rims_rl.envs.jax import EnvState, JaxEnv, Obs
from rims_rl.experiments.builders import eval_seed_of
from rims_rl.experiments.selection import EVENTS, Event, SelectionEpisode, write_selection

__all__ = ["EpisodeSteps", "play_episode", "record_selection", "step_with_events", "to_episode", "unit_shape"]


class EpisodeSteps(NamedTuple):
    """The ``M`` steps :func:`play_episode` plays; only those with ``alive`` belong to the episode.

    :param active: ``(M, L, U)`` bool, the active units at each step
    :param events: ``(M, E)`` bool, the events of each step, in the order of
        :data:`~rims_rl.experiments.selection.EVENTS`
    :param rewards: ``(M,)`` float32
    :param alive: ``(M,)`` bool, the step belongs to the episode (the steps up to its end)
    """

    active: Array
    events: Array
    rewards: Array
    alive: Array


def _key_and_doors(state: EnvState) -> tuple[Array, Array]:
    """:return: whether the agent carries a key (bool ``()``) and which doors are open (bool ``(N,)``)"""
    world = state.state
    pocket = world.get_player(idx=0).pocket
    held = jnp.any(world.get_keys().id == pocket) if Entities.KEY in world.entities else jnp.asarray(False)
    doors = world.get_doors().open != 0 if Entities.DOOR in world.entities else jnp.zeros((0,), bool)
    return held, doors


def step_with_events(
    env: JaxEnv, state: EnvState, action: Array, key: Array
) -> tuple[EnvState, Obs, Array, Array, Array]:
    """One env step and its events.

    :param env: the env
    :param state: its state
    :param action: int32 ``()``
    :param key: the step's key (the next episode's level, when this step ends one)
    :return: the next state and observation (the next episode's first after an end), the reward, ``done``
        (terminated or truncated) and the events, bool ``(E,)`` in the order of
        :data:`~rims_rl.experiments.selection.EVENTS`
    """
    held, doors = _key_and_doors(state)
    state, obs, reward, terminated, truncated = env.step(state, action, key)
    done = terminated | truncated
    held_after, doors_after = _key_and_doors(state)
    seen = ~done  # after an end, the state is the next episode's (module docstring)
    flags = {
        "key": seen & held_after & ~held,
        "door": seen & jnp.any(doors_after & ~doors),
        "goal": reward > 0,
        "end": done,
    }
    return state, obs, reward, done, jnp.stack([flags[kind] for kind in EVENTS])


def play_episode(params: Any, key: Array, *, env: JaxEnv, config: PPOConfig) -> EpisodeSteps:
    """One episode with sampled actions, recording the core's active units and the events. Pure; jit it with
    ``env`` and ``config`` bound, ``vmap`` it over seeds.

    :param params: the policy's variables (its core sows ``intermediates/core/active``, see :func:`unit_shape`)
    :param key: the episode's key (its level and actions)
    :param env: the env
    :param config: the policy's config
    :return: ``env.max_steps`` steps, those after the episode's end masked out
    """
    policy = make_policy(config, env.num_actions)
    key_reset, key_run = jax.random.split(key)
    env_state, obs = env.reset(key_reset)

    def step(carry: tuple[Any, ...], key_t: Array) -> tuple[tuple[Any, ...], EpisodeSteps]:
        env_state, obs, core_state, start, alive = carry
        key_action, key_env = jax.random.split(key_t)
        one = jax.tree.map(lambda x: x[None, None], obs)
        (logits, _, core_state), extra = policy.apply(
            params, one, core_state, start[None, None], mutable="intermediates"
        )
        action = jax.random.categorical(key_action, logits[0, 0]).astype(jnp.int32)
        env_state, obs, reward, done, events = step_with_events(env, env_state, action, key_env)
        active = extra["intermediates"]["core"]["active"][0][0, 0]  # (L, U)
        recorded = EpisodeSteps(active, events & alive, jnp.where(alive, reward, 0.0), alive)
        return (env_state, obs, core_state, done, alive & ~done), recorded

    init = (env_state, obs, policy.initial_state(1), jnp.asarray(True), jnp.asarray(True))
    _, steps = jax.lax.scan(step, init, jax.random.split(key_run, env.max_steps))
    return steps


def unit_shape(config: PPOConfig, env: JaxEnv) -> tuple[int, int] | None:
    """Whether the policy's core reports its active units, found by tracing one step (nothing is computed).

    :param config: the policy's config
    :param env: an env it plays
    :return: ``(L, U)``, or ``None`` for a core that sows no active units (LSTM, GRU)
    """
    policy = make_policy(config, env.num_actions)

    def probe(key: Array) -> Any:
        _, obs = env.reset(key)
        inputs = (jax.tree.map(lambda x: x[None, None], obs), policy.initial_state(1), jnp.ones((1, 1), bool))
        return policy.apply(policy.init(key, *inputs), *inputs, mutable="intermediates")[1]

    active = jax.eval_shape(probe, jax.random.PRNGKey(0)).get("intermediates", {}).get("core", {}).get("active")
    return None if active is None else (active[0].shape[2], active[0].shape[3])


def to_episode(steps: EpisodeSteps, name: str, scope: str) -> SelectionEpisode:
    """The recorded episode of :func:`play_episode`'s steps (one seed's, on the host).

    :param steps: the steps, numpy arrays
    :param name: the env's metric scope
    :param scope: ``"train"`` or ``"heldout"``
    :return: the episode: its ``T`` steps' active units, its events by step and kind, its return
    """
    length = int(np.asarray(steps.alive).sum())
    events = [Event(t, kind) for t in range(length) for kind, flag in zip(EVENTS, steps.events[t], strict=True) if flag]
    active = np.asarray(steps.active[:length], dtype=bool)
    return SelectionEpisode(name, scope, active, events, float(np.asarray(steps.rewards).sum()))


def record_selection(
    params: Any,
    config: PPOConfig,
    envs: Sequence[tuple[str, str, JaxEnv]],
    seeds: Sequence[int],
    run_dirs: Sequence[Path],
    titles: Sequence[str],
) -> list[Path]:
    """For a core that reports its active units: one episode per env and seed, written into each seed's run
    directory as ``selection/<env>.json`` and ``selection_raster.png``
    (:func:`rims_rl.experiments.selection.write_selection`). Env ``i`` of seed ``s`` plays with the key
    ``fold_in(PRNGKey(eval_seed_of(s)), i)``.

    :param params: the policy's variables, leading axis ``S``
    :param config: the policy's config
    :param envs: ``(metric scope, side, env)`` per env, e.g. the first train env and the first held-out env
    :param seeds: the ``S`` run seeds
    :param run_dirs: each seed's run directory
    :param titles: each seed's raster title
    :return: the written files (none for a core without active units)
    """
    if unit_shape(config, envs[0][2]) is None:
        return []
    keys = jnp.stack([jax.random.PRNGKey(eval_seed_of(seed)) for seed in seeds])
    episodes: list[list[SelectionEpisode]] = [[] for _ in seeds]
    for index, (name, scope, env) in enumerate(envs):
        play = jax.jit(jax.vmap(functools.partial(play_episode, env=env, config=config)))
        steps = jax.device_get(play(params, jax.vmap(lambda k, i=index: jax.random.fold_in(k, i))(keys)))
        for s, seed_episodes in enumerate(episodes):
            seed_episodes.append(to_episode(EpisodeSteps(*(x[s] for x in steps)), name, scope))
    paths = []
    for run_dir, title, seed_episodes in zip(run_dirs, titles, episodes, strict=True):
        paths += write_selection(seed_episodes, run_dir, title)
    return paths
