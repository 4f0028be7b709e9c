"""End-to-end tests of the Hydra runners: the real CLI (``python -m experiments.train`` / ``experiments.evaluate``)
in a subprocess with tiny budgets, plus the runners' small parts."""

from __future__ import annotations

import contextlib
import doctest
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import experiments.builders
import experiments.checkpoint
import experiments.config
import experiments.eval_loop
import experiments.metrics
import experiments.schema
from experiments.eval_loop import STATS, run_episodes
from experiments.metrics import read_metrics, truncate_metrics

REPO = Path(__file__).resolve().parent.parent

HELDOUT = ["MiniGrid-Empty-6x6-v0", "MiniGrid-Empty-8x8-v0"]
TINY = [
    "total_frames=256",
    "n_envs=2",
    "eval.episodes=1",
    "eval.every_frames=128",
    "checkpoint.every_frames=128",
    f"env.heldout=[{','.join(HELDOUT)}]",
]
TINY_AGENT = {
    "ppo": ["agent.n_steps=16", "agent.sequence_length=16", "agent.batch_size=32"],
    "a2c": ["agent.n_steps=16"],
}
TINY_MODEL = {
    "lstm": ["model.hidden_size=8"],
    "gru": ["model.hidden_size=8"],
    "rim": ["model.hidden_size=12", "model.num_units=3", "model.k=2"],
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
    return env


def _cli(module: str, args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _train(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return _cli("experiments.train", args, cwd, timeout)


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def _tiny(model: str = "lstm", agent: str = "ppo") -> list[str]:
    return [f"model={model}", f"agent={agent}", *TINY_MODEL[model], *TINY_AGENT[agent], *TINY]


def _keys_by_frames(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    frames: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        for key in row:
            if key != "frames":
                frames[key].append(row["frames"])
    return frames


def _check_no_duplicates(rows: list[dict[str, Any]]) -> None:
    """Every row has an int ``frames``, rows are in frame order, each metric appears once per frame count."""
    assert all(isinstance(row["frames"], int) for row in rows)
    all_frames = [row["frames"] for row in rows]
    assert all_frames == sorted(all_frames)
    for key, frames in _keys_by_frames(rows).items():
        assert all(a < b for a, b in itertools.pairwise(frames)), (key, frames)


#: A core module with an object that is no core: ``forward`` without ``episode_starts``, no ``initial_state``.
NO_SURFACE = """
from torch import nn


class NoSurface(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size, self.linear = hidden_size, nn.Linear(input_size, hidden_size)

    def forward(self, input, hx=None):
        return self.linear(input), hx
"""

#: The README's bring-your-own-core example (the Python block that defines ``MyCore``).
README_CORE = next(
    block
    for block in re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    if "class MyCore" in block
)


def _wandb_bytes(run_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))]


# --- the runners' parts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        experiments.config,
        experiments.metrics,
        experiments.checkpoint,
        experiments.eval_loop,
        experiments.schema,
        experiments.builders,
    ],
)
def test_doctests(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_truncate_metrics_drops_rows_past_the_checkpoint_and_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"frames": 1, "a": 1}\n{"frames": 2, "a": 2}\n{"frames": 3, "a": 3}\n{"frames": 4, "a"')
    assert truncate_metrics(path, 2) == 2
    assert read_metrics(path) == [{"frames": 1, "a": 1}, {"frames": 2, "a": 2}]
    assert truncate_metrics(path, -1) == 0
    assert path.read_text() == ""


class _FixedLengthEnv:
    """A fake VecEnv: sub-env ``i`` ends its episodes after ``i + 1`` steps with reward ``i``."""

    def __init__(self, n: int) -> None:
        self.num_envs = n
        self.t = np.zeros(n, dtype=int)

    def seed(self, seed: int) -> None:
        pass

    def reset(self) -> np.ndarray:
        self.t[:] = 0
        return np.zeros(self.num_envs)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        self.t += 1
        dones = self.t >= np.arange(1, self.num_envs + 1)
        rewards = np.where(dones, np.arange(self.num_envs, dtype=float), 0.0)
        self.t[dones] = 0
        return np.zeros(self.num_envs), rewards, dones, [{} for _ in range(self.num_envs)]


class _CountingModel:
    """A fake recurrent model that records the ``episode_start`` flags it is given."""

    def __init__(self) -> None:
        self.starts: list[np.ndarray] = []

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False) -> Any:
        self.starts.append(np.array(episode_start))
        return np.zeros(len(obs), dtype=int), state


