"""Real short learning runs, with bars that hold on any CPU.

A training run depends on the CPU: a last-digit floating-point difference flips a RIM's top-k selection or a
sampled action, and the run diverges from there, so a run on another machine is as good as another seed. Every bar
below therefore sits under the worst of several seeds measured on our 2-core machine, with a margin, and far
above what a policy without the tested ability scores. On MiniGrid, evaluation samples actions: the greedy
version of a recurrent policy can loop forever where sampling succeeds (Empty-5x5, A2C with a shared RIM core:
greedy return 0.000 on two seeds of five, sampled 0.58 and 0.67 there). On CartPole it is greedy, as in
sb3-contrib's test: a pole has no loops to get stuck in.

The per-seed figures behind each bar come from the tests' own settings:

    python tests/test_learning.py --seeds 0 1 2 3 4                                    # Empty-5x5
    python benchmarks/memory.py --tasks cartpole --agents lstm gru rim feedforward     # CartPole, no velocities
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from benchmarks.memory import run as run_memory_benchmark  # the memory test runs the benchmark's own settings
from rims_rl.agents import MiniGridFeaturesExtractor, RecurrentA2C, RecurrentPPO
from rims_rl.envs import make_vec_env

CORES = {
    "lstm": dict(hidden_size=64),
    "gru": dict(hidden_size=64),
    "rim": dict(hidden_size=64, num_units=4, k=2),
}

# Empty-5x5 needs no memory; it checks that every core and algorithm learns at all. The optimum is 0.955, a random
# policy scores about 0.1. Sampled return (40 episodes), seeds 0-4 on our 2-core machine, worst seed / median:
#   ppo: lstm 0.955 / 0.955, gru 0.954 / 0.955, rim 0.954 / 0.955;
#   a2c: lstm 0.922 / 0.928, gru 0.923 / 0.932, rim 0.915 / 0.921.
# The PPO learning rate was 1e-3 and its budget 20k frames before: one GRU seed of five collapsed to 0.000 there.
EMPTY_BAR = 0.7
EMPTY_ALGOS = {
    "ppo": (RecurrentPPO, dict(n_steps=64, batch_size=256, sequence_length=16, learning_rate=5e-4), 30_000),
    "a2c": (RecurrentA2C, dict(n_steps=8), 30_000),
}

# CartPole without velocities needs memory: benchmarks/memory.py's "cartpole" task (sb3-contrib's memory test and
# its settings, 50k steps, greedy return of 20 episodes, the maximum is 500). Seeds 0-4 on our machine, worst seed /
# median: lstm 263 / 486, gru 428 / 500, rim 391 / 481; SB3's feed-forward PPO 41-45 on every seed. Worst of seeds
# 0-14 (benchmarks/results/memory_cartpole_seeds5_14.json): lstm 254, gru 206, rim 191.
MEMORY_BAR = 150.0
# Chunk length: each env's whole rollout, except for the RIM, which steps one timestep at a time (128-step chunks
# cost it about 20 minutes a run here); inferring a velocity needs only a few steps of memory.
MEMORY_SEQUENCE_LENGTH = {"lstm": 128, "gru": 128, "rim": 32}


def train_empty(core: str, algo: str, seed: int) -> float:
    """Train on Empty-5x5; the sampled-action return of 40 evaluation episodes."""
    algo_class, kwargs, frames = EMPTY_ALGOS[algo]
    policy_kwargs = dict(
        core=core, core_kwargs=CORES[core], features_extractor_class=MiniGridFeaturesExtractor, normalize_images=False
    )
    env = make_vec_env("MiniGrid-Empty-5x5-v0", n_envs=16, seed=seed)
    model = algo_class("MultiInputRecurrentPolicy", env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **kwargs)
    model.learn(frames)
    eval_env = make_vec_env("MiniGrid-Empty-5x5-v0", n_envs=4, seed=100 + seed)
    return evaluate_policy(model, eval_env, n_eval_episodes=40, deterministic=False)[0]


@pytest.fixture(autouse=True)
def one_thread() -> None:
    th.set_num_threads(1)


@pytest.mark.slow
@pytest.mark.parametrize("algo", list(EMPTY_ALGOS))
@pytest.mark.parametrize("core", list(CORES))
def test_solves_empty_5x5(core: str, algo: str) -> None:
    score = train_empty(core, algo, seed=0)
    assert score > EMPTY_BAR, f"{algo} with {core} reached only {score:.3f} on Empty-5x5 (bar {EMPTY_BAR})"


@pytest.mark.slow
@pytest.mark.parametrize("core", list(CORES))
def test_remembers_cartpole_without_velocities(core: str) -> None:
    score = run_memory_benchmark(core, "cartpole", seed=0, sequence_length=MEMORY_SEQUENCE_LENGTH[core])["score"]
    assert score > MEMORY_BAR, f"ppo with {core} reached only {score:.1f} on CartPole without velocities"


def _measure(job: tuple[str, str, int]) -> str:
    th.set_num_threads(1)
    return f"{job}: {train_empty(*job):.3f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Per-seed figures behind the Empty-5x5 bar.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [(c, a, s) for a in EMPTY_ALGOS for c in CORES for s in args.seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        for line in pool.map(_measure, jobs):
            print(line, flush=True)
