"""Rollout buffers that cut each environment's rollout into fixed-length chunks for truncated BPTT.

Storage is SB3's, time-major ``(n_steps, n_envs, *)``. On top of it the buffer keeps the recurrent state at
every chunk start (the state the rollout policy had just before that step, before any reset at that step), and
samples whole chunks: a minibatch of ``batch_size`` steps is ``batch_size // sequence_length`` chunks of exactly
``sequence_length`` steps, so there is no padding and no mask: every row is a real step. Episodes that end
inside a chunk are handled by the core through ``episode_starts``.

With ``shift_chunks`` the state is kept every ``T // 2`` steps, and ``get(shift=True)`` starts the chunks
``T // 2`` steps later, dropping each env's last chunk, which would cross the rollout's end (torch-ac 1.4's
``PPOAlgo._get_batches_starting_indexes``). :meth:`write_states` overwrites kept states (torch-ac's memory
write-back).

Symbols: ``T`` = ``sequence_length``, ``N`` chunks per minibatch, ``C`` = ``n_steps // T`` chunks per env,
``S`` = ``n_steps // state_interval`` kept states per env.
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
    chunk_starts: th.Tensor
    """``(N,)`` long: the rollout step of each chunk's first step."""
    chunk_envs: th.Tensor
    """``(N,)`` long: the env of each chunk."""


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

    def __init__(self, *args: Any, sequence_length: int, shift_chunks: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if sequence_length < 1 or self.buffer_size % sequence_length != 0:
            raise ValueError(
                f"expected sequence_length to divide n_steps={self.buffer_size}, got sequence_length={sequence_length}"
            )
        if shift_chunks and sequence_length % 2 != 0:
            raise ValueError(f"expected an even sequence_length with shift_chunks, got {sequence_length}")
        self.sequence_length = sequence_length
        self.shift_chunks = shift_chunks
        self.state_interval = sequence_length // 2 if shift_chunks else sequence_length
        """Steps between kept states: ``T // 2`` with ``shift_chunks``, else ``T``."""

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]  # cooperative call into the SB3 buffer
        self.chunk_states: list[State] = []
        self._stacked_states: State | None = None

    def add_chunk_state(self, state: State) -> None:
        """Record the state before the step about to be added; call it when ``pos % state_interval == 0``.

        :param state: tensors ``(L, n_envs, *)``.
        """
        self.chunk_states.append(map_state(lambda s: s.detach().clone(), state))

    def _states(self) -> State:
        """The kept states stacked once per rollout: tensors ``(S, L, n_envs, *)``."""
        if self._stacked_states is None:
            self._stacked_states = map_state(lambda *s: th.stack(s), *self.chunk_states)
        return self._stacked_states

    def states_at(self, steps: th.Tensor, envs: th.Tensor) -> State:
        """The kept states before rollout steps ``steps`` of envs ``envs``.

        :param steps: ``(N,)`` long, multiples of ``state_interval``.
        :param envs: ``(N,)`` long.
        :return: tensors ``(L, N, *)``.
        """
        slots = steps // self.state_interval
        return map_state(lambda s: s[slots, :, envs].transpose(0, 1).contiguous(), self._states())

    def write_states(self, steps: th.Tensor, envs: th.Tensor, state: State) -> None:
        """Overwrite the kept states before rollout steps ``steps`` of envs ``envs`` with ``state``, detached; steps
        at or past the rollout's end are skipped.

        :param steps: ``(N,)`` long, multiples of ``state_interval``.
        :param envs: ``(N,)`` long.
        :param state: tensors ``(L, N, *)``.
        """
        inside = steps < self.buffer_size
        slots, envs = steps[inside] // self.state_interval, envs[inside]

        def write(stored: th.Tensor, new: th.Tensor) -> th.Tensor:
            stored[slots, :, envs] = new.detach()[:, inside].transpose(0, 1).to(stored.dtype)
            return stored

        map_state(write, self._states(), state)

    def get(  # type: ignore[override]
        self, batch_size: int | None = None, shift: bool = False
    ) -> Generator[RecurrentRolloutBufferSamples, None, None]:
        """Yield minibatches of whole chunks, in a random order.

        :param batch_size: steps per minibatch, a multiple of ``sequence_length``; ``None``: the whole rollout.
        :param shift: start the chunks ``T // 2`` steps later and drop each env's last one (needs
            ``shift_chunks``); the minibatches then hold ``batch_size // T`` chunks each, the last one fewer.
        """
        assert self.full, "the rollout buffer must be full before sampling"
        if shift and not self.shift_chunks:
            raise ValueError("expected a buffer built with shift_chunks=True for get(shift=True)")
        T, n_envs = self.sequence_length, self.n_envs
        offset = T // 2 if shift else 0
        n_chunks = ((self.buffer_size - offset) // T) * n_envs
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

        def rows(x: th.Tensor, steps: th.Tensor, envs: th.Tensor) -> th.Tensor:
            return x[steps, envs].flatten(0, 1)

        order = th.randperm(n_chunks, device=self.device)
        for begin in range(0, n_chunks, per_batch):
            idx = order[begin : begin + per_batch]
            chunk, env = idx // n_envs, idx % n_envs
            first = offset + chunk * T  # (N,)
            steps = first + th.arange(T, device=self.device).unsqueeze(1)  # (T, N)
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
                states=self.states_at(first, env),
                chunk_starts=first,
                chunk_envs=env,
            )


class RecurrentRolloutBuffer(_RecurrentBufferMixin, RolloutBuffer):  # type: ignore[misc]  # get yields chunks
    """Chunked rollout buffer for array observations; constructor as SB3's plus ``sequence_length``."""


class RecurrentDictRolloutBuffer(_RecurrentBufferMixin, DictRolloutBuffer):  # type: ignore[misc]  # as above
    """Chunked rollout buffer for Dict observations; constructor as SB3's plus ``sequence_length``."""
