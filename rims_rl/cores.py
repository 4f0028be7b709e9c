"""LSTM and GRU cores with the ``episode_starts`` extension, the core registry :data:`CORES` and
:func:`make_core`, the factory agents use.

Every core (:class:`LSTMCore`, :class:`GRUCore`, :class:`rims_rl.RIM`, or a user's own) offers the same surface
(:data:`CORE_SURFACE`):

- ``forward(input, hx=None, *, episode_starts=None) -> (output, hx)`` with :class:`torch.nn.LSTM`'s input forms;
- ``hidden_size``: the feature size of ``output``;
- ``initial_state(batch_size, device=None, dtype=None) -> State``: the zero state.

A core that also sets ``last_active`` (a bool tensor ``(T, B, L, U)`` of the units active at each step, as
:class:`rims_rl.RIM` does) gets unit-activity logging in ``experiments``, whatever its name.

Symbols: ``T`` sequence length, ``B`` batch, ``L`` ``num_layers``, ``H`` ``hidden_size``, ``F`` ``input_size``,
``S`` number of (sample, episode) segments.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rims_rl.checks import check_sizes
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

    def __init__(self, input_size: int, hidden_size: int, *args: Any, **kwargs: Any) -> None:
        check_sizes(input_size=input_size, hidden_size=hidden_size, num_layers=kwargs.get("num_layers", 1))
        super().__init__(input_size, hidden_size, *args, **kwargs)  # type: ignore[call-arg]  # into nn.LSTM / nn.GRU
        proj_size: int = getattr(self, "proj_size", 0)  # nn.LSTM's; nn.GRU has none
        if self.bidirectional or proj_size:
            raise ValueError(
                "expected a unidirectional core without projection (a recurrent policy runs forward in time), "
                f"got bidirectional={self.bidirectional}, proj_size={proj_size}"
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


class LSTMCore(_ResettableRNN, nn.LSTM):  # type: ignore[misc]  # forward: nn.LSTM's plus episode_starts
    """:class:`torch.nn.LSTM` plus ``episode_starts`` resets and ``initial_state``.

    >>> core = LSTMCore(8, 16)
    >>> x, starts = torch.randn(5, 3, 8), torch.zeros(5, 3, dtype=torch.bool)
    >>> starts[2, 1] = True
    >>> out, (h, c) = core(x, episode_starts=starts)
    >>> out.shape, h.shape
    (torch.Size([5, 3, 16]), torch.Size([1, 3, 16]))
    """


class GRUCore(_ResettableRNN, nn.GRU):  # type: ignore[misc]  # forward: nn.GRU's plus episode_starts
    """:class:`torch.nn.GRU` plus ``episode_starts`` resets and ``initial_state``.

    >>> out, h = GRUCore(8, 16, num_layers=2)(torch.randn(5, 3, 8))
    >>> out.shape, h.shape
    (torch.Size([5, 3, 16]), torch.Size([2, 3, 16]))
    """


#: The registered cores: name -> constructor ``(input_size, **kwargs) -> core``. :func:`register_core` adds to it;
#: ``agents``, ``experiments`` and their error messages read it.
CORES: dict[str, Callable[..., nn.Module]] = {"lstm": LSTMCore, "gru": GRUCore, "rim": RIM}


class Core(Protocol):
    """The core surface (:data:`CORE_SURFACE`) as a type: what :func:`make_core` returns, a module offering it."""

    hidden_size: int

    def __call__(
        self, input: Tensor, hx: Any = None, *, episode_starts: Tensor | None = None
    ) -> tuple[Tensor, State]: ...

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State: ...


#: What every core offers besides being an :class:`torch.nn.Module`: attribute -> what it is.
CORE_SURFACE = {
    "forward": "forward(input, hx=None, *, episode_starts=None) -> (output, state)",
    "hidden_size": "hidden_size (the output's feature size)",
    "initial_state": "initial_state(batch_size, device=None, dtype=None) -> state tensors (L, B, *)",
}


def register_core(name: str, constructor: Callable[..., nn.Module]) -> None:
    """Register a core under a name, so that ``make_core(name, ...)`` and ``model.core=<name>`` build it.

    :param name: the name; must not contain ``":"`` (that marks an import path)
    :param constructor: a class or callable ``(input_size, **kwargs) -> core``
    :raises ValueError: for a name already taken or containing ``":"``
    """
    if ":" in name or name in CORES:
        raise ValueError(f"expected a new core name without ':', got {name!r} (registered: {', '.join(CORES)})")
    CORES[name] = constructor


def resolve_core(name: str) -> Callable[..., nn.Module]:
    """The constructor of a core given by its registered name or by an import path ``package.module:Name``.

    :param name: e.g. ``"rim"`` or ``"my_pkg.cores:MyCore"``
    :return: the class or callable taking ``(input_size, **kwargs)``
    :raises ValueError: for an unknown name, a module that does not import or a missing or non-callable attribute

    >>> resolve_core("rims_rl:GRUCore") is resolve_core("gru")
    True
    >>> resolve_core("rims_rl:Nope")
    Traceback (most recent call last):
    ...
    ValueError: core 'rims_rl:Nope': module 'rims_rl' has no attribute 'Nope'
    """
    if not isinstance(name, str):
        raise ValueError(f"expected a core name or an import path 'package.module:Name', got {name!r}")
    if ":" not in name:
        if name not in CORES:
            choices = ", ".join(map(repr, CORES))
            raise ValueError(
                f"unknown core {name!r}; expected one of {choices} or an import path 'package.module:Name'"
            )
        return CORES[name]
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"core {name!r}: cannot import module {module_name!r} ({type(err).__name__}: {err})") from None
    constructor = getattr(module, attr, None)
    if constructor is None:
        raise ValueError(f"core {name!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(constructor):
        raise ValueError(
            f"core {name!r} is not a core: expected a core class or a callable (input_size, **kwargs) returning a "
            f"core, got a {type(constructor).__name__}"
        )
    return constructor


def check_constructor(constructor: Callable[..., Any], name: str, kwargs: Mapping[str, Any]) -> None:
    """Check, before building anything, that ``constructor`` can make a core: a class must be a
    :class:`torch.nn.Module` with the core surface's methods (:data:`CORE_SURFACE`; ``hidden_size`` is set by
    ``__init__``, so :func:`check_core` checks it on the built core), a function must take ``(input_size,
    **kwargs)``.

    :param constructor: what :func:`resolve_core` returned
    :param name: the core's name or import path, for the message
    :param kwargs: the constructor arguments it will get besides ``input_size``
    :raises ValueError: saying it is not a core and what it lacks, in one line

    >>> check_constructor(len, "builtins:len", {"hidden_size": 8})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: core 'builtins:len' is not a core: len(obj, /) cannot take (input_size, hidden_size=8); expected ...
    >>> check_constructor(nn.Linear, "torch.nn:Linear", {"out_features": 8})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: core 'torch.nn:Linear' is not a core: class Linear lacks initial_state(batch_size, ...) -> ...
    """
    if inspect.isclass(constructor):
        problems = [] if issubclass(constructor, nn.Module) else ["is not a torch.nn.Module"]
        missing = [
            description
            for attr, description in CORE_SURFACE.items()
            if attr != "hidden_size" and not callable(getattr(constructor, attr, None))
        ]
        forward = getattr(constructor, "forward", None)
        if callable(forward) and not _accepts_keyword(forward, "episode_starts"):
            missing.append("an episode_starts keyword argument of forward")
        problems += [f"lacks {'; '.join(missing)} (rims_rl.CORE_SURFACE)"] if missing else []
        if problems:
            raise ValueError(f"core {name!r} is not a core: class {constructor.__name__} {' and '.join(problems)}")
        return
    try:
        signature = inspect.signature(constructor)
    except (TypeError, ValueError):  # no signature to read: building it will tell
        return
    try:
        signature.bind(0, **kwargs)
    except TypeError:
        call = ", ".join(["input_size", *(f"{key}={value!r}" for key, value in kwargs.items())])
        raise ValueError(
            f"core {name!r} is not a core: {getattr(constructor, '__name__', 'it')}{signature} cannot take ({call}); "
            f"expected a core class or a callable (input_size, **kwargs) returning a core"
        ) from None


def check_core(core: Any, name: str = "core") -> None:
    """Check that an object offers the core surface (:data:`CORE_SURFACE`).

    :param core: the object
    :param name: how to call it in the message
    :raises ValueError: naming everything missing, in one line
    """
    missing = [] if isinstance(core, nn.Module) else ["to be a torch.nn.Module"]
    for attr, description in CORE_SURFACE.items():
        if not hasattr(core, attr) or (attr != "hidden_size" and not callable(getattr(core, attr))):
            missing.append(description)
    forward = getattr(core, "forward", None)
    if callable(forward) and not _accepts_keyword(forward, "episode_starts"):
        missing.append("an episode_starts keyword argument of forward")
    if not isinstance(getattr(core, "hidden_size", 0), int):
        missing.append("an int hidden_size")
    if not missing and not _batch_on_dim_1(core):
        missing.append("initial_state(3) to give tensors with the batch (3) on dimension 1")
    if missing:
        raise ValueError(f"{name} ({type(core).__name__}) lacks the core surface: expected {'; '.join(missing)}")


def _batch_on_dim_1(core: Any) -> bool:
    """Whether ``core.initial_state(3)`` gives a state whose tensors all have the batch on dimension 1."""
    shapes: list[torch.Size] = []

    def record(tensor: Tensor) -> Tensor:
        shapes.append(tensor.shape)
        return tensor

    try:
        map_state(record, core.initial_state(3))
    except Exception:  # a user's initial_state that fails at all lacks the surface
        return False
    return bool(shapes) and all(len(shape) >= 2 and shape[1] == 3 for shape in shapes)


def _accepts_keyword(function: Callable[..., Any], keyword: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # no signature to read: trust it
        return True
    return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _required_kwargs(constructor: Callable[..., Any]) -> list[str]:
    """The constructor's arguments without a default, after ``input_size``."""
    try:
        parameters = list(inspect.signature(constructor).parameters.values())
    except (TypeError, ValueError):
        return []
    positional = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters[1:] if p.kind in positional and p.default is inspect.Parameter.empty]


