"""Training runs through the real CLI (``python -m rims_rl.experiments.train``) with tiny budgets, evaluation with
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

import rims_rl.experiments.builders
import rims_rl.experiments.checkpoint
import rims_rl.experiments.eval_loop
import rims_rl.experiments.metrics
from rims_rl.experiments.eval_loop import STATS, EvalTarget, evaluate, play
from rims_rl.experiments.metrics import read_metrics, truncate_metrics


@pytest.mark.parametrize(
    "module",
    [
        rims_rl.experiments.metrics,
        rims_rl.experiments.checkpoint,
        rims_rl.experiments.eval_loop,
        rims_rl.experiments.builders,
    ],
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
    """A fake env: reset with seed ``i`` (sub-env ``i`` of an evaluation with seed 0), it ends its episodes after
    ``i + 1`` steps with reward ``i``."""

    def __init__(self) -> None:
        self.i = self.t = 0

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        self.i = self.i if seed is None else seed
        self.t = 0
        return np.zeros(1), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.t += 1
        done = self.t >= self.i + 1
        return np.zeros(1), float(self.i) if done else 0.0, done, False, {}

    def close(self) -> None:
        pass


def _fixed_length_target(name: str = "A") -> EvalTarget:
    return EvalTarget("train", name, name, _FixedLengthEnv)


class _CountingModel:
    """A fake recurrent model that records the ``episode_start`` flags it is given."""

    def __init__(self) -> None:
        self.starts: list[np.ndarray] = []
        self.deterministic: list[np.ndarray] = []
        self.policy = SimpleNamespace()

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: Any = False) -> Any:
        self.starts.append(np.array(episode_start))
        self.deterministic.append(np.array(deterministic))
        return np.zeros(len(obs), dtype=int), state


def test_play_counts_exactly_m_episodes_per_target_and_mode_without_favouring_short_ones() -> None:
    model = _CountingModel()
    played = play(model, [_fixed_length_target("A"), _fixed_length_target("B")], n_episodes=7, n_envs=3, seed=0)
    # sub-env i counts its first (7 + i) // 3 episodes: 2, 2, 3
    for sampled, greedy in played:
        for episodes in (sampled, greedy):
            assert sorted(episodes.lengths.tolist()) == [1, 1, 2, 2, 3, 3, 3]
            assert sorted(episodes.returns.tolist()) == [0, 0, 1, 1, 2, 2, 2]
            assert not episodes.capped.any()
    assert model.starts[0].all() and len(model.starts[0]) == 12  # one call for 2 targets x 2 modes x 3 sub-envs
    # a sub-env stops once it has counted its episodes: sub-env 0 after 2 steps, 1 after 4, 2 after 9
    assert [len(starts) for starts in model.starts] == [12, 12, 8, 8, 4, 4, 4, 4, 4]
    assert [deterministic.tolist() for deterministic in model.deterministic[:1]] == [([False] * 3 + [True] * 3) * 2]


def test_the_cap_cuts_episodes_into_counted_failures() -> None:
    sampled, greedy = play(_CountingModel(), [_fixed_length_target()], n_episodes=3, n_envs=3, seed=0, max_steps=2)[0]
    # sub-env 2 plays 3-step episodes with reward 2: cut at 2 steps, return 0 so far; the others end by themselves
    for episodes in (sampled, greedy):
        assert sorted(
            zip(episodes.lengths.tolist(), episodes.returns.tolist(), episodes.capped.tolist(), strict=True)
        ) == [
            (1, 0.0, False),
            (2, 0.0, True),
            (2, 1.0, False),
        ]
    metrics = evaluate(_CountingModel(), [_fixed_length_target()], n_episodes=3, n_envs=3, seed=0, max_steps=2)
    assert metrics["eval/A/capped_fraction"] == metrics["eval/train/greedy_capped_fraction"] == pytest.approx(1 / 3)
    assert "eval/A/capped_fraction" not in evaluate(_CountingModel(), [_fixed_length_target()], 3, 3, 0)


def _play_alone(model: Any, env_id: str, level_seeds: list[int] | None, n_episodes: int, n_envs: int, seed: int) -> Any:
    """The oracle: one env id alone on its own seeded ``n_envs`` VecEnv, greedy actions, each sub-env ``i``
    counting its first ``(M + i) // n`` episodes; its ``(return, length)`` pairs, sorted."""
    import rims_rl.envs

    env = rims_rl.envs.make_vec_env(env_id, n_envs, seed, level_seeds=level_seeds)
    quota = (n_episodes + np.arange(n_envs)) // n_envs
    counts, returns, lengths = np.zeros(n_envs, dtype=int), np.zeros(n_envs), np.zeros(n_envs, dtype=int)
    episodes, obs, state, starts = [], env.reset(), None, np.ones(n_envs, dtype=bool)
    while (counts < quota).any():
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, rewards, starts, _ = env.step(actions)
        returns, lengths = returns + rewards, lengths + 1
        for i in np.flatnonzero(starts):
            if counts[i] < quota[i]:
                episodes.append((round(float(returns[i]), 5), int(lengths[i])))  # a VecEnv's rewards are float32
                counts[i] += 1
            returns[i], lengths[i] = 0.0, 0
    env.close()
    return sorted(episodes)


