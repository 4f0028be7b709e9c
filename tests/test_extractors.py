"""Tests for ``rims_rl.agents.extractors.MiniGridFeaturesExtractor`` on real MiniGrid observations (no mocks)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage

from rims_rl.agents.extractors import MiniGridFeaturesExtractor
from rims_rl.envs import MAX_MISSION_LEN, TRAIN_ID, VOCAB, MissionToIdsWrapper, encode_mission

N_ENVS = 4


def _vec_env(env_id: str = TRAIN_ID, n_envs: int = N_ENVS) -> DummyVecEnv:
    venv = DummyVecEnv([lambda: MissionToIdsWrapper(gym.make(env_id)) for _ in range(n_envs)])
    venv.seed(0)
    return venv


def _batch(venv: DummyVecEnv) -> dict[str, torch.Tensor]:
    """A real observation batch, preprocessed exactly as SB3's policy does with normalize_images=False."""
    obs = obs_as_tensor(venv.reset(), torch.device("cpu"))
    return preprocess_obs(obs, venv.observation_space, normalize_images=False)  # type: ignore[return-value]


def _mission_obs(space: spaces.Dict, missions: list[str]) -> dict[str, torch.Tensor]:
    """Same image and direction for every row, one mission per row."""
    length = space["mission"].shape[0]
    b = len(missions)
    return {
        "image": torch.ones(b, 7, 7, 3),
        "direction": torch.eye(4)[torch.zeros(b, dtype=torch.long)],
        "mission": torch.as_tensor(np.stack([encode_mission(m, length) for m in missions])).float(),
    }


def _space(mission_len: int = MAX_MISSION_LEN) -> spaces.Dict:
    return spaces.Dict(
        {
            "image": spaces.Box(0, 255, (7, 7, 3), np.uint8),
            "direction": spaces.Discrete(4),
            "mission": spaces.Box(0, len(VOCAB) - 1, (mission_len,), np.int64),
        }
    )


def test_cnn_gives_64_features_for_7x7() -> None:
    venv = _vec_env("MiniGrid-DoorKey-5x5-v0")
    extractor = MiniGridFeaturesExtractor(venv.observation_space, direction_dim=0)
    assert extractor.image_features_dim == 64 and extractor.features_dim == 64
    layers = [type(m) for m in extractor.cnn]
    nn = torch.nn
    assert layers == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.Flatten]
    assert [m.out_channels for m in extractor.cnn if isinstance(m, torch.nn.Conv2d)] == [16, 32, 64]
    assert extractor(_batch(venv)).shape == (N_ENVS, 64)
    venv.close()


@pytest.mark.parametrize(
    ("mission_encoder", "direction_dim", "expected_dim"),
    [("none", 8, 72), ("bow", 8, 104), ("gru", 8, 136), ("gru", 0, 128), ("none", 0, 64)],
)
def test_output_shape_on_real_batch(mission_encoder: str, direction_dim: int, expected_dim: int) -> None:
    venv = _vec_env()
    extractor = MiniGridFeaturesExtractor(
        venv.observation_space,
        direction_dim=direction_dim,
        mission_encoder=mission_encoder,  # type: ignore[arg-type]
        mission_embedding_dim=32,
        mission_hidden_dim=64,
    )
    assert extractor.features_dim == expected_dim
    features = extractor(_batch(venv))
    assert features.shape == (N_ENVS, expected_dim) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    if mission_encoder != "none":
        assert extractor.vocab_size == len(VOCAB)
    venv.close()


def test_channels_first_space_gives_same_features() -> None:
    """After SB3's VecTransposeImage the image space is (3, 7, 7); the extractor reads the layout from it."""
    venv = _vec_env()
    transposed = VecTransposeImage(venv)
    assert transposed.observation_space["image"].shape == (3, 7, 7)
    last = MiniGridFeaturesExtractor(venv.observation_space, mission_encoder="bow")
    first = MiniGridFeaturesExtractor(transposed.observation_space, mission_encoder="bow")
    first.load_state_dict(last.state_dict())
    batch_last = _batch(venv)
    batch_first = {**batch_last, "image": batch_last["image"].permute(0, 3, 1, 2)}
    torch.testing.assert_close(first(batch_first), last(batch_last))
    venv.close()


