"""Training runs through the real CLI (``python -m experiments.train``) with tiny budgets, evaluation with
``rims-rl-eval``, and the runners' small parts."""

from __future__ import annotations

import doctest
import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from helpers import (
    HELDOUT,
    REPO,
    TINY,
    TINY_AGENT,
    TINY_MODEL,
    Run,
    check_no_duplicates,
    keys_by_frames,
    ok,
    wandb_bytes,
)

import experiments.builders
import experiments.checkpoint
import experiments.eval_loop
import experiments.metrics
from experiments.eval_loop import STATS, EvalTarget, evaluate, run_episodes
from experiments.metrics import read_metrics, truncate_metrics


@pytest.mark.parametrize(
    "module", [experiments.metrics, experiments.checkpoint, experiments.eval_loop, experiments.builders]
)
def test_doctests(module: Any) -> None:
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


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


class _Core:
    """A fake core that reports units: ``last_active`` ``(1, B, L, U)``."""

    last_active: torch.Tensor | None = None


class _ScriptedSelectionModel:
    """A fake recurrent model whose core (one layer, three units) has unit set ``0, 1`` or ``1, 2`` active: it
    flips a sub-env's set at every step, or (``flip_at_starts``) only when the sub-env's episode starts."""

    def __init__(self, flip_at_starts: bool) -> None:
        self.flip_at_starts = flip_at_starts
        self.policy = SimpleNamespace(core=_Core())
        self.flips: np.ndarray | None = None

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False) -> Any:
        flip = np.asarray(episode_start, dtype=bool) if self.flip_at_starts else np.ones(len(obs), dtype=bool)
        self.flips = flip.astype(int) if self.flips is None else self.flips + flip
        sets = np.array([[True, True, False], [False, True, True]])
        self.policy.core.last_active = torch.as_tensor(sets[self.flips % 2])[None, :, None]  # (1, B, 1, 3)
        return np.zeros(len(obs), dtype=int), state


@pytest.mark.parametrize(("flip_at_starts", "switch_rate"), [(False, 1.0), (True, 0.0)])
def test_switch_rate_counts_changes_within_episodes_and_not_at_resets(flip_at_starts: bool, switch_rate: float) -> None:
    """Sub-env i plays episodes of i + 1 steps, two counted each (6 episodes over 3 sub-envs). Either sets
    alternate at every step (every pair within an episode switches) or change only where an episode starts
    (a reset is not a switch); either way each set is active on 6 of the 12 counted steps: 1 bit."""
    model = _ScriptedSelectionModel(flip_at_starts)
    metrics = evaluate(model, [EvalTarget("train", "A", "A", _FixedLengthEnv(3))], n_episodes=6, seed=0)  # type: ignore[list-item]
    for scope in ("A", "train"):
        assert metrics[f"eval/{scope}/switch_rate"] == switch_rate
        assert metrics[f"eval/{scope}/selection_entropy"] == pytest.approx(1.0)
        activity = [metrics[f"eval/{scope}/unit_activity/l0_u{u}"] for u in range(3)]
        assert activity == [0.5, 1.0, 0.5]
    assert metrics["eval/switch_rate"] == switch_rate


def test_a_fixed_set_has_no_switches_and_no_entropy() -> None:
    core = _Core()
    stats = experiments.eval_loop.SelectionStats(core)
    for t in range(5):
        core.last_active = torch.tensor([[[[True, False, True, False]], [[False, True, True, False]]]])  # (1, 2, 1, 4)
        stats.update(np.array([True, True]), np.array([t == 0, t == 3]))
    metrics = stats.metrics("eval/x")
    # Two samples, two episodes of sample 1: 4 + 3 pairs; sample 0 always has {0, 2}, sample 1 {1, 2}.
    assert stats.switches == experiments.eval_loop.Switches(0, 7)
    assert metrics["eval/x/switch_rate"] == 0.0
    assert metrics["eval/x/selection_entropy"] == pytest.approx(1.0)  # two fixed sets, equally often
    one = experiments.eval_loop.SelectionStats(core)
    one.update(np.array([True, False]), np.array([True, True]))
    assert one.metrics("eval/y")["eval/y/selection_entropy"] == 0.0  # one set only
    assert "eval/y/switch_rate" not in one.metrics("eval/y")  # no pair of steps yet


