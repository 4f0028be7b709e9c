"""Training throughput of the torch backend (:class:`rims_rl.agents.RecurrentPPO`) against the JAX backend
(:mod:`rims_rl.agents.jax.ppo`), recurrent PPO on DoorKey-5x5 (torch: ``MiniGrid-DoorKey-5x5-v0``, JAX:
``Navix-DoorKey-5x5-v0``).

Settings (the JAX backend issue's speed item): LSTM 192 or RIM of 6 units x 32 (k=4), a separate critic core (both
backends' default), ``net_arch`` pi/vf [64], n_steps 128, 4 epochs, sequence length 32 and 8 minibatches per epoch
(``batch_size = 16 * n_envs``: 256 at 16 envs). Each measurement runs in its own subprocess, pinned the same way
(``taskset -c <cpu>``, one torch thread, XLA's one-thread CPU flags; ``--threads N``: ``N`` CPUs from ``<cpu>``, ``N``
torch threads and XLA's own thread pool): one warm-up iteration, then ``--iterations`` timed ones, of which the
fastest counts (the machine is shared). JAX's compile time is reported apart and is not in any rate.

Sections (``--sections``):

- ``same``: both backends at 16 envs; env-steps/s, the time of one iteration split into rollout and learning
  (torch: ``collect_rollouts`` and ``train`` timed apart inside ``learn``; JAX: ``update`` and
  ``collect_rollout`` jitted and timed apart, learning = update - rollout), and the ratio JAX / torch per core.
- ``best``: torch at ``--torch-envs`` (DummyVecEnv), JAX at ``--jax-envs``; the fastest count of each.
- ``seeds``: ``--seeds`` seeds of the JAX backend at 16 envs as one jitted ``jax.vmap(update)`` over a leading seed
  axis, against the same seeds run one after another (the same total env steps, one compiled single-seed update).

    python benchmarks/backend_throughput.py --iterations 3 --out benchmarks/results/backend_throughput.txt
    python benchmarks/backend_throughput.py --device gpu --jax-envs 256 1024 4096 --sections best seeds
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from rims_rl.experiments.limits import MAX_COUNT, ArgumentParser, count

SECTIONS = ("same", "best", "seeds")
CORES: dict[str, dict[str, int]] = {
    "lstm": dict(hidden_size=192),
    "rim": dict(hidden_size=192, num_units=6, k=4),
}
ENV_IDS = {"torch": "MiniGrid-DoorKey-5x5-v0", "jax": "Navix-DoorKey-5x5-v0"}
N_STEPS = 128
N_EPOCHS = 4
SEQUENCE_LENGTH = 32
MINIBATCHES = 8
NET_ARCH = {"pi": [64], "vf": [64]}
SAME_ENVS = 16
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def batch_size(n_envs: int) -> int:
    """Steps per minibatch: ``MINIBATCHES`` minibatches per epoch at every envs count.

    >>> batch_size(16), batch_size(1024)
    (256, 16384)
    """
    return n_envs * N_STEPS // MINIBATCHES


def measure_torch(core: str, n_envs: int, iterations: int, device: str, threads: int) -> dict[str, Any]:
    """Time :class:`rims_rl.agents.RecurrentPPO` in this process (``threads`` torch threads): env-steps/s and seconds
    per iteration in ``collect_rollouts`` and ``train``."""
    import torch

    from rims_rl.agents import MiniGridFeaturesExtractor, RecurrentPPO
    from rims_rl.envs import make_vec_env

    torch.set_num_threads(threads)
    model = RecurrentPPO(
        "MultiInputRecurrentPolicy",
        make_vec_env(ENV_IDS["torch"], n_envs=n_envs, seed=0),
        n_steps=N_STEPS,
        batch_size=batch_size(n_envs),
        n_epochs=N_EPOCHS,
        sequence_length=SEQUENCE_LENGTH,
        seed=0,
        device="cuda" if device == "gpu" else "cpu",
        policy_kwargs=dict(
            core=core,
            core_kwargs=CORES[core],
            net_arch=NET_ARCH,
            features_extractor_class=MiniGridFeaturesExtractor,
            normalize_images=False,
        ),
    )
    seconds = {"collect_rollouts": 0.0, "train": 0.0}

    def timed(name: str) -> None:
        method = getattr(model, name)

        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start

        setattr(model, name, wrapper)

    for name in seconds:
        timed(name)
    frames = N_STEPS * n_envs
    start = time.perf_counter()
    model.learn(frames)  # warm-up
    warmup_s = time.perf_counter() - start
    best = {"total": float("inf")}
    for _ in range(iterations):
        seconds = dict.fromkeys(seconds, 0.0)
        start = time.perf_counter()
        model.learn(frames, reset_num_timesteps=False)
        if (total := time.perf_counter() - start) < best["total"]:
            best = {"total": total, **seconds}
    return {
        "steps_per_s": frames / best["total"],
        "rollout_s": best["collect_rollouts"],
        "learn_s": best["train"],
        "compile_s": None,
        "warmup_s": warmup_s,
    }


def fastest(step: Any, state: Any, iterations: int) -> tuple[Any, float]:
    """Run ``step`` (one iteration, blocking) ``iterations`` times from ``state``: the last state and the fastest
    iteration's seconds."""
    best = float("inf")
    for _ in range(iterations):
        start = time.perf_counter()
        state = step(state)
        best = min(best, time.perf_counter() - start)
    return state, best