def test_run_episodes_counts_exactly_m_episodes_without_favouring_short_ones() -> None:
    model = _CountingModel()
    episodes = run_episodes(model, _FixedLengthEnv(3), n_episodes=7, deterministic=True, seed=0)  # type: ignore[arg-type]
    # sub-env i counts its first (7 + i) // 3 episodes: 2, 2, 3
    assert sorted(episodes.lengths.tolist()) == [1, 1, 2, 2, 3, 3, 3]
    assert sorted(episodes.returns.tolist()) == [0, 0, 1, 1, 2, 2, 2]
    assert model.starts[0].all()  # the first step starts every episode


def test_eval_targets_qualify_an_env_id_on_both_sides_and_use_each_sides_levels() -> None:
    from envs import Split

    split = Split("layouts", ["A-v0", "B-v0"], ["A-v0", "C-v0"], train_seeds=[0, 1], heldout_seeds=[5])
    made = []
    targets = experiments.eval_loop.eval_targets(split, lambda env_id, seeds: made.append((env_id, seeds)))
    assert [(t.scope, t.name, t.env_id) for t in targets] == [
        ("train", "A-v0@train", "A-v0"),
        ("train", "B-v0", "B-v0"),
        ("heldout", "A-v0@heldout", "A-v0"),
        ("heldout", "C-v0", "C-v0"),
    ]
    assert made == [("A-v0", [0, 1]), ("B-v0", [0, 1]), ("A-v0", [5]), ("C-v0", [5])]


# --- composing configs (no training) ---------------------------------------------------------------------------


def test_experiment_preset_overrides_groups(tmp_path: Path) -> None:
    proc = _train(["experiment=doorkey_rim", "--cfg", "job"], tmp_path)
    _ok(proc)
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["env"]["name"] == "doorkey"
    assert cfg["model"] == {"core": "rim", "hidden_size": 192, "num_units": 6, "k": 4}
    assert cfg["agent"]["algo"] == "ppo"
    assert cfg["total_frames"] == 300000


