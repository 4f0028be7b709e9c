"""Vectorised MiniGrid environments for Stable-Baselines3."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from rims_rl.envs.registration import register_envs
from rims_rl.envs.splits import as_id_list, validate_env_id
from rims_rl.envs.wrappers import MAX_MISSION_LEN, LevelSeedWrapper, MissionToIdsWrapper

__all__ = ["VEC_ENV_CLASSES", "make_env_fn", "make_vec_env"]

VEC_ENV_CLASSES: dict[str, type[DummyVecEnv] | type[SubprocVecEnv]] = {
    "dummy": DummyVecEnv,
    "subproc": SubprocVecEnv,
}


def make_env_fn(
    env_id: str,
    *,
    level_seeds: Sequence[int] | None = None,
    level_rng_seed: int | None = None,
    max_mission_len: int = MAX_MISSION_LEN,
) -> Callable[[], gym.Env]:
    """Return a thunk that builds one wrapped env: ``gym.make(env_id)`` -> :class:`LevelSeedWrapper`
    (only with ``level_seeds``) -> :class:`MissionToIdsWrapper` -> SB3 ``Monitor`` (true, unshaped episode
    returns in ``info["episode"]``).

    :param env_id: registered gymnasium id
    :param level_seeds: if given, each reset plays a level seed drawn from this list
    :param level_rng_seed: initial seed of the level-drawing RNG (re-seeded on every seeded reset)
    :param max_mission_len: L, the length of the ``mission`` word-id vector
    :return: a picklable zero-argument env constructor
    """
    seeds = None if level_seeds is None else [int(s) for s in level_seeds]

    def _init() -> gym.Env:
        register_envs()  # in subprocess workers too

        env = gym.make(env_id)
        if seeds is not None:
            env = LevelSeedWrapper(env, seeds, seed=level_rng_seed)
        env = MissionToIdsWrapper(env, max_mission_len=max_mission_len)
        return Monitor(env)

    return _init


def make_vec_env(
    env_ids: str | Sequence[str],
    n_envs: int,
    seed: int,
    *,
    vec_env: Literal["dummy", "subproc"] = "dummy",
    level_seeds: Sequence[int] | None = None,
    max_mission_len: int = MAX_MISSION_LEN,
) -> VecEnv:
    """Build ``n_envs`` wrapped MiniGrid envs (see :func:`make_env_fn`) in one SB3 ``VecEnv``.

    Env i runs ``env_ids[i % len(env_ids)]`` (a mixture when several ids are given) and is seeded with
    ``seed + i`` at the first ``reset()``; with ``level_seeds`` its level draws are seeded with ``seed + i``
    too, so the whole level sequence is reproducible.

    Observations are dicts: ``image`` (n_envs, 7, 7, 3) uint8, ``direction`` (n_envs,) int64, ``mission``
    (n_envs, L) int64 word ids.

    :param env_ids: one registered env id or a list of them
    :param n_envs: number of environments (>= 1)
    :param seed: base seed
    :param vec_env: ``"dummy"`` (one process) or ``"subproc"`` (one process per env)
    :param level_seeds: if given, every env only plays levels whose seeds are in this list
    :param max_mission_len: L, the length of the ``mission`` word-id vector
    :return: the vectorised env, seeded (the seeds apply at the first ``reset()``)
    :raises ValueError: for an unknown ``vec_env``, an unregistered id, ``n_envs < 1`` or empty lists
    """
    if vec_env not in VEC_ENV_CLASSES:
        raise ValueError(f"expected vec_env in {sorted(VEC_ENV_CLASSES)}, got {vec_env!r}")
    if n_envs < 1:
        raise ValueError(f"expected n_envs >= 1, got {n_envs}")
    ids = as_id_list(env_ids)
    if not ids:
        raise ValueError("expected at least one env id, got []")
    for env_id in ids:
        validate_env_id(env_id)
    if level_seeds is not None and len(level_seeds) == 0:
        raise ValueError("expected level_seeds to be None (any level) or a non-empty list, got []")

    fns = [
        make_env_fn(
            ids[i % len(ids)],
            level_seeds=level_seeds,
            level_rng_seed=seed + i,
            max_mission_len=max_mission_len,
        )
        for i in range(n_envs)
    ]
    venv: VecEnv = VEC_ENV_CLASSES[vec_env](fns)
    venv.seed(seed)
    venv.action_space.seed(seed)
    return venv
