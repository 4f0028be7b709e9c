"""Sequence plumbing shared by every recurrent core: input forms, recurrent state as an opaque value, resets.

Symbols used in shapes:

- ``T``: sequence length, ``B``: batch size, ``L``: ``num_layers``, ``H``: ``hidden_size``.

A core's recurrent *state* is what its ``forward`` takes as ``hx`` and returns: a tensor (GRU, and RIM with
``cell="gru"``) or a tuple of tensors (LSTM: ``(h, c)``); a policy with two cores holds a tuple of two such
states. Every tensor in a state has the batch on dimension 1, shape ``(L, B, *)``. Code outside a core never looks
inside a state: it uses :func:`map_state` to index, stack, detach or move states, so a new core never means editing
a buffer or an algorithm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar, cast

import torch
from torch import Tensor

from rims_rl.checks import check_starts_shape

State = Tensor | tuple["State", ...]
"""A recurrent state: a tensor, or a (nested) tuple of tensors, each of shape ``(L, B, *)``."""
S = TypeVar("S", bound=State)
"""A state of one structure (the functions that keep the structure return the type they are given)."""


def map_state(fn: Callable[..., Tensor], *states: S) -> S:
    """Apply ``fn`` to the corresponding tensors of one or more states of the same (possibly nested) structure.

    >>> h, c = torch.zeros(1, 4, 3), torch.ones(1, 4, 3)
    >>> first_two = map_state(lambda t: t[:, :2], (h, c))
    >>> [tuple(t.shape) for t in first_two]
    [(1, 2, 3), (1, 2, 3)]
    >>> map_state(lambda a, b: torch.cat([a, b], dim=1), h, h).shape
    torch.Size([1, 8, 3])
    >>> actor, critic = map_state(lambda t: t[:, :1], ((h, c), h))  # two cores' states: one State
    >>> [tuple(t.shape) for t in actor], tuple(critic.shape)
    ([(1, 1, 3), (1, 1, 3)], (1, 1, 3))
    """
    if isinstance(states[0], tuple):
        return cast(S, tuple(map_state(fn, *parts) for parts in zip(*states, strict=True)))
    return cast(S, fn(*states))


def reset_state(state: S, starts: Tensor) -> S:
    """Zero the state of the samples whose ``starts`` flag is set.

    :param state: tensors of shape ``(L, B, *)``.
    :param starts: ``(B,)`` bool.
    :return: a state of the same structure; unflagged samples are untouched (bit for bit).
    """
    return map_state(lambda t: torch.where(starts.view(1, -1, *([1] * (t.dim() - 2))), 0.0, t), state)


class TimeMajor(NamedTuple):
    """A sequence input brought to the time-major batched form ``(T, B, *)`` (see :func:`to_time_major`)."""

    input: Tensor
    """``(T, B, F)``."""
    hx: State | None
    """Tensors of shape ``(L, B, *)``, or ``None``."""
    episode_starts: Tensor | None
    """``(T, B)`` bool, or ``None`` when no sample starts an episode in this sequence."""
    batched: bool
    """Whether the caller passed a batch (if not, outputs lose their batch dimension again)."""


def to_time_major(input: Tensor, hx: State | None, episode_starts: Tensor | None, batch_first: bool) -> TimeMajor:
    """Accept the input forms of :class:`torch.nn.LSTM` and bring them to ``(T, B, F)``.

    :param input: ``(T, B, F)``, ``(B, T, F)`` when ``batch_first``, or unbatched ``(T, F)``.
    :param hx: state tensors ``(L, B, *)``, or ``(L, *)`` for an unbatched input; or ``None``.
    :param episode_starts: bool flags laid out like the input's leading dimensions: ``(T, B)``, ``(B, T)`` when
        ``batch_first``, ``(T,)`` unbatched. Where set, the state of that sample is zeroed before that step.
    """
    if input.dim() not in (2, 3):
        raise ValueError(f"expected input of 2 (unbatched) or 3 dimensions, got shape {tuple(input.shape)}")
    batched = input.dim() == 3
    if episode_starts is not None:
        check_starts_shape(tuple(episode_starts.shape), tuple(input.shape), batch_first)
    if not batched:
        input = input.unsqueeze(1)
        if hx is not None:
            hx = map_state(lambda t: t.unsqueeze(1), hx)
        if episode_starts is not None:
            episode_starts = episode_starts.unsqueeze(1)
    elif batch_first:
        input = input.transpose(0, 1)
        if episode_starts is not None:
            episode_starts = episode_starts.transpose(0, 1)
    if episode_starts is not None:
        episode_starts = episode_starts.to(device=input.device, dtype=torch.bool)
        if not bool(episode_starts.any()):
            episode_starts = None
    return TimeMajor(input, hx, episode_starts, batched)


def from_time_major(output: Tensor, hx: S, batched: bool, batch_first: bool) -> tuple[Tensor, S]:
    """Undo :func:`to_time_major` on a ``(T, B, H)`` output and its final state."""
    if not batched:
        return output.squeeze(1), map_state(lambda t: t.squeeze(1), hx)
    if batch_first:
        output = output.transpose(0, 1)
    return output, hx
