"""agents.jax: recurrent PPO and A2C in JAX (the JAX backend's algorithm), as pure functions to jit and vmap.

Needs the ``jax`` extra; ``import agents`` never imports this subpackage.
"""
