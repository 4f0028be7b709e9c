"""Recurrent PPO/A2C: the classic recurrent-PPO bugs, the SB3 API, and real short learning runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from helpers import check_replay, fill_buffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure

from rims_rl import map_state
from rims_rl.agents import RecurrentA2C, RecurrentPPO

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


@pytest.mark.filterwarnings("ignore:core dropout")  # eval mode on purpose
@pytest.mark.parametrize("shared_core", [False, True])
@pytest.mark.parametrize("core", list(CORES))
def test_replaying_the_buffer_reproduces_rollout_log_probs_and_values(core, shared_core):
    core_kwargs = {**CORES[core], **({"dropout": 0.5} if core == "rim" else {})}
    model = ppo(core, core_kwargs=core_kwargs, shared_core=shared_core)
    fill_buffer(model)
    check_replay(model)  # every chunk exactly once per epoch, every row a real step (no padding, no mask)


@pytest.mark.filterwarnings("ignore:core dropout")  # eval mode on purpose
def test_update_starts_with_ratio_one_even_with_dropout():
    model = ppo("rim", core_kwargs={**CORES["rim"], "dropout": 0.5}, n_epochs=1)
    model.set_logger(configure(None, []))
    fill_buffer(model)
    model.train()
    # approx_kl of the first (and only) epoch is computed before each step; the first minibatch sees ratio 1.
    assert model.logger.name_to_value["train/approx_kl"] < 1e-3


class ModeSpy(BaseCallback):
    """Records the actor core's ``training`` flag at every rollout step."""

    def __init__(self) -> None:
        super().__init__()
        self.training: list[bool] = []

    def _on_step(self) -> bool:
        self.training.append(self.model.policy.core.training)
        return True


@pytest.mark.filterwarnings("ignore:core dropout")  # the option off: the warning has its own test
@pytest.mark.parametrize("policy_train_mode", [False, True])
def test_policy_train_mode_runs_rollouts_and_updates_in_train_mode(policy_train_mode, one_thread):
    model = ppo("rim", core_kwargs={**CORES["rim"], "dropout": 0.5}, n_epochs=1, policy_train_mode=policy_train_mode)
    model.set_logger(configure(None, []))
    spy = ModeSpy()
    _, callback = model._setup_learn(model.n_steps * model.n_envs, spy)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    assert spy.training and set(spy.training) == {policy_train_mode}
    # Replayed in the option's mode, the rollout's log-probs come back exactly only without active dropout (the
    # caveat: with it, each pass draws new masks and the PPO ratio does not start at 1).
    batch = next(model.rollout_buffer.get(model.batch_size))
    model.policy.set_training_mode(policy_train_mode)
    with th.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(
            batch.observations, batch.actions.long().flatten(), batch.states, batch.episode_starts
        )
    assert th.allclose(log_prob, batch.old_log_prob, atol=1e-5) is not policy_train_mode
    # The update runs every forward pass in the same mode.
    seen = []
    hook = model.policy.core.register_forward_hook(lambda module, args, out: seen.append(module.training))
    model.train()
    hook.remove()
    assert seen and set(seen) == {policy_train_mode}
    # Evaluation stays in eval mode: predict() is deterministic with dropout in the core.
    obs = model.env.reset()
    greedy = [model.predict(obs, None, np.ones(model.n_envs, dtype=bool), deterministic=True)[1] for _ in range(2)]
    map_state(np.testing.assert_array_equal, *greedy)
    assert model.policy.core.training is False


@pytest.mark.parametrize(
    ("core_kwargs", "policy_train_mode", "warned"),
    [
        ({**CORES["rim"], "dropout": 0.1}, False, True),
        ({**CORES["rim"], "dropout": 0.1}, True, False),
        (CORES["rim"], False, False),
    ],
)
def test_inactive_core_dropout_warns_once_at_construction(core_kwargs, policy_train_mode, warned, tmp_path):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ppo("rim", core_kwargs=core_kwargs, policy_train_mode=policy_train_mode)
        model.save(tmp_path / "model")
        RecurrentPPO.load(tmp_path / "model")  # loading (e.g. to evaluate) does not warn again
    messages = [str(w.message) for w in caught if "dropout" in str(w.message)]
    expected = [
        "core dropout=0.1 has no effect: rollouts and updates run in eval mode; set policy_train_mode=True to train "
        "with dropout as torch-ac does"
    ]
    assert messages == (expected if warned else [])
    lstm = dict(hidden_size=8, num_layers=2, dropout=0.2)  # nn.LSTM's own dropout attribute, on the critic's core too
    with pytest.warns(UserWarning, match=r"core dropout=0\.2 has no effect") as record:
        RecurrentA2C("MlpRecurrentPolicy", cartpole(), policy_kwargs=dict(core="lstm", core_kwargs=lstm))
    assert len([w for w in record if "dropout" in str(w.message)]) == 1


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


