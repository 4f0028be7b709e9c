"""Selection rasters of the JAX backend (:mod:`rims_rl.experiments.selection_jax`): the events of a planned DoorKey
episode are MiniGrid's at the same steps; a ``backend=jax`` RIM job writes each seed's episodes and raster as a torch
run does, and the report shows them; a core without active units records nothing.

JAX runs on the CPU, one thread (tests/conftest.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from handwritten import read_csv, runs_column
from helpers import TINY_MODEL, Run, ok
from test_jax_envs import lay_out_in_minigrid
from test_selection import solve_doorkey

import rims_rl.experiments.report
from rims_rl.experiments.selection import (
    EVENTS,
    RASTER_FILE,
    SELECTION_DIR,
    Event,
    load_episodes,
    snapshot,
    step_events,
)

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
pytest.importorskip("navix")

from rims_rl.agents.jax.ppo import PPOConfig, init_seeds  # noqa: E402  # after the skips: these tests need jax and navix
from rims_rl.envs.jax import JAX_ENVS, make  # noqa: E402
from rims_rl.experiments.selection_jax import record_selection, step_with_events, unit_shape  # noqa: E402

TRAIN, HELDOUT = "MiniGrid-DoorKey-5x5-v0", "MiniGrid-DoorKey-6x6-v0"
SEEDS = (3, 4)
#: A two-seed RIM job of one update on DoorKey, evaluated once, at the end.
JOB = [
    "backend=jax",
    "env=doorkey",
    f"env.heldout=[{HELDOUT}]",
    "env.jax.heldout=[Navix-DoorKey-6x6-v0]",
    "model=rim",
    *TINY_MODEL["rim"],
    "n_envs=2",
    "agent.n_steps=16",
    "agent.sequence_length=16",
    "agent.batch_size=32",
    "total_frames=32",
    "eval.every_frames=32",
    "eval.episodes=1",
    "eval.final_episodes=1",
    "checkpoint.every_frames=32",
    f"seeds_per_job={len(SEEDS)}",
    f"seed={SEEDS[0]}",
    "logger.wandb.mode=disabled",
]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_planned_doorkey_episode_has_minigrids_events_at_the_same_steps(seed: int) -> None:
    env = make("Navix-DoorKey-5x5-v0")
    state, _ = env.reset(jax.random.PRNGKey(seed))
    minigrid = gym.make(TRAIN)
    minigrid.reset(seed=0)
    lay_out_in_minigrid(state, minigrid)  # the navix level, in MiniGrid
    plan, steps = solve_doorkey(copy.deepcopy(minigrid))
    step = jax.jit(lambda state, action, key: step_with_events(env, state, action, key))
    events, minigrid_events = [], []
    for t, action in enumerate(plan):
        state, _, _, _, flags = step(state, jnp.int32(action), jax.random.PRNGKey(t))
        events += [Event(t, kind) for kind, flag in zip(EVENTS, np.asarray(flags), strict=True) if flag]
        before = snapshot(minigrid)
        _, reward, terminated, truncated, _ = minigrid.step(action)
        kinds = step_events(before, snapshot(minigrid), float(reward), terminated or truncated)
        minigrid_events += [Event(t, kind) for kind in kinds]
    last = len(plan) - 1
    expected = [Event(steps["key"], "key"), Event(steps["door"], "door"), Event(last, "goal"), Event(last, "end")]
    assert events == minigrid_events == expected
    assert steps["key"] < steps["door"] < steps["goal"] == last


def test_a_core_without_active_units_records_nothing(tmp_path: Path) -> None:
    env = make("Navix-DoorKey-5x5-v0")
    lstm = PPOConfig(n_envs=2, n_steps=16, batch_size=32, sequence_length=16, core_kwargs={"hidden_size": 8})
    rim = lstm.replace(core="rim", core_kwargs={"hidden_size": 12, "num_units": 3, "k": 2})
    assert (unit_shape(lstm, env), unit_shape(rim, env)) == (None, (1, 3))
    params = init_seeds(jax.random.split(jax.random.PRNGKey(0), 1), env, lstm).params
    assert record_selection(params, lstm, [(TRAIN, "train", env)], [0], [tmp_path], ["lstm"]) == []
    assert list(tmp_path.iterdir()) == []


def test_a_rim_job_writes_each_seeds_episodes_and_raster_and_the_report_shows_them(tmp_path: Path, train: Run) -> None:
    job = tmp_path / "job"
    ok(train([*JOB, f"hydra.run.dir={job}"], timeout=600))

    recorded = []
    for seed in SEEDS:
        run_dir = job / f"seed_{seed}"
        names = sorted(p.name for p in (run_dir / SELECTION_DIR).iterdir())
        assert names == [f"{TRAIN}.json", f"{HELDOUT}.json"]
        assert (run_dir / RASTER_FILE).stat().st_size > 1000
        raw = json.loads((run_dir / SELECTION_DIR / f"{TRAIN}.json").read_text())
        assert {v for row in raw["active"] for layer in row for v in layer} <= {0, 1}
        episodes = load_episodes(run_dir)
        assert [(e.env, e.scope) for e in episodes] == [(TRAIN, "train"), (HELDOUT, "heldout")]
        for episode, env_id in zip(episodes, ("Navix-DoorKey-5x5-v0", "Navix-DoorKey-6x6-v0"), strict=True):
            steps = len(episode.active)
            assert episode.active.shape == (steps, 1, 3)
            assert (episode.active.sum(-1) == 2).all()  # k of U units at every step
            # The episode's T steps end with its end; DoorKey ends only by success or at the time limit.
            assert [e for e in episode.events if e.kind == "end"] == [episode.events[-1]] == [Event(steps - 1, "end")]
            assert all(0 <= e.step < steps for e in episode.events)
            if episode.episode_return > 0:
                assert Event(steps - 1, "goal") in episode.events
            else:
                assert steps == JAX_ENVS[env_id].max_steps
        recorded.append([(e.active.tolist(), e.events) for e in episodes])
    assert recorded[0] != recorded[1]  # each seed plays its own parameters

    # The report draws the first seed's rasters and flags each run's selection, as for torch runs.
    rims_rl.experiments.report.main([str(job), "--reps", "50"])
    out = job / "report"
    md = (out / "report.md").read_text()
    assert "![doorkey selection rasters](doorkey_selection_raster.png)" in md
    assert (out / "doorkey_selection_raster.png").stat().st_size > 1000
    assert [row["model"] for row in read_csv(out / "doorkey_selection.csv")] == ["rim12_u3_k2"]
    flags = runs_column(md, "rim12_u3_k2", "selection")
    assert len(flags) == len(SEEDS) and set(flags) <= {"dynamic", "**static selection**"}, flags