@pytest.mark.parametrize("mission_encoder", ["bow", "gru"])
def test_different_missions_give_different_features(mission_encoder: str) -> None:
    torch.manual_seed(0)
    space = _space()
    extractor = MiniGridFeaturesExtractor(space, mission_encoder=mission_encoder)  # type: ignore[arg-type]
    missions = [
        "pick up the red ball",
        "pick up the green ball",
        "pick up the red key",
        "pick up the red ball",
    ]
    features = extractor(_mission_obs(space, missions))
    mission_part = extractor.features_dim - extractor.image_features_dim - extractor.direction_dim
    assert mission_part > 0
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(features[i], features[j])
    torch.testing.assert_close(features[0], features[3])


def test_gru_distinguishes_word_order() -> None:
    torch.manual_seed(0)
    space = _space()
    extractor = MiniGridFeaturesExtractor(space, mission_encoder="gru")
    features = extractor(
        _mission_obs(space, ["put the red key near the blue ball", "put the blue ball near the red key"])
    )
    assert not torch.allclose(features[0], features[1])


@pytest.mark.parametrize("mission_encoder", ["bow", "gru"])
def test_padding_does_not_change_mission_encoding(mission_encoder: str) -> None:
    torch.manual_seed(0)
    short, long = _space(8), _space(40)
    a = MiniGridFeaturesExtractor(short, mission_encoder=mission_encoder)  # type: ignore[arg-type]
    b = MiniGridFeaturesExtractor(long, mission_encoder=mission_encoder)  # type: ignore[arg-type]
    b.load_state_dict(a.state_dict())  # no parameter depends on L
    missions = ["pick up the red ball", "get to the green goal square", "go to the blue door", ""]
    fa, fb = a(_mission_obs(short, missions)), b(_mission_obs(long, missions))
    torch.testing.assert_close(fa, fb)


def test_gru_encoding_is_the_final_hidden_state_of_the_unpadded_mission() -> None:
    torch.manual_seed(0)
    space = _space()
    extractor = MiniGridFeaturesExtractor(space, mission_encoder="gru")
    missions = ["pick up the red ball", "go to the blue door", "reach the goal", ""]
    ids = _mission_obs(space, missions)["mission"]
    encoded = extractor.encode_mission(ids)
    for row, mission in zip(ids.long(), missions, strict=True):
        n = len(mission.split())
        if n == 0:
            continue
        assert extractor.word_embedding is not None and extractor.mission_gru is not None
        _, h_n = extractor.mission_gru(extractor.word_embedding(row[:n]).unsqueeze(0))
        torch.testing.assert_close(encoded[missions.index(mission)], h_n[0, 0])
    assert (encoded[3] == 0).all()


def test_bow_ignores_padding_in_the_mean() -> None:
    torch.manual_seed(0)
    space = _space()
    extractor = MiniGridFeaturesExtractor(space, mission_encoder="bow")
    ids = _mission_obs(space, ["pick up the red ball", ""])["mission"]
    encoded = extractor.encode_mission(ids)
    assert extractor.word_bag is not None
    expected = extractor.word_bag.weight[ids[0, :5].long()].mean(dim=0)
    torch.testing.assert_close(encoded[0], expected)
    assert (encoded[1] == 0).all()


def test_direction_indices_and_one_hot_agree() -> None:
    space = _space()
    extractor = MiniGridFeaturesExtractor(space)
    obs = _mission_obs(space, ["reach the goal"] * 4)
    one_hot = {**obs, "direction": torch.eye(4)}
    indices = {**obs, "direction": torch.arange(4).float()}
    torch.testing.assert_close(extractor(one_hot), extractor(indices))
    from_buffer = {**obs, "direction": torch.eye(4).unsqueeze(1)}  # (B, 1, N), as sampled from SB3's buffer
    torch.testing.assert_close(extractor(from_buffer), extractor(indices))
    assert not torch.allclose(extractor(one_hot)[0], extractor(one_hot)[1])


