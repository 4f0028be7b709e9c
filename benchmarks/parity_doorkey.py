"""Learning parity: our LSTM-PPO against sb3-contrib's RecurrentPPO with identical hyperparameters, DoorKey-5x5.

Both: 16 envs, n_steps 128, batch 256, 4 epochs, lr 2.5e-4, gamma 0.99, GAE 0.95, clip 0.2, entropy 0.01,
the same MiniGrid CNN extractor, LSTM of 128, the critic with an LSTM of its own (both libraries' default), one
torch thread per run. The difference that remains: ours trains on 32-step chunks, sb3-contrib on episode-split
padded sequences. ``--shared-core`` runs ours with one LSTM for actor and critic (the RIMs paper's MiniGrid agent).

Final return = mean return of 100 evaluation episodes with sampled actions after training. Runs go in parallel
worker processes (``--workers``, default 2 = both cores).

    python benchmarks/parity_doorkey.py --seeds 0 1 2 --frames 300000
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rims_rl.experiments.limits import MAX_FRAMES, MAX_SEED, ArgumentParser, count

IMPLS = ("ours_lstm", "sb3_contrib_lstm")
HPARAMS: dict[str, Any] = dict(
    n_steps=128, batch_size=256, n_epochs=4, learning_rate=2.5e-4, gamma=0.99, gae_lambda=0.95, clip_range=0.2,
    ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
)  # fmt: skip


def run(impl: str, seed: int, frames: int, shared_core: bool = False) -> dict[str, Any]:
    """Train one (implementation, seed) and evaluate it."""
    import torch
    from stable_baselines3.common.evaluation import evaluate_policy

    from rims_rl.agents import MiniGridFeaturesExtractor, RecurrentPPO
    from rims_rl.envs import make_vec_env

    torch.set_num_threads(1)
    env = make_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=16, seed=seed)
    extractor = dict(features_extractor_class=MiniGridFeaturesExtractor, normalize_images=False)
    if impl == "ours_lstm":
        policy_kwargs = dict(core="lstm", core_kwargs=dict(hidden_size=128), shared_core=shared_core, **extractor)
        model: Any = RecurrentPPO(
            "MultiInputRecurrentPolicy", env, sequence_length=32, seed=seed, policy_kwargs=policy_kwargs, **HPARAMS
        )
    else:
        from sb3_contrib import RecurrentPPO as ContribRecurrentPPO

        policy_kwargs = dict(lstm_hidden_size=128, **extractor)
        model = ContribRecurrentPPO("MultiInputLstmPolicy", env, seed=seed, policy_kwargs=policy_kwargs, **HPARAMS)
    start = time.perf_counter()
    model.learn(frames)
    seconds = time.perf_counter() - start
    eval_env = make_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=4, seed=10_000 + seed)
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=100, deterministic=False)
    return {"impl": impl, "seed": seed, "frames": frames, "return": mean, "std": std, "seconds": seconds}


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=count(0, MAX_SEED), nargs="+", default=[0, 1, 2])
    parser.add_argument("--frames", type=count(1, MAX_FRAMES), default=300_000)
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--workers", type=count(), default=2)
    parser.add_argument("--shared-core", action="store_true", help="ours with one LSTM for actor and critic")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/parity_doorkey.json"))
    args = parser.parse_args()
    jobs = [(impl, seed) for seed in args.seeds for impl in args.impls]
    with ProcessPoolExecutor(args.workers) as pool:
        n = len(jobs)
        results = list(pool.map(run, *zip(*jobs, strict=True), [args.frames] * n, [args.shared_core] * n))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"MiniGrid-DoorKey-5x5-v0, {args.frames} frames, final return (100 sampled-action episodes)")
    print(f"{'impl':<18}" + "".join(f"{'seed ' + str(s):>9}" for s in args.seeds) + f"{'mean':>8}{'train s':>9}")
    for impl in args.impls:
        rows = [r for r in results if r["impl"] == impl]
        returns = [r["return"] for r in rows]
        print(
            f"{impl:<18}"
            + "".join(f"{x:>9.3f}" for x in returns)
            + f"{np.mean(returns):>8.3f}{np.mean([r['seconds'] for r in rows]):>9.0f}"
        )


if __name__ == "__main__":
    main()
