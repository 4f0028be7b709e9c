"""Speed of the RIM against LSTM/GRU baselines measured in the same run: torch, and (with ``jax`` installed) JAX.

Sizes: input 64, hidden 192 (RIM: 6 units of 32, k=4, other arguments at their defaults). Repeats are
interleaved across the timed functions; medians are reported.

torch (:class:`rims_rl.RIM` against ``nn.LSTM`` / ``nn.GRU``):

- ``train``: forward + backward over a whole sequence, ``T=32, B=64``;
- ``rollout``: ``128`` single-step calls (``T=1, B=16``) under ``torch.no_grad()``, carrying the state.

JAX (``rims_rl.jax`` against Flax's ``OptimizedLSTMCell(192)`` and ``torch.nn.LSTM``):

- ``train``: one jitted forward + backward (gradient of the output's sum w.r.t. the parameters), ``T=32, B=64``:
  :class:`rims_rl.jax.RIM` and ``nn.RNN(RIMCell)`` against ``nn.RNN(OptimizedLSTMCell)``;
- ``rollout``: ``128`` calls of a jitted single step (:class:`rims_rl.jax.RIMCell` against
  ``OptimizedLSTMCell``) at ``B=16`` and ``B=1024``, carrying the state, as a rollout next to a host env does;
- compile time (the first call), reported separately.

With ``--set-elements N``, also the RIM reading a set (``RIM(32, 64, num_units=4, k=3)``, ``train`` at
``T=32, B=64``): ``N`` elements of 32 features per step, against a set of one element and the vector input.

On CPU torch runs one thread and XLA is pinned to one thread (``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``, set before jax is imported); ``--device gpu`` runs both on the first GPU.

Run: ``python benchmarks/cell_speed.py [--repeats 15] [--device cpu|gpu] [--frameworks torch jax]
[--set-elements N]`` from the
repository root (``PYTHONPATH=.`` when ``rims_rl`` is not installed).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rims_rl import RIM
from rims_rl.experiments.limits import ArgumentParser, count

INPUT, HIDDEN, UNITS, K = 64, 192, 6, 4
TRAIN_T, TRAIN_B = 32, 64
ROLLOUT_STEPS, ROLLOUT_B = 128, 16
JAX_ROLLOUT_BATCHES = (16, 1024)
SET_INPUT, SET_HIDDEN, SET_UNITS, SET_K = 32, 64, 4, 3
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def train_step(core: nn.Module, x: Tensor) -> Callable[[], None]:
    def run() -> None:
        core.zero_grad(set_to_none=True)
        output, _ = core(x)
        output.sum().backward()

    return run


def rollout(core: nn.Module, xs: Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            hx = None
            for x in xs:
                _, hx = core(x, hx)

    return run


def synchronized(fn: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """``fn`` followed by waiting for the device, so that its time is the device's."""
    if device.type != "cuda":
        return fn

    def run() -> None:
        fn()
        torch.cuda.synchronize(device)

    return run


def median_ms(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Time each function ``repeats`` times, interleaved, after one warm-up call each; medians in ms."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def torch_section(device: torch.device, repeats: int) -> None:
    x_train = torch.randn(TRAIN_T, TRAIN_B, INPUT, device=device)
    x_rollout = torch.randn(ROLLOUT_STEPS, 1, ROLLOUT_B, INPUT, device=device)
    threads = f"{torch.get_num_threads()} thread" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"torch {torch.__version__} on {device.type} ({threads}), {repeats} repeats, medians")
    print(f"{'cell':<6}{'workload':<10}{'RIM ms':>10}{'base ms':>10}{'RIM/base':>10}")
    cells: tuple[tuple[Literal["lstm", "gru"], nn.Module], ...] = (
        ("lstm", nn.LSTM(INPUT, HIDDEN)),
        ("gru", nn.GRU(INPUT, HIDDEN)),
    )
    for cell, baseline in cells:
        rim = RIM(INPUT, HIDDEN, num_units=UNITS, k=K, cell=cell, device=device)
        baseline = baseline.to(device)
        for workload, make in (
            ("train", lambda c: train_step(c, x_train)),
            ("rollout", lambda c: rollout(c, x_rollout)),
        ):
            fns = {"rim": synchronized(make(rim), device), "base": synchronized(make(baseline), device)}
            ms = median_ms(fns, repeats)
            print(f"{cell:<6}{workload:<10}{ms['rim']:>10.2f}{ms['base']:>10.2f}{ms['rim'] / ms['base']:>10.2f}")


def set_section(device: torch.device, repeats: int, elements: int) -> None:
    rim = RIM(SET_INPUT, SET_HIDDEN, num_units=SET_UNITS, k=SET_K, device=device)
    xs = {
        "vector (T, B, F)": torch.randn(TRAIN_T, TRAIN_B, SET_INPUT, device=device),
        "set N=1": torch.randn(TRAIN_T, TRAIN_B, 1, SET_INPUT, device=device),
        f"set N={elements}": torch.randn(TRAIN_T, TRAIN_B, elements, SET_INPUT, device=device),
    }
    ms = median_ms({name: synchronized(train_step(rim, x), device) for name, x in xs.items()}, repeats)
    sizes = f"RIM({SET_INPUT}, {SET_HIDDEN}, num_units={SET_UNITS}, k={SET_K})"
    print(f"\nset input: {sizes}, train T={TRAIN_T} B={TRAIN_B}, {repeats} repeats, medians")
    print(f"{'input':<20}{'ms':>10}{'/vector':>10}")
    for name, value in ms.items():
        print(f"{name:<20}{value:>10.2f}{value / ms['vector (T, B, F)']:>10.2f}")


