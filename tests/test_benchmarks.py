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
