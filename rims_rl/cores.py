"""LSTM and GRU cores with the ``episode_starts`` extension, and :func:`make_core`, the factory agents use.

Every core (``LSTMCore``, ``GRUCore``, :class:`rims_rl.RIM`) offers the same surface:

- ``forward(input, hx=None, *, episode_starts=None) -> (output, hx)`` with :class:`torch.nn.LSTM`'s input forms;
- ``hidden_size``: the feature size of ``output``;
- ``initial_state(batch_size, device=None, dtype=None) -> State``: the zero state.

Symbols: ``T`` sequence length, ``B`` batch, ``L`` ``num_layers``, ``H`` ``hidden_size``, ``F`` ``input_size``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from rims_rl.rim import RIM
from rims_rl.sequence import State, from_time_major, run_with_resets, to_time_major


class _ResettableRNN:
    """Adds ``episode_starts`` and ``initial_state`` to a :class:`torch.nn.LSTM` or :class:`torch.nn.GRU`."""

    num_layers: int
    hidden_size: int
    batch_first: bool
    bidirectional: bool

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The zero state for ``batch_size`` samples: tensors of shape ``(L, B, H)``."""
        ref = next(self.parameters())  # type: ignore[attr-defined]  # provided by the nn.RNNBase subclass
        zeros = torch.zeros(
            self.num_layers, batch_size, self.hidden_size, device=device or ref.device, dtype=dtype or ref.dtype
        )
        return (zeros, zeros.clone()) if isinstance(self, nn.LSTM) else zeros

    def forward(
        self, input: Tensor, hx: State | None = None, *, episode_starts: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Run the RNN; where ``episode_starts`` is set, that sample's state is zeroed before that step.

        :param input: ``(T, B, F)``, ``(B, T, F)`` if ``batch_first``, or unbatched ``(T, F)``.
        :param hx: as for the parent ``nn.LSTM`` / ``nn.GRU``: tensors ``(L, B, H)`` (``(L, H)`` unbatched).
        :param episode_starts: bool, laid out like the input's leading dimensions (``(T, B)`` time-major).
        :return: ``output`` with the input's layout and last dimension ``H``, and the final state.
        """
        if episode_starts is None:  # the plain nn.LSTM / nn.GRU call, untouched
            return super().forward(input, hx)  # type: ignore[misc]  # cooperative call into nn.LSTM / nn.GRU
        x = to_time_major(input, hx, episode_starts, self.batch_first)
        step = super().forward
        if self.batch_first:
            step = partial(_time_major_call, step)
        out, state = run_with_resets(
            step,
            x.input,
            x.hx,
            x.episode_starts,
            lambda: self.initial_state(x.input.shape[1], x.input.device, x.input.dtype),
        )
        return from_time_major(out, state, x.batched, self.batch_first)


def _time_major_call(step: Any, seq: Tensor, hx: State | None) -> tuple[Tensor, State]:
    """Call a ``batch_first`` RNN's forward on a time-major sequence, returning a time-major output."""
    out, hx = step(seq.transpose(0, 1), hx)
    return out.transpose(0, 1), hx


class LSTMCore(_ResettableRNN, nn.LSTM):
    """:class:`torch.nn.LSTM` plus ``episode_starts`` resets and ``initial_state``.

    >>> core = LSTMCore(8, 16)
    >>> x, starts = torch.randn(5, 3, 8), torch.zeros(5, 3, dtype=torch.bool)
    >>> starts[2, 1] = True
    >>> out, (h, c) = core(x, episode_starts=starts)
    >>> out.shape, h.shape
    (torch.Size([5, 3, 16]), torch.Size([1, 3, 16]))
    """


class GRUCore(_ResettableRNN, nn.GRU):
    """:class:`torch.nn.GRU` plus ``episode_starts`` resets and ``initial_state``.

    >>> out, h = GRUCore(8, 16, num_layers=2)(torch.randn(5, 3, 8))
    >>> out.shape, h.shape
    (torch.Size([5, 3, 16]), torch.Size([2, 3, 16]))
    """


CORE_NAMES = ("lstm", "gru", "rim")


def make_core(name: str, input_size: int, **kwargs: Any) -> nn.Module:
    """Build a recurrent core by name.

    :param name: ``"lstm"`` (:class:`LSTMCore`), ``"gru"`` (:class:`GRUCore`) or ``"rim"`` (:class:`rims_rl.RIM`).
    :param input_size: ``F``, the feature size of the input.
    :param kwargs: the core's constructor arguments, e.g. ``hidden_size``, ``num_layers``; for ``"rim"`` also
        ``num_units``, ``k`` and the attention sizes.
    :return: a module with ``forward(input, hx=None, *, episode_starts=None)``, ``hidden_size`` and
        ``initial_state``.

    >>> make_core("gru", 8, hidden_size=32)
    GRUCore(8, 32)
    """
    if name == "lstm":
        return LSTMCore(input_size, **kwargs)
    if name == "gru":
        return GRUCore(input_size, **kwargs)
    if name == "rim":
        return RIM(input_size, **kwargs)
    raise ValueError(f"unknown core {name!r}; expected one of {', '.join(map(repr, CORE_NAMES))}")