def test_set_entropy_is_the_entropy_of_the_active_sets_per_layer() -> None:
    a, b, c = [True, True, False, False], [False, True, True, False], [False, False, True, True]
    uniform = np.array([[a], [b], [c], [a], [b], [c]])  # (6, 1, 4): three sets, equally often
    assert experiments.eval_loop.set_entropy(uniform) == pytest.approx(np.log2(3))
    # Layer 0: a three times, b once; layer 1: always c (0 bits). The units' own activity does not matter:
    # b and c have unit 2 in common, a and b unit 1.
    skewed = np.array([[a, c], [a, c], [b, c], [a, c]])  # (4, 2, 4)
    expected = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)) / 2
    assert experiments.eval_loop.set_entropy(skewed) == pytest.approx(expected)
    assert experiments.eval_loop.set_entropy(np.packbits(skewed, axis=-1)) == pytest.approx(expected)


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
def test_tiny_run_logs_train_and_heldout_metrics(
    tmp_path: Path, model: str, agent: str, train: Run, tiny: Callable[..., list[str]]
) -> None:
    run_dir = tmp_path / "run"
    ok(train([*tiny(model, agent), f"hydra.run.dir={run_dir}"]))

    rows = read_metrics(run_dir / "metrics.jsonl")
    check_no_duplicates(rows)
    keys = set(keys_by_frames(rows))
    scopes = ["train", "heldout", "MiniGrid-Empty-5x5-v0", *HELDOUT]
    eval_keys = {f"eval/{scope}/{stat}" for scope in scopes for stat in STATS}
    assert eval_keys <= keys
    assert {"time/fps", "train/entropy_loss", "train/value_loss"} <= keys
    evals = [row for row in rows if "eval/train/return_mean" in row]
    assert [row["frames"] for row in evals] == [128, 256]
    # Episodes per env id: eval.episodes=1 on the curve, eval.final_episodes=2 in the final evaluation (the last row).
    assert [(row["eval/episodes"], row.get("eval/final")) for row in evals] == [(1, None), (2, 1)]
    assert rows[-1]["frames"] == 256
    activity = {k for k in keys if "unit_activity/" in k}
    selection = {k for k in keys if k.endswith(("/switch_rate", "/selection_entropy"))}
    if model == "rim":
        names = [f"l0_u{u}" for u in range(3)]
        prefixes = ["eval", *[f"eval/{scope}" for scope in scopes]]
        assert activity == {f"{prefix}/unit_activity/{n}" for prefix in prefixes for n in names}
        assert all(0.0 <= evals[-1][k] <= 1.0 for k in activity)
        # k=2 of 3 units are active at every step, so the fractions of one env sum to 2.
        assert sum(evals[-1][f"eval/{HELDOUT[0]}/unit_activity/{n}"] for n in names) == pytest.approx(2.0)
        assert selection == {f"{prefix}/{stat}" for prefix in prefixes for stat in ("switch_rate", "selection_entropy")}
        assert all(0.0 <= evals[-1][f"{prefix}/switch_rate"] <= 1.0 for prefix in prefixes)
        assert all(0.0 <= evals[-1][f"{prefix}/selection_entropy"] <= np.log2(3) for prefix in prefixes)
        # One episode's raster on the first train and the first held-out env.
        assert sorted(p.name for p in (run_dir / "selection").iterdir()) == [
            "MiniGrid-Empty-5x5-v0.json",
            f"{HELDOUT[0]}.json",
        ]
        episode = json.loads((run_dir / "selection" / f"{HELDOUT[0]}.json").read_text())
        assert episode["scope"] == "heldout" and np.array(episode["active"]).sum(axis=-1).tolist() == [
            [2] for _ in episode["active"]
        ]
        assert episode["events"][-1] == {"step": len(episode["active"]) - 1, "event": "end"}
        assert (run_dir / "selection_raster.png").stat().st_size > 1000
    else:
        assert not activity and not selection
        assert not (run_dir / "selection").exists() and not (run_dir / "selection_raster.png").exists()

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

    (wandb_file,) = wandb_bytes(run_dir)
    assert info["wandb_id"].encode() in wandb_file
    for key in (
        "eval/train/return_mean",
        "eval/heldout/greedy_success_rate",
        f"eval/{HELDOUT[1]}/length_mean",
        "time/fps",
        "train/entropy_loss",
    ):
        assert key.encode() in wandb_file


#: The docs' bring-your-own-core example (the Python block of ``docs/cores/custom.md`` that defines ``MyCore``).
DOCS_CORE = next(
    block
    for block in re.findall(r"```python\n(.*?)```", (REPO / "docs/cores/custom.md").read_text(encoding="utf-8"), re.S)
    if "class MyCore" in block
)


def test_bring_your_own_core_from_the_docs_trains(tmp_path: Path, train: Run, tiny: Callable[..., list[str]]) -> None:
    (tmp_path / "my_cores.py").write_text(DOCS_CORE)
    run_dir = tmp_path / "run"
    args = [*tiny(), "model.core=my_cores:MyCore", "total_frames=128", "logger.wandb.mode=disabled"]
    ok(train([*args, f"hydra.run.dir={run_dir}"]))
    info = json.loads((run_dir / "run_info.json").read_text())
    assert (info["model"], info["core"]) == ("mycore8", "my_cores:MyCore")
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert "eval/heldout/return_mean" in rows[-1]
    assert not any("unit_activity" in key for row in rows for key in row)


