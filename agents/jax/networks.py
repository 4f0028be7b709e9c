"""The JAX backend's networks: MiniGrid features extractor, recurrent cores, actor-critic; the same design and
sizes as the torch backend (:class:`rims_rl.agents.MiniGridFeaturesExtractor`, :mod:`rims_rl.cores`,
:class:`rims_rl.agents.RecurrentActorCriticPolicy`)::

    obs -> MiniGridFeatures -> core        -> MLP (pi) -> action logits
                            -> critic core -> MLP (vf) -> value

Symbols: ``T`` sequence length, ``B`` batch (envs or chunks), ``F`` features, ``H`` core ``hidden_size``, ``L``
core layers, ``A`` actions, ``U`` RIM units.

A core is a Flax module with :class:`rims_rl.jax.RIM`'s contract: ``core(input (T, B, F), hx, *,
episode_starts=(T, B) bool, deterministic=True) -> (output (T, B, H), hx)``, where a set flag zeroes that
sample's state before that step inside the scan (PureJaxRL's ``ScannedRNN`` resets with ``jnp.where`` the same
way, ``purejaxrl/ppo_rnn.py``), and ``initial_state(batch_size)``; every array of a core state is ``(L, B, H)``,
batch on axis 1 (:data:`STATE_BATCH_AXIS`), so callers index and stack states without knowing the core.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import Array

from rims_rl.jax import RIM

__all__ = ["ACTIVATIONS", "CORES", "GRU", "LSTM", "STATE_BATCH_AXIS", "ActorCritic", "MiniGridFeatures", "make_core"]

State = Any
"""A core's recurrent state: a pytree of ``(L, B, H)`` arrays (``(h, c)`` for LSTM cores, ``h`` for GRU cores),
or the pair ``(actor state, critic state)`` of an :class:`ActorCritic` with two cores."""
STATE_BATCH_AXIS = 1
"""The batch axis of every array of a recurrent state."""
Observation = dict[str, Array]
"""``image`` ``(*, 7, 7, 3)`` uint8 (object, colour, state indices) and ``direction`` ``(*,)`` int32."""

#: Activations of the MLP heads by name (SB3's ``activation_fn``; the torch backend's default is ``nn.Tanh``).
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "relu": nn.relu}


def _torch_uniform(fan_in: int) -> Callable[..., Array]:
    """``nn.LSTM`` / ``nn.GRU``'s init: uniform in ``±1 / sqrt(fan_in)``."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


Cell = Callable[[Array, Array, tuple[Array, ...]], tuple[Array, ...]]
"""A gated cell: ``(gates_x (B, G H), gates_h (B, G H), carry) -> carry``, ``carry[0]`` being ``h``."""


def _scan_cell(
    cell: Cell, gates_x: Array, starts: Array, carry: tuple[Array, ...], weight_hh: Array, bias_hh: Array
) -> tuple[tuple[Array, tuple[Array, ...]], tuple[tuple[Array, ...], Array]]:
    """The recurrence: ``h`` at every step ``(T, B, H)`` and the final carry; and, for the backward pass, the carry
    each step started from (after its reset) and its ``gates_h``."""

    def step(carry: tuple[Array, ...], xs: tuple[Array, Array]) -> tuple[tuple[Array, ...], Any]:
        gates_t, starts_t = xs
        carry = tuple(jnp.where(starts_t[:, None], 0.0, t) for t in carry)
        gates_h = carry[0] @ weight_hh + bias_hh
        new = cell(gates_t, gates_h, carry)
        return new, (new[0], carry, gates_h)

    final, (output, carries, gates_h) = jax.lax.scan(step, carry, (gates_x, starts))
    return (output, final), (carries, gates_h)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _recurrence(
    cell: Cell, gates_x: Array, starts: Array, carry: tuple[Array, ...], weight_hh: Array, bias_hh: Array
) -> tuple[Array, tuple[Array, ...]]:
    """:func:`_scan_cell`'s outputs, with a backward pass that sums the gradient of ``weight_hh`` and ``bias_hh``
    over all steps in one matmul after the reverse scan; autodiff of the scan adds it up step by step inside the
    loop, which costs as much as the rest of the backward pass on CPU (measured: LSTM 192, ``T = 32``, ``B = 8``).
    Reverse mode only (``jax.grad``, ``jax.vjp``); ``jax.jvp`` through a custom VJP is an error.

    :param gates_x: ``(T, B, G H)``, the input projections.
    :param starts: ``(T, B)`` bool: zero the carry before that step.
    :param carry: the carry before step 0, arrays ``(B, H)``.
    :return: ``h`` at every step ``(T, B, H)`` and the carry after step ``T - 1``.
    """
    return _scan_cell(cell, gates_x, starts, carry, weight_hh, bias_hh)[0]


