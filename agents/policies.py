"""Recurrent actor-critic policies whose memory is any core from :func:`rims_rl.make_core` (lstm, gru, rim, yours).

The data path of one step and of a training sequence is the same::

    obs -> features extractor -> core        -> MlpExtractor (pi) -> action_net
                              -> critic core -> MlpExtractor (vf) -> value_net

By default the critic has a recurrent core of its own, of the same kind and size as the actor's (sb3-contrib's
``enable_critic_lstm=True``, core-agnostic here); ``shared_core=True`` gives both heads one core, as the RIMs
paper's and torch-ac's agents have.

A features extractor with a ``set_shape`` ``(S, F)`` (:class:`rims_rl.agents.MiniGridFeaturesExtractor` with
``output="set"``) emits a set of ``S`` elements of ``F`` features per step; a core whose class says
``accepts_sets = True`` (as :class:`rims_rl.RIM`) is then built with ``input_size`` F and reads ``(T, B, S, F)``,
any other core is built with ``input_size`` S * F and reads the same features flattened, ``(T, B, S * F)``.

Symbols: ``T`` sequence length, ``B`` batch (environments or sequences), ``F`` features, ``H`` core output size,
``S`` set elements.
The recurrent state is a :data:`rims_rl.State`, opaque here: it is made by ``core.initial_state`` and threaded
through; nothing in ``agents`` indexes into it.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from rims_rl import Core, State, make_core, map_state, resolve_core


class RecurrentActorCriticPolicy(ActorCriticPolicy):
    """An SB3 actor-critic policy with a recurrent core between the features extractor and the MLP heads.

    Actor and critic share the features extractor. The critic reads a core of its own (``shared_core=False``,
    the default, as sb3-contrib's RecurrentPPO) or the actor's (``shared_core=True``, as the RIMs paper's MiniGrid
    agents, rl-starter-files' ``ACModel``; both losses then train that core). With two cores the recurrent state
    is the pair ``(actor state, critic state)``, still one opaque :data:`rims_rl.State`. Cores keep their own
    initialisation (SB3's orthogonal init covers the extractor, the MLPs and the heads).

    :param observation_space: the observation space.
    :param action_space: the action space.
    :param lr_schedule: learning-rate schedule; ``lr_schedule(1)`` is the initial learning rate.
    :param core: a name registered in :data:`rims_rl.CORES` (``"lstm"``, ``"gru"``, ``"rim"``) or an import path
        ``"package.module:Name"`` of a core (see :func:`rims_rl.make_core`).
    :param core_kwargs: constructor arguments of the core, e.g. ``dict(hidden_size=192, num_units=6, k=4)``;
        ``input_size`` is the features extractor's ``features_dim``, or its element size F when the extractor emits
        a set (``set_shape`` ``(S, F)``) and the core's class has ``accepts_sets = True``.
    :param shared_core: one core for actor and critic; ``False`` gives the critic its own core, built from the
        same ``core`` and ``core_kwargs``.
    :param net_arch: MLP layers after the core, as in SB3 (``dict(pi=[...], vf=[...])`` or a list for both).
    :param activation_fn: activation of the MLP layers.
    :param ortho_init: orthogonal initialisation of extractor, MLPs and heads (as SB3).
    :param features_extractor_class: SB3 features extractor class.
    :param features_extractor_kwargs: its keyword arguments.
    :param share_features_extractor: must be ``True``: actor and critic read one features extractor.
    :param normalize_images: divide image observations by 255 (as SB3); MiniGrid's symbolic images want ``False``.
    :param optimizer_class: the optimizer class.
    :param optimizer_kwargs: its keyword arguments, learning rate excluded.
    :param kwargs: further :class:`~stable_baselines3.common.policies.ActorCriticPolicy` arguments.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        core: str = "lstm",
        core_kwargs: dict[str, Any] | None = None,
        shared_core: bool = False,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not share_features_extractor:
            raise ValueError(
                "share_features_extractor=False is not supported: actor and critic share one features extractor "
                "(use shared_core to choose whether they share the recurrent core); expected "
                "share_features_extractor=True"
            )
        # Read by _build_mlp_extractor, which ActorCriticPolicy.__init__ calls before the optimizer is built.
        self.core_name = core
        self.core_kwargs = dict(core_kwargs or {})
        self.shared_core = shared_core
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            share_features_extractor=True,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            **kwargs,
        )

    def _build_mlp_extractor(self) -> None:
        set_shape = getattr(self.features_extractor, "set_shape", None)
        # The shape of one step's core input: ``(S, F)`` for a core that reads sets, else ``(features_dim,)``.
        self.core_input_shape: tuple[int, ...] = (self.features_dim,)
        if set_shape is not None and getattr(resolve_core(self.core_name), "accepts_sets", False):
            self.core_input_shape = tuple(set_shape)
        input_size = self.core_input_shape[-1]
        self.core: Core = make_core(self.core_name, input_size, **self.core_kwargs)
        self.critic_core: Core | None = None
        if not self.shared_core:
            self.critic_core = make_core(self.core_name, input_size, **self.core_kwargs)
        self.mlp_extractor = MlpExtractor(
            self.core.hidden_size, net_arch=self.net_arch, activation_fn=self.activation_fn, device=self.device
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            "core": self.core_name,
            "core_kwargs": self.core_kwargs,
            "shared_core": self.shared_core,
        }

    @property
    def action_shape(self) -> tuple[int, ...]:
        """One action's shape (``()`` for a Discrete space)."""
        return cast(tuple[int, ...], self.action_space.shape)  # None only for a bare gym Space, which SB3 refuses

    def initial_state(self, n_envs: int) -> State:
        """The zero recurrent state for ``n_envs`` environments (a pair of core states if the critic has a core)."""
        state = self.core.initial_state(n_envs, device=self.device)
        if self.critic_core is None:
            return state
        return state, self.critic_core.initial_state(n_envs, device=self.device)

    def _latent(
        self, obs: PyTorchObs, state: State, episode_starts: th.Tensor, split: int | None = None
    ) -> tuple[th.Tensor, th.Tensor, State]:
        """Features, core(s) and MLPs over a time-major batch.

        :param obs: observations of ``T * B`` steps, time-major (step ``t`` of sequence ``b`` at ``t * B + b``).
        :param state: the state before step 0, tensors ``(L, B, *)``.
        :param episode_starts: ``(T, B)`` bool.
        :param split: ``None``: return the state after step ``T - 1``; ``0 < split <= T``: the state after step
            ``split - 1`` instead (the cores run steps ``[0, split)`` then ``[split, T)``, gradients flowing through).
        :return: ``latent_pi`` and ``latent_vf`` of shape ``(T * B, *)`` and the state (see ``split``).
        """
        features = cast(th.Tensor, self.extract_features(obs))  # one extractor for actor and critic
        T, B = episode_starts.shape
        features = features.view(T, B, *self.core_input_shape)  # a set (S, F) flattened unless the core reads sets
        if split is None:
            out_pi, out_vf, state = self._cores(features, state, episode_starts)
        else:
            if not 0 < split <= T:
                raise ValueError(f"expected 0 < split <= T={T}, got split={split}")
            out_pi, out_vf, state = self._cores(features[:split], state, episode_starts[:split])
            if split < T:
                rest_pi, rest_vf, _ = self._cores(features[split:], state, episode_starts[split:])
                out_pi, out_vf = th.cat([out_pi, rest_pi]), th.cat([out_vf, rest_vf])
        if self.critic_core is None:
            latent_pi, latent_vf = self.mlp_extractor(out_pi.reshape(T * B, -1))
            return latent_pi, latent_vf, state
        latent_pi = self.mlp_extractor.forward_actor(out_pi.reshape(T * B, -1))
        latent_vf = self.mlp_extractor.forward_critic(out_vf.reshape(T * B, -1))
        return latent_pi, latent_vf, state

    def _cores(
        self, features: th.Tensor, state: State, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, State]:
        """The core(s) over ``(T, B, F)`` features (``(T, B, S, F)`` for a core that reads sets): the actor's and the
        critic's outputs ``(T, B, H)`` (the same tensor with a shared core) and the state after step ``T - 1``."""
        if self.critic_core is None:
            out, state = self.core(features, state, episode_starts=episode_starts)
            return out, out, state
        # Both cores always step, so that every state this policy returns is current for actor and critic.
        actor_state, critic_state = state
        out_pi, actor_state = self.core(features, actor_state, episode_starts=episode_starts)
        out_vf, critic_state = self.critic_core(features, critic_state, episode_starts=episode_starts)
        return out_pi, out_vf, (actor_state, critic_state)

    def forward(  # type: ignore[override]  # recurrent signature, as sb3-contrib
        self, obs: PyTorchObs, state: State, episode_starts: th.Tensor, deterministic: bool = False
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, State]:
        """One step for ``B`` environments.

        :param obs: a batch of ``B`` observations.
        :param state: tensors ``(L, B, *)``.
        :param episode_starts: ``(B,)``: whether each observation is the first of an episode.
        :return: actions ``(B, *action_shape)``, values ``(B, 1)``, log-probabilities ``(B,)``, next state.
        """
        latent_pi, latent_vf, state = self._latent(obs, state, episode_starts.view(1, -1))
        distribution = self._get_action_dist_from_latent(latent_pi)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        return actions.reshape((-1, *self.action_shape)), self.value_net(latent_vf), log_prob, state

    def predict_values(  # type: ignore[override]  # recurrent signature
        self, obs: PyTorchObs, state: State, episode_starts: th.Tensor
    ) -> th.Tensor:
        """Values ``(B, 1)`` of one step for ``B`` environments (arguments as :meth:`forward`)."""
        _, latent_vf, _ = self._latent(obs, state, episode_starts.view(1, -1))
        return self.value_net(latent_vf)

    def evaluate_actions(  # type: ignore[override]  # recurrent signature
        self, obs: PyTorchObs, actions: th.Tensor, state: State, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """Values, log-probabilities and entropy of ``T * B`` time-major steps (see :meth:`_latent`).

        :return: values ``(T * B, 1)``, log-probabilities ``(T * B,)``, entropy ``(T * B,)``.
        """
        latent_pi, latent_vf, _ = self._latent(obs, state, episode_starts)
        distribution = self._get_action_dist_from_latent(latent_pi)
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy()

    def evaluate_actions_and_state(
        self, obs: PyTorchObs, actions: th.Tensor, state: State, episode_starts: th.Tensor, split: int
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, State]:
        """:meth:`evaluate_actions`, plus the state after step ``split - 1`` (``0 < split <= T``), still attached to
        the graph: what :class:`~rims_rl.agents.ppo.RecurrentPPO` writes back with ``refresh_chunk_states``.

        :return: values ``(T * B, 1)``, log-probabilities ``(T * B,)``, entropy ``(T * B,)``, state ``(L, B, *)``.
        """
        latent_pi, latent_vf, state = self._latent(obs, state, episode_starts, split)
        distribution = self._get_action_dist_from_latent(latent_pi)
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy(), state

    def get_distribution(  # type: ignore[override]  # recurrent signature
        self, obs: PyTorchObs, state: State, episode_starts: th.Tensor
    ) -> tuple[Distribution, State]:
        """The action distribution of one step for ``B`` environments, and the next state."""
        latent_pi, _, state = self._latent(obs, state, episode_starts.view(1, -1))
        return self._get_action_dist_from_latent(latent_pi), state

    def predict(  # type: ignore[override]  # the recurrent state is a State, returned as numpy arrays
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool | np.ndarray = False,
    ) -> tuple[np.ndarray, Any]:
        """The SB3 ``predict`` with recurrent state.

        :param observation: one observation, or a batch of ``B`` (as from a VecEnv).
        :param state: the state returned by the previous call (numpy arrays or tensors ``(L, B, *)``), or
            ``None`` to start from zeros.
        :param episode_start: ``(B,)``: where set, that environment's state is reset first. ``None``: no reset.
        :param deterministic: take the most likely action instead of sampling; a ``(B,)`` bool array chooses per
            environment (one call plays greedy and sampled environments together; every row draws a sample).
        :return: actions and the next state (numpy arrays ``(L, B, *)``).
        """
        self.set_training_mode(False)
        obs_tensor, vectorized = self.obs_to_tensor(observation)
        n_envs = next(iter(obs_tensor.values())).shape[0] if isinstance(obs_tensor, dict) else obs_tensor.shape[0]
        if state is None:
            state = self.initial_state(n_envs)
        else:
            state = map_state(lambda s: th.as_tensor(s, device=self.device), state)
        if episode_start is None:
            episode_start = np.zeros(n_envs, dtype=bool)
        starts = th.as_tensor(np.asarray(episode_start), device=self.device).bool().view(n_envs)
        with th.no_grad():
            distribution, state = self.get_distribution(obs_tensor, state, starts)
            if isinstance(deterministic, np.ndarray):
                greedy = th.as_tensor(deterministic, device=self.device).bool().view(n_envs)
                mode, sample = distribution.mode(), distribution.sample()
                chosen = th.where(greedy.view(-1, *[1] * (mode.dim() - 1)), mode, sample)
            else:
                chosen = distribution.get_actions(deterministic=deterministic)
        actions = chosen.cpu().numpy().reshape((-1, *self.action_shape))
        if isinstance(self.action_space, spaces.Box):
            actions = np.clip(actions, self.action_space.low, self.action_space.high)
        if not vectorized:
            actions = actions.squeeze(axis=0)
        return actions, map_state(lambda s: s.cpu().numpy(), state)


class MlpRecurrentPolicy(RecurrentActorCriticPolicy):
    """:class:`RecurrentActorCriticPolicy` on flat observations (SB3's ``FlattenExtractor``)."""


class CnnRecurrentPolicy(RecurrentActorCriticPolicy):
    """:class:`RecurrentActorCriticPolicy` on image observations (SB3's ``NatureCNN`` by default)."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs: Any):
        # type-ignore: mypy cannot see that *args (observation_space, action_space, lr_schedule) stop before it
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)  # type: ignore[misc]


class MultiInputRecurrentPolicy(RecurrentActorCriticPolicy):
    """:class:`RecurrentActorCriticPolicy` on Dict observations (SB3's ``CombinedExtractor`` by default)."""

    def __init__(
        self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs: Any
    ):
        # type-ignore: mypy cannot see that *args (observation_space, action_space, lr_schedule) stop before it
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)  # type: ignore[misc]
