"""Recurrent Independent Mechanisms (Goyal et al., 2019, arXiv 1909.10893) with the ``nn.LSTM`` interface.

Symbols used in shapes:

- ``T``: sequence length, ``B``: batch size, ``L``: ``num_layers``, ``F``: ``input_size``;
- ``U``: ``num_units``, ``k``: active units per step, ``s``: unit size ``H // U``, ``H``: ``hidden_size``;
- ``Hi`` / ``Hc``: input / communication attention heads, ``G``: gate width of a unit (``4s`` LSTM, ``3s``
  GRU).

Unit ``u`` owns the slice ``[u*s, (u+1)*s)`` of every hidden (and cell) vector. Inside the time loop the state
is kept *unit-major*, ``(U, B, s)``, so every per-unit projection is one batched matmul over grouped weights
``(U, in, out)``: no Python loop over units, no block-diagonal matrix.

One step of a unit (the paper's version):

1. Input attention. Unit ``u`` queries, from its own ``h_u``, two slots: the null input (zeros) and the input.
   Keys have no bias, so the null key is zero (a key bias would cancel in the two-slot softmax anyway); values
   have a bias, so the null value is that bias. Softmax over the two slots per head; the ``k`` units with the
   least attention on the null slot (averaged over heads) are active (``torch.topk``). The unit reads the
   attention-weighted value, ``a * v_input + (1 - a) * v_null``.
2. Independent dynamics. Each unit has its own LSTM/GRU weights reading that value and its own ``h_u``.
   Because the value is a two-slot mix, its input-to-gate projection is
   ``W_ih v_null + a * W_ih (v_input - v_null)``;
   both terms are state-independent, so :meth:`RIMCell.input_side` computes them for all ``T`` in one go and a
   step only scales them by ``a``.
3. Communication. Multi-head attention among the units' candidate states; each unit makes its query, key and
   value from its own candidate; the output is projected back to ``s`` and added to the candidate (residual,
   ``h = softmax(QK^T / sqrt(d)) V W_o + h_candidate``). Inactive units' candidates are detached where they
   act as keys and values, so no gradient reaches an inactive unit through communication (the authors'
   ``blocked_grad``).
   With ``cell="gru"`` the residual lands in the unit's only memory, ``h``, which the next step carries on
   (``h <- z * h + ... + o W_o``, and ``o`` is linear in ``h``), so once training raises that loop's gain above 1
   the state grows geometrically on long sequences. Measured on CartPole without velocities
   (``benchmarks/memory.py``, seed 3, a RIM 64/4/3 with ``cell="gru"``): the critic's state reached 2e19 and its
   values NaN at 16k frames; those weights give ``|h|`` of 1e12 by step 300 on ``N(0, 1)`` inputs. An LSTM cell
   keeps its memory in ``c``, which the residual does not touch; the authors' gated residual (``communication``
   below) adds at most 1 per step and trained 5 GRU-cell seeds there without NaN. Use it with GRU cells.
4. Sparse update. Active units take the new state; inactive units keep ``h`` (and ``c``) bit for bit
   (``torch.where``), and gradient flows through the kept state.

Set-structured input (the paper's Sec. 2.1-2.2): the input may also be a set of ``N`` elements per step,
``(T, B, N, F)`` for :class:`RIM`, ``(B, N, F)`` for :class:`RIMCell` (for instance a CNN's spatial positions,
each with its features). Each unit's attention (per head) then runs over the null row and the ``N`` elements: the
null score is zero, the elements' scores ``q_u . k_n / sqrt(dk)``, a softmax over the ``N + 1`` slots; the ``k``
units with the least attention on the null row (averaged over heads) are active, and a unit reads its
attention-weighted mix of the elements' values plus the null value's share, so different units can read different
elements. The mix is made inside the step (:class:`SetSide`: keys and values of the elements are computed for all
``T`` at once, the input-to-gate projection of the mix per step); a vector input ``(T, B, F)`` keeps the two-slot
shortcut above, which equals a set of one element. Only the first layer reads the set.

Attention key sizes are per head, as in the authors' code (paper Table 3: input keys 64, values ``4s``;
communication keys and values 32, 4 heads).

The authors' code (``anirudh9119/RIMs``, ``event_based/``: ``blocks_core.py``, ``attention.py``,
``GroupLinearLayer.py``, ``BlockLSTM.py``) differs from the paper's equations in four places; each is an option
of :class:`RIMCell` and :class:`RIM` whose default is the paper's version above (:data:`PAPER`), and
:data:`AUTHORS` sets all four as the authors' code does:

- ``communication``: ``"paper"`` is step 3 above, a linear residual ``h + o W_o + b_o`` with a per-unit
  output projection (``weight_out (U, Hc*dv, s)``). ``"authors"`` is their gated residual
  ``h + sigmoid(o W_g + b_g) * tanh(o W + b)``, ``o`` the units' multi-head read (heads concatenated), ``W`` and
  ``W_g`` single linear layers shared by all units (``weight_out (Hc*dv, 2s)`` holds ``[W | W_g]``).
- ``init``: ``"default"`` is ``nn.Linear``'s rule on every parameter, ``U(±1/sqrt(fan_in))``, so each unit is
  initialised like its own ``nn.LSTMCell(Hi*dv, s)``. ``"authors"``: every attention projection (input query, key,
  value; communication query, key, value) is drawn from ``0.01 * N(0, 1)`` (their ``GroupLinearLayer``), attention
  biases (where kept) start at zero, and the units' recurrent weights and biases are ``U(±1/sqrt(H))``, as blocks of
  one ``nn.LSTMCell`` / ``nn.GRUCell`` of hidden size ``H`` (``sqrt(U)`` smaller than per unit). The output
  projection of the communication keeps ``nn.Linear``'s rule, as theirs. At initialisation the input value
  ``x W_v`` of an ``N(0, 1)`` input has RMS ``0.01 sqrt(F)`` (about 0.08 for ``F = 64``) instead of about 0.58:
  their units start driven by their recurrence, ours by the input.
- ``attention_bias``: ``True`` gives the input query and value and the communication query, key and value
  projections a bias (the input key never has one, so the null key is zero). ``False`` drops them all, as the
  authors: the null value is then zero too, and at ``h = 0`` (an episode start) every query is zero, so all units
  tie and the first active set is an index choice (``torch.topk``'s).
- ``dropout_at``: where ``dropout`` acts in the attentions. ``"probabilities"``: on the input and communication
  attention probabilities (the paper). ``"outputs"``: on the value a unit reads from the input attention and on the
  communication's projected output (``o W + b``, inside the ``tanh`` for the authors' communication), which is
  where the authors' ``nn.Dropout(0.1)`` acts (their attention-probability dropout is commented out).

Not an option: the authors' Atari input attention (softmax across units, no null slot), and with several layers
their next layer reads ``mask * h`` (inactive units zeroed); layer ``l > 0`` here reads the full ``h``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rims_rl.checks import check_dropout, check_sizes, check_state_shape, check_units
from rims_rl.sequence import from_time_major, map_state, reset_state, to_time_major

CELLS = ("lstm", "gru")
_GATES = {"lstm": 4, "gru": 3}
CellState = Tensor | tuple[Tensor, Tensor]
"""A RIM's state: ``h`` (``cell="gru"``) or ``(h, c)`` (``cell="lstm"``)."""
COMMUNICATIONS = ("paper", "authors")
INITS = ("default", "authors")
DROPOUT_AT = ("probabilities", "outputs")
PAPER = {"communication": "paper", "init": "default", "attention_bias": True, "dropout_at": "probabilities"}
"""The options that choose between the paper's RIM and the authors' code, at their defaults: the paper's version."""
AUTHORS = {"communication": "authors", "init": "authors", "attention_bias": False, "dropout_at": "outputs"}
"""The same options set as in the authors' code (see the module docstring)."""


