"""Sweeps (``-m``) with Hydra's basic launcher and submitit's local executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import Run, ok

from rims_rl.experiments.metrics import read_metrics


@pytest.mark.slow
def test_multirun_basic_launcher(tmp_path: Path, train: Run, tiny_budget: list[str]) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "model=lstm,gru",
        "seed=0,1",
        *tiny_budget,
        "total_frames=64",
        "eval.every_frames=64",
        f"hydra.sweep.dir={sweep}",
    ]
    ok(train(args, timeout=300))
    infos = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/run_info.json"))]
    assert len(infos) == 4
    assert sorted((i["model"], i["seed"]) for i in infos) == [("gru8", 0), ("gru8", 1), ("lstm8", 0), ("lstm8", 1)]
    assert {i["wandb_group"] for i in infos} == {"sweep"}
    assert len({i["wandb_id"] for i in infos}) == 4
    for run_dir in sweep.glob("*/"):
        if (run_dir / "run_info.json").exists():
            assert "eval/heldout/return_mean" in read_metrics(run_dir / "metrics.jsonl")[-1]


@pytest.mark.slow
def test_multirun_submitit_local_launcher(tmp_path: Path, train: Run, tiny_budget: list[str]) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=local",
        "seed=0,1",
        *tiny_budget,
        "total_frames=64",
        "eval.every_frames=64",
        "logger.wandb.mode=disabled",
        f"hydra.sweep.dir={sweep}",
    ]
    ok(train(args, timeout=300))
    assert sorted(json.loads(p.read_text())["seed"] for p in sweep.glob("*/run_info.json")) == [0, 1]
    assert list(sweep.glob(".submitit/*/*_log.out"))