# --- torch-ac 1.4's protocol as options (clip_range_vf, normalize_advantage, bootstrap_truncated, ...) -------------


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread, and do not fight a busy machine's other jobs for its cores."""
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


def test_clip_range_vf_takes_the_larger_of_torch_acs_two_squared_errors(monkeypatch, one_thread):
    from rims_rl.agents import ppo as ppo_module

    values, old_values = th.tensor([1.0, 0.5, -0.3]), th.tensor([0.0, 0.4, 0.0])
    returns = th.tensor([0.0, 1.0, -1.0])
    # unclipped (v - R)^2: 1, 0.25, 0.49; clipped v_old + clip(v - v_old, -0.2, 0.2) = 0.2, 0.5, -0.2 gives
    # 0.04, 0.25, 0.64; the larger of each: 1, 0.25, 0.64 -> mean 0.63 (SB3's clipped error alone: 0.31).
    loss = ppo_module.clipped_value_loss(values, old_values, returns, 0.2)
    assert loss.item() == pytest.approx(0.63, abs=1e-6)
    assert ppo_module.clipped_value_loss(values, old_values, returns, None).item() == pytest.approx(0.58, abs=1e-6)
    # train() hands the scheduled clip_range_vf to that loss, with the rollout's values as old_values.
    seen = []
    real = ppo_module.clipped_value_loss

    def spy(values, old_values, returns, clip_range_vf):
        seen.append(clip_range_vf)
        return real(values, old_values, returns, clip_range_vf)

    monkeypatch.setattr(ppo_module, "clipped_value_loss", spy)
    model = ppo("gru", n_epochs=1, clip_range_vf=lambda progress: 0.3)
    model.set_logger(configure(None, []))
    fill_buffer(model)
    model.train()
    assert seen and set(seen) == {0.3}
    assert model.logger.name_to_value["train/clip_range_vf"] == 0.3
    with pytest.raises(ValueError, match="expected clip_range_vf > 0"):
        ppo("gru", clip_range_vf=0.0)


@pytest.mark.parametrize("normalize_advantage", [True, False])
def test_normalize_advantage_false_uses_the_raw_advantages(normalize_advantage, one_thread):
    # One epoch, one minibatch: the ratio is 1 (to 1e-5), so the policy loss is -mean(advantages used).
    model = ppo("gru", n_epochs=1, batch_size=None, normalize_advantage=normalize_advantage)
    model.set_logger(configure(None, []))
    fill_buffer(model)
    raw_mean = float(model.rollout_buffer.advantages.mean())
    assert abs(raw_mean) > 0.1, "the test needs advantages whose mean is far from 0"
    model.train()
    policy_loss = model.logger.name_to_value["train/policy_gradient_loss"]
    expected = 0.0 if normalize_advantage else -raw_mean
    assert policy_loss == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("bootstrap_truncated", [True, False])