def _recurrence_fwd(
    cell: Cell, gates_x: Array, starts: Array, carry: tuple[Array, ...], weight_hh: Array, bias_hh: Array
) -> tuple[Any, Any]:
    out, (carries, gates_h) = _scan_cell(cell, gates_x, starts, carry, weight_hh, bias_hh)
    return out, (gates_x, starts, carries, gates_h, weight_hh)


def _recurrence_bwd(cell: Cell, residuals: Any, cotangents: Any) -> tuple[Any, ...]:
    gates_x, starts, carries, gates_h, weight_hh = residuals
    d_output, d_final = cotangents

    def step(d_carry: tuple[Array, ...], xs: Any) -> tuple[tuple[Array, ...], tuple[Array, Array]]:
        gates_t, starts_t, carry_t, gates_h_t, d_h = xs
        d_carry = (d_carry[0] + d_h, *d_carry[1:])
        _, vjp = jax.vjp(cell, gates_t, gates_h_t, carry_t)
        d_gates_x, d_gates_h, d_prev = vjp(d_carry)
        d_prev = (d_prev[0] + d_gates_h @ weight_hh.T, *d_prev[1:])
        return tuple(jnp.where(starts_t[:, None], 0.0, d) for d in d_prev), (d_gates_x, d_gates_h)

    d_carry, (d_gates_x, d_gates_h) = jax.lax.scan(
        step, d_final, (gates_x, starts, carries, gates_h, d_output), reverse=True
    )
    d_weight_hh = jnp.einsum("tbh,tbg->hg", carries[0], d_gates_h)
    return d_gates_x, None, d_carry, d_weight_hh, d_gates_h.sum((0, 1))


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class _GatedRNN(nn.Module):
    """One-layer LSTM/GRU over a time-major sequence with ``episode_starts`` resets, ``nn.LSTM``'s parameter
    names (weights transposed: ``weight_ih`` ``(F, G H)``, ``weight_hh`` ``(H, G H)``) and init. The input
    projection of all ``T`` steps is one matmul before the scan; the scan carries only the recurrent part."""

    hidden_size: int
    gates = 0
    state_arrays = 0

    def __post_init__(self) -> None:
        if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
            raise ValueError(f"expected hidden_size >= 1, got {self.hidden_size}")
        super().__post_init__()

    @nn.nowrap
    def initial_state(self, batch_size: int, dtype: Any = jnp.float32) -> State:
        """The zero state: ``(h, c)`` (LSTM) or ``h`` (GRU), each ``(1, B, H)``."""
        zeros = jnp.zeros((1, batch_size, self.hidden_size), dtype)
        return (zeros, zeros) if self.state_arrays == 2 else zeros

    @staticmethod
    def _cell(gates_x: Array, gates_h: Array, carry: tuple[Array, ...]) -> tuple[Array, ...]:
        raise NotImplementedError

    @nn.compact
    def __call__(
        self, input: Array, hx: State, *, episode_starts: Array, deterministic: bool | None = None
    ) -> tuple[Array, State]:
        """:param input: ``(T, B, F)``.
        :param hx: the state before step 0 (:meth:`initial_state`'s structure).
        :param episode_starts: ``(T, B)`` bool: zero the state before that step.
        :param deterministic: unused (no dropout); accepted for the core contract.
        :return: ``h`` at every step ``(T, B, H)`` and the state after step ``T - 1``.
        """
        size, width = self.hidden_size, self.gates * self.hidden_size
        weight_ih = self.param("weight_ih", _torch_uniform(size), (input.shape[-1], width))
        weight_hh = self.param("weight_hh", _torch_uniform(size), (size, width))
        bias_ih = self.param("bias_ih", _torch_uniform(size), (width,))
        bias_hh = self.param("bias_hh", _torch_uniform(size), (width,))
        gates_x = input @ weight_ih + bias_ih  # (T, B, G H), all steps at once
        init = hx if isinstance(hx, tuple) else (hx,)
        output, final = _recurrence(
            type(self)._cell, gates_x, episode_starts, tuple(t[0] for t in init), weight_hh, bias_hh
        )
        state = tuple(t[None] for t in final)
        return output, (state if self.state_arrays == 2 else state[0])


