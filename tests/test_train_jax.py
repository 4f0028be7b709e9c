"""``rims-rl-train backend=jax``: the JAX backend's runner, through the real CLI (navix envs, jitted updates, W&B
offline): several seeds in one job, the torch backend's run directory and metric keys, resume after SIGKILL,
the report, and one-line errors before anything is compiled."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import Run, check_no_duplicates, clean_env, ok, wandb_bytes

import rims_rl.experiments.report
from rims_rl.experiments.eval_loop import STATS
from rims_rl.experiments.metrics import OVERRIDES_FILE, read_metrics

pytest.importorskip("navix")

PER_UPDATE = 32  # n_envs x n_steps
TOTAL = 3 * PER_UPDATE
JOB = [
    "backend=jax",
    "env=distshift",
    "model=lstm",
    "model.hidden_size=8",
    "n_envs=2",
    "agent.n_steps=16",
    "agent.sequence_length=16",
    "agent.batch_size=32",
    f"total_frames={TOTAL}",
    f"eval.every_frames={PER_UPDATE}",
    "eval.episodes=1",
    "eval.final_episodes=2",
    f"checkpoint.every_frames={PER_UPDATE}",
    "seeds_per_job=2",
    "seed=3",
]
SEEDS = (3, 4)


#: Wall-clock timings, the only values a resumed job may log differently.
TIMINGS = ("time/fps", "time/eval_seconds")


def _without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


@pytest.mark.slow
def test_two_seeds_in_one_job_write_torch_run_dirs_resume_after_sigkill_and_report(tmp_path: Path, train: Run) -> None:
    job = tmp_path / "job"
    ok(train([*JOB, f"hydra.run.dir={job}"], timeout=900))

    # Each seed: a single-seed run directory with the torch backend's files and metric keys.
    finals = []
    for seed in SEEDS:
        run_dir = job / f"seed_{seed}"
        info = json.loads((run_dir / "run_info.json").read_text())
        assert (info["backend"], info["seed"], info["model"]) == ("jax", seed, "lstm8")
        assert (info["train_envs"], info["heldout_envs"]) == (["MiniGrid-DistShift1-v0"], ["MiniGrid-DistShift2-v0"])
        assert "seeds_per_job: 1" in (run_dir / ".hydra" / "config.yaml").read_text()
        assert (run_dir / OVERRIDES_FILE).read_text() == (job / OVERRIDES_FILE).read_text()  # for --label-by
        rows = read_metrics(run_dir / "metrics.jsonl")
        check_no_duplicates(rows)
        updates = [row["frames"] for row in rows if "train/value_loss" in row]
        assert updates == [PER_UPDATE, 2 * PER_UPDATE, TOTAL]
        evals = [row for row in rows if "eval/train/return_mean" in row]
        assert [row["frames"] for row in evals] == updates
        scopes = ("train", "heldout", "MiniGrid-DistShift1-v0", "MiniGrid-DistShift2-v0")
        assert {f"eval/{scope}/{stat}" for scope in scopes for stat in STATS} <= set(evals[0])
        assert [row.get("eval/final") for row in evals] == [None, None, 1]
        assert [row["eval/episodes"] for row in evals] == [1, 1, 2]
        assert [c.name for c in sorted((run_dir / "checkpoints").iterdir())] == [f"frames_{f:012d}" for f in updates]
        assert all(b"eval/heldout/return_mean" in data for data in wandb_bytes(run_dir))
        assert not (run_dir / "selection").exists() and not (run_dir / "selection_raster.png").exists()  # an LSTM
        finals.append(evals[-1])
    assert finals[0] != finals[1]  # the seeds are different runs

    # Killed after its first checkpoint, resumed: the same rows as the uninterrupted job, none lost or duplicated.
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rims_rl.experiments.train", *JOB, f"hydra.run.dir={killed}"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while not (killed / f"seed_{SEEDS[-1]}" / "checkpoints" / f"frames_{PER_UPDATE:012d}").exists():
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ok(train([f"resume={killed}", "hydra.run.dir=resume_cmd"], timeout=900))
    for seed in SEEDS:
        expected = read_metrics(job / f"seed_{seed}" / "metrics.jsonl")
        assert _without_timings(read_metrics(killed / f"seed_{seed}" / "metrics.jsonl")) == _without_timings(expected)

    # The report reads them as two seeds of one model, the backend in the label when backends are mixed.
    rims_rl.experiments.report.main([str(job), "--reps", "50"])
    final_csv = (job / "report" / "distshift_final.csv").read_text().splitlines()
    assert any(line.startswith("lstm8,") and ",2," in line for line in final_csv), final_csv


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["env=multiroom"], "split 'multiroom' has no jax env ids; run it with backend=torch"),
        (["model=rim_set"], "model.features='set' is invalid with backend=jax; expected vector"),
        (["+agent.shift_chunks=true"], "agent.shift_chunks=true is invalid with backend=jax; expected false"),
        (["agent.batch_size=48"], "agent ppo (backend=jax): expected batch_size to be a multiple of"),
        (["model=rim", "+model.communication=authors"], "expected core_kwargs accepted by the JAX core 'rim'"),
        (["env.heldout=[MiniGrid-Empty-6x6-v0]"], "expected one jax env id per env id (override env.jax.heldout too)"),
    ],
)
def test_bad_jax_input_fails_in_one_line_before_compiling(train: Run, args: list[str], message: str) -> None:
    proc = train(["backend=jax", *args])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_selection_statistics_pool_the_steps_of_both_modes_as_the_torch_backend_does() -> None:
    import numpy as np

    from rims_rl.experiments.eval_loop import set_entropy
    from rims_rl.experiments.train_jax import _selection_metrics

    def counts(sets: list[list[bool]], switches: int) -> dict:
        """The counts rims_rl.agents.jax.ppo.evaluate returns for one episode of these active sets (one layer, 2
        units)."""
        active = np.array(sets)
        index = (active * [1, 2]).sum(-1)
        return {
            "active_steps": active.sum(0)[None].astype(float),
            "steps": len(sets),
            "switches": switches,
            "pairs": len(sets) - 1,
            "set_counts": np.bincount(index, minlength=4)[None].astype(float),
        }

    sampled, greedy = [[True, False], [True, False]], [[False, True], [True, False]]
    metrics = _selection_metrics("eval/x", [(counts(sampled, 0), counts(greedy, 1))])
    assert metrics["eval/x/unit_activity/l0_u0"] == 0.75 and metrics["eval/x/unit_activity/l0_u1"] == 0.25
    assert metrics["eval/x/switch_rate"] == 0.5
    every_step = np.array(sampled + greedy)[:, None]  # (N, L, U), as the torch backend's SelectionStats keeps them
    assert metrics["eval/x/selection_entropy"] == pytest.approx(set_entropy(every_step))
    assert _selection_metrics("eval/x", [({"returns": 0}, {"returns": 0})]) == {}  # a core without units


def test_rims_rl_eval_of_a_jax_run_fails_in_one_line(tmp_path: Path, run_cli: Run) -> None:
    from omegaconf import OmegaConf

    from rims_rl.experiments.checkpoint import TRAIN_STATE_FILE, write_checkpoint

    run_dir = tmp_path / "jax_run"  # what a backend=jax run leaves: its config and a train-state checkpoint
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"backend": "jax", "env": {"name": "distshift"}}), run_dir / ".hydra" / "config.yaml"
    )
    write_checkpoint(run_dir, 32, lambda path: (path / TRAIN_STATE_FILE).write_bytes(b""), backend="jax")
    proc = run_cli("rims_rl.experiments.evaluate", [f"checkpoint={run_dir}"])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a backend=jax checkpoint; rims-rl-eval evaluates torch runs" in lines[0], lines