class InputSide(NamedTuple):
    """The state-independent part of :class:`RIMCell`'s steps, computed for a whole sequence at once.

    :meth:`unbind` splits it into steps, whose ``keys`` and ``gates`` lose the leading ``T``.
    """

    keys: Tensor
    """``(T, B, Hi, dk)``: keys of the input slot, scaled by ``1 / sqrt(dk)`` (the null key is zero)."""
    gates: Tensor
    """``(T, U, B, Hi, G)``: input-to-gate projection of (input value - null value), per head."""
    null_gates: Tensor
    """``(U, 1, G)``: input-to-gate projection of the null value (all heads) plus the gate bias."""
    null_values: Tensor
    """``(U, 1, Hi, G)``: input-to-gate projection of the null value per head (needed only under dropout)."""

    def unbind(self) -> list[InputSide]:
        """Split into ``T`` steps (one ``unbind``, whose backward stacks the steps' gradients once)."""
        return [self._replace(keys=k, gates=g) for k, g in zip(self.keys.unbind(0), self.gates.unbind(0), strict=True)]


class SetSide(NamedTuple):
    """The state-independent part of :class:`RIMCell`'s steps over a set of ``N`` input elements, computed for a
    whole sequence at once; a step mixes the elements' values and projects the mix to the gates itself (a
    precomputed input-to-gate projection per element would be ``(T, B, N, U, Hi, G)``).

    Also used for a single input vector (``N = 1``) when dropout acts on the read value (``dropout_at="outputs"``),
    which the two-slot shortcut of :class:`InputSide` cannot express. :meth:`unbind` splits it into steps, whose
    ``keys`` and ``values`` lose the leading ``T``.
    """

    keys: Tensor
    """``(T, B, N, Hi, dk)``: keys of the elements (the null key is zero); the step scales the (smaller) queries
    by ``1 / sqrt(dk)``."""
    values: Tensor
    """``(T, B, N, Hi, dv)``: values of the elements less the value bias, ``x_n W_v``."""
    weight_ih: Tensor
    """``(U, Hi * dv, G)``: each unit's value-to-gate weight, heads stacked."""

    def unbind(self) -> list[SetSide]:
        """Split into ``T`` steps."""
        return [
            self._replace(keys=k, values=v) for k, v in zip(self.keys.unbind(0), self.values.unbind(0), strict=True)
        ]


