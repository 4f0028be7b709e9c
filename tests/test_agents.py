"""Recurrent PPO/A2C: the classic recurrent-PPO bugs, the SB3 API, and real short learning runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure

from agents import RecurrentA2C, RecurrentPPO
from rims_rl import map_state

CORES = {
    "lstm": dict(hidden_size=24),
    "gru": dict(hidden_size=24),
    "rim": dict(hidden_size=24, num_units=4, k=2),
}


def cartpole(n_envs: int = 4, seed: int = 0):
    # Random CartPole episodes last about 20 steps: plenty of resets inside every 16-step chunk.
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed)


def ppo(core: str, env=None, **kwargs) -> RecurrentPPO:
    # CPU unless a test asks for CUDA: exact replay holds to 1e-5 there (cuDNN's TF32 kernels differ by about 1e-4).
    kwargs = {"n_steps": 32, "batch_size": 64, "sequence_length": 16, "seed": 0, "device": "cpu", **kwargs}
    core_kwargs = kwargs.pop("core_kwargs", CORES[core])
    shared_core = kwargs.pop("shared_core", False)
    return RecurrentPPO(
        "MlpRecurrentPolicy",
        env or cartpole(),
        policy_kwargs=dict(core=core, core_kwargs=core_kwargs, shared_core=shared_core),
        **kwargs,
    )


def leaves(state) -> list:
    """The arrays of a (possibly nested) recurrent state, in order."""
    arrays: list = []
    map_state(arrays.append, state)
    return arrays


def fill_buffer(model: RecurrentPPO) -> None:
    """One rollout, exactly as learn() does it, with no update."""
    _, callback = model._setup_learn(model.n_steps * model.n_envs, None)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


@pytest.mark.parametrize("shared_core", [False, True])
@pytest.mark.parametrize("core", list(CORES))
def test_replaying_the_buffer_reproduces_rollout_log_probs_and_values(core, shared_core):
    core_kwargs = {**CORES[core], **({"dropout": 0.5} if core == "rim" else {})}
    model = ppo(core, core_kwargs=core_kwargs, shared_core=shared_core)
    fill_buffer(model)
    buffer = model.rollout_buffer
    starts = buffer.episode_starts
    assert starts[1:].sum() > 0, "the test needs episode ends inside the rollout"
    # Every chunk appears exactly once per epoch; every row is a real step (no padding, no mask).
    n_rows = 0
    model.policy.set_training_mode(False)
    for batch in buffer.get(model.batch_size):
        assert batch.episode_starts.shape == (16, model.batch_size // 16)
        with th.no_grad():
            values, log_prob, _ = model.policy.evaluate_actions(
                batch.observations, batch.actions.long().flatten(), batch.states, batch.episode_starts
            )
        assert th.allclose(log_prob, batch.old_log_prob, atol=1e-5)
        assert th.allclose(values.flatten(), batch.old_values, atol=1e-5)
        n_rows += len(batch.actions)
    assert n_rows == model.n_steps * model.n_envs


def test_update_starts_with_ratio_one_even_with_dropout():
    model = ppo("rim", core_kwargs={**CORES["rim"], "dropout": 0.5}, n_epochs=1)
    model.set_logger(configure(None, []))
    fill_buffer(model)
    model.train()
    # approx_kl of the first (and only) epoch is computed before each step; the first minibatch sees ratio 1.
    assert model.logger.name_to_value["train/approx_kl"] < 1e-3


@pytest.mark.parametrize("shared_core", [False, True])
@pytest.mark.parametrize("core", list(CORES))
def test_state_resets_exactly_at_episode_starts(core, shared_core):
    model = ppo(core, shared_core=shared_core)
    env = cartpole(n_envs=2)
    obs = env.reset()
    _, warm = model.predict(obs, None, np.ones(2, dtype=bool))
    _, warm = model.predict(obs, warm, np.zeros(2, dtype=bool))
    # A start flag on env 0 must give env 0 exactly the fresh-start result, and leave env 1 untouched.
    _, reset = model.predict(obs, warm, np.array([True, False]))
    _, fresh = model.predict(obs, None, None)
    _, carried = model.predict(obs, warm, np.zeros(2, dtype=bool))
    for r, f, c in zip(leaves(reset), leaves(fresh), leaves(carried), strict=True):
        np.testing.assert_array_equal(r[:, 0], f[:, 0])
        np.testing.assert_array_equal(r[:, 1], c[:, 1])
        assert not np.array_equal(r[:, 0], c[:, 0]), "the reset had no effect"


@pytest.mark.parametrize("shared_core", [False, True])
@pytest.mark.parametrize("core", list(CORES))
def test_save_load_predict_round_trip(core, shared_core, tmp_path):
    core_kwargs = {**CORES[core], "hidden_size": 32} if core != "rim" else CORES[core]
    model = ppo(core, core_kwargs=core_kwargs, shared_core=shared_core)
    model.learn(256)
    model.save(tmp_path / "model")
    loaded = RecurrentPPO.load(tmp_path / "model", env=cartpole())
    assert loaded.policy.core_kwargs == model.policy.core_kwargs
    assert loaded.policy.shared_core == shared_core
    env = cartpole(n_envs=3, seed=5)
    obs = env.reset()
    state, loaded_state = None, None
    starts = np.ones(3, dtype=bool)
    for _ in range(20):
        actions, state = model.predict(obs, state, starts, deterministic=True)
        loaded_actions, loaded_state = loaded.predict(obs, loaded_state, starts, deterministic=True)
        np.testing.assert_array_equal(actions, loaded_actions)
        map_state(np.testing.assert_array_equal, state, loaded_state)
        obs, _, starts, _ = env.step(actions)


@pytest.mark.parametrize("core", list(CORES))
def test_a_separate_critic_core_is_trained_by_the_value_loss_alone(core):
    model = ppo(core)
    assert model.policy.critic_core is not None and ppo(core, shared_core=True).policy.critic_core is None
    fill_buffer(model)
    batch = next(model.rollout_buffer.get(model.batch_size))
    values, log_prob, _ = model.policy.evaluate_actions(
        batch.observations, batch.actions.long().flatten(), batch.states, batch.episode_starts
    )
    model.policy.zero_grad()
    values.sum().backward(retain_graph=True)
    assert all(p.grad is None for p in model.policy.core.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.policy.critic_core.parameters())
    model.policy.zero_grad()
    log_prob.sum().backward()
    assert all(p.grad is None for p in model.policy.critic_core.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.policy.core.parameters())


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("core", list(CORES))
def test_trains_on_cuda(core):
    # The update runs in eval mode, where cuDNN has no RNN backward: it must fall back to PyTorch's kernels.
    model = ppo(core, device="cuda")
    model.learn(128)
    assert model.policy.core.training is False and th.backends.cudnn.enabled


def test_sb3_api_logger_callbacks_and_evaluate_policy():
    calls = []

    class Count(BaseCallback):
        def _on_step(self) -> bool:
            calls.append(self.num_timesteps)
            return True

    model = ppo("gru")
    model.set_logger(configure(None, []))
    model.learn(256, callback=Count())
    assert calls and calls[-1] == model.num_timesteps >= 256
    logged = model.logger.name_to_value
    for key in ("train/value_loss", "train/entropy_loss", "train/approx_kl", "train/clip_fraction"):
        assert key in logged
    mean, std = evaluate_policy(model, cartpole(n_envs=2), n_eval_episodes=4)
    assert mean > 0 and std >= 0


def test_a2c_is_one_epoch_full_batch_unclipped_rmsprop():
    model = RecurrentA2C(
        "MlpRecurrentPolicy", cartpole(), policy_kwargs=dict(core="gru", core_kwargs=CORES["gru"]), n_steps=8
    )
    assert isinstance(model.policy.optimizer, th.optim.RMSprop)
    assert model.policy.optimizer.defaults["eps"] == 1e-5 and model.policy.optimizer.defaults["alpha"] == 0.99
    assert (model.n_epochs, model.batch_size, model.clip_range, model.gae_lambda) == (1, None, None, 1.0)
    assert not model.normalize_advantage and model.sequence_length == 8
    fill_buffer(model)
    assert len(list(model.rollout_buffer.get(None))) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_steps=30, sequence_length=16), "n_steps to be a multiple of sequence_length=16"),
        (dict(batch_size=40, sequence_length=16), "batch_size to be a positive multiple of sequence_length=16"),
        (dict(sequence_length=0), "sequence_length >= 1"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ppo("lstm", **kwargs)


def test_unknown_core_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown core 'transformer'.*'lstm', 'gru', 'rim'"):
        RecurrentPPO("MlpRecurrentPolicy", cartpole(), policy_kwargs=dict(core="transformer"))


def test_missing_core_size_is_one_clear_error():
    with pytest.raises(ValueError, match="core 'rim' needs num_units, k"):
        RecurrentPPO("MlpRecurrentPolicy", cartpole(), policy_kwargs=dict(core="rim", core_kwargs=dict(hidden_size=8)))
