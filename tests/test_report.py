"""Tests of ``rims-rl-report`` (:mod:`experiments.report`), of the published numbers and of the presets it pairs with.

Hand-written ``metrics.jsonl`` / ``run_info.json`` files (real input files, in the runner's format) check the
numbers exactly; a slow test makes real run directories with the training CLI and reports on them.
"""

from __future__ import annotations

import csv
import doctest
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import experiments.published
import experiments.report
import experiments.report.cli
import experiments.report.figures
import experiments.report.markdown
import experiments.report.options
import experiments.report.runs
import experiments.report.stats
import experiments.report.tables
from experiments.published import DIDO_TABLE
from experiments.report import Run, mean_curve

REPO = Path(__file__).resolve().parent.parent
TRAIN = ["MiniGrid-Empty-5x5-v0"]
HELDOUT = ["MiniGrid-Empty-6x6-v0", "MiniGrid-Empty-16x16-v0"]
STATS = ("return_mean", "success_rate", "greedy_return_mean", "greedy_success_rate")
REPS = "50"  # bootstrap resamples: enough to exercise the CIs, fast on a shared CPU


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
    env.update(extra)
    return env


def _cli(module: str, args: list[str], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def _value(model: str, seed: int, frames: int, scope: str, stat: str) -> float:
    """A deterministic, distinct score for every (model, seed, frames, scope, stat)."""
    scopes = ["train", "heldout", *TRAIN, *HELDOUT]
    base = {"lstm64": 0.2, "rim64_u4_k3": 0.5}.get(model, 0.3)
    return round(base + 0.05 * seed + frames / 1e4 + 0.01 * scopes.index(scope) + 0.001 * STATS.index(stat), 6)


def write_run(
    path: Path,
    model: str,
    seed: int,
    eval_frames: list[int],
    split: str = "empty",
    wandb_id: str | None = None,
    agent: str = "ppo",
) -> None:
    """A run directory in the runner's format: SB3 rows between eval rows, every eval key of the contract."""
    path.mkdir(parents=True)
    info = {
        "split": split,
        "model": model,
        "core": model[:3] if model.startswith("rim") else "lstm",
        "agent": agent,
        "seed": seed,
        "train_envs": TRAIN,
        "heldout_envs": HELDOUT,
        "total_frames": eval_frames[-1],
        "wandb_id": wandb_id,
    }
    (path / "run_info.json").write_text(json.dumps(info, indent=2))
    rows: list[dict[str, Any]] = []
    for frames in eval_frames:
        rows.append({"frames": frames - 16, "rollout/ep_rew_mean": 0.1, "time/fps": 100.0})
        row: dict[str, Any] = {"frames": frames}
        for scope in ["train", "heldout", *TRAIN, *HELDOUT]:
            for stat in STATS:
                row[f"eval/{scope}/{stat}"] = _value(model, seed, frames, scope, stat)
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_sweep(root: Path, seeds: int = 2, wandb: bool = False) -> Path:
    """Two models x ``seeds`` seeds on the ``empty`` split, evaluated at 100, 200, 300 frames."""
    sweep = root / "sweep"
    for i, model in enumerate(["lstm64", "rim64_u4_k3"]):
        for seed in range(seeds):
            write_run(
                sweep / str(i * seeds + seed), model, seed, [100, 200, 300], wandb_id=f"w{i}{seed}" if wandb else None
            )
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def final_row(rows: list[dict[str, str]], model: str, scope: str, stat: str) -> dict[str, str]:
    (row,) = [r for r in rows if (r["model"], r["scope"], r["stat"]) == (model, scope, stat)]
    return row


# --- small parts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        experiments.report,
        experiments.report.cli,
        experiments.report.figures,
        experiments.report.markdown,
        experiments.report.options,
        experiments.report.runs,
        experiments.report.stats,
        experiments.report.tables,
        experiments.published,
    ],
)
def test_doctests(module: Any) -> None:
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_rliable_imports() -> None:
    from rliable import library, metrics

    assert callable(library.get_interval_estimates) and callable(metrics.aggregate_iqm)


def test_mean_curve_interpolates_onto_common_frames_and_bands_contain_the_mean() -> None:
    seeds = [
        (np.array([10.0, 20.0, 30.0]), np.array([0.0, 1.0, 2.0])),
        (np.array([12.0, 22.0, 32.0]), np.array([1.0, 1.0, 1.0])),
    ]
    band = mean_curve(seeds, reps=200, rng=np.random.default_rng(0))
    assert band is not None and band.n == 2
    assert band.frames.tolist() == [12.0, 20.0, 22.0, 30.0]  # the frames both seeds cover
    assert np.allclose(band.mean, [(0.2 + 1) / 2, 1.0, (1.2 + 1) / 2, (2 + 1) / 2])
    assert np.all(band.low <= band.mean + 1e-12) and np.all(band.mean <= band.high + 1e-12)
    single = mean_curve(seeds[:1], reps=10, rng=np.random.default_rng(0))
    assert single is not None and single.n == 1 and np.array_equal(single.low, single.high)


