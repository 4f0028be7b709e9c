"""Rollout buffers that cut each environment's rollout into fixed-length chunks for truncated BPTT.

Storage is SB3's, time-major ``(n_steps, n_envs, *)``. On top of it the buffer keeps the recurrent state at
every chunk start (the state the rollout policy had just before that step, before any reset at that step), and
samples whole chunks: a minibatch of ``batch_size`` steps is ``batch_size // sequence_length`` chunks of exactly
``sequence_length`` steps, so there is no padding and no mask: every row is a real step. Episodes that end
inside a chunk are handled by the core through ``episode_starts``.

Symbols: ``T`` = ``sequence_length``, ``N`` chunks per minibatch, ``C`` = ``n_steps // T`` chunks per env.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple

import torch as th
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import TensorDict

from rims_rl import State, map_state


class RecurrentRolloutBufferSamples(NamedTuple):
    """A minibatch of ``N`` chunks of ``T`` steps; step-wise fields are time-major, flattened to ``T * N`` rows."""

    observations: th.Tensor | TensorDict
    """``(T * N, *obs_shape)`` (a dict of those for Dict spaces)."""
    actions: th.Tensor
    """``(T * N, *action_shape)``."""
    old_values: th.Tensor
    """``(T * N,)``: values at rollout time."""
    old_log_prob: th.Tensor
    """``(T * N,)``: log-probabilities at rollout time."""
    advantages: th.Tensor
    """``(T * N,)``."""
    returns: th.Tensor
    """``(T * N,)``."""
    episode_starts: th.Tensor
    """``(T, N)`` bool."""
    states: State
    """The state before each chunk's first step: tensors ``(L, N, *)``."""


class _RecurrentBufferMixin:
    """Chunk bookkeeping shared by the array and Dict buffers (SB3 keeps those as two classes)."""

    buffer_size: int
    n_envs: int
    device: th.device
    observations: Any
    actions: Any
    values: Any
    log_probs: Any
    advantages: Any
    returns: Any
    episode_starts: Any
    full: bool

    def __init__(self, *args: Any, sequence_length: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if sequence_length < 1 or self.buffer_size % sequence_length != 0:
            raise ValueError(
                f"expected sequence_length to divide n_steps={self.buffer_size}, got sequence_length={sequence_length}"
            )
        self.sequence_length = sequence_length

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]  # cooperative call into the SB3 buffer
        self.chunk_states: list[State] = []

    def add_chunk_state(self, state: State) -> None:
        """Record the state before the step about to be added; call it when ``pos % sequence_length == 0``.

        :param state: tensors ``(L, n_envs, *)``.
        """
        self.chunk_states.append(map_state(lambda s: s.detach().clone(), state))

    def get(self, batch_size: int | None = None) -> Generator[RecurrentRolloutBufferSamples, None, None]:  # type: ignore[override]
        """Yield minibatches of whole chunks, in a random order.

        :param batch_size: steps per minibatch, a multiple of ``sequence_length``; ``None``: the whole rollout.
        """
        assert self.full, "the rollout buffer must be full before sampling"
        T, n_envs = self.sequence_length, self.n_envs
        n_chunks = (self.buffer_size // T) * n_envs
        batch_size = batch_size or self.buffer_size * n_envs
        if batch_size % T != 0:
            raise ValueError(f"expected batch_size to be a multiple of sequence_length={T}, got {batch_size}")
        per_batch = batch_size // T

        tensor = self.to_torch  # type: ignore[attr-defined]  # BaseBuffer.to_torch
        obs = (
            {key: tensor(value) for key, value in self.observations.items()}
            if isinstance(self.observations, dict)
            else tensor(self.observations)
        )
        fields = [tensor(a) for a in (self.actions, self.values, self.log_probs, self.advantages, self.returns)]
        starts = tensor(self.episode_starts).bool()
        states = map_state(lambda *s: th.stack(s), *self.chunk_states)  # (C, L, n_envs, *)

        def rows(x: th.Tensor, steps: th.Tensor, envs: th.Tensor) -> th.Tensor:
            return x[steps, envs].flatten(0, 1)

        order = th.randperm(n_chunks, device=self.device)
        for begin in range(0, n_chunks, per_batch):
            idx = order[begin : begin + per_batch]
            chunk, env = idx // n_envs, idx % n_envs
            steps = chunk * T + th.arange(T, device=self.device).unsqueeze(1)  # (T, N)
            envs = env.expand_as(steps)
            yield RecurrentRolloutBufferSamples(
                observations=(
                    {key: rows(value, steps, envs) for key, value in obs.items()}
                    if isinstance(obs, dict)
                    else rows(obs, steps, envs)
                ),
                actions=rows(fields[0], steps, envs),
                old_values=rows(fields[1], steps, envs),
                old_log_prob=rows(fields[2], steps, envs),
                advantages=rows(fields[3], steps, envs),
                returns=rows(fields[4], steps, envs),
                episode_starts=starts[steps, envs],
                states=map_state(lambda s, c=chunk, e=env: s[c, :, e].transpose(0, 1).contiguous(), states),
            )


class RecurrentRolloutBuffer(_RecurrentBufferMixin, RolloutBuffer):
    """Chunked rollout buffer for array observations; constructor as SB3's plus ``sequence_length``."""


class RecurrentDictRolloutBuffer(_RecurrentBufferMixin, DictRolloutBuffer):
    """Chunked rollout buffer for Dict observations; constructor as SB3's plus ``sequence_length``."""