@pytest.mark.parametrize(("script", "config_key"), [("rims-rl-train", "total_frames"), ("rims-rl-eval", "episodes")])
def test_console_scripts_find_the_configs_from_any_directory(tmp_path: Path, script: str, config_key: str) -> None:
    path = Path(sys.executable).parent / script
    if not path.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    proc = subprocess.run(
        [str(path), "checkpoint=x", "--cfg", "job"] if script == "rims-rl-eval" else [str(path), "--cfg", "job"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    _ok(proc)
    assert config_key in yaml.safe_load(proc.stdout)


@pytest.mark.parametrize(
    ("launcher", "fields"),
    [
        ("parallel", {"n_jobs"}),
        ("slurm", {"partition", "timeout_min", "cpus_per_task", "mem_gb"}),
        ("local", {"timeout_min", "cpus_per_task"}),
    ],
)
def test_launcher_configs_compose(tmp_path: Path, launcher: str, fields: set[str]) -> None:
    proc = _train([f"hydra/launcher={launcher}", "--cfg", "hydra"], tmp_path)
    _ok(proc)
    cfg = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert fields <= set(cfg)
    assert cfg["_target_"].startswith("hydra_plugins.")


# --- bad input: one clear line, non-zero exit, no training -----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["env=nope"], ["'nope'", "doorkey", "empty"]),
        (["model=lsmt"], ["'lsmt'", "gru, lstm, rim"]),
        (["agent=dqn"], ["'dqn'", "a2c, ppo"]),
        (["-m", "model=lstm,lsmt"], ["'lsmt'", "gru, lstm, rim"]),
        (["model=rim", "model.k=7"], ["k=7", "num_units=6"]),
        (["model=rim", "model.hidden_size=100"], ["hidden_size=100", "num_units=6"]),
        (["total_frames=0"], ["total_frames=0", ">= 1"]),
        (["env.train=[MiniGrid-Emptyy-5x5-v0]"], ["'MiniGrid-Emptyy-5x5-v0'", "'MiniGrid-Empty-5x5-v0'"]),
        (["seed=-1"], ["seed=-1", ">= 0"]),
        (["device=tpu"], ["device='tpu'", "cpu, cuda"]),
        (["agent.gamma=1.5"], ["agent.gamma=1.5", "[0, 1]"]),
        (["seeed=1"], ["seeed=1", "did you mean seed?"]),
        (["-m", "seed=0,-2"], ["seed=-2", ">= 0"]),
        (["agent=a2c", "agent.batch_size=64"], ["agent.batch_size=64", "agent.n_steps"]),
        (["+model.hidden_size=64"], ["model.hidden_size is already set", "without the '+'"]),
        (["model.core=no_such_pkg.cores:Core"], ["'no_such_pkg.cores'", "cannot import"]),
        (["model.core=byo_cores:NoCore"], ["'byo_cores'", "no attribute 'NoCore'"]),
        (["model.core=byo_cores:NoSurface"], ["lacks the core surface", "initial_state", "episode_starts"]),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path: Path, args: list[str], expected: list[str]) -> None:
    (tmp_path / "byo_cores.py").write_text(NO_SURFACE)
    proc = _train([*args, "hydra.run.dir=run", "hydra.sweep.dir=sweep"], tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rims-rl-train: error: ")
    for text in expected:
        assert text in lines[0]
    assert not list(tmp_path.rglob("metrics.jsonl"))
    assert not list(tmp_path.rglob("checkpoints"))


def test_wandb_online_without_credentials_fails_instead_of_prompting(tmp_path: Path) -> None:
    env = {**_env(), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config")}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", "logger.wandb.mode=online", "hydra.run.dir=run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "wandb login" in line and "WANDB_API_KEY" in line
    assert not list(tmp_path.rglob("metrics.jsonl"))


# --- training runs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "agent"),
    [
        ("lstm", "ppo"),
        ("rim", "a2c"),
        pytest.param("gru", "ppo", marks=pytest.mark.slow),
        pytest.param("rim", "ppo", marks=pytest.mark.slow),
        pytest.param("lstm", "a2c", marks=pytest.mark.slow),
        pytest.param("gru", "a2c", marks=pytest.mark.slow),
    ],
)
def test_tiny_run_logs_train_and_heldout_metrics(tmp_path: Path, model: str, agent: str) -> None:
    run_dir = tmp_path / "run"
    _ok(_train([*_tiny(model, agent), f"hydra.run.dir={run_dir}"], tmp_path))

    rows = read_metrics(run_dir / "metrics.jsonl")
    _check_no_duplicates(rows)
    keys = set(_keys_by_frames(rows))
    scopes = ["train", "heldout", "MiniGrid-Empty-5x5-v0", *HELDOUT]
    eval_keys = {f"eval/{scope}/{stat}" for scope in scopes for stat in STATS}
    assert eval_keys <= keys
    assert {"time/fps", "train/entropy_loss", "train/value_loss"} <= keys
    evals = [row for row in rows if "eval/train/return_mean" in row]
    assert [row["frames"] for row in evals] == [128, 256]
    assert rows[-1]["frames"] == 256
    activity = {k for k in keys if "unit_activity/" in k}
    if model == "rim":
        names = [f"l0_u{u}" for u in range(3)]
        per_env = {f"eval/{env}/unit_activity/{n}" for env in ["MiniGrid-Empty-5x5-v0", *HELDOUT] for n in names}
        assert activity == {f"eval/unit_activity/{n}" for n in names} | per_env
        assert all(0.0 <= evals[-1][k] <= 1.0 for k in activity)
        # k=2 of 3 units are active at every step, so the fractions of one env sum to 2.
        assert sum(evals[-1][f"eval/{HELDOUT[0]}/unit_activity/{n}"] for n in names) == pytest.approx(2.0)
    else:
        assert not activity

    info = json.loads((run_dir / "run_info.json").read_text())
    label = {"lstm": "lstm8", "gru": "gru8", "rim": "rim12_u3_k2"}[model]
    assert info["model"] == label
    assert info["core"] == model
    assert info["agent"] == agent
    assert info["split"] == "empty"
    assert info["train_envs"] == ["MiniGrid-Empty-5x5-v0"]
    assert info["heldout_envs"] == HELDOUT
    assert info["total_frames"] == 256
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "frames_000000000128",
        "frames_000000000256",
    ]

    (wandb_file,) = _wandb_bytes(run_dir)
    assert info["wandb_id"].encode() in wandb_file
    for key in (
        "eval/train/return_mean",
        "eval/heldout/greedy_success_rate",
        f"eval/{HELDOUT[1]}/length_mean",
        "time/fps",
        "train/entropy_loss",
    ):
        assert key.encode() in wandb_file


def test_bring_your_own_core_from_the_readme_trains(tmp_path: Path) -> None:
    (tmp_path / "my_cores.py").write_text(README_CORE)
    run_dir = tmp_path / "run"
    args = [*_tiny(), "model.core=my_cores:MyCore", "total_frames=128", "logger.wandb.mode=disabled"]
    _ok(_train([*args, f"hydra.run.dir={run_dir}"], tmp_path))
    info = json.loads((run_dir / "run_info.json").read_text())
    assert (info["model"], info["core"]) == ("mycore8", "my_cores:MyCore")
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert "eval/heldout/return_mean" in rows[-1]
    assert not any("unit_activity" in key for row in rows for key in row)


def test_any_core_with_last_active_gets_unit_activity(tmp_path: Path) -> None:
    """Capabilities, not names: a RIM under another name still logs which units were active."""
    (tmp_path / "modular.py").write_text("from rims_rl import RIM\n\n\nclass Modular(RIM):\n    pass\n")
    run_dir = tmp_path / "run"
    args = [*_tiny("rim"), "model.core=modular:Modular", "total_frames=128", "logger.wandb.mode=disabled"]
    _ok(_train([*args, f"hydra.run.dir={run_dir}"], tmp_path))
    assert json.loads((run_dir / "run_info.json").read_text())["model"] == "modular12_u3_k2"
    last = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert {f"eval/unit_activity/l0_u{u}" for u in range(3)} <= set(last)


def test_float_frames_and_wandb_disabled(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*_tiny(), "total_frames=2.56e2", "logger.wandb.mode=disabled", f"hydra.run.dir={run_dir}"]
    _ok(_train(args, tmp_path))
    assert read_metrics(run_dir / "metrics.jsonl")[-1]["frames"] == 256
    assert not (run_dir / "wandb").exists()
    assert not list(tmp_path.rglob("wandb"))


def test_a_new_run_in_an_old_run_dir_replaces_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*_tiny(), f"hydra.run.dir={run_dir}"]
    _ok(_train([*args, "total_frames=256"], tmp_path))
    _ok(_train([*args, "total_frames=128"], tmp_path))
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    rows = read_metrics(run_dir / "metrics.jsonl")
    _check_no_duplicates(rows)
    assert rows[-1]["frames"] == 128 and max(row["frames"] for row in rows) == 128
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["frames_000000000128"]


