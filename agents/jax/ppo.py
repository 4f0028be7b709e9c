"""Recurrent PPO (A2C as its special case) in JAX: the torch backend's algorithm (:class:`rims_rl.agents.RecurrentPPO`,
:class:`rims_rl.agents.RecurrentA2C`) as pure functions, so that a runner can jit segments of updates and ``vmap`` them
over seeds.

Read top to bottom: :class:`PPOConfig` (the torch backend's hyperparameter names and meanings) and
:func:`a2c_config`; :func:`init` builds a :class:`TrainState`; :func:`update` is one PPO iteration:
:func:`collect_rollout` (``lax.scan`` over chunks of ``sequence_length`` steps, each a scan over steps, ``vmap`` over
envs, keeping the core state at each chunk start), :func:`compute_gae` (SB3's GAE), then ``n_epochs`` passes over
random minibatches of whole chunks (:func:`chunk_batches`), each replayed from its stored start state (truncated
BPTT) under :func:`ppo_loss`. :func:`evaluate` plays whole episodes.

Symbols: ``E`` = ``n_envs``, ``N`` = ``n_steps``, ``T`` = ``sequence_length``, ``C`` = ``N // T`` chunks per env,
``M`` chunks per minibatch (``batch_size // T``), ``A`` actions.

Differences from the torch backend, all documented where they act:

- ``bootstrap_truncated``: the env auto-resets inside ``step`` (:class:`rims_rl.envs.jax.JaxEnv`), so the observation
  that ended a truncated episode is gone; the value bootstrapped in its place is the value of the observation the
  truncating action was taken in, ``V(o_t)``, where the torch backend takes ``V(o_{t+1})`` from
  ``terminal_observation``. With MiniGrid's time limits (hundreds of steps, sparse reward) the two differ by one
  step of value drift.
- Gradient clipping is optax's ``clip_by_global_norm`` (scale ``max_norm / norm``); torch's ``clip_grad_norm_``
  scales by ``max_norm / (norm + 1e-6)``.
- Not offered: ``target_kl``, ``refresh_chunk_states``, ``shift_chunks``, ``policy_train_mode`` (dropout; rollouts
  and updates run deterministic, as the torch backend's default), learning-rate schedules. ``batch_size`` must divide
  ``n_envs * n_steps`` (equal minibatches: one compiled shape).
- ``rollout/ep_rew_mean`` and the other episode statistics of :func:`update` are over the episodes that ended in that
  rollout (with their count), not SB3's window of the last 100.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from rims_rl.agents.jax.networks import (
    ACTIVATIONS,
    ActorCritic,
    MiniGridFeatures,
    Observation,
    State,
    make_core,
    split_net_arch,
)

__all__ = [
    "CONFIGS",
    "OPTIMIZERS",
    "Batch",
    "PPOConfig",
    "Rollout",
    "TrainState",
    "a2c_config",
    "chunk_batches",
    "collect_rollout",
    "compute_gae",
    "evaluate",
    "explained_variance",
    "init",
    "init_seeds",
    "make_optimizer",
    "make_policy",
    "ppo_loss",
    "update",
]

OPTIMIZERS = ("adam", "rmsprop")


@dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of recurrent PPO, :class:`rims_rl.agents.RecurrentPPO`'s names, meanings and defaults, plus the
    policy (:class:`rims_rl.agents.RecurrentActorCriticPolicy`'s ``policy_kwargs``). Checked at construction: every
    error is one line, ``expected X, got Y``, raised before anything compiles.

    :param n_envs: ``E``, environments stepped together.
    :param n_steps: ``N``, steps per env per rollout; a multiple of ``sequence_length``.
    :param batch_size: steps per minibatch, a multiple of ``sequence_length`` (``batch_size // T`` whole chunks)
        that divides ``n_envs * n_steps``; ``None``: the whole rollout as one batch.
    :param n_epochs: passes over the rollout per update.
    :param gamma: discount factor.
    :param gae_lambda: GAE lambda.
    :param clip_range: PPO's clipping parameter; ``None``: no clipping (A2C's loss ``-A * ratio``).
    :param clip_range_vf: ``None``: the plain squared value error; else torch-ac's clipped value loss
        ``max((v - R)^2, (v_old + clip(v - v_old, -eps, eps) - R)^2)`` (:func:`rims_rl.agents.ppo.clipped_value_loss`).
    :param normalize_advantage: normalise advantages per minibatch (unbiased std, as ``torch.std``).
    :param ent_coef: entropy coefficient.
    :param vf_coef: value-loss coefficient.
    :param max_grad_norm: global gradient-norm clip.
    :param learning_rate: constant learning rate.
    :param sequence_length: ``T``, the BPTT chunk length; ``None``: ``n_steps``.
    :param bootstrap_truncated: add ``gamma * V`` to the reward of a step a time limit cut (SB3's handling, with
        ``V(o_t)`` for ``V(o_{t+1})``, see the module docstring); ``False``: a truncation ends the return like a
        termination (torch-ac).
    :param optimizer: ``"adam"`` (SB3's PPO: ``eps=optimizer_eps``) or ``"rmsprop"`` (SB3's A2C: torch's RMSprop,
        ``alpha=0.99``, ``eps`` outside the square root).
    :param optimizer_eps: the optimizer's epsilon (SB3: 1e-5 for both).
    :param core: the recurrent core, a name in :data:`rims_rl.agents.jax.networks.CORES` (those of
        :data:`rims_rl.CORES`).
    :param core_kwargs: its kwargs (``configs/model/*.yaml`` less ``core``), e.g. ``dict(hidden_size=192)``.
    :param shared_core: one core for actor and critic; ``False`` (default): the critic has its own of the same kind.
    :param net_arch: SB3's ``net_arch`` after the core; ``None``: ``[64, 64]``.
    :param activation_fn: ``"tanh"`` (SB3's default) or ``"relu"``.
    :param ortho_init: SB3's orthogonal init of extractor, MLPs and heads.
    :param features_extractor_kwargs: :class:`~rims_rl.agents.jax.networks.MiniGridFeatures` kwargs (``cnn_channels``,
        ``direction_dim``).

    >>> PPOConfig(n_steps=100)
    Traceback (most recent call last):
    ...
    ValueError: expected n_steps to be a multiple of sequence_length=32, got n_steps=100
    """

    n_envs: int = 16
    n_steps: int = 128
    batch_size: int | None = 256
    n_epochs: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float | None = 0.2
    clip_range_vf: float | None = None
    normalize_advantage: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    learning_rate: float = 2.5e-4
    sequence_length: int | None = 32
    bootstrap_truncated: bool = True
    optimizer: str = "adam"
    optimizer_eps: float = 1e-5
    core: str = "lstm"
    core_kwargs: Mapping[str, Any] = field(default_factory=lambda: {"hidden_size": 192})
    shared_core: bool = False
    net_arch: Any = None
    activation_fn: str = "tanh"
    ortho_init: bool = True
    features_extractor_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        T = self.n_steps if self.sequence_length is None else self.sequence_length
        object.__setattr__(self, "sequence_length", T)
        for name in ("n_envs", "n_steps", "n_epochs", "sequence_length"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ValueError(f"expected {name} to be an int >= 1, got {value!r}")
        if self.n_steps % T:
            raise ValueError(f"expected n_steps to be a multiple of sequence_length={T}, got n_steps={self.n_steps}")
        rollout = self.n_envs * self.n_steps
        if self.batch_size is not None and (self.batch_size < T or self.batch_size % T or rollout % self.batch_size):
            raise ValueError(
                f"expected batch_size to be a multiple of sequence_length={T} that divides n_envs * n_steps="
                f"{rollout}, got batch_size={self.batch_size}"
            )
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"expected {name} in [0, 1], got {getattr(self, name)}")
        for name in ("clip_range", "clip_range_vf"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"expected {name} > 0 (None turns clipping off), got {value}")
        for name in ("ent_coef", "vf_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"expected {name} >= 0, got {getattr(self, name)}")
        for name in ("max_grad_norm", "learning_rate", "optimizer_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"expected {name} > 0, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"expected optimizer in {OPTIMIZERS}, got {self.optimizer!r}")
        if self.activation_fn not in ACTIVATIONS:
            raise ValueError(f"expected activation_fn in {tuple(ACTIVATIONS)}, got {self.activation_fn!r}")
        split_net_arch(self.net_arch)
        # Build the policy's modules (no parameters, nothing compiled): the cores and the extractor check their kwargs.
        core = make_core(self.core, self.core_kwargs, parent=None)
        dropout = float(getattr(core, "dropout", 0.0) or 0.0)
        if dropout:
            raise ValueError(
                f"expected core dropout=0 (the JAX backend runs rollouts and updates deterministic), got {dropout}"
            )
        try:
            MiniGridFeatures(**dict(self.features_extractor_kwargs), parent=None)
        except TypeError as err:
            raise ValueError(
                f"expected features_extractor_kwargs among cnn_channels, direction_dim, got "
                f"{dict(self.features_extractor_kwargs)} ({err})"
            ) from None

    @property
    def chunks_per_batch(self) -> int:
        """``M``: chunks per minibatch."""
        return (self.batch_size or self.n_envs * self.n_steps) // self.sequence_length  # type: ignore[operator]

    def replace(self, **changes: Any) -> PPOConfig:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)


