"""rims_rl.agents.jax: recurrent PPO and A2C in JAX (the JAX backend's algorithm), as pure functions to jit and vmap.

Needs the ``jax`` extra; ``import rims_rl.agents`` never imports this subpackage.

>>> import functools, jax
>>> from rims_rl.agents.jax import PPOConfig, init, update
>>> config = PPOConfig(n_envs=4, n_steps=32, batch_size=64, core="gru", core_kwargs={"hidden_size": 16})
>>> # state = init(jax.random.key(0), env, config)   # env: rims_rl.envs.jax.make("Navix-Empty-5x5-v0")
>>> # state, metrics = jax.jit(functools.partial(update, env=env, config=config))(state)
"""

from rims_rl.agents.jax.networks import CORES, ActorCritic, MiniGridFeatures, make_core
from rims_rl.agents.jax.ppo import (
    CONFIGS,
    PPOConfig,
    Rollout,
    TrainState,
    a2c_config,
    evaluate,
    init,
    init_seeds,
    make_policy,
    update,
)

__all__ = [
    "CONFIGS",
    "CORES",
    "ActorCritic",
    "MiniGridFeatures",
    "PPOConfig",
    "Rollout",
    "TrainState",
    "a2c_config",
    "evaluate",
    "init",
    "init_seeds",
    "make_core",
    "make_policy",
    "update",
]