class _WallFollower:
    """A scripted model whose actions depend on the level: forward, or turn right where a wall is in front."""

    policy = SimpleNamespace()

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: Any = False) -> Any:
        return np.where(obs["image"][:, 3, 5, 0] == 2, 1, 2), state  # the cell in front: object index 2 is a wall


def test_one_pass_over_all_targets_plays_each_targets_levels_as_playing_it_alone() -> None:
    """The episodes of each env id in the joint pass (all targets, both modes, one predict per step) equal those
    of the env id played alone on its own VecEnv with the same seed: same levels, same counting."""
    import rims_rl.envs

    split = rims_rl.envs.Split(
        "s", ["MiniGrid-Empty-Random-5x5-v0"], ["MiniGrid-FourRooms-v0"], heldout_seeds=[3, 8, 11]
    )
    targets = rims_rl.experiments.eval_loop.eval_targets(
        split, lambda i, seeds: rims_rl.envs.make_env_fn(i, level_seeds=seeds)
    )
    played = play(_WallFollower(), targets, n_episodes=5, n_envs=3, seed=7)
    for target, pair in zip(targets, played, strict=True):
        seeds = split.heldout_seeds if target.scope == "heldout" else None
        alone = _play_alone(_WallFollower(), target.env_id, seeds, n_episodes=5, n_envs=3, seed=7)
        for episodes in pair:
            assert sorted(zip(episodes.returns.round(5).tolist(), episodes.lengths.tolist(), strict=True)) == alone
    lengths = {length for pair in played for episodes in pair for length in episodes.lengths.tolist()}
    assert len(lengths) > 2  # the levels differ, so a level played out of turn would show


class _Core:
    """A fake core that reports units: ``last_active`` ``(1, B, L, U)``."""

    last_active: torch.Tensor | None = None


class _ScriptedSelectionModel:
    """A fake recurrent model whose core (one layer, three units) has unit set ``0, 1`` or ``1, 2`` active: it
    flips a sub-env's set at every step, or (``flip_at_starts``) only when the sub-env's episode starts. Its
    recurrent state ``(1, B)`` counts each sub-env's flips (so it follows the sub-envs that remain playing)."""

    def __init__(self, flip_at_starts: bool) -> None:
        self.flip_at_starts = flip_at_starts
        self.policy = SimpleNamespace(core=_Core())

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: Any = False) -> Any:
        flip = np.asarray(episode_start, dtype=bool) if self.flip_at_starts else np.ones(len(obs), dtype=bool)
        flips = (np.zeros((1, len(obs)), dtype=int) if state is None else state) + flip
        sets = np.array([[True, True, False], [False, True, True]])
        self.policy.core.last_active = torch.as_tensor(sets[flips[0] % 2])[None, :, None]  # (1, B, 1, 3)
        return np.zeros(len(obs), dtype=int), flips


