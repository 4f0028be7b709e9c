"""Recurrent Independent Mechanisms in Flax: the same steps and parameters as :mod:`rims_rl.rim`.

Symbols used in shapes:

- ``T``: sequence length, ``B``: batch size, ``L``: ``num_layers``, ``F``: input features;
- ``U``: ``num_units``, ``k``: active units per step, ``s``: unit size ``H // U``, ``H``: ``hidden_size``
  (``features`` for the cell);
- ``Hi`` / ``Hc``: input / communication attention heads, ``G``: gate width of a unit (``4s`` LSTM, ``3s``
  GRU).

The step is :class:`rims_rl.RIMCell`'s (its module docstring derives it): input attention over a null slot and
the input, the ``k`` units with the most attention on the input are active, per-unit LSTM/GRU dynamics,
multi-head communication among the candidates with a residual, and a sparse update that keeps inactive units'
state bit for bit. The parameters have the torch module's names and shapes, so conversion is a copy
(:mod:`rims_rl.jax.convert`). Inside a step the state is unit-major, ``(U, B, s)``.

Where this differs from a literal translation, for speed under XLA, with the same result (up to rounding):

- The input-attention score ``(h W_q + b_q) . key`` is computed as ``h . (W_q key) + b_q . key``: both factors
  are state-independent, so they are computed for the whole sequence before the scan (:meth:`RIMCell.input_side`).
- The active mask is a threshold at the ``k``-th largest score (``jax.lax.top_k``) plus tied units in a fixed
  order, instead of scattering top-k indices.
- The backward pass recomputes each step from its inputs and the stored active mask (``jax.checkpoint``).
- ``init`` draws each layer's parameters in one random call (a ``jax.random`` call site takes about a second to
  compile on CPU).

Measured alternatives that were slower on CPU: the communication as broadcast products summed over small axes
instead of two batched matmuls (about 2x slower), all heads in one masked ``(Hc U) x (Hc U)`` matmul per sample,
an unrolled scan, storing all intermediates for the backward pass (about 1.3x slower), and a custom backward pass
that sums the weights' gradients in one matmul after the reverse scan instead of step by step (as the JAX backend's
LSTM does): 10-20% faster at 8 sequences (``T = 32``, 6 units of 32), 1.3-1.6x slower at 64, where writing every
step's factors to memory costs more than the per-step matmuls (2026-12-06, jax 0.10.2).

Ties: a step whose input is exactly zero gives every unit the same score (the keys are zero), and then the
choice is a convention. ``torch.topk`` on CPU picks by ``std::nth_element`` over (value, index) pairs compared
by value only (``aten/src/ATen/native/TopKImpl.h``), so a full tie selects a fixed set that depends on ``U``
and ``k`` only, e.g. units 0, 3, 4, 5 of 6 for ``k = 4``. :func:`torch_tie_order` reproduces it, and tied
units are taken in that order, so both frameworks select the same units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import Array
from jax.ad_checkpoint import checkpoint_name

from rims_rl.checks import check_dropout, check_sizes, check_starts_shape, check_state_shape, check_units

CELLS = ("lstm", "gru")
_GATES = {"lstm": 4, "gru": 3}
_POSITIVE = (
    "features",
    "num_units",
    "input_heads",
    "input_key_size",
    "input_value_size",
    "comm_heads",
    "comm_key_size",
    "comm_value_size",
)

Params = dict[str, Array]
"""One layer's parameters, named and shaped as :class:`rims_rl.RIMCell`'s."""
UnitState = tuple[Array, ...]
"""A layer's state inside the time loop: ``(h, c)`` (LSTM) or ``(h,)`` (GRU), each unit-major ``(U, B, s)``."""