def test_missing_keys_and_bad_arguments_raise() -> None:
    image = spaces.Box(0, 255, (7, 7, 3), np.uint8)
    no_mission = spaces.Dict({"image": image, "direction": spaces.Discrete(4)})
    with pytest.raises(ValueError, match=r"missing \['mission'\].*mission_encoder='none'"):
        MiniGridFeaturesExtractor(no_mission, mission_encoder="gru")
    assert MiniGridFeaturesExtractor(no_mission).features_dim == 72  # mission not needed with "none"
    image_only = spaces.Dict({"image": image})
    with pytest.raises(ValueError, match=r"missing \['direction'\].*direction_dim=0"):
        MiniGridFeaturesExtractor(image_only)
    assert MiniGridFeaturesExtractor(image_only, direction_dim=0).features_dim == 64
    with pytest.raises(ValueError, match=r"missing \['image'\]"):
        MiniGridFeaturesExtractor(spaces.Dict({"direction": spaces.Discrete(4)}), direction_dim=0)
    with pytest.raises(ValueError, match="expected a Dict observation space"):
        MiniGridFeaturesExtractor(image)
    with pytest.raises(ValueError, match="mission_encoder"):
        MiniGridFeaturesExtractor(_space(), mission_encoder="lstm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cnn_channels"):
        MiniGridFeaturesExtractor(_space(), cnn_channels=(16, 32))
    with pytest.raises(ValueError, match="direction_dim"):
        MiniGridFeaturesExtractor(_space(), direction_dim=-1)


def test_short_ppo_run() -> None:
    """A real SB3 PPO with the extractor learns for a few hundred steps without error."""
    venv = _vec_env(n_envs=2)
    model = PPO(
        "MultiInputPolicy",
        venv,
        policy_kwargs=dict(
            features_extractor_class=MiniGridFeaturesExtractor,
            features_extractor_kwargs=dict(mission_encoder="gru"),
            normalize_images=False,
        ),
        n_steps=64,
        batch_size=64,
        n_epochs=2,
        seed=0,
        device="cpu",
    )
    extractor = model.policy.features_extractor
    assert isinstance(extractor, MiniGridFeaturesExtractor)
    assert extractor.channels_first  # SB3 wrapped the env in VecTransposeImage
    before = [p.detach().clone() for p in extractor.parameters()]
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    assert any(not torch.equal(a, b) for a, b in zip(before, extractor.parameters(), strict=True))
    venv.close()


