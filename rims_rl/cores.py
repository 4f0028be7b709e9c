"""LSTM and GRU cores with the ``episode_starts`` extension, and :func:`make_core`, the factory agents use.

Every core (:class:`LSTMCore`, :class:`GRUCore`, :class:`rims_rl.RIM`) offers the same surface:

- ``forward(input, hx=None, *, episode_starts=None) -> (output, hx)`` with :class:`torch.nn.LSTM`'s input forms;
- ``hidden_size``: the feature size of ``output``;
- ``initial_state(batch_size, device=None, dtype=None) -> State``: the zero state.

Symbols: ``T`` sequence length, ``B`` batch, ``L`` ``num_layers``, ``H`` ``hidden_size``, ``F`` ``input_size``,
``S`` number of (sample, episode) segments.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rims_rl.rim import RIM
from rims_rl.sequence import State, from_time_major, map_state, reset_state, to_time_major


class _ResettableRNN:
    """Adds ``episode_starts`` and ``initial_state`` to a :class:`torch.nn.LSTM` or :class:`torch.nn.GRU`.

    Resets never cost a Python loop over time: a sequence whose resets all sit at ``t = 0`` is one plain call
    on a zeroed initial state, and otherwise every (sample, episode) segment becomes one sequence of a
    :class:`~torch.nn.utils.rnn.PackedSequence`, run in a single call (sb3-contrib instead loops over time
    whenever any start flag is set, sb3-contrib issue #113).
    """

    num_layers: int
    hidden_size: int
    batch_first: bool
    bidirectional: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.bidirectional or getattr(self, "proj_size", 0):
            raise ValueError(
                "expected a unidirectional core without projection (a recurrent policy runs forward in time), "
                f"got bidirectional={self.bidirectional}, proj_size={getattr(self, 'proj_size', 0)}"
            )

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
        x = to_time_major(input, hx, episode_starts, self.batch_first)
        if x.episode_starts is None:  # the plain nn.LSTM / nn.GRU call, untouched
            return super().forward(input, hx)  # type: ignore[misc]  # cooperative call into nn.LSTM / nn.GRU
        starts = x.episode_starts
        hx = x.hx if x.hx is not None else self.initial_state(x.input.shape[1], x.input.device, x.input.dtype)
        if bool(starts[1:].any()):
            out, hx = self._forward_segments(x.input, hx, starts)
        else:
            seq = x.input.transpose(0, 1) if self.batch_first else x.input
            out, hx = super().forward(seq, reset_state(hx, starts[0]))  # type: ignore[misc]  # as above
            out = out.transpose(0, 1) if self.batch_first else out
        return from_time_major(out, hx, x.batched, self.batch_first)

    def _forward_segments(self, input: Tensor, hx: State, starts: Tensor) -> tuple[Tensor, State]:
        """One packed call over every (sample, episode) segment of a time-major ``(T, B, F)`` input."""
        T, B = starts.shape
        begins = starts.clone()
        begins[0] = True
        begins = begins.T.reshape(-1)  # sample-major: step t of sample b sits at b * T + t
        seg_id = begins.cumsum(0) - 1  # (B*T,)
        first = torch.nonzero(begins).flatten()  # (S,) flat index of each segment's first step
        lengths = torch.diff(first, append=first.new_tensor([B * T]))
        pos = torch.arange(B * T, device=input.device) - first[seg_id]  # step within its segment
        padded = input.new_zeros(int(lengths.max()), first.numel(), input.shape[-1])
        padded[pos, seg_id] = input.transpose(0, 1).reshape(B * T, -1)
        packed = pack_padded_sequence(padded, lengths.cpu(), enforce_sorted=False)
        # A segment starts from the given state only if it is its sample's first one and that sample does not
        # reset at t = 0; every other segment starts an episode, from zeros.
        sample = first // T
        carry = (first % T == 0) & ~starts[0, sample]
        h0 = map_state(lambda h: torch.where(carry.view(1, -1, 1), h[:, sample], 0.0), hx)
        out, hn = super().forward(packed, h0)  # type: ignore[misc]  # cooperative call into nn.LSTM / nn.GRU
        out = pad_packed_sequence(out)[0][pos, seg_id].view(B, T, -1).transpose(0, 1)
        last = seg_id.view(B, T)[:, -1]  # each sample's final segment
        return out, map_state(lambda h: h[:, last], hn)


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
_REQUIRED = {"lstm": ("hidden_size",), "gru": ("hidden_size",), "rim": ("hidden_size", "num_units", "k")}


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
    if name not in CORE_NAMES:
        raise ValueError(f"unknown core {name!r}; expected one of {', '.join(map(repr, CORE_NAMES))}")
    missing = [arg for arg in _REQUIRED[name] if arg not in kwargs]
    if missing:
        raise ValueError(f"core {name!r} needs {', '.join(missing)}; got arguments {sorted(kwargs) or 'none'}")
    if name == "lstm":
        return LSTMCore(input_size, **kwargs)
    if name == "gru":
        return GRUCore(input_size, **kwargs)
    return RIM(input_size, **kwargs)