def test_final_is_last_eval_or_mean_of_last_n(tmp_path: Path) -> None:
    write_run(tmp_path / "r", "lstm64", 0, [100, 200, 300])
    run = experiments.report.load_run(tmp_path / "r")
    key = "eval/heldout/return_mean"
    assert run.final(key) == _value("lstm64", 0, 300, "heldout", "return_mean")
    expected = np.mean([_value("lstm64", 0, f, "heldout", "return_mean") for f in (200, 300)])
    assert run.final(key, final_evals=2) == pytest.approx(expected)
    assert isinstance(run, Run) and run.last_eval_frames == 300


def test_published_numbers_cover_the_dido_table() -> None:
    assert set(DIDO_TABLE.values) == {"empty", "multiroom", "doorkey"}
    assert DIDO_TABLE.values["multiroom"]["MiniGrid-MultiRoom-N4-S5-v1"] == {
        "rim64_u4_k3": 0.66,
        "rim64_u4_k2": 0.10,
        "lstm64": 0.04,
    }
    assert DIDO_TABLE.values["doorkey"]["MiniGrid-DoorKey-16x16-v0"]["rim64_u4_k2"] == 0.13
    for by_env in DIDO_TABLE.values.values():
        for by_model in by_env.values():
            assert set(by_model) == {"lstm64", "rim64_u4_k3", "rim64_u4_k2"}


# --- the CLI on hand-written runs ----------------------------------------------------------------------------------