class InputSide(NamedTuple):
    """The state-independent part of ``T`` steps, computed at once (:meth:`RIMCell.input_side`).

    One step of it (the per-step fields indexed at ``t``) is what :meth:`RIMCell.step` takes.
    """

    key_weights: Array
    """``(T, U, B, Hi, s)``: the input slot's key (scaled by ``1 / sqrt(dk)``) pulled back through each unit's
    query weights, so that the score of the input slot is ``h . key_weights + key_bias`` (the null key is
    zero, and so is its score)."""
    key_bias: Array
    """``(T, U, B, Hi)``: the query bias times the scaled key."""
    gates: Array
    """``(T, U, B, Hi, G)``: input-to-gate projection of (input value - null value), per head."""
    null_gates: Array
    """``(U, 1, G)``: input-to-gate projection of the null value (all heads) plus the gate bias."""
    null_values: Array
    """``(U, 1, Hi, G)``: input-to-gate projection of the null value per head (needed only under dropout)."""


def torch_tie_order(num_units: int, k: int) -> tuple[int, ...]:
    """The order in which tied units are taken: first the ``k`` that ``torch.topk`` (CPU) selects when all
    ``num_units`` scores are equal, then the others by index.

    ``torch.topk`` uses ``std::partial_sort`` when ``64 k <= U``, which keeps the first ``k`` of equal
    elements, and otherwise libstdc++'s ``std::nth_element`` (introselect), simulated here for a comparator that
    is always false: each round moves the middle element to the front and swaps the rest pairwise from both ends.

    >>> torch_tie_order(6, 4)
    (3, 5, 4, 0, 1, 2)
    >>> torch_tie_order(4, 2)
    (2, 3, 0, 1)
    """
    order = list(range(num_units))
    if 64 * k > num_units:
        nth, first, last = k - 1, 0, num_units
        while last - first > 3:  # the depth limit (2 log2 U rounds) is never reached: each round halves
            mid = first + (last - first) // 2
            order[first], order[mid] = order[mid], order[first]  # __move_median_to_first
            lo, hi = first + 1, last
            while True:  # __unguarded_partition around the pivot at `first`
                hi -= 1
                if lo >= hi:
                    break
                order[lo], order[hi] = order[hi], order[lo]
                lo += 1
            first, last = (lo, last) if lo <= nth else (first, lo)
        # the closing insertion sort moves nothing when every comparison is false
    chosen = order[:k]
    return (*chosen, *sorted(set(range(num_units)) - set(chosen)))


def top_k_mask(score: Array, k: int, tie_order: tuple[int, ...]) -> Array:
    """The ``k`` largest scores per row as a bool mask, exactly ``k`` set even with ties.

    :param score: ``(..., U)``.
    :param tie_order: a permutation of the units: tied units are taken in this order.
    :return: ``(..., U)`` bool.
    """
    score = jax.lax.stop_gradient(score)
    kth = jax.lax.top_k(score, k)[0][..., -1:]
    above, tied = score > kth, score == kth
    order = np.asarray(tie_order)
    rank = jnp.cumsum(tied[..., order], axis=-1)[..., np.argsort(order)]  # 1-based, among tied units
    return above | (tied & (rank <= k - above.sum(-1, keepdims=True)))


def dropout(x: Array, rate: float, rng: Array | None) -> Array:
    """Inverted dropout as ``torch.nn.functional.dropout``; the identity when ``rng`` is ``None``."""
    if rng is None or not rate:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _mix(base: Array, weights: Array, values: Array) -> Array:
    """``base + sum_h weights_h * values_h``: ``base`` ``(U, B or 1, G)``, ``weights`` ``(U, B, Hi)``, ``values``
    ``(U, B or 1, Hi, G)`` -> ``(U, B, G)``."""
    return base + (weights[..., None] * values).sum(-2)


def _uniform_draws(key: Array, shapes: dict[str, tuple[tuple[int, ...], int]], dtype: Any) -> dict[str, Array]:
    """``nn.Linear``-style init from one random draw: each array uniform in ``±1 / sqrt(fan_in)``.

    :param shapes: ``{name: (shape, fan_in)}``.
    """
    sizes = [math.prod(shape) for shape, _ in shapes.values()]
    flat = jax.random.uniform(key, (sum(sizes),), dtype, -1.0, 1.0)
    parts = jnp.split(flat, np.cumsum(sizes)[:-1])
    return {
        name: part.reshape(shape) / math.sqrt(fan_in)
        for (name, (shape, fan_in)), part in zip(shapes.items(), parts, strict=True)
    }


