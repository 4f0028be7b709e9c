"""Recurrent A2C: :class:`~rims_rl.agents.ppo.RecurrentPPO` as its special case (Huang, Kanervisto, Raffin et al.,
"A2C is a special case of PPO", arXiv 2205.09123): one epoch, the whole rollout as one batch, no clipping, no
advantage normalisation, ``gae_lambda=1`` and RMSprop (alpha 0.99, eps 1e-5).

With one epoch the ratio is exactly 1 when the gradient is taken, and the gradient of ``-A * ratio`` is that of
A2C's ``-A * log_prob``.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from rims_rl.agents.policies import RecurrentActorCriticPolicy
from rims_rl.agents.ppo import RecurrentPPO


class RecurrentA2C(RecurrentPPO):
    """Advantage Actor-Critic (arXiv 1602.01783) with a recurrent policy.

    Defaults follow the RIMs paper's MiniGrid set-up (A2C, RMSprop, learning rate 7e-4); ``n_steps=16`` is our
    choice, long enough for BPTT through the whole rollout (``sequence_length`` defaults to ``n_steps``).

    >>> from rims_rl.agents import RecurrentA2C
    >>> policy_kwargs = dict(core="gru", core_kwargs=dict(hidden_size=16))
    >>> model = RecurrentA2C("MlpRecurrentPolicy", "CartPole-v1", policy_kwargs=policy_kwargs).learn(64)

    :param policy: as :class:`~rims_rl.agents.ppo.RecurrentPPO`.
    :param env: the environment.
    :param learning_rate: learning rate or schedule.
    :param n_steps: steps per environment per update.
    :param gamma: discount factor.
    :param gae_lambda: 1 gives A2C's n-step returns.
    :param ent_coef: entropy coefficient.
    :param vf_coef: value-loss coefficient.
    :param max_grad_norm: gradient clipping norm.
    :param rms_prop_eps: RMSprop epsilon (used unless ``policy_kwargs`` names an optimizer).
    :param normalize_advantage: normalise advantages (off in A2C).
    :param sequence_length: BPTT chunk length; ``None``: ``n_steps`` (each env's rollout is one sequence).
    :param kwargs: further :class:`~rims_rl.agents.ppo.RecurrentPPO` arguments (``policy_kwargs``, ``seed``, ...), among
        them torch-ac's protocol options ``bootstrap_truncated``, ``clip_range_vf`` (inactive with one epoch: the
        values equal the old ones), ``refresh_chunk_states`` and ``shift_chunks`` (with ``sequence_length <
        n_steps``), and ``policy_train_mode`` (rollout and update in ``train()`` mode, so a core's dropout acts).
    """

    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 7e-4,
        n_steps: int = 16,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rms_prop_eps: float = 1e-5,
        normalize_advantage: bool = False,
        sequence_length: int | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        policy_kwargs = dict(policy_kwargs or {})
        if "optimizer_class" not in policy_kwargs:
            policy_kwargs["optimizer_class"] = th.optim.RMSprop
            policy_kwargs.setdefault("optimizer_kwargs", dict(alpha=0.99, eps=rms_prop_eps, weight_decay=0))
        super().__init__(
            policy,
            env,
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
            sequence_length=sequence_length or n_steps,
            policy_kwargs=policy_kwargs,
            **kwargs,
        )