def _grouped(*shape: int, factory: dict) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, **factory))


class RIMCell(nn.Module):
    r"""One step of a layer of Recurrent Independent Mechanisms, the RIM counterpart of ``nn.LSTMCell``.

    Args:
        input_size: ``F``, the number of input features.
        hidden_size: ``H``, the total hidden size over all units; must be divisible by ``num_units``.
        num_units: ``U``, the number of independent units (mechanisms).
        k: the number of units active at each step, ``1 <= k <= U``.
        cell: the units' recurrence, ``"lstm"`` or ``"gru"``; with ``"gru"`` use ``communication="authors"``
            (the paper's linear residual can make a GRU unit's state diverge, see the module docstring).
            Default: ``"lstm"``
        dropout: dropout probability in the input and communication attentions, where ``dropout_at`` says (on
            their probabilities by default; active in ``train()`` only). Default: 0
        input_heads: ``Hi``, heads of the input attention. Default: 1
        input_key_size: key (and query) size per input-attention head. Default: 64
        input_value_size: value size per input-attention head. Default: ``None``, meaning ``4 * s``
        comm_heads: ``Hc``, heads of the communication attention. Default: 4
        comm_key_size: key (and query) size per communication head. Default: 32
        comm_value_size: value size per communication head. Default: ``None``, meaning ``s``
        communication: ``"paper"`` (linear residual, per-unit output projection) or ``"authors"`` (gated residual,
            shared projections); see the module docstring. Default: ``"paper"``
        init: ``"default"`` (``nn.Linear``'s rule per parameter) or ``"authors"`` (attention projections
            ``0.01 * N(0, 1)``, units as blocks of one cell of size ``H``). Default: ``"default"``
        attention_bias: whether the input query and value and the communication query, key and value projections
            have a bias (the authors': ``False``). Default: ``True``
        dropout_at: ``"probabilities"`` (dropout on the attention probabilities) or ``"outputs"`` (on the read
            input value and the communication's projected output, as the authors). Default: ``"probabilities"``

    Inputs: input, hx
        - **input**: tensor of shape :math:`(B, F)`, or :math:`(B, N, F)`: a set of ``N`` elements that each unit's
          input attention reads (see :class:`RIM`).
        - **hx**: ``(h_0, c_0)`` for ``cell="lstm"``, ``h_0`` for ``cell="gru"``; each of shape
          :math:`(B, H)`. Defaults to zeros.

    Outputs: hx
        - ``(h_1, c_1)`` for ``cell="lstm"``, ``h_1`` for ``cell="gru"``; each of shape :math:`(B, H)`.

    After each call, ``last_active`` holds the detached bool mask of the active units, shape :math:`(B, U)`.

    where:

    .. math::
        \begin{aligned}
            B ={} & \text{batch size} \\
            F ={} & \text{input\_size} \\
            H ={} & \text{hidden\_size} \\
            U ={} & \text{num\_units}, \quad s = H / U
        \end{aligned}

    Examples::

        >>> cell = RIMCell(10, 24, num_units=4, k=2)
        >>> h, c = cell(torch.randn(3, 10))
        >>> h.shape, cell.last_active.sum(dim=1).tolist()
        (torch.Size([3, 24]), [2, 2, 2])
    """

    last_active: Tensor | None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_units: int,
        k: int,
        *,
        cell: Literal["lstm", "gru"] = "lstm",
        dropout: float = 0.0,
        input_heads: int = 1,
        input_key_size: int = 64,
        input_value_size: int | None = None,
        comm_heads: int = 4,
        comm_key_size: int = 32,
        comm_value_size: int | None = None,
        communication: Literal["paper", "authors"] = "paper",
        init: Literal["default", "authors"] = "default",
        attention_bias: bool = True,
        dropout_at: Literal["probabilities", "outputs"] = "probabilities",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_sizes(
            input_size=input_size,
            hidden_size=hidden_size,
            num_units=num_units,
            input_heads=input_heads,
            input_key_size=input_key_size,
            input_value_size=input_value_size,
            comm_heads=comm_heads,
            comm_key_size=comm_key_size,
            comm_value_size=comm_value_size,
        )
        check_units("hidden_size", hidden_size, num_units, k)
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(map(repr, CELLS))}")
        check_dropout(dropout)
        _check_choice("communication", communication, COMMUNICATIONS)
        _check_choice("init", init, INITS)
        _check_choice("attention_bias", attention_bias, (True, False))
        _check_choice("dropout_at", dropout_at, DROPOUT_AT)
        self.communication, self.init, self.attention_bias = communication, init, attention_bias
        self.dropout_at = dropout_at
        self.input_size, self.hidden_size, self.num_units, self.k = input_size, hidden_size, num_units, k
        self.cell, self.dropout = cell, dropout
        self.unit_size = s = hidden_size // num_units
        self.input_heads, self.input_key_size = input_heads, input_key_size
        self.input_value_size = input_value_size or 4 * s
        self.comm_heads, self.comm_key_size = comm_heads, comm_key_size
        self.comm_value_size = comm_value_size or s
        self.gate_size = g = _GATES[cell] * s
        u, hi, dk, dv = num_units, input_heads, input_key_size, self.input_value_size
        hc, dkc, dvc = comm_heads, comm_key_size, self.comm_value_size
        fk = {"device": device, "dtype": dtype}
        # Input attention: keys and values of the input (shared by the units), per-unit queries.
        self.weight_key = _grouped(input_size, hi * dk, factory=fk)
        self.weight_value = _grouped(hi, input_size, dv, factory=fk)
        self.bias_value = _grouped(hi, 1, dv, factory=fk) if attention_bias else None
        # Per-unit recurrence: value -> gates (unit u's weight is weight_ih[:, :, u], one block per head), and
        # h -> [input query | gates] fused (both read h_{t-1}); without attention biases, bias_hh is the gates'.
        self.weight_ih = _grouped(hi, dv, u, g, factory=fk)
        self.bias_ih = _grouped(u, 1, g, factory=fk)
        self.weight_hh = _grouped(u, s, hi * dk + g, factory=fk)
        self.bias_hh = _grouped(u, 1, hi * dk * attention_bias + g, factory=fk)
        # Communication: per-unit [query | key | value] from the candidate state, and the output projection:
        # per unit (paper), or [W | W_g] shared by the units (authors).
        self.weight_comm = _grouped(u, s, hc * (2 * dkc + dvc), factory=fk)
        self.bias_comm = _grouped(u, 1, hc * (2 * dkc + dvc), factory=fk) if attention_bias else None
        if communication == "paper":
            self.weight_out = _grouped(u, hc * dvc, s, factory=fk)
            self.bias_out = _grouped(u, 1, s, factory=fk)
        else:
            self.weight_out = _grouped(hc * dvc, 2 * s, factory=fk)
            self.bias_out = _grouped(2 * s, factory=fk)
        self.last_active = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as ``init`` says: ``"default"``, ``nn.Linear``-style, each weight and its bias uniform in
        ``±1 / sqrt(fan_in)``; ``"authors"``, see the module docstring."""
        fan_in = {
            "weight_key": self.input_size,
            "weight_value": self.input_size,
            "bias_value": self.input_size,
            "weight_ih": self.input_heads * self.input_value_size,
            "bias_ih": self.input_heads * self.input_value_size,
            "weight_hh": self.unit_size,
            "bias_hh": self.unit_size,
            "weight_comm": self.unit_size,
            "bias_comm": self.unit_size,
            "weight_out": self.comm_heads * self.comm_value_size,
            "bias_out": self.comm_heads * self.comm_value_size,
        }
        for name, param in self.named_parameters():
            bound = 1.0 / math.sqrt(fan_in[name])
            nn.init.uniform_(param, -bound, bound)
        if self.init == "authors":
            queries = self.input_heads * self.input_key_size * self.attention_bias  # query part of bias_hh
            bound = 1.0 / math.sqrt(self.hidden_size)
            with torch.no_grad():
                for tensor in (self.weight_ih, self.bias_ih, self.weight_hh, self.bias_hh[..., queries:]):
                    tensor.uniform_(-bound, bound)
                query = self.weight_hh[..., : self.input_heads * self.input_key_size]
                for tensor in (self.weight_key, self.weight_value, query, self.weight_comm):
                    tensor.normal_(0.0, 0.01)
                for bias in (self.bias_value, self.bias_hh[..., :queries], self.bias_comm):
                    if bias is not None:
                        bias.zero_()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_units={self.num_units}, k={self.k}"
        s += f", cell={self.cell!r}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return (
            s + f", input_heads={self.input_heads}, input_key_size={self.input_key_size}, "
            f"input_value_size={self.input_value_size}, comm_heads={self.comm_heads}, "
            f"comm_key_size={self.comm_key_size}, comm_value_size={self.comm_value_size}" + _options_repr(self)
        )

    def input_side(self, input: Tensor) -> InputSide | SetSide:
        """Compute the state-independent work of ``T`` steps at once.

        :param input: ``(T, B, F)``, or a set ``(T, B, N, F)``.
        :return: a :class:`SetSide` for a set, and for a vector input in ``train()`` when dropout acts on the read
            value (``dropout_at="outputs"``, as a set of one element); else an :class:`InputSide`.
        """
        hi, dk = self.input_heads, self.input_key_size
        steps, batch = input.shape[:2]
        keys = (input @ self.weight_key).unflatten(-1, (hi, dk))
        if input.dim() == 4:
            return self._set_side(input, keys)
        if self.training and self.dropout and self.dropout_at == "outputs":
            return self._set_side(input.unsqueeze(2), keys.unsqueeze(2))
        keys = keys * dk**-0.5
        # The input slot minus the null slot, per head: the value bias cancels, leaving x W_v W_ih, which
        # multi_dot evaluates in the cheaper order for this T * B.
        x = input.flatten(0, 1)
        per_head = zip(self.weight_value, self.weight_ih, strict=True)
        gates = torch.stack([torch.linalg.multi_dot([x, w_v, w_ih.flatten(1)]) for w_v, w_ih in per_head], 1)
        gates = gates.view(steps, batch, hi, self.num_units, self.gate_size).permute(0, 3, 1, 2, 4)
        if self.bias_value is None:  # the null value is zero
            return InputSide(keys, gates, self.bias_ih, self.bias_ih.new_zeros(self.num_units, 1, hi, 1))
        null_values = torch.bmm(self.bias_value, self.weight_ih.flatten(2)).view(hi, self.num_units, 1, -1)
        null_values = null_values.permute(1, 2, 0, 3)  # (U, 1, Hi, G)
        return InputSide(keys, gates, null_values.sum(2) + self.bias_ih, null_values)

    def _set_side(self, input: Tensor, keys: Tensor) -> SetSide:
        """:param input: ``(T, B, N, F)``; ``keys``: its keys ``(T, B, N, Hi, dk)``."""
        values = torch.einsum("tbnf,hfd->tbnhd", input, self.weight_value)
        return SetSide(keys, values, self.weight_ih.permute(2, 0, 1, 3).flatten(1, 2))

    def step(self, side: InputSide | SetSide, hx: CellState) -> tuple[CellState, Tensor]:
        """Advance one step on the unit-major state.

        :param side: one step of :meth:`input_side`'s result (see :meth:`InputSide.unbind`).
        :param hx: ``(h, c)`` (LSTM) or ``h`` (GRU), each unit-major ``(U, B, s)``.
        :return: the new unit-major state and the active mask ``(U, B, 1)`` (bool).
        """
        h, c = hx if isinstance(hx, tuple) else (hx, None)
        hi, dk = self.input_heads, self.input_key_size
        dropout = self.dropout if self.training else 0.0
        if self.attention_bias:
            query_gates = torch.baddbmm(self.bias_hh, h, self.weight_hh)
        else:
            query_gates = torch.bmm(h, self.weight_hh)
        query, gates_h = query_gates[..., : hi * dk].unflatten(-1, (hi, dk)), query_gates[..., hi * dk :]
        if not self.attention_bias:
            gates_h = gates_h + self.bias_hh
        if isinstance(side, SetSide):
            gates_x, presence = self._read_set(side, query, dropout)
        else:
            # 1. Input attention: a = P(input slot) = sigmoid(score_input - score_null), score_null = 0.
            attn = torch.sigmoid((query * side.keys).sum(-1))  # (U, B, Hi)
            presence = attn.mean(-1, keepdim=True)
            # 2. Independent dynamics, gates_x = W_ih (a_null v_null + a v_input) + b_ih.
            if dropout:
                attn_null, attn = F.dropout(torch.stack((1.0 - attn, attn)), dropout, True).unbind(0)
                gates_x = _mix(side.null_gates, attn_null + attn - 1.0, side.null_values)  # the sum is not 1 now
                gates_x = _mix(gates_x, attn, side.gates)
            else:
                gates_x = _mix(side.null_gates, attn, side.gates)
        active = torch.zeros_like(presence, dtype=torch.bool)
        active.scatter_(0, presence.topk(self.k, dim=0).indices, True)  # (U, B, 1)
        s = self.unit_size
        if c is None:  # GRU, gates (r, z, n)
            rz = torch.sigmoid(gates_x[..., : 2 * s] + gates_h[..., : 2 * s])
            r, z = rz.chunk(2, -1)
            n = torch.tanh(torch.addcmul(gates_x[..., 2 * s :], r, gates_h[..., 2 * s :]))
            h_new, c_new = torch.lerp(n, h, z), None
        else:  # LSTM, gates (i, f, o, g)
            gates = gates_x + gates_h
            i, f, o = torch.sigmoid(gates[..., : 3 * s]).chunk(3, -1)
            c_new = torch.addcmul(f * c, i, torch.tanh(gates[..., 3 * s :]))
            h_new = o * torch.tanh(c_new)
        # 3. Communication among candidates; inactive candidates give keys/values without gradient.
        source = torch.where(active, h_new, h_new.detach()) if h_new.requires_grad else h_new
        # 4. Sparse update.
        h_new = torch.where(active, h_new + self._communicate(source, dropout), h)
        if c is None or c_new is None:  # GRU
            return h_new, active
        return (h_new, torch.where(active, c_new, c)), active

    def _read_set(self, side: SetSide, query: Tensor, dropout: float) -> tuple[Tensor, Tensor]:
        """Input attention over the null row and the ``N`` elements, and the read value's gates.

        :param query: ``(U, B, Hi, dk)``.
        :return: ``gates_x = W_ih read + b_ih``, ``(U, B, G)``, and each unit's attention off the null row averaged
            over heads, ``(U, B, 1)``, that ranks the units.
        """
        scores = torch.einsum("ubhk,bnhk->ubhn", query * self.input_key_size**-0.5, side.keys)
        probs = torch.softmax(F.pad(scores, (1, 0)), -1)  # (U, B, Hi, 1 + N), the null row first with score 0
        presence = 1.0 - probs[..., 0].mean(-1, keepdim=True)
        if dropout and self.dropout_at == "probabilities":
            probs = F.dropout(probs, dropout, True)
        read = torch.einsum("ubhn,bnhd->ubhd", probs[..., 1:], side.values)
        if self.bias_value is not None:  # every slot's value carries the bias (the null value is the bias)
            read = read + probs.sum(-1, keepdim=True) * self.bias_value.squeeze(1)
        if dropout and self.dropout_at == "outputs":
            read = F.dropout(read, dropout, True)
        return torch.baddbmm(self.bias_ih, read.flatten(2), side.weight_ih), presence

    def _communicate(self, h: Tensor, dropout: float) -> Tensor:
        """Multi-head attention among units: ``(U, B, s)`` -> ``(U, B, s)``, before the residual."""
        hc, dkc, dvc = self.comm_heads, self.comm_key_size, self.comm_value_size
        if self.bias_comm is None:
            qkv = torch.bmm(h, self.weight_comm).permute(1, 0, 2)
        else:
            qkv = torch.baddbmm(self.bias_comm, h, self.weight_comm).permute(1, 0, 2)  # (B, U, Hc(2dk+dv))
        q, k, v = (t.unflatten(-1, (hc, -1)).transpose(1, 2) for t in qkv.split((hc * dkc, hc * dkc, hc * dvc), -1))
        # Scores laid out (keys, queries): torch's softmax over a tiny last dimension is slow on CPU.
        weights = torch.softmax(k @ q.transpose(-1, -2) * dkc**-0.5, dim=-2)
        if dropout and self.dropout_at == "probabilities":
            weights = F.dropout(weights, dropout, True)
        read = (weights.transpose(-1, -2) @ v).permute(2, 0, 1, 3).flatten(2)  # (U, B, Hc * dv)
        out_dropout = dropout if self.dropout_at == "outputs" else 0.0
        if self.communication == "paper":
            out = torch.baddbmm(self.bias_out, read, self.weight_out)
            return F.dropout(out, out_dropout, True) if out_dropout else out
        out, gate = (read @ self.weight_out + self.bias_out).chunk(2, -1)
        if out_dropout:
            out = F.dropout(out, out_dropout, True)
        return torch.sigmoid(gate) * torch.tanh(out)

    def to_units(self, t: Tensor) -> Tensor:
        """``(B, H)`` -> unit-major ``(U, B, s)``."""
        return t.unflatten(-1, (self.num_units, self.unit_size)).transpose(0, 1).contiguous()

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> CellState:
        """The zero state, tensors of shape ``(B, H)``."""
        ref = self.weight_hh
        zeros = torch.zeros(batch_size, self.hidden_size, device=device or ref.device, dtype=dtype or ref.dtype)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    def forward(self, input: Tensor, hx: CellState | None = None) -> CellState:
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            raise ValueError(
                f"expected input of shape (B, {self.input_size}) or a set (B, N, {self.input_size}), "
                f"got {tuple(input.shape)}"
            )
        if hx is None:
            hx = self.initial_state(input.shape[0], input.device, input.dtype)
        state, active = self.step(self.input_side(input.unsqueeze(0)).unbind()[0], map_state(self.to_units, hx))
        self.last_active = active.squeeze(-1).t().detach()
        return map_state(_from_units, state)


def _check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices or type(value) is not type(choices[0]):
        raise ValueError(f"expected {name} one of {', '.join(map(repr, choices))}, got {name}={value!r}")


def _options_repr(module: RIMCell | RIM) -> str:
    """``, name=value`` for each option of :data:`PAPER` not at its default."""
    return "".join(f", {n}={getattr(module, n)!r}" for n, v in PAPER.items() if getattr(module, n) != v)


def _mix(base: Tensor, weights: Tensor, values: Tensor) -> Tensor:
    """``base + sum_h weights_h * values_h``.

    :param base: ``(U, B or 1, G)``; ``weights``: ``(U, B, Hi)``; ``values``: ``(U, B or 1, Hi, G)``.
    :return: ``(U, B, G)``.
    """
    if weights.shape[-1] == 1:  # one head: a single fused op
        return torch.addcmul(base, weights, values.squeeze(-2))
    return base + (weights.unsqueeze(-1) * values).sum(-2)


def _from_units(t: Tensor) -> Tensor:
    """Unit-major ``(..., U, B, s)`` -> ``(..., B, U * s)``."""
    return t.transpose(-3, -2).flatten(-2)


class RIM(nn.Module):
    r"""A multi-layer RIM over sequences, a drop-in for :class:`torch.nn.LSTM` (``cell="lstm"``) or
    :class:`torch.nn.GRU` (``cell="gru"``): same input forms, output and state shapes.

    ``RIM(600, 300, num_units=6, k=4)`` replaces ``nn.LSTM(600, 300)``: 6 units of 50 features each, 4 of them
    updated per step.

    It also reads a set of ``N`` input elements of ``F`` features per step, :math:`(T, B, N, F)` (see the module
    docstring), which ``nn.LSTM`` cannot: :attr:`accepts_sets` tells a caller so (a policy feeds such a core its
    features as a set and flattens them for other cores).

    Args:
        input_size: ``F``, the number of input features.
        hidden_size: ``H``, the total hidden size over all units; must be divisible by ``num_units``.
        num_units: ``U``, the number of independent units per layer.
        k: the number of units active at each step, ``1 <= k <= U``.
        cell: the units' recurrence, ``"lstm"`` or ``"gru"``; with ``"gru"`` use ``communication="authors"``
            (the paper's linear residual can make a GRU unit's state diverge, see the module docstring).
            Default: ``"lstm"``
        num_layers: ``L``, stacked RIM layers; layer ``l > 0`` reads layer ``l - 1``'s output. Default: 1
        batch_first: if ``True``, input and output are ``(B, T, *)``; states are not affected.
            Default: ``False``
        dropout: dropout probability between layers (as ``nn.LSTM``) and in the input and communication
            attentions, where ``dropout_at`` says (on their probabilities by default); active in ``train()`` only.
            Default: 0
        input_heads: ``Hi``, heads of the input attention. Default: 1
        input_key_size: key (and query) size per input-attention head. Default: 64
        input_value_size: value size per input-attention head. Default: ``None``, meaning ``4 * s``
        comm_heads: ``Hc``, heads of the communication attention. Default: 4
        comm_key_size: key (and query) size per communication head. Default: 32
        comm_value_size: value size per communication head. Default: ``None``, meaning ``s``
        communication: ``"paper"`` (linear residual, per-unit output projection) or ``"authors"`` (gated residual,
            shared projections); see the module docstring. Default: ``"paper"``
        init: ``"default"`` (``nn.Linear``'s rule per parameter) or ``"authors"`` (attention projections
            ``0.01 * N(0, 1)``, units as blocks of one cell of size ``H``). Default: ``"default"``
        attention_bias: whether the input query and value and the communication query, key and value projections
            have a bias (the authors': ``False``). Default: ``True``
        dropout_at: ``"probabilities"`` (dropout on the attention probabilities) or ``"outputs"`` (on the read
            input value and the communication's projected output, as the authors). Default: ``"probabilities"``

    Inputs: input, hx, episode_starts
        - **input**: tensor of shape :math:`(T, B, F)`, :math:`(B, T, F)` if ``batch_first``, or
          :math:`(T, F)` unbatched; or a set of ``N`` elements, :math:`(T, B, N, F)`, :math:`(B, T, N, F)` if
          ``batch_first``. A set always has its batch dimension (a 3-D input is a batch of vectors).
        - **hx**: ``(h_0, c_0)`` for ``cell="lstm"``, ``h_0`` for ``cell="gru"``; each of shape
          :math:`(L, B, H)`, or :math:`(L, H)` unbatched. Defaults to zeros.
        - **episode_starts** (keyword): bool, laid out like the input's leading dimensions, :math:`(T, B)`,
          :math:`(B, T)` if ``batch_first``, :math:`(T,)` unbatched. Where set, that sample's state (every
          layer) is zeroed before that step. Default: ``None``

    Outputs: output, hx
        - **output**: the last layer's ``h`` at every step, :math:`(T, B, H)`, :math:`(B, T, H)` if
          ``batch_first``, or :math:`(T, H)` unbatched.
        - **hx**: the final state, same structure and shapes as the input ``hx``.

    After each forward, ``last_active`` holds which units were active: a detached bool tensor of shape
    :math:`(T, B, L, U)`, always time-major, with :math:`B = 1` for an unbatched input.

    where:

    .. math::
        \begin{aligned}
            T ={} & \text{sequence length} \\
            B ={} & \text{batch size} \\
            L ={} & \text{num\_layers} \\
            F ={} & \text{input\_size} \\
            H ={} & \text{hidden\_size} \\
            U ={} & \text{num\_units}, \quad s = H / U
        \end{aligned}

    Examples::

        >>> rim = RIM(10, 24, num_units=4, k=2, num_layers=2)
        >>> output, (h, c) = rim(torch.randn(5, 3, 10))
        >>> output.shape, h.shape, rim.last_active.shape
        (torch.Size([5, 3, 24]), torch.Size([2, 3, 24]), torch.Size([5, 3, 2, 4]))
        >>> rim.last_active.sum(-1).unique().tolist()
        [2]
        >>> rim(torch.randn(5, 3, 7, 10))[0].shape  # a set of 7 elements per step
        torch.Size([5, 3, 24])
    """

    accepts_sets = True
    """Whether :meth:`forward` reads a set of input elements ``(T, B, N, F)`` (``input_size`` is ``F``)."""
    last_active: Tensor | None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_units: int,
        k: int,
        *,
        cell: Literal["lstm", "gru"] = "lstm",
        num_layers: int = 1,
        batch_first: bool = False,
        dropout: float = 0.0,
        input_heads: int = 1,
        input_key_size: int = 64,
        input_value_size: int | None = None,
        comm_heads: int = 4,
        comm_key_size: int = 32,
        comm_value_size: int | None = None,
        communication: Literal["paper", "authors"] = "paper",
        init: Literal["default", "authors"] = "default",
        attention_bias: bool = True,
        dropout_at: Literal["probabilities", "outputs"] = "probabilities",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_sizes(num_layers=num_layers)
        if not isinstance(batch_first, bool):
            raise ValueError(f"expected batch_first true or false, got batch_first={batch_first!r}")
        cell_kwargs: dict[str, Any] = dict(
            cell=cell,
            dropout=dropout,
            input_heads=input_heads,
            input_key_size=input_key_size,
            input_value_size=input_value_size,
            comm_heads=comm_heads,
            comm_key_size=comm_key_size,
            comm_value_size=comm_value_size,
            communication=communication,
            init=init,
            attention_bias=attention_bias,
            dropout_at=dropout_at,
            device=device,
            dtype=dtype,
        )
        self.cells = nn.ModuleList(
            RIMCell(input_size if layer == 0 else hidden_size, hidden_size, num_units, k, **cell_kwargs)
            for layer in range(num_layers)
        )
        self.input_size, self.hidden_size, self.num_units, self.k = input_size, hidden_size, num_units, k
        self.cell, self.num_layers, self.batch_first, self.dropout = cell, num_layers, batch_first, dropout
        self.communication, self.init, self.attention_bias = communication, init, attention_bias
        self.dropout_at = dropout_at
        self.last_active = None

    @property
    def _layers(self) -> list[RIMCell]:
        """The layers' cells (``self.cells``, typed)."""
        return cast(list[RIMCell], list(self.cells))

    def reset_parameters(self) -> None:
        for cell in self._layers:
            cell.reset_parameters()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_units={self.num_units}, k={self.k}"
        if self.cell != "lstm":
            s += f", cell={self.cell!r}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s + _options_repr(self)

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> CellState:
        """The zero state for ``batch_size`` samples: tensors of shape ``(L, B, H)``, like ``hx``."""
        return map_state(
            lambda t: t.expand(self.num_layers, -1, -1).clone(),
            self._layers[0].initial_state(batch_size, device, dtype),
        )

    def forward(
        self, input: Tensor, hx: CellState | None = None, *, episode_starts: Tensor | None = None
    ) -> tuple[Tensor, CellState]:
        if input.dim() not in (2, 3, 4) or input.shape[-1] != self.input_size:
            f, lead = self.input_size, "B, T" if self.batch_first else "T, B"
            raise ValueError(
                f"expected input ({lead}, {f}), (T, {f}) or a set ({lead}, N, {f}) as batch_first={self.batch_first} "
                f"lays it out, got {tuple(input.shape)}"
            )
        batched = input.dim() > 2
        if hx is not None:
            batch = input.shape[0 if self.batch_first else 1]
            expected = (self.num_layers, batch, self.hidden_size) if batched else (self.num_layers, self.hidden_size)
            for tensor in hx if isinstance(hx, tuple) else (hx,):
                check_state_shape(tuple(tensor.shape), expected, batched)
        if input.dim() == 4:  # a set: its elements travel as features through the input forms' handling
            x = to_time_major(input.flatten(2), hx, episode_starts, self.batch_first)
            seq = x.input.unflatten(2, input.shape[2:])
        else:
            x = to_time_major(input, hx, episode_starts, self.batch_first)
            seq = x.input
        batch = seq.shape[1]
        state = cast(CellState, x.hx) if x.hx is not None else self.initial_state(batch, seq.device, seq.dtype)
        finals, actives = [], []
        for layer, cell in enumerate(self._layers):
            if layer:
                seq = F.dropout(seq, self.dropout, self.training)
            sides: Sequence[InputSide | SetSide] = cell.input_side(seq).unbind()
            layer_state = map_state(lambda t: cell.to_units(t[layer]), state)  # noqa: B023  # used at once
            outputs: list[Tensor] = []
            active = []
            for t, side in enumerate(sides):
                if x.episode_starts is not None:
                    layer_state = reset_state(layer_state, x.episode_starts[t])
                layer_state, step_active = cell.step(side, layer_state)
                outputs.append(layer_state[0] if isinstance(layer_state, tuple) else layer_state)
                active.append(step_active)
            seq = _from_units(torch.stack(outputs))
            finals.append(map_state(_from_units, layer_state))
            actives.append(torch.cat(active, -1).permute(2, 1, 0))  # (T, B, U)
        self.last_active = torch.stack(actives, 2).detach()
        return from_time_major(seq, map_state(lambda *ts: torch.stack(ts), *finals), x.batched, self.batch_first)
