"""The benchmark scripts' command lines: bad input fails in one line, before any training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.mark.parametrize(
    ("core_kwargs", "message"),
    [
        ('{"kk": 4}', "--core-kwargs for rim: unknown key kk=4; did you mean k? expected one of: attention_bias,"),
        ('{"k": 4}', "--core-kwargs for lstm: unknown key k=4; expected one of: batch_first,"),  # a RIM's k, to an LSTM
        ("[4]", "argument --core-kwargs: invalid json_object value: '[4]'"),
        ('{"k": 2.5}', "--core-kwargs for rim: expected an int k with 1 <= k <= num_units=4, got k=2.5"),  # a value
    ],
)
def test_memory_benchmark_rejects_core_kwargs_a_core_does_not_take(
    tmp_path: Path, core_kwargs: str, message: str
) -> None:
    out = tmp_path / "memory.json"
    args = ["--agents", "rim", "lstm", "--tasks", "cartpole", "--seeds", "0", "--core-kwargs", core_kwargs]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "memory.py"), *args, "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr.splitlines()[-1]
    assert not out.exists()


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        (
            "memory.py",
            ["--frames", "1e99"],
            "argument --frames: expected a whole number in [1, 1000000000000], got '1e99'",
        ),
        (
            "memory.py",
            ["--sequence-length", "48"],
            "argument --sequence-length: expected a divisor of n_steps=128, got 48",
        ),
        (
            "parity_doorkey.py",
            ["--seeds", "-1"],
            "argument --seeds: expected a whole number in [0, 4294967295], got '-1'",
        ),
        (
            "agent_throughput.py",
            ["--iterations", "0"],
            "argument --iterations: expected a whole number in [1, 1000000]",
        ),
        ("backend_throughput.py", ["--threads", "0"], "argument --threads: expected a whole number in [1, 1000000]"),
        (
            "cell_speed.py",
            ["--repeats", "2.5"],
            "argument --repeats: expected a whole number in [1, 1000000], got '2.5'",
        ),
        ("eval_cost.py", ["--n-envs", "4", "0"], "argument --n-envs: expected a whole number in [1, 1000000], got '0'"),
        ("eval_cost.py", ["env=doorkey", "eval.n_envs=0"], "eval.n_envs=0 is invalid; expected a whole number"),
        ("eval_share.py", ["total_frames=1e99"], "total_frames=1e+99 is invalid; expected"),
        (
            "jax_env_throughput.py",
            ["--steps", "x"],
            "argument --steps: expected a whole number in [1, 1000000], got 'x'",
        ),
    ],
)
def test_benchmark_flags_are_bounded_in_one_line(tmp_path: Path, script: str, args: list[str], message: str) -> None:
    """Every benchmark's counts are bounded (rims_rl.experiments.limits) and refused in one line, before any
    measurement."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"{script}: error: {message}"), line
    assert not list(tmp_path.iterdir())  # nothing written
