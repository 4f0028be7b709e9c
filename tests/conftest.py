"""Fixtures shared by the runner and report tests: the command lines they run, in the test's temporary directory,
and the tiny training budget they share (constants and checks: ``helpers.py``). JAX runs on the CPU with one XLA
thread in every test and in the commands they start, since the tests share the machine's cores (pytest-xdist), and
they all share one persistent compilation cache, made for the session, so a function is compiled once however many
processes run it (a job, the same job killed and resumed); set here, before any test module imports jax."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import TINY, TINY_AGENT, TINY_MODEL, Run, clean_env

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the first process (pytest, or xdist's controller) makes it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE = tempfile.mkdtemp(prefix="rims-rl-tests-jax-cache-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # every compiled function, not only slow ones
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(2**32)  # a size limit makes jax lock the cache's files
else:
    _JAX_CACHE = None


def pytest_unconfigure() -> None:
    """Remove the session's compilation cache (in the process that made it)."""
    if _JAX_CACHE is not None:
        shutil.rmtree(_JAX_CACHE, ignore_errors=True)


@pytest.fixture
def run_cli(tmp_path: Path) -> Run:
    """``run_cli(module, args, timeout=300, **env)``: ``python -m <module> <args>`` in ``tmp_path``."""

    def run(module: str, args: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=tmp_path,
            env=clean_env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def train(run_cli: Run) -> Run:
    """``train(args, timeout=120, **env)``: ``rims-rl-train <args>`` (as ``python -m rims_rl.experiments.train``)."""

    def run(args: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli("rims_rl.experiments.train", args, timeout, **env)

    return run


@pytest.fixture
def tiny() -> Callable[..., list[str]]:
    """``tiny(model="lstm", agent="ppo")``: the arguments of a seconds-long run of that model and agent."""

    def args(model: str = "lstm", agent: str = "ppo") -> list[str]:
        return [f"model={model}", f"agent={agent}", *TINY_MODEL[model], *TINY_AGENT[agent], *TINY]

    return args


@pytest.fixture
def tiny_budget() -> list[str]:
    """The tiny budget of an LSTM PPO run without the group choices (for sweeps over them)."""
    return [*TINY_AGENT["ppo"], *TINY, *TINY_MODEL["lstm"]]
