"""Tests of ``rims_rl.envs.jax``: the JAX envs observe, reward and end episodes as MiniGrid does (same layout, same
actions, compared every step), auto-reset, run under jit + vmap + scan, honour level seeds; splits name per-backend ids.

JAX runs on the CPU, one thread (tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
pytest.importorskip("navix")

from minigrid.core.grid import Grid  # noqa: E402  # after the skips: these tests need jax and navix
from minigrid.core.world_object import Ball, WorldObj  # noqa: E402

from rims_rl.envs.jax import JAX_ENVS, make  # noqa: E402
from rims_rl.envs.jax.env import _symbolic_grid  # noqa: E402
from rims_rl.envs.splits import Split  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "env"
FORWARD, RIGHT, DONE = 2, 1, 6


def lay_out_in_minigrid(state, env: gym.Env) -> dict:
    """Put the JAX env's world (layout, agent pose, step count) into the MiniGrid env and return its observation.

    :param state: one JAX env state
    :param env: a MiniGrid env of the same world, reset once
    """
    symbols = np.asarray(_symbolic_grid(state.state))  # (H, W, 3) MiniGrid encoding, indexed [y, x]
    world = env.unwrapped
    world.grid = Grid(symbols.shape[1], symbols.shape[0])
    for (y, x), (kind, colour, status) in zip(np.ndindex(symbols.shape[:2]), symbols.reshape(-1, 3), strict=True):
        if kind != 1:
            world.grid.set(x, y, WorldObj.decode(int(kind), int(colour), int(status)))
            if isinstance(world.grid.get(x, y), Ball) and hasattr(world, "obj"):
                world.obj = world.grid.get(x, y)  # KeyCorridor's target
    player = state.state.get_player(idx=0)
    world.agent_pos = (int(player.position[1]), int(player.position[0]))
    world.agent_dir = int(player.direction)
    world.step_count = int(state.t)
    world.carrying = None
    return world.gen_obs()


def assert_same_obs(obs: dict, minigrid_obs: dict, where: str) -> None:
    np.testing.assert_array_equal(np.asarray(obs["image"]), minigrid_obs["image"], err_msg=where)
    assert int(obs["direction"]) == minigrid_obs["direction"], where


@pytest.mark.parametrize(
    "env_id",
    [
        "Navix-Empty-5x5-v0",
        "Navix-DistShift1-v0",
        "Navix-DoorKey-5x5-v0",
        "Navix-KeyCorridorS3R1-v0",
        "Navix-FourRooms-v0",
    ],
)
def test_same_layout_and_actions_give_minigrids_observations_rewards_and_ends(env_id: str) -> None:
    env = make(env_id)
    minigrid = gym.make(JAX_ENVS[env_id].minigrid_id)
    minigrid.reset(seed=0)
    step = jax.jit(env.step)
    key = jax.random.PRNGKey(0)
    state, obs = jax.jit(env.reset)(key)
    minigrid_obs = lay_out_in_minigrid(state, minigrid)
    actions = np.random.default_rng(0).integers(0, env.num_actions, size=400)
    ends = 0
    for t, action in enumerate(actions):
        assert_same_obs(obs, minigrid_obs, f"{env_id}, step {t}")
        key, step_key = jax.random.split(key)
        state, obs, reward, terminated, truncated = step(state, jnp.int32(action), step_key)
        minigrid_obs, minigrid_reward, minigrid_terminated, minigrid_truncated, _ = minigrid.step(int(action))
        where = f"{env_id}, step {t}, action {action}"
        assert float(reward) == pytest.approx(minigrid_reward, abs=1e-6), where
        assert (bool(terminated), bool(truncated)) == (minigrid_terminated, minigrid_truncated), where
        if minigrid_terminated or minigrid_truncated:
            ends += 1
            assert int(state.t) == 0, where  # auto-reset
            minigrid_obs = lay_out_in_minigrid(state, minigrid)
    assert ends >= 1 or env_id != "Navix-Empty-5x5-v0"  # Empty-5x5 ends at least by truncation (max_steps 100)


@pytest.mark.parametrize("env_id", ["Navix-Empty-5x5-v0", "Navix-DistShift1-v0", "Navix-DistShift2-v0"])
def test_fixed_layouts_start_as_minigrids(env_id: str) -> None:
    minigrid_obs, _ = gym.make(JAX_ENVS[env_id].minigrid_id).reset(seed=0)
    _, obs = make(env_id).reset(jax.random.PRNGKey(3))
    assert_same_obs(obs, minigrid_obs, env_id)


def test_max_steps_and_view_flags_are_minigrids() -> None:
    for env_id, spec in JAX_ENVS.items():
        world = gym.make(spec.minigrid_id).unwrapped
        assert (spec.max_steps, spec.see_through_walls) == (world.max_steps, world.see_through_walls), env_id
        assert make(env_id).max_steps == spec.max_steps


def test_success_reward_decays_with_steps_and_auto_resets() -> None:
    env = make("Navix-Empty-5x5-v0")  # agent at (1, 1) facing east, goal at (3, 3)
    state, first_obs = env.reset(jax.random.PRNGKey(0))
    path = [FORWARD, FORWARD, RIGHT, FORWARD, FORWARD]
    for t, action in enumerate(path, start=1):
        state, obs, reward, terminated, truncated = env.step(state, jnp.int32(action), jax.random.PRNGKey(t))
        assert bool(terminated) == (t == len(path)) and not bool(truncated)
    assert float(reward) == pytest.approx(1 - 0.9 * len(path) / env.max_steps)
    assert int(state.t) == 0
    np.testing.assert_array_equal(obs["image"], first_obs["image"])  # the next episode's first view


def test_truncates_at_max_steps_without_reward() -> None:
    env = make("Navix-Empty-5x5-v0")
    state, _ = env.reset(jax.random.PRNGKey(0))

    def body(state, key):
        state, _, reward, terminated, truncated = env.step(state, jnp.int32(DONE), key)
        return state, (reward, terminated, truncated)

    _, (rewards, terminated, truncated) = jax.lax.scan(body, state, jax.random.split(jax.random.PRNGKey(1), 250))
    assert np.flatnonzero(np.asarray(truncated)).tolist() == [99, 199]
    assert not np.asarray(terminated).any() and not np.asarray(rewards).any()


def test_walking_into_an_obstacle_ends_with_minus_one() -> None:
    env = make("Navix-Dynamic-Obstacles-5x5-v0")  # agent at (1, 1) facing east
    state, _ = env.reset(jax.random.PRNGKey(0))
    balls = state.state.entities["ball"]
    in_front = balls.position.at[0].set(jnp.asarray([1, 2]))  # (row, col) of the cell east of the agent
    state = state.replace(
        state=state.state.replace(entities={**state.state.entities, "ball": balls.replace(position=in_front)})
    )
    _, _, reward, terminated, _ = env.step(state, jnp.int32(FORWARD), jax.random.PRNGKey(1))
    assert float(reward) == -1.0 and bool(terminated)


def test_jit_vmap_scan_over_many_envs() -> None:
    env = make("Navix-DoorKey-5x5-v0")
    num_envs, steps = 8, 20

    @jax.jit
    def rollout(key):
        state, obs = jax.vmap(env.reset)(jax.random.split(key, num_envs))

        def body(carry, key):
            state, _ = carry
            action_key, step_key = jax.random.split(key)
            actions = jax.random.randint(action_key, (num_envs,), 0, env.num_actions)
            state, obs, reward, terminated, truncated = jax.vmap(env.step)(
                state, actions, jax.random.split(step_key, num_envs)
            )
            return (state, obs), (obs, reward, terminated, truncated)

        return jax.lax.scan(body, (state, obs), jax.random.split(key, steps))[1]

    obs, reward, terminated, truncated = rollout(jax.random.PRNGKey(0))
    assert obs["image"].shape == (steps, num_envs, 7, 7, 3) and obs["image"].dtype == jnp.uint8
    assert obs["direction"].shape == (steps, num_envs) and obs["direction"].dtype == jnp.int32
    assert reward.dtype == jnp.float32 and terminated.dtype == truncated.dtype == jnp.bool_
    assert len({np.asarray(obs["image"][0, i]).tobytes() for i in range(num_envs)}) > 1  # envs differ


def test_level_seeds_fix_the_layouts() -> None:
    env = make("Navix-FourRooms-v0", level_seeds=[7])
    (_, a), (_, b) = env.reset(jax.random.PRNGKey(0)), env.reset(jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a["image"], b["image"])
    any_level = make("Navix-FourRooms-v0")
    views = {np.asarray(any_level.reset(jax.random.PRNGKey(k))[1]["image"]).tobytes() for k in range(4)}
    assert len(views) > 1
    with pytest.raises(ValueError, match="non-empty"):
        make("Navix-FourRooms-v0", level_seeds=[])


def test_unknown_id_names_the_closest() -> None:
    with pytest.raises(ValueError, match=r"unknown JAX env id 'Navix-DoorKey-5x5-v1'; closest .*Navix-DoorKey-5x5-v0"):
        make("Navix-DoorKey-5x5-v1")


def test_splits_name_jax_ids_or_say_which_backend_runs_them() -> None:
    splits = {p.stem: Split(**yaml.safe_load(p.read_text())).validate() for p in CONFIG_DIR.glob("*.yaml")}
    for name in ("empty", "doorkey", "keycorridor", "dynamic_obstacles", "fourrooms_layouts", "distshift"):
        train, heldout = splits[name].ids_for("jax")
        torch_train, torch_heldout = splits[name].ids_for("torch")
        assert [JAX_ENVS[i].minigrid_id for i in train + heldout] == torch_train + torch_heldout, name
    assert splits["distshift"].ids_for("torch") == (["MiniGrid-DistShift1-v0"], ["MiniGrid-DistShift2-v0"])
    with pytest.raises(ValueError, match=r"^split 'multiroom' has no jax env ids; run it with backend=torch$"):
        splits["multiroom"].ids_for("jax")
    with pytest.raises(ValueError, match="expected backend in"):
        splits["empty"].ids_for("tpu")
    bad = {**yaml.safe_load((CONFIG_DIR / "empty.yaml").read_text()), "jax": {"train": ["Navix-Emty-5x5-v0"]}}
    with pytest.raises(ValueError, match="keys train and heldout"):
        Split(**bad)
    bad["jax"] = {"train": ["Navix-Emty-5x5-v0"], "heldout": ["Navix-Empty-6x6-v0"] * 3}
    with pytest.raises(ValueError, match=r"jax.train: unknown JAX env id .*Navix-Empty-5x5-v0"):
        Split(**bad).validate()


def test_envs_and_the_id_registry_do_not_import_jax() -> None:
    code = (
        "import sys, rims_rl.envs, rims_rl.envs.splits, rims_rl.envs.jax.ids; "
        "assert 'jax' not in sys.modules and 'navix' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