def test_report_cli_on_handwritten_runs(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    proc = _cli("experiments.report", [str(sweep), "--reps", REPS], tmp_path)
    _ok(proc)
    out = sweep / "report"
    assert proc.stdout.strip() == str(out / "report.md")
    for name in ("empty_return", "empty_success"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert (out / f"{name}.svg").read_text().lstrip().startswith("<?xml")

    rows = read_csv(out / "empty_final.csv")
    assert {r["model"] for r in rows} == {"lstm64", "rim64_u4_k3"}
    for model in ("lstm64", "rim64_u4_k3"):
        for scope, stat, name in [
            ("train", "return", "return_mean"),
            ("heldout", "return", "return_mean"),
            ("heldout", "success", "success_rate"),
            ("MiniGrid-Empty-16x16-v0", "return", "return_mean"),
        ]:
            row = final_row(rows, model, scope, stat)
            finals = [_value(model, seed, 300, scope, name) for seed in (0, 1)]
            assert int(row["n_seeds"]) == 2
            assert float(row["mean"]) == pytest.approx(np.mean(finals))
            assert float(row["iqm_low"]) <= float(row["iqm"]) <= float(row["iqm_high"])
            assert min(finals) - 1e-9 <= float(row["iqm_low"]) and float(row["iqm_high"]) <= max(finals) + 1e-9
    assert float(final_row(rows, "lstm64", "MiniGrid-Empty-16x16-v0", "return")["published"]) == 0.84
    assert final_row(rows, "lstm64", "MiniGrid-Empty-6x6-v0", "return")["published"] == ""

    (improvement,) = [r for r in read_csv(out / "empty_improvement.csv") if r["stat"] == "return"]
    assert (improvement["x"], improvement["y"]) == ("rim64_u4_k3", "lstm64")
    assert float(improvement["probability"]) == 1.0  # every rim score is above every lstm score here

    md = (out / "report.md").read_text()
    assert "![empty return](empty_return.png)" in md
    assert "Published vs ours: dido_table" in md
    assert "| `Empty-16x16` | `lstm64` | 0.84 |" in md
    assert "| `Empty-5x5` | `rim64_u4_k2` | 0.92 | — |" in md  # a published model without runs
    assert "`rim64_u4_k3` | `lstm64` | return | 1.000" in md
    assert md.count("| `lstm64` | ppo |") == 2 and "300" in md


def test_greedy_final_evals_single_seed_and_split_without_published(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    write_run(sweep / "a", "lstm64", 0, [100, 200, 300], split="other")
    write_run(sweep / "b", "rim64_u4_k3", 3, [100, 200, 300], split="other")
    out = tmp_path / "out"
    experiments.report.main([str(sweep), "--out", str(out), "--greedy", "--final-evals", "2", "--reps", REPS])
    row = final_row(read_csv(out / "other_final.csv"), "lstm64", "heldout", "return")
    expected = np.mean([_value("lstm64", 0, f, "heldout", "greedy_return_mean") for f in (200, 300)])
    assert float(row["mean"]) == pytest.approx(expected)
    assert row["iqm"] == row["iqm_low"] == row["iqm_high"] and row["n_seeds"] == "1"
    md = (out / "report.md").read_text()
    assert "greedy-action" in md and "mean of its last 2 evaluations" in md
    assert "n=1, no CI" in md
    assert "Published vs ours" not in md


def test_several_dirs_and_nested_runs(tmp_path: Path) -> None:
    write_run(tmp_path / "a" / "deep" / "er" / "0", "lstm64", 0, [100, 200])
    write_run(tmp_path / "b" / "0", "lstm64", 1, [100, 200])
    write_run(tmp_path / "b" / "1", "lstm64", 2, [100, 200], agent="a2c")
    experiments.report.main([str(tmp_path / "a"), str(tmp_path / "b"), "--reps", REPS])
    rows = read_csv(tmp_path / "a" / "report" / "empty_final.csv")
    assert {r["model"] for r in rows} == {"lstm64 (ppo)", "lstm64 (a2c)"}  # agents mixed: labelled apart
    assert final_row(rows, "lstm64 (ppo)", "train", "return")["n_seeds"] == "2"


@pytest.mark.parametrize("case", ["empty", "missing", "no_eval"])
def test_dir_without_runs_fails_with_one_clear_line(tmp_path: Path, case: str) -> None:
    target = tmp_path / "nothing"
    if case != "missing":
        target.mkdir()
        (target / "notes.txt").write_text("not a run")
    if case == "no_eval":
        write_run(target / "0", "lstm64", 0, [100])
        lines = (target / "0" / "metrics.jsonl").read_text().splitlines()
        (target / "0" / "metrics.jsonl").write_text(lines[0] + "\n")  # an SB3 row only
    proc = _cli("experiments.report", [str(target)], tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "warning" not in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rims-rl-report: error: ") and str(target) in lines[0]
    assert not (target / "report").exists()


def test_wandb_logs_figures_and_tables_offline(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, wandb=True)
    proc = _cli("experiments.report", [str(sweep), "--reps", REPS, "--wandb"], tmp_path, WANDB_MODE="offline")
    _ok(proc)
    (run_file,) = (sweep / "report" / "wandb").glob("offline-run-*/run-*.wandb")
    data = run_file.read_bytes()
    for name in (b"report/empty_return", b"report/empty_final", b"report/empty_improvement", b"w10", b"report"):
        assert name in data


def test_wandb_without_ids_warns_and_writes_the_report(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    proc = _cli("experiments.report", [str(sweep), "--reps", REPS, "--wandb"], tmp_path, WANDB_MODE="offline")
    _ok(proc)
    assert "no run has a W&B id" in proc.stderr
    assert (sweep / "report" / "report.md").exists() and not (sweep / "report" / "wandb").exists()


# --- presets ------------------------------------------------------------------------------------------------------


def _job_cfg(args: list[str], tmp_path: Path) -> dict[str, Any]:
    proc = _cli("experiments.train", [*args, "--cfg", "job"], tmp_path, timeout=120)
    _ok(proc)
    return yaml.safe_load(proc.stdout)


@pytest.mark.parametrize(
    ("experiment", "split", "frames"),
    [("dido_empty", "empty", 80000), ("dido_multiroom", "multiroom", 1000000), ("dido_doorkey", "doorkey", 300000)],
)
def test_dido_presets(tmp_path: Path, experiment: str, split: str, frames: int) -> None:
    cfg = _job_cfg([f"experiment={experiment}", "model=dido_rim_k2"], tmp_path)
    assert cfg["env"]["name"] == split and cfg["total_frames"] == frames
    assert cfg["model"] == {"core": "rim", "hidden_size": 64, "num_units": 4, "k": 2}
    agent = cfg["agent"]
    assert cfg["n_envs"] == 16
    assert (agent["algo"], agent["n_steps"], agent["batch_size"], agent["n_epochs"]) == ("ppo", 128, 256, 4)
    assert (agent["learning_rate"], agent["sequence_length"], agent["gamma"], agent["gae_lambda"]) == (
        1e-4,
        32,
        0.99,
        0.95,
    )
    assert (agent["ent_coef"], agent["clip_range"], agent["max_grad_norm"]) == (0.01, 0.2, 0.5)
    assert set(DIDO_TABLE.values[split]) <= set(cfg["env"]["train"] + cfg["env"]["heldout"])
    default_model = _job_cfg([f"experiment={experiment}"], tmp_path)["model"]
    assert default_model == {"core": "lstm", "hidden_size": 64}


def test_dido_model_labels_match_the_published_keys() -> None:
    from experiments.config import model_label

    labels = set()
    for name in ("dido_lstm", "dido_rim_k3", "dido_rim_k2"):
        model = yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text())
        labels.add(model_label(model.pop("core"), model))
    assert labels == {"lstm64", "rim64_u4_k3", "rim64_u4_k2"}


@pytest.mark.parametrize(
    ("experiment", "split", "mission"),
    [("paper_novel_distractors", "novel_distractors", "gru"), ("paper_multiroom", "multiroom", None)],
)
def test_paper_minigrid_presets(tmp_path: Path, experiment: str, split: str, mission: str | None) -> None:
    cfg = _job_cfg([f"experiment={experiment}", "model=rim"], tmp_path)
    agent = cfg["agent"]
    assert cfg["env"]["name"] == split
    assert (agent["algo"], agent["learning_rate"]) == ("a2c", 7e-4)
    assert agent["policy_kwargs"]["net_arch"] == {"pi": [128, 128], "vf": [128, 128, 128]}
    assert agent["policy_kwargs"]["features_extractor_kwargs"].get("mission_encoder") == mission


def test_cpu_small_budget_scales_frames(tmp_path: Path) -> None:
    cfg = _job_cfg(["experiment=dido_doorkey", "budget=cpu_small"], tmp_path)
    assert cfg["budget"] == {"frames_scale": 0.1}
    assert _job_cfg([], tmp_path)["budget"] == {"frames_scale": 1.0}
    run_dir = tmp_path / "run"
    args = [
        "model=lstm",
        "model.hidden_size=8",
        "agent.n_steps=16",
        "agent.sequence_length=16",
        "agent.batch_size=32",
        "n_envs=2",
        "total_frames=1280",
        "eval.every_frames=640",
        "checkpoint.every_frames=1280",
        "budget=cpu_small",
        "eval.episodes=1",
        f"env.heldout=[{HELDOUT[0]}]",
        "logger.wandb.mode=disabled",
        f"hydra.run.dir={run_dir}",
    ]
    _ok(_cli("experiments.train", args, tmp_path, timeout=120))
    assert json.loads((run_dir / "run_info.json").read_text())["total_frames"] == 128
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["frames"] for r in rows if "eval/train/return_mean" in r] == [64, 128]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["frames_000000000128"]


# --- the CLI on real runs ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_on_real_tiny_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "env=empty",
        "model=lstm,rim",
        "model.hidden_size=12",
        "seed=0,1",
        "agent.n_steps=16",
        "agent.sequence_length=16",
        "agent.batch_size=32",
        "n_envs=2",
        "total_frames=256",
        "eval.every_frames=128",
        "eval.episodes=1",
        "checkpoint.every_frames=256",
        f"env.heldout=[{HELDOUT[1]}]",
        f"hydra.sweep.dir={sweep}",
    ]
    _ok(_cli("experiments.train", args, tmp_path, timeout=600, WANDB_MODE="offline"))
    infos = {p.parent: json.loads(p.read_text()) for p in sweep.glob("*/run_info.json")}
    assert len(infos) == 4

    out = tmp_path / "report"
    script = Path(sys.executable).parent / "rims-rl-report"  # the console script, when the package is installed
    command = [str(script)] if script.exists() else [sys.executable, "-m", "experiments.report"]
    proc = subprocess.run(
        [*command, str(sweep), "--out", str(out), "--reps", REPS, "--wandb"],
        cwd=tmp_path,
        env=_env(WANDB_MODE="offline"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    _ok(proc)
    for name in ("empty_return.png", "empty_return.svg", "empty_success.png", "report.md", "empty_final.csv"):
        assert (out / name).exists(), name
    # The sweep has a RIM model: its activation patterns come as a figure, embedded in the report.
    assert (out / "empty_unit_activity.png").stat().st_size > 1000
    assert "(empty_unit_activity.png)" in (out / "report.md").read_text()
    rows = read_csv(out / "empty_final.csv")
    labels = {info["model"] for info in infos.values()}
    assert {r["model"] for r in rows} == labels and len(labels) == 2
    for label in labels:
        finals = [
            [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if "eval/heldout" in line][
                -1
            ]["eval/heldout/return_mean"]
            for path, info in infos.items()
            if info["model"] == label
        ]
        row = final_row(rows, label, "heldout", "return")
        assert row["n_seeds"] == "2"
        assert float(row["mean"]) == pytest.approx(np.mean(finals))
    md = (out / "report.md").read_text()
    assert "Published vs ours: dido_table" in md and "0.84" in md
    for info in infos.values():
        assert info["wandb_id"] in md
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))