def a2c_config(
    learning_rate: float = 7e-4,
    n_steps: int = 16,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    ent_coef: float = 0.01,
    vf_coef: float = 0.5,
    max_grad_norm: float = 0.5,
    rms_prop_eps: float = 1e-5,
    normalize_advantage: bool = False,
    sequence_length: int | None = None,
    **kwargs: Any,
) -> PPOConfig:
    """Recurrent A2C as PPO's special case (:class:`rims_rl.agents.RecurrentA2C`'s arguments and defaults): one epoch,
    the whole rollout as one batch, no clipping, no advantage normalisation, RMSprop (alpha 0.99, ``eps=rms_prop_eps``).

    :param kwargs: further :class:`PPOConfig` fields (``n_envs``, ``core``, ``bootstrap_truncated``, ...); the ones
        A2C fixes (``batch_size``, ``n_epochs``, ``clip_range``, ``optimizer``, ``optimizer_eps``) are a TypeError,
        as for :class:`rims_rl.agents.RecurrentA2C`.
    """
    fixed = sorted({"batch_size", "n_epochs", "clip_range", "optimizer", "optimizer_eps"} & set(kwargs))
    if fixed:
        raise TypeError(f"a2c_config() got unexpected keyword arguments {fixed} (fixed by A2C)")
    return PPOConfig(
        learning_rate=learning_rate,
        n_steps=n_steps,
        batch_size=None,
        n_epochs=1,
        gamma=gamma,
        gae_lambda=gae_lambda,
        clip_range=None,
        normalize_advantage=normalize_advantage,
        ent_coef=ent_coef,
        vf_coef=vf_coef,
        max_grad_norm=max_grad_norm,
        sequence_length=sequence_length,
        optimizer="rmsprop",
        optimizer_eps=rms_prop_eps,
        **kwargs,
    )