def jax_section(device: torch.device, repeats: int) -> None:
    import jax
    from flax import linen as fnn

    from rims_rl.jax import RIM as JaxRIM
    from rims_rl.jax import RIMCell

    jax_device = jax.devices("gpu" if device.type == "cuda" else "cpu")[0]
    jax.config.update("jax_default_device", jax_device)
    pinning = f"XLA_FLAGS={os.environ['XLA_FLAGS']}" if device.type == "cpu" else jax_device.device_kind
    print(f"\njax {jax.__version__} on {jax_device.platform} ({pinning}), {repeats} repeats, medians")
    key = jax.random.key(0)

    def compiled(fn: Callable[[], Any]) -> tuple[Callable[[], Any], float]:
        """``fn`` blocking until its result is ready, and the seconds its first (compiling) call took."""

        def run() -> Any:
            return jax.block_until_ready(fn())

        start = time.perf_counter()
        run()
        return run, time.perf_counter() - start

    def jax_train(module: fnn.Module, x: jax.Array) -> tuple[Callable[[], Any], float]:
        variables = jax.jit(module.init)(key, x)

        def loss(variables: Any) -> jax.Array:
            output = module.apply(variables, x)
            return (output[0] if isinstance(output, tuple) else output).sum()

        grad = jax.jit(jax.grad(loss))
        return compiled(lambda: grad(variables))

    def jax_rollout(cell: fnn.RNNCellBase, xs: jax.Array) -> tuple[Callable[[], Any], float]:
        variables = jax.jit(cell.init)(key, cell.initialize_carry(key, xs[0].shape), xs[0])
        step = jax.jit(cell.apply)

        def run() -> Any:
            carry = cell.initialize_carry(key, xs[0].shape)
            for x in xs:
                carry, _ = step(variables, carry, x)
            return carry

        return compiled(run)

    x_train = jax.random.normal(key, (TRAIN_T, TRAIN_B, INPUT))
    lstm_train, lstm_compile = jax_train(fnn.RNN(fnn.OptimizedLSTMCell(HIDDEN), time_major=True), x_train)
    rim_train, rim_compile = jax_train(JaxRIM(HIDDEN, UNITS, K), x_train)
    cell_train, cell_compile = jax_train(fnn.RNN(RIMCell(HIDDEN, UNITS, K), time_major=True), x_train)
    torch_x = torch.randn(TRAIN_T, TRAIN_B, INPUT, device=device)
    torch_lstm = nn.LSTM(INPUT, HIDDEN).to(device)
    ms = median_ms(
        {
            "rim": rim_train,
            "cell": cell_train,
            "lstm": lstm_train,
            "torch": synchronized(train_step(torch_lstm, torch_x), device),
        },
        repeats,
    )
    print(f"{'workload':<34}{'RIM ms':>10}{'LSTM ms':>10}{'RIM/LSTM':>10}{'torch LSTM ms':>15}{'compile s':>12}")
    rows = [
        (f"train T={TRAIN_T} B={TRAIN_B}, RIM", ms["rim"], rim_compile),
        (f"train T={TRAIN_T} B={TRAIN_B}, nn.RNN(RIMCell)", ms["cell"], cell_compile),
    ]
    for name, rim_ms, compile_s in rows:
        print(
            f"{name:<34}{rim_ms:>10.2f}{ms['lstm']:>10.2f}{rim_ms / ms['lstm']:>10.2f}{ms['torch']:>15.2f}"
            f"{compile_s:>8.2f} ({lstm_compile:.2f})"
        )
    for batch in JAX_ROLLOUT_BATCHES:
        xs = jax.random.normal(key, (ROLLOUT_STEPS, batch, INPUT))
        rim_run, rim_compile = jax_rollout(RIMCell(HIDDEN, UNITS, K), xs)
        lstm_run, lstm_compile = jax_rollout(fnn.OptimizedLSTMCell(HIDDEN), xs)
        torch_xs = torch.randn(ROLLOUT_STEPS, 1, batch, INPUT, device=device)
        ms = median_ms(
            {"rim": rim_run, "lstm": lstm_run, "torch": synchronized(rollout(torch_lstm, torch_xs), device)},
            repeats,
        )
        name = f"rollout {ROLLOUT_STEPS} steps B={batch}"
        print(
            f"{name:<34}{ms['rim']:>10.2f}{ms['lstm']:>10.2f}{ms['rim'] / ms['lstm']:>10.2f}{ms['torch']:>15.2f}"
            f"{rim_compile:>8.2f} ({lstm_compile:.2f})"
        )
    print("compile s: the RIM's first call (the LSTM's in brackets)")


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=count(), default=15)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--frameworks", nargs="+", choices=("torch", "jax"), default=["torch", "jax"])
    parser.add_argument("--set-elements", type=count(0), default=0, help="also time the RIM over a set of N elements")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    if args.device == "cpu":
        torch.set_num_threads(1)
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_ONE_THREAD}".strip()
    torch.manual_seed(0)
    if "torch" in args.frameworks:
        torch_section(device, args.repeats)
        if args.set_elements:
            set_section(device, args.repeats, args.set_elements)
    if "jax" in args.frameworks:
        if importlib.util.find_spec("jax") is None:
            print('\njax is not installed: JAX side skipped (pip install -c constraints.txt -e ".[jax]")')
            return
        torch.manual_seed(0)
        jax_section(device, args.repeats)


if __name__ == "__main__":
    main()