def test_bootstrap_truncated_false_treats_time_limits_as_terminal(bootstrap_truncated, one_thread):
    class ExpectedRewards(BaseCallback):
        """After each env step: the reward SB3's bootstrap would give each truncated env, from the same state."""

        def __init__(self) -> None:
            super().__init__()
            self.truncations: list[tuple[int, int, float, float]] = []  # step, env, raw reward, bootstrapped

        def _on_step(self) -> bool:
            step, infos, state = self.locals["step"], self.locals["infos"], self.locals["state"]
            for i, info in enumerate(infos):
                if info.get("TimeLimit.truncated", False):
                    obs = self.model.policy.obs_to_tensor(info["terminal_observation"])[0]
                    env_state = map_state(lambda s, i=i: s[:, i : i + 1], state)
                    with th.no_grad():
                        value = self.model.policy.predict_values(obs, env_state, th.zeros(1, dtype=th.bool)).item()
                    raw = float(self.locals["rewards"][i])
                    self.truncations.append((step, i, raw, raw + self.model.gamma * value))
            return True

    env = make_vec_env("CartPole-v1", n_envs=4, seed=0, env_kwargs=dict(max_episode_steps=8))
    model = ppo("gru", env=env, bootstrap_truncated=bootstrap_truncated)
    expected = ExpectedRewards()
    _, callback = model._setup_learn(model.n_steps * model.n_envs, expected)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    rewards = model.rollout_buffer.rewards
    assert len(expected.truncations) >= 8, "the test needs time-limit truncations"
    truncated = np.zeros_like(rewards, dtype=bool)
    for step, i, raw, bootstrapped in expected.truncations:
        truncated[step, i] = True
        assert rewards[step, i] == pytest.approx(bootstrapped if bootstrap_truncated else raw, rel=1e-6)
        assert bootstrapped != pytest.approx(raw)
    np.testing.assert_array_equal(rewards[~truncated], 1.0)  # CartPole's reward, untouched elsewhere


