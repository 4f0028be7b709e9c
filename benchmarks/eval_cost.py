"""The CPU cost of one evaluation at a given number of sub-envs per env id: an untrained agent (every held-out
DoorKey episode runs to its step limit, the slowest case) evaluated on a split's train and held-out env ids, sampled
and greedy, as :func:`rims_rl.experiments.eval_loop.evaluate` plays them during training.

    python benchmarks/eval_cost.py --episodes 10 --n-envs 4 10          # an intermediate evaluation
    python benchmarks/eval_cost.py --episodes 100 --n-envs 20 100       # the final one

The same agent and evaluation seed for every ``--n-envs``; one torch thread; CPU seconds of this process.
"""

from __future__ import annotations

import time

import torch

from rims_rl.experiments.builders import build_agent, build_eval_targets, build_train_env
from rims_rl.experiments.config import ConfigError, compose_run, fail
from rims_rl.experiments.eval_loop import evaluate
from rims_rl.experiments.limits import ArgumentParser, count


def main() -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("overrides", nargs="*", default=["env=doorkey"], help="rims-rl-train overrides")
    parser.add_argument("--episodes", type=count(), default=10, help="episodes per env id and action mode")
    parser.add_argument("--n-envs", type=count(), nargs="+", default=[4, 10], help="sub-envs per env id and mode")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        cfg, spec = compose_run(args.overrides)
    except ConfigError as err:
        fail(err, parser.prog)
    agent = build_agent(cfg, spec, build_train_env(cfg, spec, cfg.seed))
    targets = build_eval_targets(spec)
    print(f"{spec.label} on {spec.split.name}, {args.episodes} episodes per env id and mode", flush=True)
    for n_envs in args.n_envs:
        began = time.process_time()
        metrics = evaluate(agent, targets, args.episodes, n_envs, seed=123)
        print(
            f"n_envs={n_envs}: CPU {time.process_time() - began:.1f} s, held-out mean episode length "
            f"{metrics['eval/heldout/length_mean']:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