class LSTM(_GatedRNN):
    """A one-layer LSTM core (``nn.LSTM``'s equations, gate order i, f, g, o); state ``(h, c)``, each ``(1, B, H)``.

    :param hidden_size: ``H``.

    >>> lstm = LSTM(8)
    >>> x, starts = jnp.ones((5, 3, 4)), jnp.zeros((5, 3), bool)
    >>> params = lstm.init(jax.random.key(0), x, lstm.initial_state(3), episode_starts=starts)
    >>> out, (h, c) = lstm.apply(params, x, lstm.initial_state(3), episode_starts=starts)
    >>> out.shape, h.shape
    ((5, 3, 8), (1, 3, 8))
    """

    gates = 4
    state_arrays = 2

    @staticmethod
    def _cell(gates_x: Array, gates_h: Array, carry: tuple[Array, ...]) -> tuple[Array, ...]:
        i, f, g, o = jnp.split(gates_x + gates_h, 4, axis=-1)
        c = nn.sigmoid(f) * carry[1] + nn.sigmoid(i) * jnp.tanh(g)
        return nn.sigmoid(o) * jnp.tanh(c), c


class GRU(_GatedRNN):
    """A one-layer GRU core (``nn.GRU``'s equations: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``); state
    ``h`` ``(1, B, H)``.

    :param hidden_size: ``H``.
    """

    gates = 3
    state_arrays = 1

    @staticmethod
    def _cell(gates_x: Array, gates_h: Array, carry: tuple[Array, ...]) -> tuple[Array, ...]:
        x_r, x_z, x_n = jnp.split(gates_x, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(gates_h, 3, axis=-1)
        r, z = nn.sigmoid(x_r + h_r), nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        return (n + z * (carry[0] - n),)


#: The JAX cores by name, the names of :data:`rims_rl.CORES`; values take the core's kwargs.
CORES: dict[str, Callable[..., nn.Module]] = {"lstm": LSTM, "gru": GRU, "rim": RIM}


def make_core(core: str, kwargs: Mapping[str, Any], **module_kwargs: Any) -> nn.Module:
    """Build a core by name.

    :param core: a key of :data:`CORES`.
    :param kwargs: its kwargs (``hidden_size``; for ``"rim"`` :class:`rims_rl.jax.RIM`'s, e.g. ``num_units``,
        ``k``).
    :param module_kwargs: Flax module arguments (``name``, ``parent``).
    :raises ValueError: one line, for an unknown name or kwargs the core rejects.
    """
    if core not in CORES:
        raise ValueError(f"expected core in {tuple(CORES)} (the JAX backend's cores), got {core!r}")
    try:
        return CORES[core](**kwargs, **module_kwargs)
    except TypeError as err:
        raise ValueError(
            f"expected core_kwargs accepted by the JAX core {core!r}, got {dict(kwargs)} ({err})"
        ) from None


class Conv2x2(nn.Module):
    """``nn.Conv(features, (2, 2), padding="VALID")`` (same parameters, shapes and init) computed as one matmul over
    the stacked 2x2 patches. XLA on CPU leaves the weight gradient of a convolution inside a loop (the update's scan
    over minibatches) off its fast path: 10-30x slower than outside one (measured, jax 0.10.2); a matmul is not.

    :param features: output channels.
    :param kernel_init: initializer of the ``(2, 2, C, features)`` kernel.
    :param bias_init: initializer of the bias.

    Input ``(B, Y, X, C)``; output ``(B, Y - 1, X - 1, features)``.
    """

    features: int
    kernel_init: Callable[..., Array] = nn.linear.default_kernel_init
    bias_init: Callable[..., Array] = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", self.kernel_init, (2, 2, x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        Y, X = x.shape[-3] - 1, x.shape[-2] - 1
        patches = jnp.concatenate([x[..., i : i + Y, j : j + X, :] for i in (0, 1) for j in (0, 1)], axis=-1)
        return patches @ kernel.reshape(-1, self.features) + bias  # kernel rows in patch order (i, j, channel)


class MiniGridFeatures(nn.Module):
    """:class:`rims_rl.agents.MiniGridFeaturesExtractor` with ``output="vector"`` and no mission: the MiniGrid CNN over
    the raw symbolic view (``Conv(c1, 2x2)``, ReLU, ``MaxPool(2x2)``, ``Conv(c2, 2x2)``, ReLU, ``Conv(c3, 2x2)``,
    ReLU, flatten; 64 features for a 7x7 view with the default channels) and a ``direction_dim`` direction embedding
    (the torch backend's bias-free linear on the one-hot direction is an embedding table).

    :param cnn_channels: ``(c1, c2, c3)``.
    :param direction_dim: size of the direction embedding; 0 disables it.
    :param ortho_init: SB3's orthogonal init with gain ``sqrt(2)`` and zero biases; else Flax's defaults.

    Input: ``image`` ``(B, 7, 7, 3)`` (any integer or float dtype, raw indices), ``direction`` ``(B,)`` int.
    Output: ``(B, 64 + direction_dim)``.
    """

    cnn_channels: Sequence[int] = (16, 32, 64)
    direction_dim: int = 8
    ortho_init: bool = True

    def __post_init__(self) -> None:
        channels = tuple(self.cnn_channels)
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"expected cnn_channels to be 3 positive ints, got {channels}")
        if self.direction_dim < 0:
            raise ValueError(f"expected direction_dim >= 0, got {self.direction_dim}")
        super().__post_init__()

    @nn.compact
    def __call__(self, obs: Observation) -> Array:
        init = _ortho(math.sqrt(2), self.ortho_init)
        x = obs["image"].astype(jnp.float32)
        c1, c2, c3 = self.cnn_channels
        x = nn.relu(Conv2x2(c1, **init, name="Conv_0")(x))  # nn.Conv's names: the parameters of earlier runs load
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(Conv2x2(c2, **init, name="Conv_1")(x))
        x = nn.relu(Conv2x2(c3, **init, name="Conv_2")(x))
        parts = [x.reshape(x.shape[0], -1)]
        if self.direction_dim:
            table = {"embedding_init": init["kernel_init"]} if self.ortho_init else {}
            parts.append(nn.Embed(4, self.direction_dim, **table)(obs["direction"].astype(jnp.int32)))
        return jnp.concatenate(parts, axis=-1)


