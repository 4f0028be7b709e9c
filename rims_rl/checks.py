"""Argument and shape checks shared by the torch and the JAX RIM (no torch, no jax here: ``rims_rl.jax`` never
loads torch), so both read one contract.

Messages say ``expected X, got Y`` in one line; shape messages show what the caller passed, in the caller's layout
(``batch_first``), beside what was expected there.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (a numpy one too) and not a bool, nor a float such as ``2.0``: sizes are
    counts.

    >>> is_int(3), is_int(True), is_int(2.0)
    (True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_sizes(**sizes: Any) -> None:
    """Check that each size is an int > 0 (``None`` passes: a size derived from the others).

    >>> check_sizes(hidden_size=64, input_value_size=None)
    >>> check_sizes(num_units=2.0)
    Traceback (most recent call last):
    ...
    ValueError: expected an int num_units > 0, got num_units=2.0
    """
    for name, value in sizes.items():
        if value is not None and not (is_int(value) and value > 0):
            raise ValueError(f"expected an int {name} > 0, got {name}={value!r}")


def check_units(size_name: str, size: int, num_units: int, k: Any) -> None:
    """Check a RIM's unit layout: ``size`` divisible by ``num_units`` (both checked by :func:`check_sizes` first), and
    ``k`` an int with ``1 <= k <= num_units``.

    >>> check_units("hidden_size", 192, 6, 2.5)
    Traceback (most recent call last):
    ...
    ValueError: expected an int k with 1 <= k <= num_units=6, got k=2.5
    """
    if size % num_units:
        raise ValueError(f"expected {size_name} divisible by num_units, got {size_name}={size}, num_units={num_units}")
    if not (is_int(k) and 1 <= k <= num_units):
        raise ValueError(f"expected an int k with 1 <= k <= num_units={num_units}, got k={k!r}")


def check_dropout(dropout: Any) -> None:
    """Check a dropout probability: a number in ``[0, 1)``.

    >>> check_dropout("0.1")
    Traceback (most recent call last):
    ...
    ValueError: expected dropout in [0, 1), got dropout='0.1'
    """
    number = isinstance(dropout, (int, float)) and not isinstance(dropout, bool)
    if not (number and math.isfinite(dropout) and 0.0 <= dropout < 1.0):
        raise ValueError(f"expected dropout in [0, 1), got dropout={dropout!r}")


def leading_layout(batched: bool, batch_first: bool) -> str:
    """The input's leading dimensions in the caller's layout, in words for a message.

    >>> leading_layout(True, True), leading_layout(False, True)
    ('(B, T) as the input with batch_first=True', '(T,) as the unbatched input')
    """
    if not batched:
        return "(T,) as the unbatched input"
    return f"{'(B, T)' if batch_first else '(T, B)'} as the input with batch_first={batch_first}"


def check_starts_shape(starts: tuple[int, ...], input: tuple[int, ...], batch_first: bool) -> None:
    """Check that ``episode_starts`` has the input's leading dimensions, as the caller laid them out.

    :param starts: the shape of ``episode_starts``
    :param input: the shape of the input, ``(T, B, F)``, ``(B, T, F)`` or ``(T, F)`` (a set's elements flattened)
    :param batch_first: whether a batched input is ``(B, T, F)``
    :raises ValueError: naming the shape expected in the caller's layout and the shape given

    >>> check_starts_shape((9, 5), (5, 9, 8), batch_first=True)
    Traceback (most recent call last):
    ...
    ValueError: expected episode_starts of shape (5, 9), (B, T) as the input with batch_first=True, got (9, 5)
    """
    if starts != input[:-1]:
        layout = leading_layout(len(input) == 3, batch_first)
        raise ValueError(f"expected episode_starts of shape {input[:-1]}, {layout}, got {starts}")


def check_state_shape(state: tuple[int, ...], expected: tuple[int, ...], batched: bool) -> None:
    """Check one state tensor against ``(L, B, H)`` (``(L, H)`` for an unbatched input), as :class:`torch.nn.LSTM`
    lays out ``hx`` in either input layout.

    :param state: the shape of the state tensor the caller passed
    :param expected: ``(L, B, H)``, or ``(L, H)`` unbatched
    :param batched: whether the input is batched
    :raises ValueError: naming both shapes

    >>> check_state_shape((1, 1, 16), (1, 16), batched=False)
    Traceback (most recent call last):
    ...
    ValueError: expected hx tensors of shape (1, 16), (L, H) for an unbatched input, got (1, 1, 16)
    """
    if state != expected:
        layout = "(L, B, H) in either input layout" if batched else "(L, H) for an unbatched input"
        raise ValueError(f"expected hx tensors of shape {expected}, {layout}, got {state}")