def test_any_core_with_last_active_gets_unit_activity(
    tmp_path: Path, train: Run, tiny: Callable[..., list[str]]
) -> None:
    """Capabilities, not names: a RIM under another name still logs which units were active."""
    (tmp_path / "modular.py").write_text("from rims_rl import RIM\n\n\nclass Modular(RIM):\n    pass\n")
    run_dir = tmp_path / "run"
    args = [*tiny("rim"), "model.core=modular:Modular", "total_frames=128", "logger.wandb.mode=disabled"]
    ok(train([*args, f"hydra.run.dir={run_dir}"]))
    assert json.loads((run_dir / "run_info.json").read_text())["model"] == "modular12_u3_k2"
    last = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert {f"eval/unit_activity/l0_u{u}" for u in range(3)} <= set(last)


def test_float_frames_and_wandb_disabled(tmp_path: Path, train: Run, tiny: Callable[..., list[str]]) -> None:
    run_dir = tmp_path / "run"
    args = [*tiny(), "total_frames=2.56e2", "logger.wandb.mode=disabled", f"hydra.run.dir={run_dir}"]
    ok(train(args))
    assert read_metrics(run_dir / "metrics.jsonl")[-1]["frames"] == 256
    assert not (run_dir / "wandb").exists()
    assert not list(tmp_path.rglob("wandb"))


def test_a_new_run_in_an_old_run_dir_replaces_it(tmp_path: Path, train: Run, tiny: Callable[..., list[str]]) -> None:
    run_dir = tmp_path / "run"
    args = [*tiny(), f"hydra.run.dir={run_dir}"]
    ok(train([*args, "total_frames=256"]))
    ok(train([*args, "total_frames=128"]))
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    rows = read_metrics(run_dir / "metrics.jsonl")
    check_no_duplicates(rows)
    assert rows[-1]["frames"] == 128 and max(row["frames"] for row in rows) == 128
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["frames_000000000128"]


def test_eval_cli_on_a_checkpoint(tmp_path: Path, train: Run, tiny: Callable[..., list[str]], run_cli: Run) -> None:
    run_dir = tmp_path / "run"
    ok(train([*tiny(), "logger.wandb.mode=disabled", f"hydra.run.dir={run_dir}"]))
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
    proc = run_cli("experiments.evaluate", args)
    ok(proc)
    result = json.loads(proc.stdout)
    assert result == json.loads(out.read_text())
    assert result["frames"] == 128
    assert result["model"] == "lstm8"
    assert {f"eval/{scope}/{stat}" for scope in ("train", "heldout", "MiniGrid-Empty-6x6-v0") for stat in STATS} <= set(
        result["metrics"]
    )
    # a run directory means its latest checkpoint; no env= means the run's own split
    proc = run_cli("experiments.evaluate", [f"checkpoint={run_dir}", "episodes=1", "hydra.run.dir=eval2"])
    ok(proc)
    result = json.loads(proc.stdout)
    assert result["frames"] == 256
    assert f"eval/{HELDOUT[1]}/return_mean" in result["metrics"]


def test_the_final_evaluation_plays_final_episodes_per_env_on_final_n_envs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra import compose, initialize_config_dir

    from experiments.config import CONFIG_DIR, build_spec
    from experiments.train import train as run_training

    overrides = [*TINY_MODEL["lstm"], *TINY_AGENT["ppo"], *TINY, "logger.wandb.mode=disabled"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [*overrides, "eval.final_episodes=6", "eval.final_n_envs=4"])
    played = []  # (sub-envs, episodes asked, episodes counted) per run_episodes call
    real = experiments.eval_loop.run_episodes

    def counting(model, env, n_episodes, deterministic, seed, on_step=None):
        episodes = real(model, env, n_episodes, deterministic, seed, on_step)
        played.append((env.num_envs, n_episodes, len(episodes.returns)))
        return episodes

    monkeypatch.setattr(experiments.eval_loop, "run_episodes", counting)
    run_training(cfg, build_spec(cfg), tmp_path)
    evals = [row for row in read_metrics(tmp_path / "metrics.jsonl") if "eval/episodes" in row]
    marks = [(row["frames"], row["eval/episodes"], row.get("eval/final")) for row in evals]
    assert marks == [(128, 1, None), (256, 6, 1)]
    # Three envs (one train, two held-out), sampled and greedy: 1 episode on 1 sub-env each, then 6 on 4.
    assert played == [(1, 1, 1)] * 6 + [(4, 6, 6)] * 6


def test_the_selection_rasters_are_recorded_before_the_final_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after its final checkpoint counts as complete on resume: its rasters must already exist."""
    from hydra import compose, initialize_config_dir

    import experiments.train
    from experiments.config import CONFIG_DIR, build_spec

    overrides = ["model=rim", *TINY_MODEL["rim"], *TINY_AGENT["ppo"], *TINY, "logger.wandb.mode=disabled"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides)
    raster_at_save = []  # (frames, raster written yet) per checkpoint
    real = experiments.train.save_checkpoint

    def spying(model, run_dir, frames):
        raster_at_save.append((frames, (run_dir / "selection_raster.png").exists()))
        return real(model, run_dir, frames)

    monkeypatch.setattr(experiments.train, "save_checkpoint", spying)
    experiments.train.train(cfg, build_spec(cfg), tmp_path)
    assert raster_at_save[-1] == (256, True)
    assert not any(written for _, written in raster_at_save[:-1])
