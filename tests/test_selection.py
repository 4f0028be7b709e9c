"""Selection rasters (:mod:`rims_rl.experiments.selection`): the events of a real MiniGrid DoorKey episode driven by a
planned action sequence, the recorded active units, the JSON round trip and the drawn raster."""

from __future__ import annotations

import copy
import doctest
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import rims_rl.envs
import rims_rl.experiments.selection
from rims_rl.experiments.selection import Event, load_episodes, record_episode, record_selection

LEFT, RIGHT, FORWARD, PICKUP, TOGGLE = 0, 1, 2, 3, 5
#: MiniGrid's direction vectors: 0 east, 1 south, 2 west, 3 north.
DIRECTIONS = [(1, 0), (0, 1), (-1, 0), (0, -1)]


def test_doctests() -> None:
    assert doctest.testmod(rims_rl.experiments.selection, optionflags=doctest.ELLIPSIS).failed == 0


def turn_and_walk_to_face(env: gym.Env, target: tuple[int, int]) -> list[int]:
    """The shortest left/right/forward sequence after which the agent faces ``target`` (breadth-first search over
    position and direction, walking only through cells that can be overlapped)."""
    base = env.unwrapped
    start = (*map(int, base.agent_pos), int(base.agent_dir))
    queue: deque[tuple[tuple[int, int, int], list[int]]] = deque([(start, [])])
    seen = {start}
    while queue:
        (x, y, d), actions = queue.popleft()
        dx, dy = DIRECTIONS[d]
        if (x + dx, y + dy) == target:
            return actions
        cell = base.grid.get(x + dx, y + dy)
        moves = [(LEFT, (x, y, (d - 1) % 4)), (RIGHT, (x, y, (d + 1) % 4))]
        if cell is None or cell.can_overlap():
            moves.append((FORWARD, (x + dx, y + dy, d)))
        for action, nxt in moves:
            if nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, [*actions, action]))
    raise AssertionError(f"{target} cannot be reached")


def position_of(env: gym.Env, kind: str) -> tuple[int, int]:
    grid = env.unwrapped.grid
    (position,) = [
        (x, y) for x in range(grid.width) for y in range(grid.height) if getattr(grid.get(x, y), "type", None) == kind
    ]
    return position


def doorkey_plan(env: gym.Env, seed: int) -> tuple[list[int], dict[str, int]]:
    """The actions that solve the DoorKey level of ``seed`` (pick up the key, open the door, walk onto the goal),
    found by playing a copy of the env, and the step of each event."""
    env = copy.deepcopy(env)
    env.reset(seed=seed)
    return solve_doorkey(env)


def solve_doorkey(env: gym.Env) -> tuple[list[int], dict[str, int]]:
    """:func:`doorkey_plan` from the env's current level and pose, found by playing the env itself."""
    plan: list[int] = []
    steps = {}
    for kind, last in (("key", PICKUP), ("door", TOGGLE), ("goal", FORWARD)):
        segment = [*turn_and_walk_to_face(env, position_of(env, kind)), last]
        for action in segment:
            env.step(action)
        plan += segment
        steps[kind] = len(plan) - 1
    return plan, steps


class _ScriptedModel:
    """Plays a fixed action sequence; its core reports two layers of three units, unit ``t % 3`` of layer 0 and
    units ``0, 1`` of layer 1 active at step ``t``."""

    def __init__(self, actions: list[int]) -> None:
        self.actions = list(actions)
        self.policy = SimpleNamespace(core=SimpleNamespace(last_active=None))
        self.t = 0
        self.starts: list[bool] = []

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False) -> Any:
        self.starts.append(bool(np.asarray(episode_start).item()))
        active = torch.zeros(1, 1, 2, 3, dtype=torch.bool)
        active[0, 0, 0, self.t % 3] = True
        active[0, 0, 1, :2] = True
        self.policy.core.last_active = active
        self.t += 1
        return np.array(self.actions.pop(0)), state


def expected_active(steps: int) -> np.ndarray:
    active = np.zeros((steps, 2, 3), dtype=bool)
    active[np.arange(steps), 0, np.arange(steps) % 3] = True
    active[:, 1, :2] = True
    return active


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_doorkey_episode_has_its_key_door_and_goal_events_at_their_steps(seed: int) -> None:
    env = rims_rl.envs.make_env_fn("MiniGrid-DoorKey-5x5-v0")()
    plan, steps = doorkey_plan(env, seed)
    model = _ScriptedModel(plan)
    episode = record_episode(model, env, seed, "MiniGrid-DoorKey-5x5-v0", "train")
    last = len(plan) - 1
    assert episode.events == [
        Event(steps["key"], "key"),
        Event(steps["door"], "door"),
        Event(last, "goal"),
        Event(last, "end"),
    ]
    assert steps["key"] < steps["door"] < last == steps["goal"]
    assert episode.episode_return > 0
    assert np.array_equal(episode.active, expected_active(len(plan)))
    assert model.starts == [True] + [False] * last


def test_an_episode_without_success_ends_without_a_goal(tmp_path: Path) -> None:
    """Turning in place until the time limit: no key, no door, no goal, one end at the last step."""
    env = rims_rl.envs.make_env_fn("MiniGrid-DoorKey-5x5-v0")()
    steps = env.unwrapped.max_steps
    episode = record_episode(_ScriptedModel([LEFT] * steps), env, 0, "MiniGrid-DoorKey-5x5-v0", "heldout")
    assert episode.events == [Event(steps - 1, "end")]
    assert episode.episode_return == 0.0 and episode.active.shape == (steps, 2, 3)


def test_record_selection_writes_the_episodes_and_the_raster(tmp_path: Path) -> None:
    train_env, heldout_env = (
        rims_rl.envs.make_env_fn(env_id)() for env_id in ("MiniGrid-DoorKey-5x5-v0", "MiniGrid-DoorKey-6x6-v0")
    )
    plans = [doorkey_plan(train_env, 3)[0], doorkey_plan(heldout_env, 3)[0]]
    model = _ScriptedModel([*plans[0], *plans[1]])
    envs_ = [("MiniGrid-DoorKey-5x5-v0", "train", train_env), ("MiniGrid-DoorKey-6x6-v0", "heldout", heldout_env)]
    paths = record_selection(model, envs_, 3, tmp_path, "scripted")
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "selection/MiniGrid-DoorKey-5x5-v0.json",
        "selection/MiniGrid-DoorKey-6x6-v0.json",
        "selection_raster.png",
    ]
    assert (tmp_path / "selection_raster.png").stat().st_size > 1000
    train, heldout = load_episodes(tmp_path)
    assert (train.env, train.scope, heldout.env, heldout.scope) == (*envs_[0][:2], *envs_[1][:2])
    assert np.array_equal(train.active, expected_active(len(plans[0])))
    assert [e.kind for e in heldout.events] == ["key", "door", "goal", "end"]
    # Layer 0 changes its unit at every step, layer 1 never.
    steps = len(plans[0])
    assert rims_rl.experiments.selection.panel_title(train).endswith(f", {steps - 1} switches in {steps} steps")
    assert heldout.events[-1].step == len(plans[1]) - 1


def test_load_episodes_of_a_run_without_rasters_is_empty(tmp_path: Path) -> None:
    assert load_episodes(tmp_path) == []