def test_extractors_module_does_not_import_envs_or_hydra() -> None:
    import subprocess
    import sys

    # envs: the package beside agents, in the same namespace
    code = (
        "import sys, rims_rl.agents.extractors\n"
        "prefix = rims_rl.agents.extractors.__name__.rpartition('agents')[0]\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('hydra', 'minigrid') or "
        "(m + '.').startswith(prefix + 'envs.')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- output="set": the view's cells, the direction and the mission as set elements --------------------------------


def _set_extractor(mission_encoder: str = "gru", element_dim: int = 16, space: spaces.Dict | None = None):
    torch.manual_seed(0)
    return MiniGridFeaturesExtractor(
        space or _space(),
        mission_encoder=mission_encoder,  # type: ignore[arg-type]
        output="set",
        element_dim=element_dim,
    )


@pytest.mark.parametrize(
    ("mission_encoder", "direction_dim", "n_elements"),
    [("gru", 8, 51), ("bow", 8, 51), ("none", 8, 50), ("none", 0, 49)],
)
def test_set_output_shape_on_real_batch(mission_encoder: str, direction_dim: int, n_elements: int) -> None:
    venv = _vec_env()
    torch.manual_seed(0)
    extractor = MiniGridFeaturesExtractor(
        venv.observation_space,
        direction_dim=direction_dim,
        mission_encoder=mission_encoder,  # type: ignore[arg-type]
        output="set",
        element_dim=16,
    )
    assert extractor.set_shape == (n_elements, 16) and extractor.features_dim == n_elements * 16
    elements = extractor(_batch(venv))
    assert elements.shape == (N_ENVS, n_elements, 16) and torch.isfinite(elements).all()
    assert extractor.cnn is None
    venv.close()


def test_set_layout_cell_i_j_is_element_i_w_plus_j_then_direction_then_mission() -> None:
    """Changing one input changes exactly its own element: cell (i, j) -> i * 7 + j, direction -> 49, mission -> 50."""
    space = _space()
    extractor = _set_extractor()
    obs = _mission_obs(space, ["pick up the red ball"])
    base = extractor(obs)[0]
    for (i, j), element in [((0, 0), 0), ((2, 5), 19), ((6, 6), 48)]:
        image = obs["image"].clone()
        image[0, i, j] = torch.tensor([5.0, 2.0, 0.0])  # a blue key in the empty view
        changed = (extractor({**obs, "image": image})[0] != base).any(dim=1)
        assert changed.nonzero().flatten().tolist() == [element]
    changed = (extractor({**obs, "direction": torch.eye(4)[[2]]})[0] != base).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [49]
    changed = (extractor(_mission_obs(space, ["go to the blue door"]))[0] != base).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [50]


def test_set_layout_reads_channels_first_spaces_the_same() -> None:
    venv = _vec_env()
    transposed = VecTransposeImage(venv)
    last = _set_extractor(space=venv.observation_space)
    first = _set_extractor(space=transposed.observation_space)
    first.load_state_dict(last.state_dict())
    batch = _batch(venv)
    torch.testing.assert_close(first({**batch, "image": batch["image"].permute(0, 3, 1, 2)}), last(batch))
    venv.close()


def test_position_embedding_tells_identical_cells_apart() -> None:
    space = _space()
    extractor = _set_extractor()
    obs = _mission_obs(space, ["reach the goal"])  # every cell is the same object, colour and state
    cells = extractor(obs)[0, :49]
    assert torch.cdist(cells, cells).add(torch.eye(49) * 1e9).min() > 1e-3  # pairwise distinct
    assert extractor.position_embedding is not None
    with torch.no_grad():
        extractor.position_embedding.weight.zero_()  # without positions the 49 identical cells are one element
    cells = extractor(obs)[0, :49]
    torch.testing.assert_close(cells, cells[:1].expand(49, -1))


@pytest.mark.parametrize("mission_encoder", ["bow", "gru"])
def test_padding_does_not_change_the_mission_element(mission_encoder: str) -> None:
    short, long = _space(8), _space(40)
    a = _set_extractor(mission_encoder, space=short)
    b = _set_extractor(mission_encoder, space=long)
    b.load_state_dict(a.state_dict())  # no parameter depends on L
    missions = ["pick up the red ball", "get to the green goal square", "go to the blue door", ""]
    fa, fb = a(_mission_obs(short, missions)), b(_mission_obs(long, missions))
    torch.testing.assert_close(fa, fb)
    assert not torch.allclose(fa[0, -1], fa[1, -1])  # the mission element reads the mission


def test_vector_output_is_the_default_and_builds_no_set_modules() -> None:
    """output="vector" is the concatenation of CNN, direction embedding and mission encoding, as before the option."""
    space = _space()
    torch.manual_seed(0)
    default = MiniGridFeaturesExtractor(space, mission_encoder="gru")
    torch.manual_seed(0)
    vector = MiniGridFeaturesExtractor(space, mission_encoder="gru", output="vector", element_dim=5)
    assert default.set_shape is None and default.output == "vector"
    keys = {key.split(".")[0] for key in default.state_dict()}
    assert keys == {"cnn", "direction_embedding", "word_embedding", "mission_gru"}
    assert all(torch.equal(a, b) for a, b in zip(default.parameters(), vector.parameters(), strict=True))
    obs = _mission_obs(space, ["pick up the red ball", "go to the blue door"])
    obs["image"] = torch.randint(0, 11, (2, 7, 7, 3)).float()
    assert default.direction_embedding is not None and default.cnn is not None
    expected = torch.cat(
        [
            default.cnn(obs["image"].permute(0, 3, 1, 2)),
            default.direction_embedding(obs["direction"]),
            default.encode_mission(obs["mission"]),
        ],
        dim=1,
    )
    assert torch.equal(default(obs), expected) and torch.equal(vector(obs), expected)


def test_set_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"expected output in \('vector', 'set'\), got 'graph'"):
        MiniGridFeaturesExtractor(_space(), output="graph")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected element_dim >= 1, got 0"):
        MiniGridFeaturesExtractor(_space(), output="set", element_dim=0)
