"""MiniGrid worlds in JAX for the JAX training backend (needs the ``jax`` extra: navix).

``rims_rl.envs.jax.ids`` (the env ids as plain strings) imports nothing heavy; :func:`make` and :class:`JaxEnv` live in
``rims_rl.envs.jax.env``, which imports jax and navix, and are loaded on first use so that ``rims_rl.envs.splits`` can
check ids without jax.
"""

from __future__ import annotations

from typing import Any

from rims_rl.envs.jax.ids import JAX_ENVS, JaxEnvSpec, validate_jax_env_id

__all__ = ["JAX_ENVS", "EnvState", "JaxEnv", "JaxEnvSpec", "Obs", "make", "validate_jax_env_id"]

_LAZY = {"EnvState", "JaxEnv", "Obs", "make"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from rims_rl.envs.jax import env

        return getattr(env, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