def _ortho(gain: float, on: bool) -> dict[str, Any]:
    """Initializer kwargs of a Flax layer: SB3's orthogonal init with ``gain`` and zero biases, or Flax's
    defaults."""
    if not on:
        return {}
    return {"kernel_init": nn.initializers.orthogonal(gain), "bias_init": nn.initializers.zeros}


def split_net_arch(net_arch: Sequence[int] | Mapping[str, Sequence[int]] | None) -> tuple[tuple[int, ...], ...]:
    """SB3's ``net_arch``: a list gives actor and critic MLPs of those layers each, a dict ``pi`` / ``vf``;
    ``None``: SB3's default ``[64, 64]``.

    :return: ``(pi layers, vf layers)``.
    :raises ValueError: for anything else.
    """
    if net_arch is None:
        return (64, 64), (64, 64)
    if isinstance(net_arch, Mapping):
        if set(net_arch) - {"pi", "vf"}:
            raise ValueError(f"expected net_arch keys 'pi' and 'vf', got {sorted(net_arch)}")
        pi, vf = tuple(net_arch.get("pi", ())), tuple(net_arch.get("vf", ()))
    else:
        pi = vf = tuple(net_arch)
    if not all(isinstance(n, int | np.integer) and n > 0 for n in (*pi, *vf)):
        raise ValueError(f"expected net_arch layer sizes to be positive ints, got {net_arch}")
    return tuple(int(n) for n in pi), tuple(int(n) for n in vf)


