"""Set-structured input (``model.features=set``): the policy feeds the extractor's set (T, B, S, F) to a core that
reads sets and the same set flattened (T, B, S * F) to any other core; replay, save/load and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from helpers import TINY, TINY_AGENT, TINY_MODEL, Run, check_replay, fill_buffer, ok
from stable_baselines3.common.vec_env import DummyVecEnv

from rims_rl import RIM, GRUCore, map_state
from rims_rl.agents import MiniGridFeaturesExtractor, RecurrentPPO
from rims_rl.envs import MissionToIdsWrapper

#: Elements of DoorKey's view with the mission encoded: 49 cells, the direction, the mission; F of each.
S, F = 51, 8
#: The test's own core that reads sets, by import path (this module is importable in the tests).
SET_CORE = "test_set_input:MeanSetGRU"


class MeanSetGRU(GRUCore):
    """A GRU over the mean of a set's elements: a core that reads sets, ``(T, B, S, F) -> (T, B, H)``."""

    accepts_sets = True

    def forward(self, input, hx=None, *, episode_starts=None):
        if input.dim() != 4:
            raise ValueError(f"expected a set (T, B, S, F), got shape {tuple(input.shape)}")
        return super().forward(input.mean(dim=2), hx, episode_starts=episode_starts)


#: core -> whether the policy must feed it the set (else the set flattened).
READS_SETS = {SET_CORE: True, "lstm": False, "rim": getattr(RIM, "accepts_sets", False)}
CORE_KWARGS = {
    SET_CORE: dict(hidden_size=16),
    "lstm": dict(hidden_size=16),
    "rim": dict(hidden_size=16, num_units=4, k=2),
}


def doorkey(n_envs: int = 4) -> DummyVecEnv:
    # A 10-step time limit: episodes end inside every 16-step chunk.
    venv = DummyVecEnv(
        [lambda: MissionToIdsWrapper(gym.make("MiniGrid-DoorKey-5x5-v0", max_steps=10)) for _ in range(n_envs)]
    )
    venv.seed(0)
    return venv


def ppo(core: str, shared_core: bool = False, features: str = "set") -> RecurrentPPO:
    return RecurrentPPO(
        "MultiInputRecurrentPolicy",
        doorkey(),
        policy_kwargs=dict(
            core=core,
            core_kwargs=CORE_KWARGS[core],
            shared_core=shared_core,
            features_extractor_class=MiniGridFeaturesExtractor,
            features_extractor_kwargs=dict(output=features, element_dim=F, mission_encoder="bow"),
            normalize_images=False,
        ),
        n_steps=32,
        batch_size=64,
        sequence_length=16,
        seed=0,
        device="cpu",
    )


@pytest.mark.parametrize("core", list(READS_SETS))
def test_policy_feeds_the_set_to_a_set_core_and_the_flattened_set_to_others(core: str) -> None:
    policy = ppo(core).policy
    assert policy.features_extractor.set_shape == (S, F)
    expected = (S, F) if READS_SETS[core] else (S * F,)
    assert policy.core_input_shape == expected
    inputs: list[th.Size] = []
    for module in (policy.core, policy.critic_core):
        assert module.input_size == expected[-1]
        module.register_forward_pre_hook(lambda _, args: inputs.append(args[0].shape))
    obs = policy.obs_to_tensor(policy.observation_space.sample())[0]
    policy.predict_values(obs, policy.initial_state(1), th.zeros(1, dtype=th.bool))
    assert inputs == [th.Size((1, 1, *expected))] * 2


def test_vector_features_reach_the_core_as_before() -> None:
    policy = ppo("lstm", features="vector").policy
    assert policy.features_extractor.set_shape is None
    assert policy.core_input_shape == (policy.features_dim,) and policy.core.input_size == 64 + 8 + 32


@pytest.mark.parametrize("shared_core", [False, True])
@pytest.mark.parametrize("core", list(READS_SETS))
def test_replaying_the_buffer_reproduces_rollout_log_probs_and_values_with_a_set(core: str, shared_core: bool) -> None:
    model = ppo(core, shared_core=shared_core)
    fill_buffer(model)
    check_replay(model)


@pytest.mark.parametrize("core", list(READS_SETS))
def test_save_load_keeps_the_set_input(core: str, tmp_path: Path) -> None:
    model = ppo(core)
    model.learn(64)
    model.save(tmp_path / "model.zip")
    loaded = RecurrentPPO.load(tmp_path / "model.zip", device="cpu")
    assert loaded.policy.features_extractor.set_shape == (S, F)
    assert loaded.policy.core_input_shape == model.policy.core_input_shape
    env = doorkey()
    obs = env.reset()
    starts = np.ones(env.num_envs, dtype=bool)
    state = state_loaded = None
    for _ in range(5):
        actions, state = model.predict(obs, state, starts, deterministic=True)
        actions_loaded, state_loaded = loaded.predict(obs, state_loaded, starts, deterministic=True)
        np.testing.assert_array_equal(actions, actions_loaded)
        obs, _, dones, _ = env.step(actions)
        starts = dones
    leaves: list[list[np.ndarray]] = [[], []]
    map_state(leaves[0].append, state)
    map_state(leaves[1].append, state_loaded)
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(("model", "label"), [("rim_set", "rim12_u3_k2_set"), ("lstm", "lstm8_set")])
def test_cli_trains_with_set_features(tmp_path: Path, train: Run, model: str, label: str) -> None:
    run_dir = tmp_path / "run"
    core = model.removesuffix("_set")
    features = [] if model == "rim_set" else ["model.features=set"]
    args = [f"model={model}", *features, *TINY_MODEL[core], *TINY_AGENT["ppo"], *TINY, "total_frames=128"]
    ok(train([*args, "logger.wandb.mode=disabled", f"hydra.run.dir={run_dir}"]))
    assert json.loads((run_dir / "run_info.json").read_text())["model"] == label
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "eval/heldout/return_mean" in rows[-1]
    (checkpoint,) = (run_dir / "checkpoints").iterdir()
    policy = RecurrentPPO.load(checkpoint / "model.zip", device="cpu").policy
    n_elements = 49 + 1  # the cells and the direction: the default run encodes no mission
    reads_sets = READS_SETS[core]
    assert policy.features_extractor.set_shape == (n_elements, 32)
    assert policy.core_input_shape == ((n_elements, 32) if reads_sets else (n_elements * 32,))