@pytest.mark.parametrize(("flip_at_starts", "switch_rate"), [(False, 1.0), (True, 0.0)])
def test_switch_rate_counts_changes_within_episodes_and_not_at_resets(flip_at_starts: bool, switch_rate: float) -> None:
    """Sub-env i plays episodes of i + 1 steps, two counted each (6 episodes over 3 sub-envs). Either sets
    alternate at every step (every pair within an episode switches) or change only where an episode starts
    (a reset is not a switch); either way each set is active on 6 of the 12 counted steps: 1 bit."""
    model = _ScriptedSelectionModel(flip_at_starts)
    metrics = evaluate(model, [_fixed_length_target()], n_episodes=6, n_envs=3, seed=0)
    for scope in ("A", "train"):
        assert metrics[f"eval/{scope}/switch_rate"] == switch_rate
        assert metrics[f"eval/{scope}/selection_entropy"] == pytest.approx(1.0)
        activity = [metrics[f"eval/{scope}/unit_activity/l0_u{u}"] for u in range(3)]
        assert activity == [0.5, 1.0, 0.5]
    assert metrics["eval/switch_rate"] == switch_rate


def test_a_fixed_set_has_no_switches_and_no_entropy() -> None:
    stats = rims_rl.experiments.eval_loop.SelectionStats()
    active = np.array([[[True, False, True, False]], [[False, True, True, False]]])  # (2, 1, 4)
    for t in range(5):
        stats.update(active, active, np.array([t == 0, t in (0, 3)]))
    metrics = stats.metrics("eval/x")
    # Two samples, two episodes of sample 1: 4 + 3 pairs; sample 0 always has {0, 2}, sample 1 {1, 2}.
    assert stats.switches == rims_rl.experiments.eval_loop.Switches(0, 7)
    assert metrics["eval/x/switch_rate"] == 0.0
    assert metrics["eval/x/selection_entropy"] == pytest.approx(1.0)  # two fixed sets, equally often
    one = rims_rl.experiments.eval_loop.SelectionStats()
    one.update(active[:1], active[:1], np.array([True]))
    assert one.metrics("eval/y")["eval/y/selection_entropy"] == 0.0  # one set only
    assert "eval/y/switch_rate" not in one.metrics("eval/y")  # no pair of steps yet


def test_set_entropy_is_the_entropy_of_the_active_sets_per_layer() -> None:
    a, b, c = [True, True, False, False], [False, True, True, False], [False, False, True, True]
    uniform = np.array([[a], [b], [c], [a], [b], [c]])  # (6, 1, 4): three sets, equally often
    assert rims_rl.experiments.eval_loop.set_entropy(uniform) == pytest.approx(np.log2(3))
    # Layer 0: a three times, b once; layer 1: always c (0 bits). The units' own activity does not matter:
    # b and c have unit 2 in common, a and b unit 1.
    skewed = np.array([[a, c], [a, c], [b, c], [a, c]])  # (4, 2, 4)
    expected = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)) / 2
    assert rims_rl.experiments.eval_loop.set_entropy(skewed) == pytest.approx(expected)
    assert rims_rl.experiments.eval_loop.set_entropy(np.packbits(skewed, axis=-1)) == pytest.approx(expected)