def measure_jax(core: str, n_envs: int, iterations: int, seeds: int, mode: str) -> dict[str, Any]:
    """Time :func:`rims_rl.agents.jax.ppo.update` in this process (compile apart).

    :param seeds: ``S``, the number of seeds.
    :param mode: ``"single"`` (one seed, ``S`` must be 1; also times :func:`~rims_rl.agents.jax.ppo.collect_rollout`
        alone), ``"vmap"`` (one jitted ``jax.vmap(update)`` over the ``S`` seeds) or ``"sequential"`` (one compiled
        single-seed update called for each seed in turn: the work of ``S`` runs one after another).
    :return: total env-steps/s, seconds per iteration (of all seeds), compile seconds, and for ``"single"`` the
        rollout's seconds per iteration.
    """
    import jax

    import rims_rl.envs.jax
    from rims_rl.agents.jax import ppo

    env = rims_rl.envs.jax.make(ENV_IDS["jax"])
    config = ppo.PPOConfig(
        n_envs=n_envs,
        n_steps=N_STEPS,
        batch_size=batch_size(n_envs),
        n_epochs=N_EPOCHS,
        sequence_length=SEQUENCE_LENGTH,
        core=core,
        core_kwargs=CORES[core],
        net_arch=NET_ARCH,
    )
    update = functools.partial(ppo.update, env=env, config=config)
    states = ppo.init_seeds(jax.random.split(jax.random.key(0), seeds), env, config)
    if mode == "vmap":
        update = jax.vmap(update)
        starts = [states]
    else:
        starts = [jax.tree.map(lambda leaf, i=i: leaf[i], states) for i in range(seeds)]
    start = time.perf_counter()
    compiled = jax.jit(update).lower(starts[0]).compile()
    compile_s = time.perf_counter() - start

    def step(states: list[Any]) -> list[Any]:  # one update of every seed
        return [jax.block_until_ready(compiled(state)[0]) for state in states]

    states, _ = fastest(step, starts, 1)  # warm-up
    states, seconds = fastest(step, states, iterations)
    result: dict[str, Any] = {
        "steps_per_s": seeds * n_envs * N_STEPS / seconds,
        "iteration_s": seconds,
        "compile_s": compile_s,
    }
    if mode == "single":
        rollout = jax.jit(lambda s: ppo.collect_rollout(s, env, config)[0]).lower(states[0]).compile()
        state, _ = fastest(lambda s: jax.block_until_ready(rollout(s)), states[0], 1)  # warm-up
        _, result["rollout_s"] = fastest(lambda s: jax.block_until_ready(rollout(s)), state, iterations)
        result["learn_s"] = seconds - result["rollout_s"]
    return result


def code_version() -> str:
    """The git commit of this checkout, with ``+ uncommitted changes`` where ``agents/`` or ``envs/`` differ from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "agents", "envs"], capture_output=True, text=True
        )
    except OSError:
        return "not a git checkout"
    if commit.returncode:
        return "not a git checkout"
    return commit.stdout.strip() + (" + uncommitted changes in agents/ or envs/" if dirty.stdout.strip() else "")


def child_env(device: str, threads: int) -> dict[str, str]:
    """The subprocess environment: XLA's one-thread CPU flags when ``threads`` is 1; JAX on the CPU unless
    ``device`` is ``"gpu"``."""
    env = dict(os.environ)
    if threads == 1:
        env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_ONE_THREAD}".strip()
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    return env


def cpu_list(cpu: int, threads: int) -> str:
    """``taskset``'s list of ``threads`` CPUs from ``cpu``: ``"0"``, ``"0-1"``."""
    return str(cpu) if threads == 1 else f"{cpu}-{cpu + threads - 1}"