class _Head(nn.Module):
    """SB3's ``MlpExtractor`` branch then its ``action_net`` / ``value_net``: ``Dense, activation`` per layer, then a
    ``Dense(out)`` (orthogonal gain ``sqrt(2)`` in the MLP, ``out_gain`` on the output)."""

    layers: tuple[int, ...]
    out: int
    out_gain: float
    activation: str
    ortho_init: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for width in self.layers:
            x = ACTIVATIONS[self.activation](nn.Dense(width, **_ortho(math.sqrt(2), self.ortho_init))(x))
        return nn.Dense(self.out, **_ortho(self.out_gain, self.ortho_init))(x)


class ActorCritic(nn.Module):
    """The recurrent actor-critic of :class:`rims_rl.agents.RecurrentActorCriticPolicy`: shared features extractor, an
    actor core and (``shared_core=False``) a critic core of the same kind, MLP heads of ``net_arch``, SB3's output gains
    (0.01 on the logits, 1 on the value). Cores keep their own init, as in the torch backend.

    :param num_actions: ``A``.
    :param core: a name in :data:`CORES`.
    :param core_kwargs: the core's kwargs (``configs/model/*.yaml`` less ``core``).
    :param shared_core: one core for both heads; ``False``: the critic has its own.
    :param net_arch: SB3's ``net_arch`` (see :func:`split_net_arch`).
    :param activation_fn: a name in :data:`ACTIVATIONS`.
    :param ortho_init: SB3's orthogonal init of extractor, MLPs and heads.
    :param features_extractor_kwargs: :class:`MiniGridFeatures` kwargs.

    The actor core is the submodule ``core`` and the critic's ``critic_core``; a RIM core sows its active units
    ``(T, B, L, U)`` as ``intermediates/core/active``.
    """

    num_actions: int
    core: str = "lstm"
    core_kwargs: Mapping[str, Any] = None  # type: ignore[assignment]  # None: {}
    shared_core: bool = False
    net_arch: Any = None
    activation_fn: str = "tanh"
    ortho_init: bool = True
    features_extractor_kwargs: Mapping[str, Any] = None  # type: ignore[assignment]  # None: {}

    def setup(self) -> None:
        self.features = MiniGridFeatures(**dict(self.features_extractor_kwargs or {}), ortho_init=self.ortho_init)
        self.actor_core = make_core(self.core, self.core_kwargs or {}, name="core")
        self.critic_core = (
            None if self.shared_core else make_core(self.core, self.core_kwargs or {}, name="critic_core")
        )
        pi, vf = split_net_arch(self.net_arch)
        self.pi = _Head(pi, self.num_actions, 0.01, self.activation_fn, self.ortho_init)
        self.vf = _Head(vf, 1, 1.0, self.activation_fn, self.ortho_init)

    @nn.nowrap
    def initial_state(self, batch_size: int) -> State:
        """The zero state for ``batch_size`` envs (the pair ``(actor, critic)`` with two cores)."""
        state = make_core(self.core, self.core_kwargs or {}, parent=None).initial_state(batch_size)
        return state if self.shared_core else (state, state)

    def __call__(self, obs: Observation, state: State, episode_starts: Array) -> tuple[Array, Array, State]:
        """:param obs: ``image`` ``(T, B, 7, 7, 3)``, ``direction`` ``(T, B)``.
        :param state: the state before step 0.
        :param episode_starts: ``(T, B)`` bool: the observation is the first of an episode (state zeroed before it).
        :return: logits ``(T, B, A)``, values ``(T, B)``, the state after step ``T - 1``.
        """
        T, B = episode_starts.shape
        flat = jax.tree.map(lambda x: x.reshape(T * B, *x.shape[2:]), obs)
        features = self.features(flat).reshape(T, B, -1)
        if self.critic_core is None:
            out_pi, state = self.actor_core(features, state, episode_starts=episode_starts, deterministic=True)
            out_vf = out_pi
        else:
            out_pi, actor_state = self.actor_core(features, state[0], episode_starts=episode_starts, deterministic=True)
            out_vf, critic_state = self.critic_core(
                features, state[1], episode_starts=episode_starts, deterministic=True
            )
            state = (actor_state, critic_state)
        return self.pi(out_pi), self.vf(out_vf)[..., 0], state