def test_eval_targets_qualify_an_env_id_on_both_sides_and_use_each_sides_levels() -> None:
    from rims_rl.envs import Split

    split = Split("layouts", ["A-v0", "B-v0"], ["A-v0", "C-v0"], train_seeds=[0, 1], heldout_seeds=[5])
    made = []
    targets = rims_rl.experiments.eval_loop.eval_targets(split, lambda env_id, seeds: made.append((env_id, seeds)))
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
    proc = train([*tiny(model, agent), f"hydra.run.dir={run_dir}"])
    ok(proc)
    # the evaluation's bar of counted episodes, with each env id's episodes done (3 env ids x 2 modes x 2 final)
    assert "12/12 [" in proc.stderr and f"{HELDOUT[1]} 4/4" in proc.stderr

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
    assert all(row["time/eval_seconds"] > 0 and "eval/max_steps" not in row for row in evals)  # no cap: not logged
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
    proc = run_cli("rims_rl.experiments.evaluate", args)
    ok(proc)
    result = json.loads(proc.stdout)
    assert result == json.loads(out.read_text())
    assert result["frames"] == 128
    assert result["model"] == "lstm8"
    assert {f"eval/{scope}/{stat}" for scope in ("train", "heldout", "MiniGrid-Empty-6x6-v0") for stat in STATS} <= set(
        result["metrics"]
    )
    # a run directory means its latest checkpoint; no env= means the run's own split
    assert result["max_steps"] is None and "eval/train/capped_fraction" not in result["metrics"]
    assert "MiniGrid-Empty-6x6-v0 4/4" in proc.stderr  # the bar: 2 episodes x 2 modes done
    # a run directory means its latest checkpoint; no env= means the run's own split; a cap of 2 steps cuts all
    cap = ["episodes=1", "max_steps=2", "hydra.run.dir=eval2"]
    proc = run_cli("rims_rl.experiments.evaluate", [f"checkpoint={run_dir}", *cap])
    ok(proc)
    result = json.loads(proc.stdout)
    assert result["frames"] == 256
    assert result["max_steps"] == 2
    assert result["metrics"][f"eval/{HELDOUT[1]}/length_mean"] == 2.0
    assert (
        result["metrics"]["eval/heldout/capped_fraction"]
        == result["metrics"]["eval/train/greedy_capped_fraction"]
        == 1.0
    )


def test_the_final_evaluation_plays_final_episodes_per_env_on_final_n_envs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra import compose, initialize_config_dir

    from rims_rl.experiments.config import CONFIG_DIR, build_spec
    from rims_rl.experiments.train import train as run_training

    overrides = [*TINY_MODEL["lstm"], *TINY_AGENT["ppo"], *TINY, "logger.wandb.mode=disabled"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [*overrides, "eval.final_episodes=6", "eval.final_n_envs=4"])
    played = []  # (targets, sub-envs, episodes asked, episodes counted per target and mode) per evaluation
    real = rims_rl.experiments.eval_loop.play

    def counting(model, targets, n_episodes, n_envs, *args):
        pairs = real(model, targets, n_episodes, n_envs, *args)
        played.append((len(targets), n_envs, n_episodes, [len(e.returns) for pair in pairs for e in pair]))
        return pairs

    monkeypatch.setattr(rims_rl.experiments.eval_loop, "play", counting)
    run_training(cfg, build_spec(cfg), tmp_path)
    evals = [row for row in read_metrics(tmp_path / "metrics.jsonl") if "eval/episodes" in row]
    marks = [(row["frames"], row["eval/episodes"], row.get("eval/final")) for row in evals]
    assert marks == [(128, 1, None), (256, 6, 1)]
    # Three envs (one train, two held-out), sampled and greedy: 1 episode on 1 sub-env each, then 6 on 4.
    assert played == [(3, 1, 1, [1] * 6), (3, 4, 6, [6] * 6)]


def test_the_selection_rasters_are_recorded_before_the_final_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after its final checkpoint counts as complete on resume: its rasters must already exist."""
    from hydra import compose, initialize_config_dir

    import rims_rl.experiments.train
    from rims_rl.experiments.config import CONFIG_DIR, build_spec

    overrides = ["model=rim", *TINY_MODEL["rim"], *TINY_AGENT["ppo"], *TINY, "logger.wandb.mode=disabled"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides)
    raster_at_save = []  # (frames, raster written yet) per checkpoint
    real = rims_rl.experiments.train.save_checkpoint

    def spying(model, run_dir, frames):
        raster_at_save.append((frames, (run_dir / "selection_raster.png").exists()))
        return real(model, run_dir, frames)

    monkeypatch.setattr(rims_rl.experiments.train, "save_checkpoint", spying)
    rims_rl.experiments.train.train(cfg, build_spec(cfg), tmp_path)
    assert raster_at_save[-1] == (256, True)
    assert not any(written for _, written in raster_at_save[:-1])
