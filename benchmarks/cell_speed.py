"""Speed of :class:`rims_rl.RIM` against :class:`torch.nn.LSTM` / :class:`torch.nn.GRU` on CPU, one thread.

Two workloads, each timed for RIM and its baseline in the same run, repeats interleaved, medians reported:

- ``train``: forward + backward over a whole sequence, ``T=32, B=64``;
- ``rollout``: ``128`` single-step calls (``T=1, B=16``) under ``torch.no_grad()``, carrying the state.

Sizes: input 64, hidden 192 (RIM: 6 units of 32, k=4, other arguments at their defaults).

Run: ``python benchmarks/cell_speed.py [--repeats 15]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from rims_rl import RIM

INPUT, HIDDEN, UNITS, K = 64, 192, 6, 4
TRAIN_T, TRAIN_B = 32, 64
ROLLOUT_STEPS, ROLLOUT_B = 128, 16


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


def median_ms(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x_train = torch.randn(TRAIN_T, TRAIN_B, INPUT)
    x_rollout = torch.randn(ROLLOUT_STEPS, 1, ROLLOUT_B, INPUT)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, {args.repeats} repeats, medians")
    print(f"{'cell':<6}{'workload':<10}{'RIM ms':>10}{'base ms':>10}{'RIM/base':>10}")
    for cell, baseline in (("lstm", nn.LSTM(INPUT, HIDDEN)), ("gru", nn.GRU(INPUT, HIDDEN))):
        rim = RIM(INPUT, HIDDEN, num_units=UNITS, k=K, cell=cell)
        for workload, make in (
            ("train", lambda c: train_step(c, x_train)),
            ("rollout", lambda c: rollout(c, x_rollout)),
        ):
            ms = median_ms({"rim": make(rim), "base": make(baseline)}, args.repeats)
            print(
                f"{cell:<6}{workload:<10}{ms['rim']:>10.2f}{ms['base']:>10.2f}{ms['rim'] / ms['base']:>10.2f}"
            )


if __name__ == "__main__":
    main()