#: The algorithms by name (``agent.algo`` in configs): each takes the ``agent`` group's keys as kwargs.
CONFIGS: dict[str, Callable[..., PPOConfig]] = {"ppo": PPOConfig, "a2c": a2c_config}


def make_policy(config: PPOConfig, num_actions: int) -> ActorCritic:
    """The actor-critic module of ``config`` for ``num_actions`` actions."""
    return ActorCritic(
        num_actions,
        core=config.core,
        core_kwargs=dict(config.core_kwargs),
        shared_core=config.shared_core,
        net_arch=config.net_arch,
        activation_fn=config.activation_fn,
        ortho_init=config.ortho_init,
        features_extractor_kwargs=dict(config.features_extractor_kwargs),
    )


def make_optimizer(config: PPOConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam (``eps`` as torch's, outside the square root) or torch's RMSprop."""
    if config.optimizer == "adam":
        opt = optax.adam(config.learning_rate, eps=config.optimizer_eps)
    else:
        opt = optax.rmsprop(config.learning_rate, decay=0.99, eps=config.optimizer_eps, eps_in_sqrt=False)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), opt)


class TrainState(NamedTuple):
    """Everything :func:`update` reads and writes: a pytree, so ``jax.vmap`` over a leading seed axis works."""

    params: Any
    """The policy's Flax variables."""
    opt_state: Any
    """The optimizer's state."""
    env_state: Any
    """The envs' states, leading axis ``E``."""
    obs: Observation
    """The current observations, ``(E, ...)``."""
    episode_starts: Array
    """``(E,)`` bool: the current observation is the first of its episode."""
    core_state: State
    """The policy's recurrent state before the current observation (its reset not yet applied)."""
    rng: Array
    """The PRNG key for actions and env steps."""
    frames: Array
    """``()`` int32: env steps so far, over all envs."""
    n_updates: Array
    """``()`` int32: epochs so far (SB3's ``train/n_updates``)."""
    episode_return: Array
    """``(E,)`` float: the running (undiscounted, unbootstrapped) return of each env's current episode."""
    episode_length: Array
    """``(E,)`` int32: the running length of each env's current episode."""


class Rollout(NamedTuple):
    """A rollout, time-major ``(N, E, ...)`` (``(C, ...)`` for the chunk-start states)."""

    obs: Observation
    """The observations acted on."""
    actions: Array
    """int32."""
    log_probs: Array
    """Log-probabilities of the actions at rollout time."""
    values: Array
    """Values at rollout time."""
    rewards: Array
    """Rewards, with ``gamma * V`` added at truncations when ``bootstrap_truncated``."""
    episode_starts: Array
    """bool: the observation is the first of its episode."""
    dones: Array
    """bool: the episode ended at this step (``episode_starts`` of the next step)."""
    chunk_states: State
    """The recurrent state before each chunk's first step (before its reset), arrays ``(C, L, E, H)``."""
    last_values: Array
    """``(E,)``: the values of the observations after the last step (with the resets of the last dones)."""


def init(key: Array, env: Any, config: PPOConfig) -> TrainState:
    """A fresh :class:`TrainState`: parameters, optimizer state, ``E`` reset envs, a zero recurrent state.

    Pure and traceable. For several seeds use :func:`init_seeds`, not ``jax.vmap`` of this function (it says why).

    :param key: a PRNG key.
    :param env: a :class:`rims_rl.envs.jax.JaxEnv`.
    :param config: the hyperparameters.
    """
    key_params, key_reset, key_run = jax.random.split(key, 3)
    env_states, obs = jax.vmap(env.reset)(jax.random.split(key_reset, config.n_envs))
    policy = make_policy(config, env.num_actions)
    core_state = policy.initial_state(config.n_envs)
    one_step = jax.tree.map(lambda x: x[None], obs)
    starts = jnp.ones((config.n_envs,), bool)
    params = policy.init(key_params, one_step, core_state, starts[None])
    return TrainState(
        params=params,
        opt_state=make_optimizer(config).init(params),
        env_state=env_states,
        obs=obs,
        episode_starts=starts,
        core_state=core_state,
        rng=key_run,
        frames=jnp.zeros((), jnp.int32),
        n_updates=jnp.zeros((), jnp.int32),
        episode_return=jnp.zeros((config.n_envs,), jnp.float32),
        episode_length=jnp.zeros((config.n_envs,), jnp.int32),
    )


def init_seeds(keys: Array, env: Any, config: PPOConfig) -> TrainState:
    """One fresh :class:`TrainState` per key, stacked on a leading seed axis ``(S, ...)``, ready for a
    ``jax.vmap(update)``; equal to :func:`init` of each key.

    The seeds are initialised one after another with one compiled :func:`init`, not vmapped: under ``vmap`` the
    orthogonal initialisers become batched LAPACK QR calls, and on XLA:CPU (jaxlib 0.10.2) such a call runs on an
    intra-op pool worker and waits for sub-tasks queued on the same pool. Two at once on a 2-thread pool wait for
    each other forever (native stacks: ``lapack_sgeqrf_ffi`` and ``lapack_sorgqr_ffi`` parked on the two
    ``tf_XLAEigen`` workers), the same kind of deadlock as PyAutoLabs/PyAutoFit#1530 reports for FFTs.

    :param keys: ``(S,)`` PRNG keys (``(S, 2)`` raw keys).
    :param env: a :class:`rims_rl.envs.jax.JaxEnv`.
    :param config: the hyperparameters.
    """
    one = jax.jit(lambda key: init(key, env, config))
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *[one(key) for key in keys])


def _log_probs(logits: Array) -> Array:
    return jax.nn.log_softmax(logits, axis=-1)


def _take(log_probs: Array, actions: Array) -> Array:
    """``log_probs[..., actions]``: ``(..., A)``, ``(...)`` -> ``(...)``."""
    return jnp.take_along_axis(log_probs, actions[..., None], axis=-1)[..., 0]


def collect_rollout(state: TrainState, env: Any, config: PPOConfig) -> tuple[TrainState, Rollout, dict[str, Array]]:
    """Step the ``E`` envs ``N`` times with the current policy, as :meth:`rims_rl.agents.RecurrentPPO.collect_rollouts`.

    :return: the state after the rollout (envs, observations, recurrent state, rng, frame and episode counters), the
        rollout, and the statistics of the episodes that ended in it: ``rollout/ep_rew_mean``,
        ``rollout/ep_len_mean``, ``rollout/success_rate`` (return > 0, MiniGrid's success; NaN when none ended) and
        ``rollout/episodes`` (their count).
    """
    policy = make_policy(config, env.num_actions)
    E, T = config.n_envs, config.sequence_length
    assert T is not None

    def step(carry: TrainState, _: None) -> tuple[TrainState, tuple[Rollout, tuple[Array, Array, Array]]]:
        rng, key_action, key_env = jax.random.split(carry.rng, 3)
        one_step = jax.tree.map(lambda x: x[None], carry.obs)
        logits, values, core_state = policy.apply(  # type: ignore[misc]  # without mutable: __call__'s triple
            carry.params, one_step, carry.core_state, carry.episode_starts[None]
        )
        log_probs, values = _log_probs(logits[0]), values[0]
        actions = jax.random.categorical(key_action, log_probs).astype(jnp.int32)
        env_state, obs, reward, terminated, truncated = jax.vmap(env.step)(
            carry.env_state, actions, jax.random.split(key_env, E)
        )
        reward = reward.astype(jnp.float32)
        dones = terminated | truncated
        stored_reward = reward
        if config.bootstrap_truncated:  # SB3's TimeLimit.truncated is "truncated and not terminated"
            stored_reward = reward + config.gamma * jnp.where(truncated & ~terminated, values, 0.0)
        episode_return = carry.episode_return + reward
        episode_length = carry.episode_length + 1
        transition = Rollout(
            obs=carry.obs,
            actions=actions,
            log_probs=_take(log_probs, actions),
            values=values,
            rewards=stored_reward,
            episode_starts=carry.episode_starts,
            dones=dones,
            chunk_states=None,
            last_values=None,  # type: ignore[arg-type]
        )
        carry = carry._replace(
            env_state=env_state,
            obs=obs,
            episode_starts=dones,
            core_state=core_state,
            rng=rng,
            episode_return=jnp.where(dones, 0.0, episode_return),
            episode_length=jnp.where(dones, 0, episode_length),
        )
        return carry, (transition, (dones, episode_return, episode_length))

    def chunk(carry: TrainState, _: None) -> tuple[TrainState, tuple[Any, State]]:
        start = carry.core_state
        carry, out = jax.lax.scan(step, carry, None, length=T)
        return carry, (out, start)

    state, ((steps, (ended, returns, lengths)), chunk_states) = jax.lax.scan(
        chunk, state, None, length=config.n_steps // T
    )
    flat = jax.tree.map(lambda x: x.reshape(config.n_steps, *x.shape[2:]), steps)
    one_step = jax.tree.map(lambda x: x[None], state.obs)
    _, last_values, _ = policy.apply(  # type: ignore[misc]  # as in step
        state.params, one_step, state.core_state, state.episode_starts[None]
    )
    rollout = flat._replace(chunk_states=chunk_states, last_values=last_values[0])
    count = ended.sum()

    def mean(x: Array) -> Array:
        return jnp.where(count > 0, jnp.where(ended, x, 0).sum() / jnp.maximum(count, 1), jnp.nan)

    stats = {
        "rollout/ep_rew_mean": mean(returns),
        "rollout/ep_len_mean": mean(lengths.astype(jnp.float32)),
        "rollout/success_rate": mean((returns > 0).astype(jnp.float32)),
        "rollout/episodes": count.astype(jnp.float32),
    }
    return state._replace(frames=state.frames + config.n_steps * E), rollout, stats


def compute_gae(
    rewards: Array, values: Array, dones: Array, last_values: Array, gamma: float, gae_lambda: float
) -> tuple[Array, Array]:
    """SB3's ``RolloutBuffer.compute_returns_and_advantage``: GAE(lambda) advantages and ``returns = advantages +
    values``; ``dones[t]`` cuts the return after step ``t`` (SB3's ``episode_starts[t + 1]``, and its ``dones``
    argument at the last step).

    :param rewards: ``(N, E)``.
    :param values: ``(N, E)``.
    :param dones: ``(N, E)`` bool.
    :param last_values: ``(E,)``, the values after step ``N - 1``.
    :return: advantages and returns, ``(N, E)`` each.
    """
    next_values = jnp.concatenate([values[1:], last_values[None]])
    not_done = 1.0 - dones.astype(values.dtype)
    deltas = rewards + gamma * next_values * not_done - values

    def back(gae: Array, xs: tuple[Array, Array]) -> tuple[Array, Array]:
        delta, keep = xs
        gae = delta + gamma * gae_lambda * keep * gae
        return gae, gae

    _, advantages = jax.lax.scan(back, jnp.zeros_like(last_values), (deltas, not_done), reverse=True)
    return advantages, advantages + values


class Batch(NamedTuple):
    """``M`` chunks of ``T`` steps, time-major ``(T, M, ...)``; ``states`` are the chunk-start states."""

    obs: Observation
    actions: Array
    old_log_probs: Array
    old_values: Array
    advantages: Array
    returns: Array
    episode_starts: Array
    states: State


def chunk_batches(rollout: Rollout, advantages: Array, returns: Array, key: Array, chunks_per_batch: int) -> Batch:
    """Cut the rollout into its ``C * E`` chunks and deal them, in a random order, into minibatches.

    :param advantages: ``(N, E)``.
    :param returns: ``(N, E)``.
    :param key: the shuffling key.
    :param chunks_per_batch: ``M``; must divide ``C * E``.
    :return: a :class:`Batch` with a leading minibatch axis: fields ``(K, T, M, ...)``, states ``(K, L, M, H)``.
    """
    C = jax.tree.leaves(rollout.chunk_states)[0].shape[0]
    N, E = rollout.actions.shape
    T = N // C
    order = jax.random.permutation(key, C * E).reshape(-1, chunks_per_batch)  # (K, M): chunk c of env e at c * E + e

    def steps(x: Array) -> Array:  # (N, E, *) -> (K, T, M, *)
        chunks = jnp.swapaxes(x.reshape(C, T, E, *x.shape[2:]), 1, 2).reshape(C * E, T, *x.shape[2:])
        return jnp.swapaxes(chunks[order], 1, 2)

    def states(x: Array) -> Array:  # (C, L, E, H) -> (K, L, M, H)
        chunks = jnp.swapaxes(x, 1, 2).reshape(C * E, *x.shape[1:2], *x.shape[3:])
        return jnp.swapaxes(chunks[order], 1, 2)

    return Batch(
        obs=jax.tree.map(steps, rollout.obs),
        actions=steps(rollout.actions),
        old_log_probs=steps(rollout.log_probs),
        old_values=steps(rollout.values),
        advantages=steps(advantages),
        returns=steps(returns),
        episode_starts=steps(rollout.episode_starts),
        states=jax.tree.map(states, rollout.chunk_states),
    )


def ppo_loss(params: Any, policy: ActorCritic, batch: Batch, config: PPOConfig) -> tuple[Array, dict[str, Array]]:
    """The loss of one minibatch (:meth:`rims_rl.agents.RecurrentPPO.train`'s): each chunk replayed from its start
    state.

    :param batch: one minibatch, fields ``(T, M, ...)``.
    :return: the loss and its parts: ``policy_gradient_loss``, ``value_loss``, ``entropy_loss``, ``loss``,
        ``approx_kl``, ``clip_fraction`` (with ``clip_range``), and the recomputed ``log_ratio`` and ``values``
        ``(T, M)`` (``log_ratio`` is 0 and ``values`` are the old ones on the first minibatch of an update).
    """
    logits, values, _ = policy.apply(  # type: ignore[misc]  # without mutable: __call__'s triple
        params, batch.obs, batch.states, batch.episode_starts
    )
    log_probs = _log_probs(logits)
    log_ratio = _take(log_probs, batch.actions) - batch.old_log_probs
    ratio = jnp.exp(log_ratio)
    advantages = batch.advantages
    if config.normalize_advantage:
        advantages = (advantages - advantages.mean()) / (advantages.std(ddof=1) + 1e-8)
    parts: dict[str, Array] = {}
    if config.clip_range is None:
        policy_loss = -(advantages * ratio).mean()  # A2C's loss (arXiv 2205.09123)
    else:  # the clipped surrogate (arXiv 1707.06347, eq. 7)
        clipped = jnp.clip(ratio, 1 - config.clip_range, 1 + config.clip_range)
        policy_loss = -jnp.minimum(advantages * ratio, advantages * clipped).mean()
        parts["clip_fraction"] = (jnp.abs(ratio - 1) > config.clip_range).mean()
    if config.clip_range_vf is None:
        value_loss = ((batch.returns - values) ** 2).mean()
    else:  # torch-ac's clipped value loss, as rims_rl.agents.ppo.clipped_value_loss
        eps = config.clip_range_vf
        values_clipped = batch.old_values + jnp.clip(values - batch.old_values, -eps, eps)
        value_loss = jnp.maximum((values - batch.returns) ** 2, (values_clipped - batch.returns) ** 2).mean()
    entropy = -(jnp.exp(log_probs) * log_probs).sum(-1)
    entropy_loss = -entropy.mean()
    loss = policy_loss + config.ent_coef * entropy_loss + config.vf_coef * value_loss
    parts.update(
        policy_gradient_loss=policy_loss,
        value_loss=value_loss,
        entropy_loss=entropy_loss,
        loss=loss,
        approx_kl=jax.lax.stop_gradient(((ratio - 1) - log_ratio).mean()),  # http://joschu.net/blog/kl-approx.html
        log_ratio=log_ratio,
        values=values,
    )
    return loss, parts


def explained_variance(predicted: Array, target: Array) -> Array:
    """SB3's ``explained_variance``: ``1 - Var(target - predicted) / Var(target)``, NaN where ``Var(target) = 0``."""
    var = target.var()
    return jnp.where(var == 0, jnp.nan, 1 - (target - predicted).var() / jnp.where(var == 0, 1.0, var))


def update(state: TrainState, env: Any, config: PPOConfig) -> tuple[TrainState, dict[str, Array]]:
    """One PPO iteration: a rollout of ``E * N`` steps, GAE, ``n_epochs`` passes over random minibatches of whole
    chunks.

    Pure: jit it with ``env`` and ``config`` bound, ``jax.jit(functools.partial(update, env=env, config=config))``,
    scan it for a segment of updates, and ``jax.vmap`` it over a leading seed axis of ``state``.

    :return: the new state and scalar metrics: the ``rollout/*`` of :func:`collect_rollout`, SB3's
        ``train/policy_gradient_loss``, ``train/value_loss``, ``train/entropy_loss``, ``train/loss``,
        ``train/approx_kl``, ``train/clip_fraction`` (with ``clip_range``; means over all minibatches),
        ``train/explained_variance``, ``train/n_updates``, ``time/total_timesteps``.
    """
    policy = make_policy(config, env.num_actions)
    optimizer = make_optimizer(config)
    state, rollout, stats = collect_rollout(state, env, config)
    advantages, returns = compute_gae(
        rollout.rewards, rollout.values, rollout.dones, rollout.last_values, config.gamma, config.gae_lambda
    )
    grad_fn = jax.grad(ppo_loss, has_aux=True)

    def minibatch(carry: tuple[Any, Any], batch: Batch) -> tuple[tuple[Any, Any], dict[str, Array]]:
        params, opt_state = carry
        grads, parts = grad_fn(params, policy, batch, config)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), {k: v for k, v in parts.items() if k not in ("log_ratio", "values")}

    def epoch(carry: tuple[Any, Any, Array], _: None) -> tuple[tuple[Any, Any, Array], dict[str, Array]]:
        params, opt_state, rng = carry
        rng, key = jax.random.split(rng)
        batches = chunk_batches(rollout, advantages, returns, key, config.chunks_per_batch)
        (params, opt_state), parts = jax.lax.scan(minibatch, (params, opt_state), batches)
        return (params, opt_state, rng), parts

    (params, opt_state, rng), parts = jax.lax.scan(
        epoch, (state.params, state.opt_state, state.rng), None, length=config.n_epochs
    )
    state = state._replace(params=params, opt_state=opt_state, rng=rng, n_updates=state.n_updates + config.n_epochs)
    metrics = {
        **stats,
        **{f"train/{k}": v.mean() for k, v in parts.items()},
        "train/explained_variance": explained_variance(rollout.values.ravel(), returns.ravel()),
        "train/n_updates": state.n_updates.astype(jnp.float32),
        "time/total_timesteps": state.frames.astype(jnp.float32),
    }
    return state, metrics