def measure(spec: dict[str, Any], iterations: int, device: str, cpu: int | None, threads: int) -> dict[str, Any]:
    """Run one measurement in a fresh subprocess (pinned with ``taskset`` to ``threads`` CPUs from ``cpu`` where
    ``cpu`` is given)."""
    command = [sys.executable, __file__, "--child", json.dumps(spec), "--iterations", str(iterations)]
    command += ["--device", device, "--threads", str(threads)]
    if cpu is not None:
        command = ["taskset", "-c", cpu_list(cpu, threads), *command]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=child_env(device, threads))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"measured {spec}: {result['steps_per_s']:,.0f} env-steps/s", file=sys.stderr, flush=True)
    return {**spec, **result}


def run_child(spec: dict[str, Any], iterations: int, device: str, threads: int) -> dict[str, Any]:
    if spec["backend"] == "torch":
        return measure_torch(spec["core"], spec["n_envs"], iterations, device, threads)
    return measure_jax(spec["core"], spec["n_envs"], iterations, spec.get("seeds", 1), spec.get("mode", "single"))


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.0f}"


def split_table(rows: list[dict[str, Any]]) -> list[str]:
    """One line per measurement: rate, rollout and learning time per iteration, compile (JAX) or warm-up (torch)."""
    lines = [
        f"{'core':<6}{'backend':<8}{'envs':>6}{'env-steps/s':>13}{'rollout ms':>12}{'learn ms':>11}"
        f"{'rollout %':>11}{'compile s':>11}{'warm-up s':>11}"
    ]
    for r in rows:
        total = r["rollout_s"] + r["learn_s"]
        warmup = "-" if r.get("warmup_s") is None else f"{r['warmup_s']:.1f}"
        compile_s = "-" if r.get("compile_s") is None else f"{r['compile_s']:.1f}"
        lines.append(
            f"{r['core']:<6}{r['backend']:<8}{r['n_envs']:>6}{r['steps_per_s']:>13,.0f}{fmt_ms(r['rollout_s']):>12}"
            f"{fmt_ms(r['learn_s']):>11}{100 * r['rollout_s'] / total:>10.0f}%{compile_s:>11}{warmup:>11}"
        )
    return lines


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", nargs="+", default=list(CORES), choices=CORES)
    parser.add_argument("--iterations", type=count(), default=3, help="timed PPO iterations after one warm-up")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--torch-envs", type=count(), nargs="+", default=[16, 64], help="envs counts of 'best'")
    parser.add_argument("--jax-envs", type=count(), nargs="+", default=[16, 256, 1024], help="envs counts of 'best'")
    parser.add_argument(
        "--skip", nargs="*", default=[], metavar="CORE:ENVS", help="JAX runs of 'best' to leave out, e.g. rim:1024"
    )
    parser.add_argument("--seeds", type=count(), default=5, help="seeds of the 'seeds' section")
    parser.add_argument("--seeds-cores", nargs="+", default=["lstm"], choices=CORES, help="cores of 'seeds'")
    parser.add_argument(
        "--device", choices=("cpu", "gpu"), default="cpu", help="gpu: JAX's default device, torch on cuda"
    )
    parser.add_argument(
        "--cpu", type=count(-1, MAX_COUNT), default=0, help="the CPU every measurement is pinned to; -1: no taskset"
    )
    parser.add_argument(
        "--threads",
        type=count(),
        default=1,
        help="CPUs (from --cpu), torch threads and XLA threads of each measurement",
    )
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child), args.iterations, args.device, args.threads)))
        return
    for n_envs in args.torch_envs + args.jax_envs + [SAME_ENVS]:
        if n_envs * N_STEPS % (MINIBATCHES * SEQUENCE_LENGTH):
            parser.error(f"expected envs counts that are multiples of 2, got {n_envs}")
    cpu = None if args.cpu < 0 or shutil.which("taskset") is None else args.cpu
    load_start = os.getloadavg()
    started = time.perf_counter()
    cache: dict[str, dict[str, Any]] = {}

    def get(**spec: Any) -> dict[str, Any]:
        key = json.dumps(spec, sort_keys=True)
        if key not in cache:
            cache[key] = measure(spec, args.iterations, args.device, cpu, args.threads)
        return cache[key]

    lines: list[str] = []
    if "same" in args.sections:
        lines += ["", f"== same settings: {SAME_ENVS} envs, batch {batch_size(SAME_ENVS)} =="]
        rows = [get(backend=b, core=c, n_envs=SAME_ENVS) for c in args.cores for b in ("torch", "jax")]
        lines += split_table(rows)
        for core in args.cores:
            torch_row, jax_row = (get(backend=b, core=core, n_envs=SAME_ENVS) for b in ("torch", "jax"))
            lines.append(f"jax / torch, {core}: {jax_row['steps_per_s'] / torch_row['steps_per_s']:.1f}x")
    if "best" in args.sections:
        lines += ["", "== each backend at its envs counts (batch = 16 * envs: 8 minibatches per epoch) =="]
        skipped = [s for s in args.skip if s.partition(":")[0] in args.cores]
        rows = [
            get(backend=backend, core=core, n_envs=n_envs)
            for core in args.cores
            for backend, counts in (("torch", args.torch_envs), ("jax", args.jax_envs))
            for n_envs in counts
            if backend == "torch" or f"{core}:{n_envs}" not in skipped
        ]
        lines += split_table(rows)
        if skipped:
            lines.append(f"not measured (too slow for this run): jax {', '.join(skipped)}")
        for core in args.cores:
            best = {
                b: max((r for r in rows if r["core"] == core and r["backend"] == b), key=lambda r: r["steps_per_s"])
                for b in ("torch", "jax")
            }
            lines.append(
                f"best {core}: torch {best['torch']['steps_per_s']:,.0f} env-steps/s at {best['torch']['n_envs']} "
                f"envs, jax {best['jax']['steps_per_s']:,.0f} at {best['jax']['n_envs']} envs: "
                f"{best['jax']['steps_per_s'] / best['torch']['steps_per_s']:.1f}x"
            )
    if "seeds" in args.sections:
        lines += [
            "",
            f"== {args.seeds} seeds, jax, {SAME_ENVS} envs each: one vmapped update against one after another ==",
        ]
        lines.append(
            f"{'core':<6}{'seeds run':<14}{'env-steps/s (all seeds)':>25}{'ms per iteration':>18}{'compile s':>11}"
        )
        for core in args.seeds_cores:
            rows = [
                get(backend="jax", core=core, n_envs=SAME_ENVS, seeds=args.seeds, mode=m)
                for m in ("vmap", "sequential")
            ]
            for r in rows:
                lines.append(
                    f"{core:<6}{r['mode']:<14}{r['steps_per_s']:>25,.0f}{fmt_ms(r['iteration_s']):>18}{r['compile_s']:>11.1f}"
                )
            lines.append(f"vmapped / sequential, {core}: {rows[0]['steps_per_s'] / rows[1]['steps_per_s']:.2f}x")
    load_end = os.getloadavg()
    pin = f"taskset -c {cpu_list(cpu, args.threads)}" if cpu is not None else "no taskset"
    xla = f"XLA_FLAGS={XLA_ONE_THREAD}" if args.threads == 1 else "XLA's default thread pool"
    header = [
        "backend_throughput: recurrent PPO, DoorKey-5x5 (torch: MiniGrid-DoorKey-5x5-v0 in a DummyVecEnv; "
        "jax: Navix-DoorKey-5x5-v0)",
        f"settings: n_steps {N_STEPS}, {N_EPOCHS} epochs, {MINIBATCHES} minibatches per epoch, "
        f"sequence {SEQUENCE_LENGTH}, net_arch pi/vf [64], separate critic core; lstm 192, rim 6 units x 32, k=4",
        f"timing: each measurement in its own subprocess, 1 warm-up + {args.iterations} timed iterations, the fastest "
        "counts; JAX compile apart (not in any rate); torch warm-up = its first iteration",
        "split: torch collect_rollouts / train timed inside learn; jax update and collect_rollout jitted apart, "
        "learn = update - rollout",
        f"pinning: {pin} for every measurement; torch.set_num_threads({args.threads}); {xla}; device {args.device}",
        f"load average (1/5/15 min) at start {' '.join(f'{x:.2f}' for x in load_start)}, "
        f"at end {' '.join(f'{x:.2f}' for x in load_end)}; wall {time.perf_counter() - started:.0f} s",
        f"code: {code_version()}; command: python " + " ".join(sys.argv),
    ]
    report = "\n".join(header + lines) + "\n"
    print(report, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
