"""The JAX backend's recurrent PPO/A2C (rims_rl.agents.jax): GAE against SB3's, the update's exact recomputation of the
rollout (ratio 1) with resets inside chunks, shared and separate critic cores, vmapped seeds against sequential
ones, config errors, evaluation, and a short learning run.

The env is :func:`cue_memory`, a toy with the :class:`rims_rl.envs.jax.JaxEnv` interface: a cue colour shown on the
first step only, then blank views, then a query; the action on the query must name the cue (reward 1, else 0). Action 2
waits, so episodes end by termination or, waiting, by the time limit (truncation).
"""

from __future__ import annotations

import functools
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from rims_rl.agents.jax import ppo  # noqa: E402
from rims_rl.agents.jax.networks import CORES  # noqa: E402

CORE_KWARGS = {
    "lstm": {"hidden_size": 16},
    "gru": {"hidden_size": 16},
    "rim": {"hidden_size": 16, "num_units": 4, "k": 2},
}


@dataclass(frozen=True)
class ToyEnv:
    """The :class:`rims_rl.envs.jax.JaxEnv` interface."""

    env_id: str
    num_actions: int
    max_steps: int
    reset: Any
    step: Any


def cue_memory(delay: int = 2, max_steps: int = 6) -> ToyEnv:
    """A cue (colour 1 or 2 of a key at the view's centre) at t = 0, empty views until t = ``delay``, then a box
    (the query) until the agent answers: action 0 / 1 names colour 1 / 2 (reward 1 if right, else 0; terminated),
    action 2 waits; the episode is truncated after ``max_steps`` steps. Auto-resets."""

    def observe(cue: jax.Array, t: jax.Array) -> dict[str, jax.Array]:
        obj = jnp.where(t == 0, 5, jnp.where(t >= delay, 7, 1))  # key, empty, box
        colour = jnp.where(t == 0, cue + 1, 0)
        image = jnp.zeros((7, 7, 3), jnp.uint8).at[3, 3].set(jnp.stack([obj, colour, 0]).astype(jnp.uint8))
        return {"image": image, "direction": (t % 4).astype(jnp.int32)}

    def reset(key: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        cue = jax.random.bernoulli(key).astype(jnp.int32)
        t = jnp.zeros((), jnp.int32)
        return (cue, t), observe(cue, t)

    def step(state: Any, action: jax.Array, key: jax.Array) -> tuple[Any, ...]:
        cue, t = state
        answered = (t >= delay) & (action < 2)
        reward = jnp.where(answered & (action == cue), 1.0, 0.0).astype(jnp.float32)
        t = t + 1
        truncated = ~answered & (t >= max_steps)
        new_state, new_obs = reset(key)
        done = answered | truncated
        state = jax.tree.map(lambda a, b: jnp.where(done, a, b), new_state, (cue, t))
        obs = jax.tree.map(lambda a, b: jnp.where(done, a, b), new_obs, observe(cue, t))
        return state, obs, reward, answered, truncated

    return ToyEnv("CueMemory", 3, max_steps, reset, step)


def small_config(core: str = "lstm", **changes: Any) -> ppo.PPOConfig:
    base = dict(
        n_envs=4,
        n_steps=16,
        batch_size=32,
        n_epochs=2,
        sequence_length=8,
        core=core,
        core_kwargs=CORE_KWARGS.get(core, {}),
    )
    return ppo.PPOConfig(**{**base, **changes})


def test_import_agents_does_not_import_jax() -> None:
    code = "import sys, rims_rl.agents; assert 'jax' not in sys.modules and 'rims_rl.agents.jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cores_are_the_torch_registry_names() -> None:
    import rims_rl

    assert set(CORES) == set(rims_rl.CORES)


@pytest.mark.parametrize("ortho_init", [True, False])
def test_conv2x2_is_flax_conv(ortho_init: bool) -> None:
    """The extractor's matmul convolutions: nn.Conv's parameters (names, shapes, init), outputs and gradients."""
    from flax import linen as nn

    from rims_rl.agents.jax.networks import Conv2x2, MiniGridFeatures

    init = {"kernel_init": nn.initializers.orthogonal(2**0.5), "bias_init": nn.initializers.zeros} if ortho_init else {}
    x = jax.random.normal(jax.random.key(1), (5, 6, 4, 3))
    conv, ours = nn.Conv(7, (2, 2), padding="VALID", **init), Conv2x2(7, **init)
    params = conv.init(jax.random.key(0), x)
    assert jax.tree.all(jax.tree.map(jnp.array_equal, ours.init(jax.random.key(0), x), params))
    np.testing.assert_allclose(ours.apply(params, x), conv.apply(params, x), rtol=1e-5, atol=1e-6)
    grads = [jax.grad(lambda p, m=m: (m.apply(p, x) ** 2).sum())(params) for m in (ours, conv)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), *grads)
    names = MiniGridFeatures().init(jax.random.key(0), {"image": jnp.zeros((1, 7, 7, 3)), "direction": jnp.zeros(1)})
    assert sorted(names["params"]) == ["Conv_0", "Conv_1", "Conv_2", "Embed_0"]