def to_units(t: Array, num_units: int) -> Array:
    """``(B, H)`` -> unit-major ``(U, B, s)``."""
    return t.reshape(t.shape[0], num_units, -1).transpose(1, 0, 2)


def from_units(t: Array) -> Array:
    """Unit-major ``(..., U, B, s)`` -> ``(..., B, U * s)``."""
    t = jnp.swapaxes(t, -3, -2)
    return t.reshape(*t.shape[:-2], -1)


class RIMCell(nn.RNNCellBase):
    r"""One step of a layer of Recurrent Independent Mechanisms with Flax's cell contract, in place of
    :class:`flax.linen.OptimizedLSTMCell` (``cell="lstm"``) or :class:`flax.linen.GRUCell` (``cell="gru"``).

    ``nn.RNN(nn.OptimizedLSTMCell(300))`` becomes ``nn.RNN(RIMCell(300, num_units=6, k=4))``; the carry is
    Flax's, ``(c, h)`` for LSTM and ``h`` for GRU, each ``(*batch, H)``, and the output is ``h``. The input size
    is taken from the first call, as Flax's cells do.

    Attributes:
        features: ``H``, the total hidden size over all units; must be divisible by ``num_units``.
        num_units: ``U``, the number of independent units (mechanisms).
        k: the number of units active at each step, ``1 <= k <= U``.
        cell: the units' recurrence, ``"lstm"`` or ``"gru"``. With ``"gru"`` the communication's linear residual
            is added to the unit's only memory and can make it diverge once trained (``rims_rl.rim``'s module
            docstring; the torch RIM's ``communication="authors"`` avoids it). Default: ``"lstm"``
        dropout: dropout probability on the input and communication attention probabilities; needs
            ``deterministic=False`` and a ``"dropout"`` rng to act. Default: 0
        input_heads: ``Hi``, heads of the input attention. Default: 1
        input_key_size: key (and query) size per input-attention head. Default: 64
        input_value_size: value size per input-attention head. Default: ``None``, meaning ``4 * s``
        comm_heads: ``Hc``, heads of the communication attention. Default: 4
        comm_key_size: key (and query) size per communication head. Default: 32
        comm_value_size: value size per communication head. Default: ``None``, meaning ``s``
        deterministic: if ``True``, no dropout. Default: ``None``, which with ``dropout > 0`` must be given
            at the call (:class:`RIM`) or here.
        param_dtype: dtype of the parameters. Default: float32
        carry_init: initializer of the carry. Default: zeros

    Each call sows the active mask, bool :math:`(*batch, U)`, as ``intermediates/active``; under ``nn.RNN``, pass
    ``variable_axes={"intermediates": 1}`` to collect it over time. For training on whole sequences :class:`RIM`
    is faster: it computes the state-independent input side of all steps before its scan.

    Examples::

        >>> import jax, jax.numpy as jnp
        >>> from flax import linen as nn
        >>> rnn = nn.RNN(RIMCell(24, num_units=4, k=2))       # was: nn.RNN(nn.OptimizedLSTMCell(24))
        >>> x = jnp.ones((3, 5, 10))                           # (B, T, F), Flax's batch-major default
        >>> variables = rnn.init(jax.random.key(0), x)
        >>> rnn.apply(variables, x).shape
        (3, 5, 24)
    """

    features: int
    num_units: int
    k: int
    cell: Literal["lstm", "gru"] = "lstm"
    dropout: float = 0.0
    input_heads: int = 1
    input_key_size: int = 64
    input_value_size: int | None = None
    comm_heads: int = 4
    comm_key_size: int = 32
    comm_value_size: int | None = None
    deterministic: bool | None = None
    param_dtype: Any = jnp.float32
    carry_init: Callable[..., Array] = nn.initializers.zeros_init()

    def __post_init__(self) -> None:
        check_sizes(**{name: getattr(self, name) for name in _POSITIVE})
        check_units("features", self.features, self.num_units, self.k)
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; expected one of {', '.join(map(repr, CELLS))}")
        check_dropout(self.dropout)
        super().__post_init__()

    @property
    def unit_size(self) -> int:
        """``s = H / U``."""
        return self.features // self.num_units

    @property
    def gate_size(self) -> int:
        """``G``, the gate width of a unit."""
        return _GATES[self.cell] * self.unit_size

    @property
    def value_size(self) -> int:
        """Value size per input-attention head."""
        return self.input_value_size or 4 * self.unit_size

    @property
    def comm_value(self) -> int:
        """Value size per communication head."""
        return self.comm_value_size or self.unit_size

    @property
    def num_feature_axes(self) -> int:
        return 1

    @nn.compact
    def parameters(self, input_size: int) -> Params:
        """Declare (at init) or read this layer's parameters, :class:`rims_rl.RIMCell`'s names, shapes and init
        (each uniform in ``±1 / sqrt(fan_in)``).

        :param input_size: ``F``.
        """
        u, s, g, hi, dk, dv = (
            self.num_units,
            self.unit_size,
            self.gate_size,
            self.input_heads,
            self.input_key_size,
            self.value_size,
        )
        comm = self.comm_heads * (2 * self.comm_key_size + self.comm_value)
        out_in = self.comm_heads * self.comm_value
        shapes = {  # name: (shape, fan_in)
            "weight_key": ((input_size, hi * dk), input_size),
            "weight_value": ((hi, input_size, dv), input_size),
            "bias_value": ((hi, 1, dv), input_size),
            "weight_ih": ((hi, dv, u, g), hi * dv),
            "bias_ih": ((u, 1, g), hi * dv),
            "weight_hh": ((u, s, hi * dk + g), s),
            "bias_hh": ((u, 1, hi * dk + g), s),
            "weight_comm": ((u, s, comm), s),
            "bias_comm": ((u, 1, comm), s),
            "weight_out": ((u, out_in, s), out_in),
            "bias_out": ((u, 1, s), out_in),
        }
        if self.is_initializing() and not self.has_variable("params", "weight_key"):
            # One draw for the whole layer: each jax.random call site compiles for about a second on CPU.
            initial = _uniform_draws(self.make_rng("params"), shapes, self.param_dtype)
            inits = {name: lambda *_, value=value: value for name, value in initial.items()}
        else:  # the parameters exist: Flax evaluates the init functions abstractly, to check their shapes
            inits = {name: lambda *_, shape=shape: jnp.zeros(shape) for name, (shape, _) in shapes.items()}
        return {name: self.param(name, init) for name, init in inits.items()}

    @nn.nowrap
    def input_side(self, params: Params, inputs: Array) -> InputSide:
        """The state-independent work of ``T`` steps at once.

        :param inputs: ``(T, B, F)``.
        """
        steps, batch = inputs.shape[:2]
        hi, dk = self.input_heads, self.input_key_size
        keys = (inputs @ params["weight_key"]).reshape(steps, batch, hi, dk) * dk**-0.5
        # (h W_q + b_q) . key = h . (W_q key) + b_q . key: the state-independent factors leave the time loop.
        weight_query = params["weight_hh"][..., : hi * dk].reshape(self.num_units, -1, hi, dk)
        key_weights = jnp.einsum("tbhd,ushd->tubhs", keys, weight_query)
        key_bias = jnp.einsum("tbhd,uhd->tubh", keys, params["bias_hh"][:, 0, : hi * dk].reshape(-1, hi, dk))
        # The input slot minus the null slot, per head: the value bias cancels, leaving x W_v W_ih (the
        # contraction order is chosen by cost, as torch's multi_dot).
        gates = jnp.einsum(
            "tbf,hfv,hvug->tubhg", inputs, params["weight_value"], params["weight_ih"], optimize="optimal"
        )
        null_values = jnp.einsum("hv,hvug->uhg", params["bias_value"][:, 0], params["weight_ih"])[:, None]
        return InputSide(key_weights, key_bias, gates, null_values.sum(2) + params["bias_ih"], null_values)

    @nn.nowrap
    def step(
        self, params: Params, side: InputSide, state: UnitState, rng: Array | None = None
    ) -> tuple[UnitState, Array]:
        """Advance one step on the unit-major state (a pure function of its arguments).

        The backward pass recomputes the step from its inputs and the stored active mask instead of storing its
        intermediates (``jax.checkpoint``): on CPU, stacking a step's many small intermediates across a scan costs
        more than the recomputation.

        :param side: one step of :meth:`input_side`'s result (``key_weights`` ``(U, B, Hi, s)``, ``key_bias``
            ``(U, B, Hi)``, ``gates`` ``(U, B, Hi, G)``).
        :param state: ``(h, c)`` (LSTM) or ``(h,)`` (GRU), each ``(U, B, s)``.
        :param rng: a key for dropout, or ``None`` for none.
        :return: the new state and the active mask ``(U, B)`` (bool).
        """
        policy = jax.checkpoint_policies.save_only_these_names("active")
        recomputed = jax.checkpoint(self._step, policy=policy, prevent_cse=False)
        return recomputed(params, side, state, rng)

    @nn.nowrap
    def _step(self, params: Params, side: InputSide, state: UnitState, rng: Array | None) -> tuple[UnitState, Array]:
        h = state[0]
        hi, dk, s = self.input_heads, self.input_key_size, self.unit_size
        # 1. Input attention: a = P(input slot) = sigmoid(score_input - score_null), score_null = 0.
        attn = jax.nn.sigmoid((h[:, :, None] * side.key_weights).sum(-1) + side.key_bias)  # (U, B, Hi)
        gates_h = jnp.einsum("ubs,usg->ubg", h, params["weight_hh"][..., hi * dk :])
        gates_h = gates_h + params["bias_hh"][..., hi * dk :]
        active = top_k_mask(attn.mean(-1).T, self.k, torch_tie_order(self.num_units, self.k)).T  # (U, B)
        active = checkpoint_name(active, "active")
        # 2. Independent dynamics, gates_x = W_ih (a_null v_null + a v_input) + b_ih.
        if rng is not None and self.dropout:
            rng, comm_rng = jax.random.split(rng)
            attn_null, attn = dropout(jnp.stack((1.0 - attn, attn)), self.dropout, rng)
            gates_x = _mix(side.null_gates, attn_null + attn - 1.0, side.null_values)  # the sum is not 1 now
            gates_x = _mix(gates_x, attn, side.gates)
        else:
            comm_rng = None
            gates_x = _mix(side.null_gates, attn, side.gates)
        if self.cell == "gru":  # gates (r, z, n)
            r, z = jnp.split(jax.nn.sigmoid(gates_x[..., : 2 * s] + gates_h[..., : 2 * s]), 2, -1)
            n = jnp.tanh(gates_x[..., 2 * s :] + r * gates_h[..., 2 * s :])
            candidate: UnitState = (n + z * (h - n),)
        else:  # LSTM, gates (i, f, o, g)
            gates = gates_x + gates_h
            i, f, o = jnp.split(jax.nn.sigmoid(gates[..., : 3 * s]), 3, -1)
            c_new = f * state[1] + i * jnp.tanh(gates[..., 3 * s :])
            candidate = (o * jnp.tanh(c_new), c_new)
        # 3. Communication among candidates; inactive candidates give keys/values without gradient.
        mask = active[..., None]
        source = jnp.where(mask, candidate[0], jax.lax.stop_gradient(candidate[0]))
        # 4. Sparse update.
        new_h = candidate[0] + self._communicate(params, source, comm_rng)
        new = (new_h, *candidate[1:])
        return tuple(jnp.where(mask, n, o) for n, o in zip(new, state, strict=True)), active

    @nn.nowrap
    def _communicate(self, params: Params, h: Array, rng: Array | None) -> Array:
        """Multi-head attention among units: ``(U, B, s)`` -> ``(U, B, s)``, before the residual."""
        hc, dkc, dvc = self.comm_heads, self.comm_key_size, self.comm_value
        qkv = jnp.einsum("ubs,usd->ubd", h, params["weight_comm"]) + params["bias_comm"]
        shape = (*h.shape[:2], hc, -1)
        q, k, v = (t.reshape(shape) for t in jnp.split(qkv, (hc * dkc, 2 * hc * dkc), -1))  # (U, B, Hc, d)
        weights = jax.nn.softmax(jnp.einsum("ubhd,wbhd->bhuw", q, k) * dkc**-0.5, axis=-1)  # (B, Hc, U, U)
        weights = dropout(weights, self.dropout, rng)
        read = jnp.einsum("bhuw,wbhd->ubhd", weights, v).reshape(*h.shape[:2], hc * dvc)
        return jnp.einsum("ubd,uds->ubs", read, params["weight_out"]) + params["bias_out"]

    def __call__(self, carry: Array | tuple[Array, Array], inputs: Array) -> tuple[Any, Array]:
        """One step, Flax's contract.

        :param carry: ``(c, h)`` (LSTM) or ``h`` (GRU), each ``(*batch, H)``.
        :param inputs: ``(*batch, F)``.
        :return: the new carry and the output ``h``, ``(*batch, H)``.
        """
        params = self.parameters(inputs.shape[-1])
        batch_shape = inputs.shape[:-1]
        flat = cast(tuple[Array, ...], (carry[1], carry[0]) if self.cell == "lstm" else (carry,))  # carry (c, h) or h
        state = tuple(to_units(t.reshape(-1, self.features), self.num_units) for t in flat)
        side = self.input_side(params, inputs.reshape(1, -1, inputs.shape[-1]))
        side = side._replace(key_weights=side.key_weights[0], key_bias=side.key_bias[0], gates=side.gates[0])
        rng = self.make_rng("dropout") if _dropout_on(self.dropout, self.deterministic, None) else None
        state, active = self.step(params, side, state, rng)
        self.sow("intermediates", "active", active.T.reshape(*batch_shape, self.num_units))
        h, *rest = (from_units(t).reshape(*batch_shape, self.features) for t in state)
        return ((rest[0], h) if rest else h), h

    @nn.nowrap
    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Any:
        """The initial carry for inputs of shape ``(*batch, F)``: ``(c, h)`` or ``h``, each ``(*batch, H)``."""
        shape = (*input_shape[:-1], self.features)
        h_key, c_key = jax.random.split(rng)
        h = self.carry_init(h_key, shape, self.param_dtype)
        return (self.carry_init(c_key, shape, self.param_dtype), h) if self.cell == "lstm" else h


