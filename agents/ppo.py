"""Recurrent PPO for Stable-Baselines3 with a pluggable core (lstm, gru, rim): rollout, GAE, chunked update.

Read top to bottom: :meth:`RecurrentPPO.collect_rollouts` steps the envs, threading the recurrent state and
recording it at each chunk start; :meth:`RecurrentPPO.train` replays whole chunks of ``sequence_length`` steps
from their recorded states (truncated BPTT) and applies the clipped PPO loss. No padding, no masks, no per-step
Python loop for LSTM/GRU cores.

Chunk start rule: each chunk starts from the state the rollout policy had before the chunk's first step (the
policy of the rollout, as in sb3-contrib's RecurrentPPO and CleanRL). States are not refreshed between epochs,
unless ``refresh_chunk_states`` is set (torch-ac's protocol, see :class:`RecurrentPPO`).

Training mode: rollouts and updates run the policy in ``eval()`` (dropout off), so that the update recomputes
exactly the rollout's log-probabilities; ``policy_train_mode=True`` runs both in ``train()``, as torch-ac, where a
core's dropout then acts (:meth:`RecurrentActorCriticPolicy.predict` always runs in ``eval()``).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from rims_rl import State, map_state
from rims_rl.agents.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from rims_rl.agents.policies import (
    CnnRecurrentPolicy,
    MlpRecurrentPolicy,
    MultiInputRecurrentPolicy,
    RecurrentActorCriticPolicy,
)
from rims_rl.checks import is_int

SelfRecurrentPPO = TypeVar("SelfRecurrentPPO", bound="RecurrentPPO")


@contextmanager
def _native_rnn_kernels(device: th.device) -> Iterator[None]:
    """On CUDA, switch cuDNN off for the block: its RNN backward refuses eval mode ("cudnn RNN backward can only be
    called in training mode", seen on an H200), and the update runs in eval mode unless ``policy_train_mode``;
    PyTorch's own kernels do not."""
    enabled = th.backends.cudnn.enabled
    th.backends.cudnn.enabled = enabled and device.type != "cuda"
    try:
        yield
    finally:
        th.backends.cudnn.enabled = enabled


def clipped_value_loss(
    values: th.Tensor, old_values: th.Tensor, returns: th.Tensor, clip_range_vf: float | None
) -> th.Tensor:
    """The value loss: the squared error, or with ``clip_range_vf`` torch-ac's clipped form (torch-ac 1.4,
    ``torch_ac/algos/ppo.py``, ``PPOAlgo.update_parameters``; also OpenAI baselines' ``ppo2``)::

        max((v - R)^2, (v_old + clip(v - v_old, -eps, eps) - R)^2)

    SB3's ``clip_range_vf`` clips the same prediction (``values_pred = old_values + clamp(values - old_values,
    -clip_range_vf, clip_range_vf)``) but takes only the clipped error; here the larger of the two is taken.

    :param values: ``(B,)`` values of the current policy.
    :param old_values: ``(B,)`` values at rollout time.
    :param returns: ``(B,)`` value targets.
    :param clip_range_vf: ``eps``; ``None``: the plain squared error (SB3's default).
    :return: the mean loss, a scalar.

    >>> v, v_old, R = th.tensor([1.0, 0.0]), th.tensor([0.0, 0.0]), th.tensor([0.0, 1.0])
    >>> clipped_value_loss(v, v_old, R, 0.2)  # max(1, 0.04) and max(1, 1), averaged
    tensor(1.)
    """
    if clip_range_vf is None:
        return F.mse_loss(returns, values)
    values_clipped = old_values + th.clamp(values - old_values, -clip_range_vf, clip_range_vf)
    value_loss_unclipped = (values - returns) ** 2
    value_loss_clipped = (values_clipped - returns) ** 2
    return th.max(value_loss_unclipped, value_loss_clipped).mean()


def _warn_inactive_dropout(policy: RecurrentActorCriticPolicy) -> None:
    """Warn (one line) when a core has a ``dropout`` attribute above 0 (:class:`rims_rl.RIM`, ``nn.LSTM``,
    ``nn.GRU`` have one) that eval-mode rollouts and updates switch off (``policy_train_mode=False``)."""
    cores = [core for core in (policy.core, policy.critic_core) if core is not None]
    dropout = max((float(getattr(core, "dropout", 0.0) or 0.0) for core in cores), default=0.0)
    if dropout > 0:
        warnings.warn(
            f"core dropout={dropout:g} has no effect: rollouts and updates run in eval mode; set "
            "policy_train_mode=True to train with dropout as torch-ac does",
            UserWarning,
            stacklevel=3,
        )


class RecurrentPPO(OnPolicyAlgorithm):
    """Proximal Policy Optimization (arXiv 1707.06347) with a recurrent policy and truncated BPTT.

    >>> from rims_rl.agents import RecurrentPPO
    >>> model = RecurrentPPO("MlpRecurrentPolicy", "CartPole-v1", n_steps=64, batch_size=128, sequence_length=16,
    ...                      policy_kwargs=dict(core="rim", core_kwargs=dict(hidden_size=24, num_units=3, k=2)))
    >>> model = model.learn(256)

    :param policy: ``"MlpRecurrentPolicy"``, ``"CnnRecurrentPolicy"``, ``"MultiInputRecurrentPolicy"`` or a
        :class:`~rims_rl.agents.policies.RecurrentActorCriticPolicy` subclass. Choose the core with
        ``policy_kwargs=dict(core="lstm"|"gru"|"rim", core_kwargs=dict(hidden_size=..., ...))``.
    :param env: the environment (a VecEnv, a gymnasium env or its id).
    :param learning_rate: learning rate, or a schedule of the remaining progress (1 to 0).
    :param n_steps: steps per environment per rollout; a multiple of ``sequence_length``.
    :param batch_size: steps per minibatch, a multiple of ``sequence_length`` (``batch_size // sequence_length``
        whole chunks); ``None`` takes the whole rollout as one batch.
    :param n_epochs: passes over the rollout per update.
    :param gamma: discount factor.
    :param gae_lambda: GAE lambda (1 gives Monte-Carlo advantages bootstrapped at the rollout's end).
    :param clip_range: PPO's clipping parameter, or a schedule; ``None`` disables clipping (the A2C loss).
    :param normalize_advantage: normalise advantages per minibatch.
    :param ent_coef: entropy coefficient.
    :param vf_coef: value-loss coefficient.
    :param max_grad_norm: gradient clipping norm.
    :param sequence_length: BPTT chunk length ``T``.
    :param target_kl: stop an update early when the approximate KL exceeds ``1.5 * target_kl``; ``None``: never.
    :param clip_range_vf: clip the value loss (SB3's name), or a schedule; ``None`` (default): the plain squared
        error. Set, the loss is torch-ac's ``max((v - R)^2, (v_old + clip(v - v_old, -eps, eps) - R)^2)`` with
        ``eps = clip_range_vf`` (torch-ac 1.4, ``torch_ac/algos/ppo.py``, ``PPOAlgo.update_parameters``, where
        ``eps`` is the policy's ``clip_eps``), not SB3's clipped error alone; see :func:`clipped_value_loss`.
    :param bootstrap_truncated: add ``gamma * V(terminal observation)`` to the reward of a step that a time limit
        cut (SB3's handling, SB3 issue #633). ``False``: a truncation ends the return like a termination, as
        torch-ac 1.4's ``mask = 1 - done`` (``torch_ac/algos/base.py``, ``BaseAlgo.collect_experiences``).
    :param refresh_chunk_states: write back, after each minibatch's forward pass, the state each chunk computes at
        the first kept step after its start (``T // 2`` steps in with ``shift_chunks``, else the chunk's end,
        i.e. the next chunk's start), detached, as the stored start state there; later chunks (this epoch's and
        later epochs') then start from fresher states. torch-ac 1.4 (``PPOAlgo.update_parameters``:
        ``exps.memory[inds + i + 1] = memory.detach()``) writes every step's memory; we keep (and refresh) states
        only at chunk and, with ``shift_chunks``, half-chunk starts. ``False`` (default): rollout states only.
    :param shift_chunks: on every other epoch (counted over the whole run, as torch-ac's ``batch_num``), start the
        chunks ``sequence_length // 2`` steps later and drop each env's last chunk, which would cross the rollout's
        end (torch-ac 1.4, ``PPOAlgo._get_batches_starting_indexes``); needs an even ``sequence_length``. States are
        then kept every ``sequence_length // 2`` steps.
    :param policy_train_mode: run rollout collection and the update with the policy in ``train()`` mode (SB3's
        ``policy.set_training_mode(True)``), as torch-ac 1.4, which never calls ``eval()``: a core's ``dropout``
        (:class:`rims_rl.RIM`'s attention dropout, ``nn.LSTM``'s between layers) then acts in RL. Caveat: with
        dropout active the update does not reproduce the rollout's log-probabilities (each forward pass draws new
        masks), so the PPO ratio does not start at 1 and ``approx_kl``/``clip_fraction`` are not 0 on the first
        minibatch. ``False`` (default): both run in ``eval()``, dropout off, the ratio starts at 1; a core with
        ``dropout > 0`` then gets a warning at construction. Evaluation (``predict``) always runs in ``eval()``.
    :param stats_window_size: episodes averaged in ``rollout/*`` logs.
    :param tensorboard_log: tensorboard log folder, or ``None``.
    :param policy_kwargs: policy constructor arguments.
    :param verbose: 0 silent, 1 info, 2 debug.
    :param seed: random seed.
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    :param _init_setup_model: build the networks now (SB3 convention).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpRecurrentPolicy": MlpRecurrentPolicy,
        "CnnRecurrentPolicy": CnnRecurrentPolicy,
        "MultiInputRecurrentPolicy": MultiInputRecurrentPolicy,
    }
    policy: RecurrentActorCriticPolicy
    rollout_buffer: RecurrentRolloutBuffer | RecurrentDictRolloutBuffer  # type: ignore[assignment]
    _last_state: State

    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 2.5e-4,
        n_steps: int = 128,
        batch_size: int | None = 256,
        n_epochs: int = 4,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule | None = 0.2,
        normalize_advantage: bool = True,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        sequence_length: int = 32,
        target_kl: float | None = None,
        clip_range_vf: float | Schedule | None = None,
        bootstrap_truncated: bool = True,
        refresh_chunk_states: bool = False,
        shift_chunks: bool = False,
        policy_train_mode: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        for name, value in (("n_steps", n_steps), ("n_epochs", n_epochs), ("sequence_length", sequence_length)):
            if not (is_int(value) and value >= 1):
                raise ValueError(f"expected an int {name} >= 1, got {name}={value!r}")
        if batch_size is not None and not is_int(batch_size):
            raise ValueError(f"expected an int batch_size or None, got batch_size={batch_size!r}")
        if n_steps % sequence_length != 0:
            raise ValueError(
                f"expected n_steps to be a multiple of sequence_length={sequence_length}, got n_steps={n_steps}"
            )
        if batch_size is not None and (batch_size < sequence_length or batch_size % sequence_length != 0):
            raise ValueError(
                f"expected batch_size to be a positive multiple of sequence_length={sequence_length}, "
                f"got batch_size={batch_size}"
            )
        if isinstance(clip_range_vf, float | int) and clip_range_vf <= 0:
            raise ValueError(f"expected clip_range_vf > 0 (None turns value clipping off), got {clip_range_vf}")
        if shift_chunks and sequence_length % 2 != 0:
            raise ValueError(f"expected an even sequence_length with shift_chunks, got {sequence_length}")
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.normalize_advantage = normalize_advantage
        self.sequence_length = sequence_length
        self.target_kl = target_kl
        self.clip_range_vf = clip_range_vf
        self.bootstrap_truncated = bootstrap_truncated
        self.refresh_chunk_states = refresh_chunk_states
        self.shift_chunks = shift_chunks
        self.policy_train_mode = policy_train_mode
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=False,
            sde_sample_freq=-1,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        if _init_setup_model and not policy_train_mode:  # at construction, not when load() rebuilds the model
            _warn_inactive_dropout(self.policy)

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        buffer_class = (
            RecurrentDictRolloutBuffer if isinstance(self.observation_space, spaces.Dict) else RecurrentRolloutBuffer
        )
        self.rollout_buffer = buffer_class(
            self.n_steps,
            self.observation_space,  # type: ignore[arg-type]  # a Dict space for the Dict buffer
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            sequence_length=self.sequence_length,
            shift_chunks=self.shift_chunks,
        )
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        if not isinstance(self.policy, RecurrentActorCriticPolicy):
            raise ValueError(f"expected a RecurrentActorCriticPolicy subclass, got {type(self.policy).__name__}")
        self.policy = self.policy.to(self.device)
        self._clip_schedule = FloatSchedule(self.clip_range) if self.clip_range is not None else None
        self._clip_vf_schedule = FloatSchedule(self.clip_range_vf) if self.clip_range_vf is not None else None
        self._last_state = self.policy.initial_state(self.n_envs)

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """Fill the buffer with ``n_rollout_steps`` steps per env, threading the recurrent state."""
        assert isinstance(rollout_buffer, RecurrentRolloutBuffer | RecurrentDictRolloutBuffer)
        assert self._last_obs is not None
        self.policy.set_training_mode(self.policy_train_mode)
        rollout_buffer.reset()
        callback.on_rollout_start()
        state = self._last_state
        for step in range(n_rollout_steps):
            if step % rollout_buffer.state_interval == 0:
                rollout_buffer.add_chunk_state(state)
            with th.no_grad():
                obs = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                starts = th.as_tensor(self._last_episode_starts, device=self.device).bool()
                actions, values, log_probs, state = self.policy(obs, state, starts)
            actions = actions.cpu().numpy()
            env_actions = actions
            if isinstance(self.action_space, spaces.Box):
                env_actions = np.clip(actions, self.action_space.low, self.action_space.high)
            new_obs, rewards, dones, infos = env.step(env_actions)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)
            # Bootstrap episodes cut by a time limit (SB3 issue #633) from the state after this step; torch-ac
            # does not (bootstrap_truncated=False: mask = 1 - done).
            for i in np.flatnonzero(dones) if self.bootstrap_truncated else ():
                if infos[i].get("TimeLimit.truncated", False) and infos[i].get("terminal_observation") is not None:
                    terminal_obs = self.policy.obs_to_tensor(infos[i]["terminal_observation"])[0]
                    with th.no_grad():
                        env_state = map_state(lambda s, i=i: s[:, i : i + 1].contiguous(), state)
                        no_start = th.zeros(1, dtype=th.bool, device=self.device)
                        terminal_value = self.policy.predict_values(terminal_obs, env_state, no_start)
                    rewards[i] += self.gamma * terminal_value.item()
            rollout_buffer.add(
                self._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
            )
            self._last_obs, self._last_episode_starts, self._last_state = new_obs, dones, state  # type: ignore[assignment]
        with th.no_grad():
            starts = th.as_tensor(dones, device=self.device).bool()
            last_values = self.policy.predict_values(obs_as_tensor(new_obs, self.device), state, starts)  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def train(self) -> None:
        """Update the policy on the rollout: ``n_epochs`` passes over random minibatches of whole chunks.

        The update runs the policy in the rollout's mode (``eval()``: dropout off, unless ``policy_train_mode``), so
        that it recomputes exactly the rollout's log-probabilities and the ratio starts at 1 (pitfalls: dropout on
        in only one of the two makes them differ; with ``policy_train_mode`` and dropout it is on in both, with
        different masks). On CUDA it runs without cuDNN, which has no RNN backward in eval mode.
        """
        with _native_rnn_kernels(self.device):
            self._update()

    def _update(self) -> None:
        """The body of :meth:`train`."""
        self.policy.set_training_mode(self.policy_train_mode)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self._clip_schedule(self._current_progress_remaining) if self._clip_schedule else None
        clip_range_vf = self._clip_vf_schedule(self._current_progress_remaining) if self._clip_vf_schedule else None
        logs: dict[str, list[float]] = defaultdict(list)
        continue_training = True
        for _ in range(self.n_epochs):
            # shift_chunks: torch-ac shifts on every other call of _get_batches_starting_indexes, one per epoch.
            shift = self.shift_chunks and self._n_updates % 2 == 1
            for batch in self.rollout_buffer.get(self.batch_size, shift=shift):
                actions = batch.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                if self.refresh_chunk_states:
                    # torch-ac's memory write-back: the state at the next kept step becomes its stored state.
                    split = self.rollout_buffer.state_interval
                    values, log_prob, entropy, state = self.policy.evaluate_actions_and_state(
                        batch.observations, actions, batch.states, batch.episode_starts, split
                    )
                    self.rollout_buffer.write_states(batch.chunk_starts + split, batch.chunk_envs, state)
                else:
                    values, log_prob, entropy = self.policy.evaluate_actions(
                        batch.observations, actions, batch.states, batch.episode_starts
                    )
                values = values.flatten()
                advantages = batch.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                log_ratio = log_prob - batch.old_log_prob
                ratio = th.exp(log_ratio)  # ratio between old and new policy, 1 on the first minibatch
                if clip_range is None:
                    policy_loss = -(advantages * ratio).mean()  # A2C's loss (arXiv 2205.09123)
                else:
                    # clipped surrogate loss (arXiv 1707.06347, eq. 7; SB3's PPO.train)
                    policy_loss_1 = advantages * ratio
                    policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                    policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()
                    logs["clip_fraction"].append(((ratio - 1).abs() > clip_range).float().mean().item())
                # value loss: squared error to the returns, clipped as torch-ac's with clip_range_vf
                value_loss = clipped_value_loss(values, batch.old_values, batch.returns, clip_range_vf)
                # entropy loss favours exploration; -log_prob approximates the entropy when it has no closed form
                entropy_loss = -(entropy if entropy is not None else -log_prob).mean()
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                with th.no_grad():  # approximate KL, as SB3's PPO.train: http://joschu.net/blog/kl-approx.html
                    approx_kl = ((ratio - 1) - log_ratio).mean().item()
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    break
                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                for key, value in (
                    ("policy_gradient_loss", policy_loss),
                    ("value_loss", value_loss),
                    ("entropy_loss", entropy_loss),
                    ("loss", loss),
                ):
                    logs[key].append(value.item())
                logs["approx_kl"].append(approx_kl)
            self._n_updates += 1
            if not continue_training:
                break
        for key, values_ in logs.items():
            self.logger.record(f"train/{key}", float(np.mean(values_)))
        self.logger.record(
            "train/explained_variance",
            float(explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())),
        )
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if clip_range is not None:
            self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def learn(
        self: SelfRecurrentPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfRecurrentPPO:
        """Train for ``total_timesteps`` env steps (SB3's ``learn``)."""
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name or type(self).__name__,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_state", "_clip_schedule", "_clip_vf_schedule"]