def make_core(name: str, input_size: int, **kwargs: Any) -> Core:
    """Build a recurrent core by registered name (:data:`CORES`) or import path.

    :param name: ``"lstm"`` (:class:`LSTMCore`), ``"gru"`` (:class:`GRUCore`), ``"rim"`` (:class:`rims_rl.RIM`),
        another :func:`register_core` name, or an import path ``package.module:Name`` of a class or callable taking
        ``(input_size, **kwargs)`` whose result offers the core surface.
    :param input_size: ``F``, the feature size of the input.
    :param kwargs: the core's constructor arguments, e.g. ``hidden_size``, ``num_layers``; for ``"rim"`` also
        ``num_units``, ``k`` and the attention sizes.
    :return: a module with ``forward(input, hx=None, *, episode_starts=None)``, ``hidden_size`` and
        ``initial_state``.
    :raises ValueError: for an unknown name, an import path that does not resolve, missing arguments or a result
        without the core surface

    >>> make_core("gru", 8, hidden_size=32)
    GRUCore(8, 32)
    """
    constructor = resolve_core(name)
    check_constructor(constructor, name, kwargs)
    missing = [arg for arg in _required_kwargs(constructor) if arg not in kwargs]
    if missing:
        raise ValueError(f"core {name!r} needs {', '.join(missing)}; got arguments {sorted(kwargs) or 'none'}")
    core = constructor(input_size, **kwargs)
    check_core(core, f"core {name!r}")
    return cast(Core, core)