def evaluate(
    params: Any,
    key: Array,
    *,
    env: Any,
    config: PPOConfig,
    episodes: int,
    n_envs: int,
    greedy: bool | Array,
    max_steps: int | None = None,
) -> dict[str, Array]:
    """Play ``episodes`` whole episodes on ``n_envs`` envs; env ``i`` counts its first ``(episodes + i) // n_envs``
    (SB3's ``evaluate_policy``, so short episodes are not favoured). Pure; jit it with everything but ``params`` and
    ``key`` bound (``functools.partial``); ``vmap`` it over seeds.

    :param params: the policy's variables.
    :param key: a PRNG key (reset levels and sampled actions).
    :param env: a :class:`rims_rl.envs.jax.JaxEnv`.
    :param config: the policy's config.
    :param episodes: ``M``, episodes counted.
    :param n_envs: envs played at once (at most ``episodes`` are used).
    :param greedy: take the most likely action instead of sampling; a Python bool or a traced bool (``jax.vmap``
        over ``[False, True]`` plays both modes in one compiled program).
    :param max_steps: the cap (``None``: none): an episode that reaches ``max_steps`` steps without ending is cut
        (its env reset) and counted as a failure with its return so far and length ``max_steps``, as the torch
        evaluation (:mod:`rims_rl.experiments.eval_loop`).
    :return: ``return_mean``, ``return_std``, ``success_rate`` (return > 0), ``length_mean``, ``episodes``,
        ``capped_fraction`` (of the counted episodes, cut by the cap); the per-episode ``returns``, ``lengths`` and
        ``capped`` ``(M,)``; with a core that sows its active units (RIM): over the
        steps of the counted episodes, ``unit_activity`` ``(L, U)`` (fraction of steps each unit was active),
        ``switch_rate`` (fraction of consecutive step pairs of one episode whose active set differs, over layers)
        and ``selection_entropy`` (bits of the distribution of active sets per layer, averaged over layers), the
        definitions of :mod:`rims_rl.experiments.eval_loop`, and the counts behind them: ``active_steps`` ``(L, U)``,
        ``steps``, ``switches``, ``pairs`` and ``set_counts`` ``(L, 2**U)`` (how often each active set occurred).
    """
    if episodes < 1 or n_envs < 1:
        raise ValueError(f"expected episodes >= 1 and n_envs >= 1, got episodes={episodes}, n_envs={n_envs}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"expected max_steps >= 1 or None, got {max_steps}")
    n_envs = min(n_envs, episodes)
    policy = make_policy(config, env.num_actions)
    counts = (episodes + np.arange(n_envs)) // n_envs  # (n,) episodes counted per env
    offsets = jnp.asarray(np.concatenate([[0], np.cumsum(counts)[:-1]]))
    quota = jnp.asarray(counts)
    key_reset, key_run = jax.random.split(key)
    env_state, obs = jax.vmap(env.reset)(jax.random.split(key_reset, n_envs))
    one = jax.tree.map(lambda x: x[None], obs)
    probe = jax.eval_shape(
        lambda: policy.apply(
            params, one, policy.initial_state(n_envs), jnp.ones((1, n_envs), bool), mutable="intermediates"
        )[1]
    )
    has_active = "core" in probe.get("intermediates", {})
    n_sets = 0
    active_shape: tuple[int, ...] = ()
    if has_active:
        active_shape = probe["intermediates"]["core"]["active"][0].shape[2:]  # (L, U)
        n_sets = 2 ** active_shape[1]
    zeros_f = jnp.zeros(episodes, jnp.float32)
    carry = {
        "env_state": env_state,
        "obs": obs,
        "starts": jnp.ones(n_envs, bool),
        "core_state": policy.initial_state(n_envs),
        "rng": key_run,
        "done_count": jnp.zeros(n_envs, jnp.int32),
        "ep_return": jnp.zeros(n_envs, jnp.float32),
        "ep_length": jnp.zeros(n_envs, jnp.int32),
        "returns": zeros_f,
        "lengths": zeros_f,
        "capped": jnp.zeros(episodes, bool),
        "active_steps": jnp.zeros(active_shape, jnp.float32),
        "steps": jnp.zeros((), jnp.float32),
        "switches": jnp.zeros((), jnp.float32),
        "pairs": jnp.zeros((), jnp.float32),
        "set_counts": jnp.zeros((*active_shape[:1], n_sets), jnp.float32),
        "last_active": jnp.zeros((n_envs, *active_shape), bool),
    }

    def body(c: dict[str, Any]) -> dict[str, Any]:
        if max_steps is None:
            rng, key_action, key_env = jax.random.split(c["rng"], 3)
        else:
            rng, key_action, key_env, key_cut = jax.random.split(c["rng"], 4)
        one_step = jax.tree.map(lambda x: x[None], c["obs"])
        (logits, _, core_state), extra = policy.apply(
            params, one_step, c["core_state"], c["starts"][None], mutable="intermediates"
        )
        logits = logits[0]
        actions = jnp.where(greedy, jnp.argmax(logits, -1), jax.random.categorical(key_action, logits))
        env_state, obs, reward, terminated, truncated = jax.vmap(env.step)(
            c["env_state"], actions.astype(jnp.int32), jax.random.split(key_env, n_envs)
        )
        dones = terminated | truncated
        counting = c["done_count"] < quota  # (n,) this step belongs to a counted episode
        ep_return = c["ep_return"] + reward
        ep_length = c["ep_length"] + 1
        cut = jnp.zeros(n_envs, bool)
        if max_steps is not None:  # an episode at the cap is cut: its env starts the next one
            cut = (ep_length >= max_steps) & ~dones
            fresh_state, fresh_obs = jax.vmap(env.reset)(jax.random.split(key_cut, n_envs))

            def restart(fresh: Array, old: Array) -> Array:
                return jnp.where(cut.reshape(-1, *[1] * (old.ndim - 1)), fresh, old)

            env_state = jax.tree.map(restart, fresh_state, env_state)
            obs = jax.tree.map(restart, fresh_obs, obs)
            dones = dones | cut
        record = dones & counting
        slot = jnp.where(record, offsets + c["done_count"], episodes)  # out of range: dropped
        new = dict(c)
        new.update(
            env_state=env_state,
            obs=obs,
            starts=dones,
            core_state=core_state,
            rng=rng,
            done_count=c["done_count"] + dones.astype(jnp.int32),
            ep_return=jnp.where(dones, 0.0, ep_return),
            ep_length=jnp.where(dones, 0, ep_length),
            returns=c["returns"].at[slot].set(ep_return, mode="drop"),
            lengths=c["lengths"].at[slot].set(ep_length.astype(jnp.float32), mode="drop"),
            capped=c["capped"].at[slot].set(cut, mode="drop"),
        )
        if has_active:
            active = extra["intermediates"]["core"]["active"][0][0]  # (n, L, U)
            weight = counting.astype(jnp.float32)
            pair = (counting & ~c["starts"]).astype(jnp.float32)  # a step after a step of the same episode
            switched = (active != c["last_active"]).any(-1)  # (n, L)
            set_index = (active * (2 ** jnp.arange(active.shape[-1]))).sum(-1)  # (n, L)
            new.update(
                active_steps=c["active_steps"] + (active * weight[:, None, None]).sum(0),
                steps=c["steps"] + weight.sum(),
                switches=c["switches"] + (switched * pair[:, None]).sum(),
                pairs=c["pairs"] + pair.sum() * active.shape[1],
                set_counts=c["set_counts"] + (jax.nn.one_hot(set_index, n_sets) * weight[:, None, None]).sum(0),
                last_active=active,
            )
        return new

    c = jax.lax.while_loop(lambda c: (c["done_count"] < quota).any(), body, carry)
    returns, lengths = c["returns"], c["lengths"]
    result = {
        "return_mean": returns.mean(),
        "return_std": returns.std(),
        "success_rate": (returns > 0).mean(),
        "length_mean": lengths.mean(),
        "episodes": jnp.asarray(episodes, jnp.float32),
        "capped_fraction": c["capped"].mean(),
        "returns": returns,
        "lengths": lengths,
        "capped": c["capped"],
    }
    if has_active:
        p = c["set_counts"] / jnp.maximum(c["set_counts"].sum(-1, keepdims=True), 1.0)
        result.update(
            # the counts behind the statistics, to pool several evaluations exactly (rims_rl.experiments.train_jax)
            active_steps=c["active_steps"],
            steps=c["steps"],
            switches=c["switches"],
            pairs=c["pairs"],
            set_counts=c["set_counts"],
            unit_activity=c["active_steps"] / jnp.maximum(c["steps"], 1.0),
            switch_rate=jnp.where(c["pairs"] > 0, c["switches"] / jnp.maximum(c["pairs"], 1.0), jnp.nan),
            selection_entropy=-(jnp.where(p > 0, p * jnp.log2(jnp.where(p > 0, p, 1.0)), 0.0)).sum(-1).mean(),
        )
    return result