def test_eval_cli_on_a_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _ok(_train([*_tiny(), "logger.wandb.mode=disabled", f"hydra.run.dir={run_dir}"], tmp_path))
    out = tmp_path / "eval.json"
    checkpoint = run_dir / "checkpoints" / "frames_000000000128"
    args = [
        f"checkpoint={checkpoint}",
        "env=empty",
        "env.heldout=[MiniGrid-Empty-6x6-v0]",
        "episodes=2",
        "n_envs=2",
        f"output={out}",
        "hydra.run.dir=eval",
    ]
    proc = _cli("experiments.evaluate", args, tmp_path)
    _ok(proc)
    result = json.loads(proc.stdout)
    assert result == json.loads(out.read_text())
    assert result["frames"] == 128
    assert result["model"] == "lstm8"
    assert {f"eval/{scope}/{stat}" for scope in ("train", "heldout", "MiniGrid-Empty-6x6-v0") for stat in STATS} <= set(
        result["metrics"]
    )
    # a run directory means its latest checkpoint; no env= means the run's own split
    proc = _cli("experiments.evaluate", [f"checkpoint={run_dir}", "episodes=1", "hydra.run.dir=eval2"], tmp_path)
    _ok(proc)
    result = json.loads(proc.stdout)
    assert result["frames"] == 256
    assert f"eval/{HELDOUT[1]}/return_mean" in result["metrics"]