@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_recurrence_gradient_is_the_scan_gradient(core: str) -> None:
    """The gated cores' custom backward pass equals autodiff of their scan, with resets and a nonzero start."""
    from rims_rl.agents.jax import networks

    cell = {"lstm": networks.LSTM, "gru": networks.GRU}[core]._cell
    T, B, H, G = 7, 3, 5, 4 if core == "lstm" else 3
    keys = jax.random.split(jax.random.key(0), 5)
    gates_x = jax.random.normal(keys[0], (T, B, G * H))
    starts = jax.random.bernoulli(keys[1], 0.3, (T, B))
    carry = tuple(jax.random.normal(k, (B, H)) for k in jax.random.split(keys[2], 2 if core == "lstm" else 1))
    weight_hh, bias_hh = jax.random.normal(keys[3], (H, G * H)), jax.random.normal(keys[4], (G * H,))

    def loss(recurrence: Any, *args: Any) -> jax.Array:
        output, final = recurrence(cell, *args)
        return (jnp.sin(output) * jnp.arange(H)).sum() + sum((f**2).sum() for f in final)

    args = (gates_x, starts, carry, weight_hh, bias_hh)
    plain = functools.partial(loss, lambda *a: networks._scan_cell(*a)[0])
    argnums = (0, 2, 3, 4)
    ours, reference = (jax.grad(f, argnums)(*args) for f in (functools.partial(loss, networks._recurrence), plain))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), ours, reference)


@pytest.mark.parametrize("gae_lambda", [0.95, 1.0])
def test_gae_equals_sb3(gae_lambda: float) -> None:
    """SB3's buffer on the same arrays: terminations, and truncations bootstrapped the way SB3's PPO adds
    ``gamma * V(terminal obs)`` to the reward before the buffer."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    rng = np.random.default_rng(0)
    N, E, gamma = 12, 3, 0.9
    rewards = rng.normal(size=(N, E)).astype(np.float32)
    values = rng.normal(size=(N, E)).astype(np.float32)
    terminated = rng.random((N, E)) < 0.15
    truncated = (rng.random((N, E)) < 0.15) & ~terminated
    terminated[-1, 0], truncated[-1, 1] = True, True  # the last step's dones too
    terminal_values = rng.normal(size=(N, E)).astype(np.float32)
    last_values = rng.normal(size=E).astype(np.float32)
    rewards = rewards + gamma * np.where(truncated, terminal_values, 0.0)
    dones = terminated | truncated

    buffer = RolloutBuffer(N, spaces.Box(-1, 1, (1,)), spaces.Discrete(2), gamma=gamma, gae_lambda=gae_lambda, n_envs=E)
    import torch as th

    starts = np.concatenate([np.ones((1, E), bool), dones[:-1]])
    for t in range(N):
        buffer.add(np.zeros((E, 1)), np.zeros((E, 1)), rewards[t], starts[t], th.tensor(values[t]), th.zeros(E))
    buffer.compute_returns_and_advantage(th.tensor(last_values), dones[-1])

    advantages, returns = ppo.compute_gae(
        jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones), jnp.asarray(last_values), gamma, gae_lambda
    )
    np.testing.assert_allclose(advantages, buffer.advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns, buffer.returns, rtol=1e-5, atol=1e-5)


def perturbed(params: Any, key: jax.Array, scale: float = 0.3) -> Any:
    """``params`` plus Gaussian noise: a policy far from the initial near-uniform one."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )


def first_minibatch(state: ppo.TrainState, env: ToyEnv, config: ppo.PPOConfig) -> tuple[ppo.Batch, ppo.Rollout]:
    """The first minibatch of the first epoch of the next update, as :func:`ppo.update` deals it."""
    _, rollout, _ = ppo.collect_rollout(state, env, config)
    advantages, returns = ppo.compute_gae(
        rollout.rewards, rollout.values, rollout.dones, rollout.last_values, config.gamma, config.gae_lambda
    )
    batches = ppo.chunk_batches(rollout, advantages, returns, jax.random.key(2), config.chunks_per_batch)
    return jax.tree.map(lambda x: x[0], batches), rollout


@pytest.mark.parametrize(("core", "shared_core"), [("lstm", False), ("gru", True), ("rim", False), ("rim", True)])
def test_update_recomputes_the_rollout(core: str, shared_core: bool) -> None:
    """The first minibatch of the first epoch, replayed from the stored chunk-start states, gives the rollout's
    log-probabilities and values (ratio 1); the chunks hold episode starts after their first step."""
    env = cue_memory()
    config = small_config(core, shared_core=shared_core)
    policy = ppo.make_policy(config, env.num_actions)
    state = ppo.init(jax.random.key(1), env, config)
    state = state._replace(params=perturbed(state.params, jax.random.key(7)))

    @jax.jit
    def replay(state: ppo.TrainState) -> tuple[ppo.Batch, dict[str, jax.Array], dict[str, jax.Array]]:
        batch, _ = first_minibatch(state, env, config)
        _, parts = ppo.ppo_loss(state.params, policy, batch, config)
        zero = jax.tree.map(jnp.zeros_like, batch.states)
        _, from_zero = ppo.ppo_loss(state.params, policy, batch._replace(states=zero), config)
        return batch, parts, from_zero

    batch, parts, from_zero = replay(state)
    assert bool(batch.episode_starts[1:].any()), "expected resets inside the chunks"
    assert float(jnp.abs(batch.old_log_probs - np.log(1 / 3)).max()) > 0.1, "expected a non-uniform policy"
    # Equal up to float32 rounding, which depends on the CPU: up to 7e-6 seen (the RIM's values on a Xeon, 2026-12-07).
    np.testing.assert_allclose(parts["log_ratio"], 0.0, atol=1e-4)
    np.testing.assert_allclose(parts["values"], batch.old_values, rtol=0, atol=1e-4)
    assert abs(float(parts["approx_kl"])) < 1e-7 and float(parts["clip_fraction"]) == 0.0
    # the stored chunk-start states matter: replayed from zero states, the chunks that start mid-episode differ by
    # far more than that rounding (log-ratio 2.5e-3 to 1.5, values 0.17 to 0.53 over the four cases)
    assert float(jnp.abs(from_zero["log_ratio"]).max()) > 1e-3


