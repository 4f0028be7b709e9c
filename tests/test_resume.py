"""Resuming a killed run: nothing logged before its last checkpoint is lost or duplicated."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import Run, check_no_duplicates, clean_env, ok

from rims_rl.experiments.metrics import read_metrics


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_duplicates_nothing(
    tmp_path: Path, train: Run, tiny: Callable[..., list[str]]
) -> None:
    run_dir = tmp_path / "run"
    total = 4096
    args = [
        *tiny(),
        f"total_frames={total}",
        "checkpoint.every_frames=256",
        "eval.every_frames=1024",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rims_rl.experiments.train", *args],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "frames_000000000512").exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # let it log past the checkpoint
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    from rims_rl.experiments.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.frames < total
    before = [row for row in read_metrics_lenient(run_dir / "metrics.jsonl") if row["frames"] <= checkpoint.frames]

    ok(train([f"resume={run_dir}", "hydra.run.dir=resume_cmd"], timeout=180))

    rows = read_metrics(run_dir / "metrics.jsonl")
    check_no_duplicates(rows)
    assert rows[: len(before)] == before  # nothing logged before the checkpoint was lost or changed
    assert rows[-1]["frames"] >= total
    assert [row["frames"] for row in rows if "eval/heldout/return_mean" in row] == [1024, 2048, 3072, 4096]
    # The kill came before the final evaluation: it ran after resuming, once, with eval.final_episodes (2 in TINY).
    finals = [(row["frames"], row["eval/episodes"]) for row in rows if "eval/final" in row]
    assert finals == [(total, 2)]
    assert [row["eval/episodes"] for row in rows if "eval/episodes" in row] == [1, 1, 1, 2]
    sb3_frames = [row["frames"] for row in rows if "time/fps" in row]
    assert sb3_frames == list(range(32, total + 1, 32))  # one SB3 row per rollout, none missing
    info = json.loads((run_dir / "run_info.json").read_text())
    runs = sorted(run_dir.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(info["wandb_id"]) for r in runs)


def read_metrics_lenient(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics file whose last line may be torn by a kill."""
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows
