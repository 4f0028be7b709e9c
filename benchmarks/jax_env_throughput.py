"""Env-steps/s of the JAX envs (:mod:`rims_rl.envs.jax`) with random actions: reset, then ``jax.lax.scan`` over steps of
``jax.vmap`` over envs, all jitted; compile time apart, best of three runs.

Pin it to one core, as the README's figures were::

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" taskset -c 0 \
        python benchmarks/jax_env_throughput.py --env-id Navix-DoorKey-5x5-v0 --num-envs 16 256
"""

from __future__ import annotations

import time

import jax

from rims_rl.envs.jax import make
from rims_rl.experiments.limits import ArgumentParser, count


def throughput(env_id: str, num_envs: int, steps: int) -> tuple[float, float]:
    """:return: (env-steps/s, compile seconds)"""
    env = make(env_id)

    @jax.jit
    def rollout(key: jax.Array) -> jax.Array:
        state, _ = jax.vmap(env.reset)(jax.random.split(key, num_envs))

        def body(state, key):
            action_key, step_key = jax.random.split(key)
            actions = jax.random.randint(action_key, (num_envs,), 0, env.num_actions)
            state, _, reward, _, _ = jax.vmap(env.step)(state, actions, jax.random.split(step_key, num_envs))
            return state, reward.sum()

        return jax.lax.scan(body, state, jax.random.split(key, steps))[1].sum()

    start = time.perf_counter()
    rollout(jax.random.PRNGKey(0)).block_until_ready()
    compile_s = time.perf_counter() - start
    best = float("inf")
    for seed in range(1, 4):
        start = time.perf_counter()
        rollout(jax.random.PRNGKey(seed)).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return num_envs * steps / best, compile_s


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="Navix-DoorKey-5x5-v0")
    parser.add_argument("--num-envs", type=count(), nargs="+", default=[16, 256])
    parser.add_argument("--steps", type=count(), default=1000)
    args = parser.parse_args()
    for num_envs in args.num_envs:
        rate, compile_s = throughput(args.env_id, num_envs, args.steps)
        print(f"{args.env_id} envs={num_envs}: {rate:,.0f} env-steps/s (compile {compile_s:.1f} s)")


if __name__ == "__main__":
    main()
