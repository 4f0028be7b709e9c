"""The evaluations' share of a training run's wall time: the real training loop (``rims_rl.experiments.train.train``, as
``rims-rl-train`` runs it) with its ``evaluate`` timed.

The arguments are ``rims-rl-train`` overrides; W&B is disabled and the run goes to ``--run-dir`` (a temporary
directory by default). One line per evaluation is printed (flushed) as it ends: the frame count, that
evaluation's seconds and the running totals, in wall time and in this process's CPU time (less sensitive to other
jobs on a busy machine), so a run stopped early still gives the share over its prefix; then a summary line.
Run it with another checkout's interpreter (e.g. ``/work/main/.venv/bin/python``) to time that checkout's code.

    python benchmarks/eval_share.py env=doorkey
    python benchmarks/eval_share.py experiment=dido_doorkey
    python benchmarks/eval_share.py env=doorkey model=rim_set total_frames=4096
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rims_rl.experiments.limits import ArgumentParser


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="rims-rl-train overrides, e.g. env=doorkey")
    parser.add_argument("--run-dir", type=Path, default=None, help="the run directory (default: a temporary one)")
    args = parser.parse_args()

    import rims_rl.experiments.train
    from rims_rl.experiments.config import ConfigError, compose_run, fail

    try:
        cfg, spec = compose_run(args.overrides)
    except ConfigError as err:
        fail(err, parser.prog)
    start, cpu_start = time.perf_counter(), time.process_time()
    evals: list[float] = []
    cpu_evals: list[float] = []  # this process's CPU seconds: less sensitive than wall time to a busy machine
    real = rims_rl.experiments.train.evaluate

    def timed(model: Any, *rest: Any, **kwargs: Any) -> dict[str, float]:
        began, cpu_began = time.perf_counter(), time.process_time()
        results = real(model, *rest, **kwargs)
        evals.append(time.perf_counter() - began)
        cpu_evals.append(time.process_time() - cpu_began)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        print(
            f"frames {model.num_timesteps:>8d}  eval {evals[-1]:8.1f} s  total eval {sum(evals):8.1f} s  "
            f"wall {wall:8.1f} s  share {sum(evals) / wall:6.1%}  |  CPU: eval {cpu_evals[-1]:7.1f} s  "
            f"total eval {sum(cpu_evals):8.1f} s  total {cpu:8.1f} s  share {sum(cpu_evals) / cpu:6.1%}",
            flush=True,
        )
        return results

    rims_rl.experiments.train.evaluate = timed  # type: ignore[assignment]  # the name learn() calls
    print(f"{sys.executable} benchmarks/eval_share.py {' '.join(args.overrides)}", flush=True)
    print(f"code: {Path(rims_rl.experiments.train.__file__).parent.parent}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path(tmp)
        rims_rl.experiments.train.train(cfg, spec, run_dir)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(
        f"total: wall {wall:.1f} s, {len(evals)} evaluations {sum(evals):.1f} s, share {sum(evals) / wall:.1%} "
        f"(final evaluation {evals[-1]:.1f} s); CPU {cpu:.1f} s, evaluations {sum(cpu_evals):.1f} s, share "
        f"{sum(cpu_evals) / cpu:.1%}",
        flush=True,
    )


if __name__ == "__main__":
    main()