def _dropout_on(rate: float, attribute: bool | None, argument: bool | None) -> bool:
    """Whether dropout acts; ``deterministic`` must be set once, as attribute or argument, when ``rate > 0``."""
    return bool(rate) and not nn.merge_param("deterministic", attribute, argument)


State = Array | tuple[Array, Array]
""":class:`RIM`'s recurrent state, as :class:`rims_rl.RIM`'s: ``(h, c)`` (LSTM) or ``h`` (GRU), each ``(L, B, H)``."""


class TimeMajor(NamedTuple):
    """A sequence input brought to the time-major batched form ``(T, B, *)``."""

    input: Array
    """``(T, B, F)``."""
    hx: State | None
    """Arrays of shape ``(L, B, H)``, or ``None``."""
    episode_starts: Array | None
    """``(T, B)`` bool, or ``None``."""
    batched: bool
    """Whether the caller passed a batch (if not, outputs lose their batch dimension again)."""


def to_time_major(input: Array, hx: State | None, episode_starts: Array | None, batch_first: bool) -> TimeMajor:
    """Accept :class:`torch.nn.LSTM`'s input forms, as :func:`rims_rl.sequence.to_time_major` does.

    :param input: ``(T, B, F)``, ``(B, T, F)`` when ``batch_first``, or unbatched ``(T, F)``.
    :param hx: state arrays ``(L, B, H)``, or ``(L, H)`` for an unbatched input; or ``None``.
    :param episode_starts: bool flags laid out like the input's leading dimensions.
    """
    if input.ndim not in (2, 3):
        raise ValueError(f"expected input of 2 (unbatched) or 3 dimensions, got shape {tuple(input.shape)}")
    batched = input.ndim == 3
    if episode_starts is not None:
        check_starts_shape(tuple(episode_starts.shape), tuple(input.shape), batch_first)
    if not batched:
        input = input[:, None]
        hx = None if hx is None else jax.tree.map(lambda t: t[:, None], hx)
        episode_starts = None if episode_starts is None else episode_starts[:, None]
    elif batch_first:
        input = jnp.swapaxes(input, 0, 1)
        episode_starts = None if episode_starts is None else jnp.swapaxes(episode_starts, 0, 1)
    if episode_starts is not None:
        episode_starts = episode_starts.astype(bool)
    return TimeMajor(input, hx, episode_starts, batched)