@pytest.mark.slow
def test_multirun_basic_launcher(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "model=lstm,gru",
        "seed=0,1",
        *TINY_AGENT["ppo"],
        *TINY,
        "model.hidden_size=8",
        "total_frames=64",
        "eval.every_frames=64",
        f"hydra.sweep.dir={sweep}",
    ]
    _ok(_train(args, tmp_path, timeout=300))
    infos = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/run_info.json"))]
    assert len(infos) == 4
    assert sorted((i["model"], i["seed"]) for i in infos) == [("gru8", 0), ("gru8", 1), ("lstm8", 0), ("lstm8", 1)]
    assert {i["wandb_group"] for i in infos} == {"sweep"}
    assert len({i["wandb_id"] for i in infos}) == 4
    for run_dir in sweep.glob("*/"):
        if (run_dir / "run_info.json").exists():
            assert "eval/heldout/return_mean" in read_metrics(run_dir / "metrics.jsonl")[-1]


@pytest.mark.slow
def test_multirun_submitit_local_launcher(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=local",
        "seed=0,1",
        *TINY_AGENT["ppo"],
        *TINY,
        "model.hidden_size=8",
        "total_frames=64",
        "eval.every_frames=64",
        "logger.wandb.mode=disabled",
        f"hydra.sweep.dir={sweep}",
    ]
    _ok(_train(args, tmp_path, timeout=300))
    assert sorted(json.loads(p.read_text())["seed"] for p in sweep.glob("*/run_info.json")) == [0, 1]
    assert list(sweep.glob(".submitit/*/*_log.out"))


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    total = 4096
    args = [
        *_tiny(),
        f"total_frames={total}",
        "checkpoint.every_frames=256",
        "eval.every_frames=1024",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *args],
        cwd=tmp_path,
        env=_env(),
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
    from experiments.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.frames < total
    before = [row for row in read_metrics_lenient(run_dir / "metrics.jsonl") if row["frames"] <= checkpoint.frames]

    _ok(_train([f"resume={run_dir}", "hydra.run.dir=resume_cmd"], tmp_path, timeout=180))

    rows = read_metrics(run_dir / "metrics.jsonl")
    _check_no_duplicates(rows)
    assert rows[: len(before)] == before  # nothing logged before the checkpoint was lost or changed
    assert rows[-1]["frames"] >= total
    assert [row["frames"] for row in rows if "eval/heldout/return_mean" in row] == [1024, 2048, 3072, 4096]
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
