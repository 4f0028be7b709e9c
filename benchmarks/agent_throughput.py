"""Training throughput of recurrent PPO: ours (lstm, gru, rim) against sb3-contrib's RecurrentPPO and SB3's PPO.

Settings (the agents issue): MiniGrid-Empty-5x5-v0 (``--env``), 16 envs in one process (DummyVecEnv), n_steps 128,
batch 256, 4 epochs, the same MiniGrid CNN features extractor for every variant, total hidden size 192
(RIM: 6 units of 32, k=4), one torch thread. Each variant runs in its own subprocess (so peak memory is its own),
first a warm-up iteration, then ``--iterations`` timed iterations of 2,048 env steps.

``*_shared``: one recurrent core for actor and critic; otherwise the critic has its own (both libraries' default).
``*_set``: the extractor emits the view as a set of elements (``output="set"``, ``model.features=set``): the RIM reads
the set, the LSTM the same set flattened.

Reported per variant: env-steps/s, the ratio to sb3-contrib's LSTM measured in the same run, the largest
training minibatch in rows (padding included), and the subprocess's peak RSS.

    python benchmarks/agent_throughput.py --iterations 5
    python benchmarks/agent_throughput.py --env MiniGrid-DoorKey-5x5-v0 \
        --variants ours_rim ours_rim_set ours_lstm ours_lstm_set
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

from rims_rl.experiments.limits import ArgumentParser, count

VARIANTS = (
    "sb3_ppo", "sb3_contrib_lstm", "sb3_contrib_lstm_shared",
    "ours_lstm", "ours_gru", "ours_rim", "ours_lstm_shared", "ours_gru_shared", "ours_rim_shared",
    "ours_lstm_set", "ours_rim_set",
)  # fmt: skip
HIDDEN = 192


def build(variant: str, env: Any) -> Any:
    """The model of one variant, with the common hyperparameters."""
    from rims_rl.agents import MiniGridFeaturesExtractor, RecurrentPPO

    common: dict[str, Any] = dict(n_steps=128, batch_size=256, n_epochs=4, seed=0, device="cpu")
    extractor = dict(features_extractor_class=MiniGridFeaturesExtractor, normalize_images=False)
    if variant == "sb3_ppo":
        from stable_baselines3 import PPO

        return PPO("MultiInputPolicy", env, policy_kwargs=extractor, **common)
    if variant.startswith("sb3_contrib_lstm"):
        from sb3_contrib import RecurrentPPO as ContribRecurrentPPO

        shared = dict(shared_lstm=True, enable_critic_lstm=False) if variant.endswith("shared") else {}
        return ContribRecurrentPPO(
            "MultiInputLstmPolicy", env, policy_kwargs=dict(lstm_hidden_size=HIDDEN, **shared, **extractor), **common
        )
    core, _, option = variant.removeprefix("ours_").partition("_")
    core_kwargs: dict[str, Any] = dict(hidden_size=HIDDEN)
    if core == "rim":
        core_kwargs.update(num_units=6, k=4)
    if option == "set":
        extractor["features_extractor_kwargs"] = dict(output="set")
    return RecurrentPPO(
        "MultiInputRecurrentPolicy",
        env,
        sequence_length=32,
        policy_kwargs=dict(core=core, core_kwargs=core_kwargs, shared_core=option == "shared", **extractor),
        **common,
    )


def measure(variant: str, iterations: int, env_id: str) -> dict[str, Any]:
    """Time one variant in this process; returns the figures as a dict."""
    import torch

    from rims_rl.envs import make_vec_env

    torch.set_num_threads(1)
    env = make_vec_env(env_id, n_envs=16, seed=0)
    model = build(variant, env)
    rows = [0]
    get = model.rollout_buffer.get

    def counting_get(*args: Any, **kwargs: Any) -> Any:  # records the largest minibatch, padding included
        for batch in get(*args, **kwargs):
            obs = batch.observations
            rows[0] = max(rows[0], len(next(iter(obs.values())) if isinstance(obs, dict) else obs))
            yield batch

    model.rollout_buffer.get = counting_get
    per_iteration = model.n_steps * model.n_envs
    model.learn(per_iteration)  # warm-up
    start = time.perf_counter()
    model.learn(per_iteration * iterations, reset_num_timesteps=False)
    seconds = time.perf_counter() - start
    return {
        "variant": variant,
        "steps_per_s": per_iteration * iterations / seconds,
        "max_batch_rows": rows[0],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=count(), default=5, help="timed PPO iterations of 2,048 steps each")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--env", default="MiniGrid-Empty-5x5-v0", help="the MiniGrid env id")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.iterations, args.env)))
        return
    results = []
    for variant in args.variants:
        out = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--iterations", str(args.iterations), "--env", args.env],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"measured {variant}", file=sys.stderr)
    reference = next((r["steps_per_s"] for r in results if r["variant"] == "sb3_contrib_lstm"), None)
    print(f"{'variant':<26}{'env-steps/s':>12}{'vs sb3-contrib lstm':>22}{'max batch rows':>16}{'peak RSS MiB':>14}")
    for r in results:
        ratio = f"{r['steps_per_s'] / reference:.2f}x" if reference else "n/a"
        print(
            f"{r['variant']:<26}{r['steps_per_s']:>12.0f}{ratio:>22}{r['max_batch_rows']:>16}{r['peak_rss_mib']:>14.0f}"
        )


if __name__ == "__main__":
    main()