def test_shared_core_trains_the_actor_core_with_the_critic_loss() -> None:
    """With ``shared_core`` the critic reads the actor's core: the value loss alone has a gradient on ``core``;
    without it the critic has ``critic_core`` and the value loss leaves ``core`` untouched."""
    env = cue_memory()
    for shared_core in (False, True):
        config = small_config("gru", shared_core=shared_core, ent_coef=0.0)
        policy = ppo.make_policy(config, env.num_actions)
        state = ppo.init(jax.random.key(0), env, config)
        cores = {"features", "core", "pi", "vf"} | (set() if shared_core else {"critic_core"})
        assert set(state.params["params"]) == cores

        @jax.jit
        def core_grad(state: ppo.TrainState, config: ppo.PPOConfig = config, policy: Any = policy) -> jax.Array:
            batch, _ = first_minibatch(state, env, config)
            batch = batch._replace(advantages=jnp.zeros_like(batch.advantages))  # value loss only
            grads = jax.grad(lambda p: ppo.ppo_loss(p, policy, batch, config)[0])(state.params)
            return jnp.max(jnp.stack([jnp.abs(g).max() for g in jax.tree.leaves(grads["params"]["core"])]))

        assert (float(core_grad(state)) > 0) == shared_core


def test_vmapped_seeds_equal_sequential_seeds() -> None:
    env = cue_memory()
    config = small_config("gru")
    keys = jax.random.split(jax.random.key(3), 2)
    step = functools.partial(ppo.update, env=env, config=config)
    states = ppo.init_seeds(keys, env, config)
    batched, batched_metrics = jax.jit(jax.vmap(step))(states)
    single_step = jax.jit(step)
    for i in range(2):
        single, metrics = single_step(ppo.init(keys[i], env, config))
        for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(batched.params), strict=True):
            np.testing.assert_allclose(a, b[i], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(single.obs["image"], batched.obs["image"][i])
        for name, value in metrics.items():
            np.testing.assert_allclose(value, batched_metrics[name][i], rtol=1e-4, atol=1e-5, err_msg=name)
    assert not np.allclose(batched_metrics["train/loss"][0], batched_metrics["train/loss"][1])


INIT_SEEDS_AT_FULL_SIZE = """
import os
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])  # XLA's pool: two workers, as where it deadlocked
import jax, numpy as np
from rims_rl.agents.jax import ppo
from rims_rl.envs.jax import make
env, config = make("Navix-DoorKey-5x5-v0"), ppo.PPOConfig()
keys = jax.random.split(jax.random.PRNGKey(0), 3)
states = ppo.init_seeds(keys, env, config)
one = jax.jit(lambda key: ppo.init(key, env, config))
for i, key in enumerate(keys):
    for a, b in zip(jax.tree.leaves(one(key)), jax.tree.leaves(states), strict=True):
        np.testing.assert_array_equal(a, b[i])
"""


def test_init_seeds_of_the_default_model_finishes() -> None:
    """Regression: ``jax.vmap(init)`` of the default model (LSTM 192, orthogonal init: batched QR) deadlocked
    XLA:CPU's intra-op pool on 2 cores; :func:`ppo.init_seeds` finishes and equals :func:`ppo.init` of each key."""
    subprocess.run([sys.executable, "-c", INIT_SEEDS_AT_FULL_SIZE], check=True, timeout=240)


def test_truncation_bootstraps_from_the_value() -> None:
    """``bootstrap_truncated`` adds ``gamma * V(o_t)`` to the reward of each truncated step and nothing elsewhere
    (the same rollout: rewards do not change the actions)."""
    env = cue_memory(delay=1, max_steps=3)
    config = small_config("gru", gamma=0.9)
    state = ppo.init(jax.random.key(4), env, config)
    rollouts = [
        jax.jit(lambda s, c=c: ppo.collect_rollout(s, env, c)[1])(state)
        for c in (config, config.replace(bootstrap_truncated=False))
    ]
    np.testing.assert_array_equal(rollouts[0].actions, rollouts[1].actions)
    added = np.asarray(rollouts[0].rewards - rollouts[1].rewards)
    # truncations: the episode ends without an answer (actions 0 and 1 answer once the query shows)
    truncated = np.asarray(rollouts[0].dones & (rollouts[0].actions == 2))
    assert truncated.any() and (~truncated & np.asarray(rollouts[0].dones)).any()
    np.testing.assert_allclose(added, np.where(truncated, 0.9 * np.asarray(rollouts[0].values), 0.0), atol=1e-6)


def test_update_metrics_and_counters() -> None:
    env = cue_memory()
    config = small_config()
    state = ppo.init(jax.random.key(0), env, config)
    state, metrics = jax.jit(functools.partial(ppo.update, env=env, config=config))(state)
    assert int(state.frames) == 64 and int(state.n_updates) == 2
    expected = {
        "rollout/ep_rew_mean",
        "rollout/ep_len_mean",
        "rollout/success_rate",
        "rollout/episodes",
        "train/policy_gradient_loss",
        "train/value_loss",
        "train/entropy_loss",
        "train/loss",
        "train/approx_kl",
        "train/clip_fraction",
        "train/explained_variance",
        "train/n_updates",
        "time/total_timesteps",
    }
    assert set(metrics) == expected and all(np.shape(v) == () for v in metrics.values())
    # episodes of 3 to 6 steps in 16 steps of 4 envs
    assert 8 <= float(metrics["rollout/episodes"]) <= 4 * 16 / 3
    assert 3 <= float(metrics["rollout/ep_len_mean"]) <= 6
    a2c = ppo.a2c_config(n_envs=4, core_kwargs={"hidden_size": 8}, core="gru")
    _, metrics = jax.jit(functools.partial(ppo.update, env=env, config=a2c))(ppo.init(jax.random.key(0), env, a2c))
    assert "train/clip_fraction" not in metrics and float(metrics["train/n_updates"]) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_steps": 20}, "expected n_steps to be a multiple of sequence_length=8, got n_steps=20"),
        ({"batch_size": 12}, "expected batch_size to be a multiple of sequence_length=8 that divides"),
        ({"batch_size": 40}, "that divides n_envs * n_steps=64, got batch_size=40"),
        ({"n_envs": 0}, "expected n_envs to be an int >= 1, got 0"),
        ({"clip_range": 0.0}, "expected clip_range > 0 (None turns clipping off), got 0.0"),
        ({"gamma": 1.5}, "expected gamma in [0, 1], got 1.5"),
        ({"optimizer": "sgd"}, "expected optimizer in ('adam', 'rmsprop'), got 'sgd'"),
        (
            {"core": "transformer"},
            "expected core in ('lstm', 'gru', 'rim') (the JAX backend's cores), got 'transformer'",
        ),
        ({"core_kwargs": {"hidden_size": 16, "num_layers": 2}}, "expected core_kwargs accepted by the JAX core 'lstm'"),
        (
            {"core": "rim", "core_kwargs": {"hidden_size": 16, "num_units": 4, "k": 5}},
            "expected an int k with 1 <= k <= num_units=4, got k=5",
        ),
        (
            {"core": "rim", "core_kwargs": {"hidden_size": 16, "num_units": 4, "k": 2, "dropout": 0.1}},
            "expected core dropout=0",
        ),
        ({"net_arch": {"pi": [64], "q": [64]}}, "expected net_arch keys 'pi' and 'vf', got ['pi', 'q']"),
        ({"activation_fn": "gelu"}, "expected activation_fn in ('tanh', 'relu'), got 'gelu'"),
        ({"features_extractor_kwargs": {"direction_dim": -1}}, "expected direction_dim >= 0, got -1"),
        ({"features_extractor_kwargs": {"mission_encoder": "gru"}}, "expected features_extractor_kwargs among"),
    ],
)
def test_config_errors_are_one_line(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        small_config(**changes)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a2c_config_is_the_ppo_special_case() -> None:
    config = ppo.a2c_config()
    assert (config.n_epochs, config.batch_size, config.clip_range, config.normalize_advantage) == (1, None, None, False)
    assert (config.optimizer, config.optimizer_eps, config.learning_rate, config.n_steps) == ("rmsprop", 1e-5, 7e-4, 16)
    assert config.sequence_length == 16 and config.chunks_per_batch == 16
    with pytest.raises(TypeError, match="fixed by A2C"):
        ppo.a2c_config(n_epochs=4)
    assert set(ppo.CONFIGS) == {"ppo", "a2c"}


@pytest.mark.parametrize("core", ["lstm", "rim"])
def test_evaluate_counts_episodes(core: str) -> None:
    env = cue_memory()
    config = small_config(core)
    params = ppo.init(jax.random.key(0), env, config).params
    play = jax.jit(functools.partial(ppo.evaluate, env=env, config=config, episodes=7, n_envs=3, greedy=False))
    result = play(params, jax.random.key(5))
    assert result["returns"].shape == (7,) and float(result["episodes"]) == 7
    assert np.all((result["lengths"] >= 3) & (result["lengths"] <= 6))
    assert set(np.unique(result["returns"])) <= {0.0, 1.0}
    np.testing.assert_allclose(result["success_rate"], (result["returns"] > 0).mean())
    if core == "rim":
        np.testing.assert_allclose(result["unit_activity"].sum(-1), 2.0, rtol=1e-6)  # k = 2 active per step
        assert 0 <= float(result["switch_rate"]) <= 1
        assert 0 <= float(result["selection_entropy"]) <= np.log2(6) + 1e-6
    else:
        assert "unit_activity" not in result
    greedy = functools.partial(ppo.evaluate, env=env, config=config, episodes=4, n_envs=4, greedy=True)
    a, b = jax.jit(greedy)(params, jax.random.key(1)), jax.jit(greedy)(params, jax.random.key(1))
    np.testing.assert_array_equal(a["returns"], b["returns"])


def test_the_cap_cuts_episodes_into_counted_failures() -> None:
    env = cue_memory()  # episodes of 3 to 6 steps: the agent answers from step 3 on
    config = small_config("lstm")
    params = ppo.init(jax.random.key(0), env, config).params
    play = functools.partial(ppo.evaluate, env=env, config=config, episodes=12, n_envs=4, greedy=False)
    capped = jax.jit(functools.partial(play, max_steps=3))(params, jax.random.key(5))
    assert capped["returns"].shape == (12,) and np.all(capped["lengths"] <= 3)
    cut = np.asarray(capped["capped"])
    assert cut.any() and not cut.all()
    assert np.all(capped["lengths"][cut] == 3) and np.all(capped["returns"][cut] == 0.0)
    np.testing.assert_allclose(capped["capped_fraction"], cut.mean())
    free = jax.jit(play)(params, jax.random.key(5))
    assert not np.asarray(free["capped"]).any() and np.any(free["lengths"] > 3)


@pytest.mark.slow
def test_ppo_learns_empty_5x5() -> None:
    """Five seeds in one vmapped program, 15 updates (15k frames) on navix's Empty-5x5: the sampled return rises
    from a random policy's (about 0.2) to near the optimum 0.955 (measured: 0.955 on each seed at 30 updates)."""
    pytest.importorskip("navix")
    import rims_rl.envs.jax

    env = rims_rl.envs.jax.make("Navix-Empty-5x5-v0")
    config = ppo.PPOConfig(
        n_envs=16, n_steps=64, batch_size=256, n_epochs=4, sequence_length=16, learning_rate=1e-3,
        core="gru", core_kwargs={"hidden_size": 32}, net_arch=[64],
    )  # fmt: skip
    step = functools.partial(ppo.update, env=env, config=config)

    @jax.jit
    @jax.vmap
    def train(state: ppo.TrainState) -> ppo.TrainState:
        return jax.lax.scan(lambda s, _: (step(s)[0], None), state, None, length=15)[0]

    keys = jax.random.split(jax.random.key(0), 5)
    states = ppo.init_seeds(keys, env, config)
    play = functools.partial(ppo.evaluate, env=env, config=config, episodes=50, n_envs=25, greedy=False)
    before = jax.jit(jax.vmap(play))(states.params, keys)["return_mean"]
    after = jax.jit(jax.vmap(play))(train(states).params, keys)["return_mean"]
    assert np.all(before < 0.4) and np.all(after > 0.8), (before, after)