class RIM(nn.Module):
    r"""A multi-layer RIM over sequences with :class:`rims_rl.RIM`'s arguments, input forms, output and state
    shapes; :func:`rims_rl.jax.from_torch` makes one from the torch module.

    Its attributes are :class:`rims_rl.RIM`'s arguments (less ``input_size``, taken from the first call, and
    ``device``), plus these.

    Attributes:
        deterministic: if ``True``, no dropout (between layers and on attention); with ``dropout > 0`` it must be
            given here or at the call, and dropout needs a ``"dropout"`` rng. Default: ``None``
        param_dtype: dtype of the parameters. Default: float32

    Inputs: ``input, hx=None, *, episode_starts=None, deterministic=None``
        - **input**: :math:`(T, B, F)`, :math:`(B, T, F)` if ``batch_first``, or :math:`(T, F)` unbatched.
        - **hx**: ``(h_0, c_0)`` for ``cell="lstm"``, ``h_0`` for ``cell="gru"``; each :math:`(L, B, H)`, or
          :math:`(L, H)` unbatched. Defaults to zeros.
        - **episode_starts**: bool, laid out like the input's leading dimensions. Where set, that sample's
          state (every layer) is zeroed before that step, inside the scan.

    Outputs: ``output, hx``
        - **output**: the last layer's ``h`` at every step, :math:`(T, B, H)`, :math:`(B, T, H)` if
          ``batch_first``, or :math:`(T, H)` unbatched.
        - **hx**: the final state, same structure and shapes as the input ``hx``.

    Each call sows the active units, bool :math:`(T, B, L, U)` (time-major, :math:`B = 1` unbatched), as
    ``intermediates/active``.

    where:

    .. math::
        \begin{aligned}
            T ={} & \text{sequence length} \\
            B ={} & \text{batch size} \\
            L ={} & \text{num\_layers} \\
            F ={} & \text{input features} \\
            H ={} & \text{hidden\_size} \\
            U ={} & \text{num\_units}, \quad s = H / U
        \end{aligned}

    Examples::

        >>> import jax, jax.numpy as jnp
        >>> rim = RIM(24, num_units=4, k=2, num_layers=2)
        >>> x = jnp.ones((5, 3, 10))
        >>> params = rim.init(jax.random.key(0), x)
        >>> (output, (h, c)), extra = rim.apply(params, x, mutable="intermediates")
        >>> active = extra["intermediates"]["active"][0]
        >>> output.shape, h.shape, active.shape, active.sum(-1).min().item()
        ((5, 3, 24), (2, 3, 24), (5, 3, 2, 4), 2)
    """

    hidden_size: int
    num_units: int
    k: int
    cell: Literal["lstm", "gru"] = "lstm"
    num_layers: int = 1
    batch_first: bool = False
    dropout: float = 0.0
    input_heads: int = 1
    input_key_size: int = 64
    input_value_size: int | None = None
    comm_heads: int = 4
    comm_key_size: int = 32
    comm_value_size: int | None = None
    deterministic: bool | None = None
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        check_sizes(num_layers=self.num_layers)
        self._cell(parent=None)  # validates the other arguments
        super().__post_init__()

    @nn.nowrap
    def _cell(self, **kwargs: Any) -> RIMCell:
        return RIMCell(
            self.hidden_size,
            self.num_units,
            self.k,
            cell=self.cell,
            dropout=self.dropout,
            input_heads=self.input_heads,
            input_key_size=self.input_key_size,
            input_value_size=self.input_value_size,
            comm_heads=self.comm_heads,
            comm_key_size=self.comm_key_size,
            comm_value_size=self.comm_value_size,
            param_dtype=self.param_dtype,
            **kwargs,
        )

    @nn.nowrap
    def initial_state(self, batch_size: int, dtype: Any = None) -> State:
        """The zero state for ``batch_size`` samples: arrays of shape ``(L, B, H)``, like ``hx``."""
        zeros = jnp.zeros((self.num_layers, batch_size, self.hidden_size), dtype or self.param_dtype)
        return (zeros, zeros) if self.cell == "lstm" else zeros

    @nn.compact
    def __call__(
        self,
        input: Array,
        hx: State | None = None,
        *,
        episode_starts: Array | None = None,
        deterministic: bool | None = None,
    ) -> tuple[Array, State]:
        use_dropout = _dropout_on(self.dropout, self.deterministic, deterministic)
        x = to_time_major(input, hx, episode_starts, self.batch_first)
        seq, batch = x.input, x.input.shape[1]
        if hx is not None:
            expected = (self.num_layers, batch, self.hidden_size) if x.batched else (self.num_layers, self.hidden_size)
            for t in hx if isinstance(hx, tuple) else (hx,):  # the caller's (h, c) or h, each (L, B, H) or (L, H)
                check_state_shape(tuple(t.shape), expected, x.batched)
        state = x.hx if x.hx is not None else self.initial_state(batch, seq.dtype)
        layer_states = state if isinstance(state, tuple) else (state,)  # (h, c) or (h,), each (L, B, H)
        starts = x.episode_starts
        finals, actives = [], []
        for layer in range(self.num_layers):
            cell = self._cell(name=f"cells_{layer}")
            if layer and use_dropout:
                seq = dropout(seq, self.dropout, self.make_rng("dropout"))
            params = cell.parameters(seq.shape[-1])
            side = cell.input_side(params, seq)
            rngs = jax.random.split(self.make_rng("dropout"), seq.shape[0]) if use_dropout else None

            def run_step(
                carry: UnitState, xs: tuple, cell: RIMCell = cell, params: Params = params, side: InputSide = side
            ) -> tuple[UnitState, tuple[Array, Array]]:
                key_weights, key_bias, gates, starts_t, rng = xs
                if starts_t is not None:
                    carry = tuple(jnp.where(starts_t[:, None], 0.0, t) for t in carry)
                side_t = side._replace(key_weights=key_weights, key_bias=key_bias, gates=gates)
                carry, active = cell.step(params, side_t, carry, rng)
                return carry, (carry[0], active)

            init = tuple(to_units(t[layer], self.num_units) for t in layer_states)
            xs = (side.key_weights, side.key_bias, side.gates, starts, rngs)
            final, (outputs, active) = jax.lax.scan(run_step, init, xs)
            seq = from_units(outputs)
            finals.append(tuple(from_units(t) for t in final))
            actives.append(jnp.swapaxes(active, 1, 2))  # (T, B, U)
        self.sow("intermediates", "active", jnp.stack(actives, 2))
        final_state = tuple(jnp.stack(ts) for ts in zip(*finals, strict=True))
        hx_out: State = cast(State, final_state) if self.cell == "lstm" else final_state[0]  # (h, c) or h
        if not x.batched:
            return seq[:, 0], jax.tree.map(lambda t: t[:, 0], hx_out)
        return (jnp.swapaxes(seq, 0, 1) if self.batch_first else seq), hx_out