def _states_by_oracle(model: RecurrentPPO, starts: list[int], n_steps: int) -> list:
    """For each rollout step in ``starts``, the state ``n_steps`` steps later, stepping the policy one step at a time
    (resets through episode_starts) from the rollout's stored state there."""
    buffer, interval = model.rollout_buffer, model.rollout_buffer.state_interval
    out = []
    for start in starts:
        state = buffer.chunk_states[start // interval]
        for t in range(start, start + n_steps):
            obs = th.as_tensor(buffer.observations[t])
            step_starts = th.as_tensor(buffer.episode_starts[t]).bool()
            with th.no_grad():
                _, state = model.policy.get_distribution(obs, state, step_starts)
        out.append(state)
    return out


@pytest.mark.parametrize("shift_chunks", [False, True])
@pytest.mark.parametrize("refresh_chunk_states", [True, False])
def test_refresh_chunk_states_writes_back_the_state_each_chunk_computes(refresh_chunk_states, shift_chunks, one_thread):
    # One epoch (unshifted), one minibatch: every chunk starts from the rollout's state, and the state it reaches
    # at the next kept step (the chunk's end, or its middle with shift_chunks) under the update's parameters is
    # written there. The parameters are moved off the rollout's first, else that state is the rollout's own.
    T, n_steps = 8, 32
    model = ppo(
        "lstm",
        n_steps=n_steps,
        sequence_length=T,
        batch_size=None,
        n_epochs=1,
        refresh_chunk_states=refresh_chunk_states,
        shift_chunks=shift_chunks,
    )
    model.set_logger(configure(None, []))
    fill_buffer(model)
    buffer = model.rollout_buffer
    interval = T // 2 if shift_chunks else T
    assert buffer.state_interval == interval and len(buffer.chunk_states) == n_steps // interval
    rollout = [map_state(lambda s: s.clone(), state) for state in buffer.chunk_states]
    th.manual_seed(1)
    with th.no_grad():
        for parameter in model.policy.parameters():
            parameter.add_(0.1 * th.randn_like(parameter))
    chunk_starts = list(range(0, n_steps, T))
    computed = dict(
        zip([s + interval for s in chunk_starts], _states_by_oracle(model, chunk_starts, interval), strict=True)
    )
    model.train()
    envs = th.arange(model.n_envs)
    refreshed = 0
    for slot, rollout_state in enumerate(rollout):
        step = slot * interval
        stored = buffer.states_at(th.full((model.n_envs,), step), envs)
        if refresh_chunk_states and step in computed:
            for got, want, old in zip(leaves(stored), leaves(computed[step]), leaves(rollout_state), strict=True):
                th.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
                assert not th.allclose(got, old, atol=1e-3), "the refreshed state should differ from the rollout's"
            refreshed += 1
        else:
            map_state(lambda got, want: th.testing.assert_close(got, want, rtol=0, atol=0), stored, rollout_state)
    # Written: 8, 16, 24 (the next chunk's start; 32 is past the end), or 4, 12, 20, 28 (the middles).
    assert refreshed == (len(range(interval, n_steps, T)) if refresh_chunk_states else 0)


def test_shift_chunks_moves_chunk_starts_by_half_a_chunk_on_alternate_epochs(one_thread):
    T, n_steps, n_envs = 8, 32, 4
    model = ppo("gru", n_steps=n_steps, sequence_length=T, batch_size=16, n_epochs=3, shift_chunks=True)
    model.set_logger(configure(None, []))
    fill_buffer(model)
    buffer = model.rollout_buffer
    assert len(buffer.chunk_states) == n_steps // (T // 2)
    observations = th.as_tensor(buffer.observations)
    for shift, first in ((False, {0, 8, 16, 24}), (True, {4, 12, 20})):
        chunks = []
        for batch in buffer.get(model.batch_size, shift=shift):
            N = len(batch.chunk_starts)
            assert 0 < N <= model.batch_size // T and batch.episode_starts.shape == (T, N)
            rows = batch.observations.view(T, N, -1)
            for j, (start, env) in enumerate(zip(batch.chunk_starts.tolist(), batch.chunk_envs.tolist(), strict=True)):
                assert start + T <= n_steps, "a chunk crosses the env's rollout end"
                th.testing.assert_close(rows[:, j], observations[start : start + T, env], rtol=0, atol=0)
                want = map_state(lambda s, e=env: s[:, e], buffer.chunk_states[start // (T // 2)])
                map_state(th.testing.assert_close, map_state(lambda s, j=j: s[:, j], batch.states), want)
                chunks.append((start, env))
        assert sorted(chunks) == sorted((s, e) for s in first for e in range(n_envs))
    # train() alternates, epoch by epoch, counted over the run (torch-ac's batch_num).
    shifts = []
    get = buffer.get

    def recording_get(batch_size=None, shift=False):
        shifts.append(shift)
        return get(batch_size, shift=shift)

    buffer.get = recording_get
    model.train()
    model.train()
    assert shifts == [False, True, False, True, False, True]
    with pytest.raises(ValueError, match="expected an even sequence_length with shift_chunks, got 7"):
        ppo("gru", n_steps=28, batch_size=28, sequence_length=7, shift_chunks=True)


def test_protocol_options_off_leave_the_update_bit_identical(one_thread):
    # The defaults are today's protocol: explicit "off" values train to the very same parameters. (Checked
    # against the code before these options existed when they were added: bit-identical on lstm and rim.)
    off = dict(clip_range_vf=None, normalize_advantage=True, bootstrap_truncated=True)
    off.update(refresh_chunk_states=False, shift_chunks=False, policy_train_mode=False)
    default = ppo("lstm").learn(128)  # built and trained one after the other: both seed torch's global RNG
    explicit = ppo("lstm", **off).learn(128)
    for (name, a), (_, b) in zip(
        default.policy.state_dict().items(), explicit.policy.state_dict().items(), strict=True
    ):
        assert th.equal(a, b), name
    # All of torch-ac's options together run an update end to end (dido_table's setting).
    torch_ac = RecurrentPPO(
        "MlpRecurrentPolicy",
        cartpole(),
        n_steps=32,
        batch_size=64,
        sequence_length=16,
        seed=0,
        device="cpu",
        clip_range_vf=0.2,
        normalize_advantage=False,
        bootstrap_truncated=False,
        refresh_chunk_states=True,
        shift_chunks=True,
        policy_train_mode=True,
        policy_kwargs=dict(core="rim", core_kwargs={**CORES["rim"], "dropout": 0.1}, shared_core=True),
    ).learn(256)
    assert all(th.isfinite(p).all() for p in torch_ac.policy.parameters())


def test_predict_with_a_deterministic_mask_is_greedy_exactly_where_it_is_set():
    model = ppo("lstm")
    obs = cartpole(n_envs=4, seed=3).reset()
    starts = np.ones(4, dtype=bool)
    greedy, _ = model.predict(obs, None, starts, deterministic=True)
    mask = np.array([True, False, True, False])
    mixed = [model.predict(obs, None, starts, deterministic=mask)[0] for _ in range(30)]
    assert all((actions[mask] == greedy[mask]).all() for actions in mixed)
    assert any((actions[~mask] != greedy[~mask]).any() for actions in mixed)  # the other rows are sampled
