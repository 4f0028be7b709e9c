"""Memory benchmark: do recurrent agents learn tasks that need memory, seed after seed, and how fast?

Agents (every one with identical hyperparameters on a task):

- ``sb3_contrib``: sb3-contrib's RecurrentPPO, its default architecture (the critic has its own LSTM);
- ``lstm``, ``gru``, ``rim``: our RecurrentPPO, the critic with its own core (``shared_core=False``, the default);
- ``lstm_shared``, ``gru_shared``, ``rim_shared``: one core for actor and critic (``shared_core=True``);
- ``feedforward``: SB3's PPO without memory, to show that the task needs memory.

Tasks:

- ``cartpole``: CartPole-v1 without velocities (:class:`rims_rl.envs.memory.VelocityMask`), sb3-contrib's own memory
  test (``tests/test_lstm.py::test_ppo_lstm_performance``): 8 envs, VecNormalize, core size 64, n_steps 128,
  lr 7e-4, batch 256, 10 epochs, max_grad_norm 1, gae_lambda 0.98, ``net_arch=dict(pi=[], vf=[64])``,
  ``ortho_init=False``, 50k steps; evaluated greedily over 20 episodes; a seed passes at 450 of 500.
- ``memory``: ``RIMs-MemoryS7Cue-v0`` (:class:`rims_rl.envs.memory.CueMemoryEnv`: MiniGrid's MemoryS7 with the cue in
  view at the first step; remember it, walk the hallway, step to its twin: a feed-forward policy can only guess,
  about half the optimal return), the MiniGrid CNN extractor, 16 envs, n_steps 128, batch 256, 10 epochs,
  lr 7e-4 (the CartPole task's; at 4 epochs and lr 2.5e-4 or 1e-3 an LSTM still guessed at 200-300k frames),
  entropy 0.01, core size 64, 300k steps; evaluated with sampled actions over 100 episodes; a seed passes at 0.8
  (the optimum is about 0.96).

Our chunk length is ``--sequence-length`` (default 128: each env's rollout is one sequence, as close as chunking
gets to sb3-contrib's episode-split sequences). RIM: 4 units of 16, k=3. On the CPU, one torch thread per run;
runs go in parallel worker processes (``--workers``).

    python benchmarks/memory.py --tasks cartpole memory --seeds 0 1 2 3 4 --workers 2
    python benchmarks/memory.py --report results_a.json results_b.json   # tables of saved results, no training
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from rims_rl.experiments.limits import MAX_FRAMES, MAX_SEED, ArgumentParser, count

AGENTS = ("sb3_contrib", "lstm", "gru", "rim", "lstm_shared", "gru_shared", "rim_shared", "feedforward")
REFERENCES = ("sb3_contrib", "feedforward")  # the agents that are not ours: no chunk length, no core options
CORE_KWARGS = {"lstm": dict(hidden_size=64), "gru": dict(hidden_size=64), "rim": dict(hidden_size=64, num_units=4, k=3)}


@dataclass(frozen=True)
class Task:
    """A memory task and the settings every agent uses on it."""

    frames: int
    """Training budget in env steps."""
    threshold: float
    """A seed passes when its evaluation return reaches this."""
    eval_episodes: int
    """Episodes in the final evaluation."""
    deterministic: bool
    """Greedy (True) or sampled (False) actions in the final evaluation."""
    hparams: dict[str, Any]
    """PPO constructor arguments shared by every agent."""
    policy_kwargs: dict[str, Any]
    """Policy arguments shared by every agent (the core's kind and size excluded)."""


TASKS = {
    "cartpole": Task(
        frames=50_000, threshold=450.0, eval_episodes=20, deterministic=True,
        hparams=dict(n_steps=128, learning_rate=7e-4, batch_size=256, n_epochs=10, max_grad_norm=1.0,
                     gae_lambda=0.98, ent_coef=0.0),
        policy_kwargs=dict(net_arch=dict(pi=[], vf=[64]), ortho_init=False),
    ),
    "memory": Task(
        frames=300_000, threshold=0.8, eval_episodes=100, deterministic=False,
        hparams=dict(n_steps=128, learning_rate=7e-4, batch_size=256, n_epochs=10, ent_coef=0.01),
        policy_kwargs=dict(net_arch=dict(pi=[64], vf=[64]), normalize_images=False),
    ),
}  # fmt: skip


def make_envs(task: str, seed: int) -> tuple[Any, Any]:
    """The training env and an evaluation env for ``task`` (both vectorised)."""
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    if task == "cartpole":
        from rims_rl.envs.memory import VelocityMask

        env = VecNormalize(sb3_make_vec_env("CartPole-v1", n_envs=8, seed=seed, wrapper_class=VelocityMask))
        eval_env = VecNormalize(
            sb3_make_vec_env("CartPole-v1", n_envs=4, seed=10_000 + seed, wrapper_class=VelocityMask),
            training=False, norm_reward=False,
        )  # fmt: skip
        eval_env.obs_rms = env.obs_rms  # the same object: evaluation sees the training statistics
        return env, eval_env
    from rims_rl.envs import make_vec_env  # importing envs registers CUE_MEMORY_ID (rims_rl.envs.register_envs)
    from rims_rl.envs.memory import CUE_MEMORY_ID

    return make_vec_env(CUE_MEMORY_ID, n_envs=16, seed=seed), make_vec_env(CUE_MEMORY_ID, n_envs=4, seed=10_000 + seed)


def build(agent: str, task: str, env: Any, seed: int, sequence_length: int, core_kwargs: dict[str, Any]) -> Any:
    """The model of ``agent`` for ``task``, with the task's shared settings (``core_kwargs`` override our core's
    arguments, e.g. ``{"k": 4}`` for a RIM without competition)."""
    spec = TASKS[task]
    policy_kwargs = dict(spec.policy_kwargs)
    minigrid = task != "cartpole"
    if minigrid:
        from rims_rl.agents import MiniGridFeaturesExtractor

        policy_kwargs["features_extractor_class"] = MiniGridFeaturesExtractor
    if agent == "sb3_contrib":
        from sb3_contrib import RecurrentPPO as ContribRecurrentPPO

        policy = "MultiInputLstmPolicy" if minigrid else "MlpLstmPolicy"
        policy_kwargs.update(lstm_hidden_size=64, enable_critic_lstm=True)
        return ContribRecurrentPPO(policy, env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **spec.hparams)
    if agent == "feedforward":
        from stable_baselines3 import PPO

        return PPO("MultiInputPolicy" if minigrid else "MlpPolicy", env, seed=seed, device="cpu",
                   policy_kwargs=policy_kwargs, **spec.hparams)  # fmt: skip
    from rims_rl.agents import RecurrentPPO

    core, _, shared = agent.partition("_")
    policy_kwargs.update(core=core, core_kwargs={**CORE_KWARGS[core], **core_kwargs}, shared_core=bool(shared))
    policy = "MultiInputRecurrentPolicy" if minigrid else "MlpRecurrentPolicy"
    return RecurrentPPO(
        policy,
        env,
        seed=seed,
        device="cpu",
        sequence_length=sequence_length,
        policy_kwargs=policy_kwargs,
        **spec.hparams,
    )


def run(
    agent: str,
    task: str,
    seed: int,
    sequence_length: int,
    frames: int | None = None,
    core_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one (agent, task, seed) for ``frames`` (default: the task's budget) and evaluate it."""
    import torch
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)
    spec = TASKS[task]
    env, eval_env = make_envs(task, seed)
    core_kwargs = core_kwargs if agent not in REFERENCES and core_kwargs else {}
    model = build(agent, task, env, seed, sequence_length, core_kwargs)
    start = time.perf_counter()
    frames = frames or spec.frames
    model.learn(frames)
    seconds = time.perf_counter() - start
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=spec.eval_episodes, deterministic=spec.deterministic)
    mean = cast(float, mean)  # a list only with return_episode_rewards=True
    return dict(agent=agent, task=task, seed=seed, frames=frames, sequence_length=sequence_length,
                **({"core_kwargs": core_kwargs} if core_kwargs else {}),
                score=float(mean), passed=bool(mean >= spec.threshold), seconds=seconds)  # fmt: skip


def table(results: list[dict[str, Any]], task: str, seeds: list[int]) -> str:
    """A Markdown table of one task: per-seed scores, seeds passed, mean training time (one row per agent and
    setting; a row names its chunk length ``T`` where it is not each env's whole rollout, its core options, and its
    budget where it is not the task's)."""
    spec = TASKS[task]

    def label(r: dict[str, Any]) -> str:
        ours = r["agent"] not in REFERENCES
        options = [f"T={r['sequence_length']}"] if ours and r["sequence_length"] != 128 else []
        options += [f"{key}={value}" for key, value in r.get("core_kwargs", {}).items()]
        options += [f"{r['frames']} frames"] if r["frames"] != spec.frames else []
        return f"{r['agent']} ({', '.join(options)})" if options else r["agent"]

    lines = [
        f"{task}: {spec.frames} frames unless named, pass at {spec.threshold:g}, "
        f"{spec.eval_episodes} {'greedy' if spec.deterministic else 'sampled'} evaluation episodes",
        "",
        "| agent | " + " | ".join(f"seed {s}" for s in seeds) + " | passed | train s (mean) |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    for agent in dict.fromkeys(label(r) for r in results if r["task"] == task):
        rows = {r["seed"]: r for r in results if r["task"] == task and label(r) == agent}
        cells = [f"{rows[s]['score']:.3g}" if s in rows else "-" for s in seeds]
        passed = sum(r["passed"] for r in rows.values())
        seconds = sum(r["seconds"] for r in rows.values()) / len(rows)
        lines.append(f"| {agent} | " + " | ".join(cells) + f" | {passed}/{len(rows)} | {seconds:.0f} |")
    return "\n".join(lines)


def json_object(text: str) -> dict[str, Any]:
    """``--core-kwargs``' type: a JSON object."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(text)
    return value


def check_core_kwargs(agents: list[str], core_kwargs: dict[str, Any]) -> None:
    """Fail before any training, in one line, when a key of ``core_kwargs`` is not an argument of every core the
    ``agents`` build (a RIM's ``k`` given to an LSTM run too); a core whose arguments cannot be known is not
    checked (as in :mod:`rims_rl.experiments.config`)."""
    from rims_rl.cores import make_core, resolve_core
    from rims_rl.experiments.config import constructor_arguments, unknown_key

    for core in dict.fromkeys(agent.partition("_")[0] for agent in agents if agent not in REFERENCES):
        allowed = constructor_arguments(resolve_core(core))
        for key, value in core_kwargs.items():
            if allowed is not None and key not in allowed:
                raise ValueError(f"--core-kwargs for {core}: {unknown_key(key, value, sorted(allowed))}")
        try:  # the values too, by building the core on a dummy input size, as rims_rl.experiments.config does
            make_core(core, 8, **{**CORE_KWARGS[core], **core_kwargs})
        except (TypeError, ValueError) as err:
            raise ValueError(f"--core-kwargs for {core}: {err}") from None


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--agents", nargs="+", choices=AGENTS, default=list(AGENTS))
    parser.add_argument("--seeds", type=count(0, MAX_SEED), nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--sequence-length", type=count(), default=128, help="our BPTT chunk length (divides 128)")
    parser.add_argument("--frames", type=count(1, MAX_FRAMES), help="override every task's training budget")
    parser.add_argument(
        "--core-kwargs",
        type=json_object,
        default={},
        metavar="JSON",
        help="override our cores' arguments, e.g. '{\"k\": 4}' (the table names them)",
    )
    parser.add_argument("--workers", type=count(), default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory.json"))
    parser.add_argument("--report", type=Path, nargs="+", help="print the tables of saved results and exit")
    args = parser.parse_args()
    if args.report:
        saved = [r for path in args.report for r in json.loads(path.read_text())]
        for task in dict.fromkeys(r["task"] for r in saved):
            print(table(saved, task, sorted({r["seed"] for r in saved if r["task"] == task})) + "\n")
        return
    try:
        check_core_kwargs(args.agents, args.core_kwargs)
    except ValueError as err:
        parser.error(str(err))
    for task in args.tasks:
        n_steps = TASKS[task].hparams["n_steps"]
        if n_steps % args.sequence_length:
            parser.error(
                f"argument --sequence-length: expected a divisor of n_steps={n_steps}, got {args.sequence_length}"
            )
    jobs = [(a, t, s) for t in args.tasks for s in args.seeds for a in args.agents]
    results = []
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run, a, t, s, args.sequence_length, args.frames, args.core_kwargs) for a, t, s in jobs]
        for future in futures:  # in submission order; print as they come so long runs show progress
            results.append(future.result())
            r = results[-1]
            print(f"[{len(results)}/{len(jobs)}] {r['task']} {r['agent']} seed {r['seed']}: "
                  f"{r['score']:.3g} in {r['seconds']:.0f} s", flush=True)  # fmt: skip
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))
    for task in args.tasks:
        print()
        print(table(results, task, args.seeds))


if __name__ == "__main__":
    main()
