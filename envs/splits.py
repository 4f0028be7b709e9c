"""Train / held-out generalisation splits and environment-id validation.

A split names the environments (one id or a mixture) and, optionally, the level seeds used for training and
the held-out evaluation, and, where the JAX backend can run it, the JAX env ids (:mod:`rims_rl.envs.jax.ids`) that stand
for them. It is built from a YAML config group with ``Split(**cfg)`` (the YAML keys are
exactly the dataclass fields) and checked with :meth:`Split.validate` before any training starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from rims_rl.envs.jax.ids import validate_jax_env_id
from rims_rl.envs.registration import register_envs

__all__ = ["BACKENDS", "Split", "validate_env_id"]

BACKENDS = ("torch", "jax")
"""The training backends a split names env ids for: ``torch`` (gymnasium ids, ``train``/``heldout``) and ``jax``
(JAX env ids, the ``jax`` field)."""


def validate_env_id(env_id: str) -> None:
    """Check that ``env_id`` is registered with gymnasium (MiniGrid's and this package's ids, registered first by
    :func:`rims_rl.envs.register_envs`).

    :param env_id: a gymnasium environment id
    :raises ValueError: if it is not registered; the message lists the closest registered ids

    >>> validate_env_id("MiniGrid-DoorKey-5x5-v0")
    >>> validate_env_id("MiniGrid-DoorKey-5x5-v9")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown environment id 'MiniGrid-DoorKey-5x5-v9'; closest registered ids: [...
    """
    register_envs()
    if not isinstance(env_id, str):
        raise ValueError(f"expected an environment id string, got {env_id!r} ({type(env_id).__name__})")
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=5, cutoff=0.6)
    hint = f"closest registered ids: {close}" if close else "no close registered id"
    raise ValueError(f"unknown environment id {env_id!r}; {hint}")


def _ids(value: str | Iterable[str], field: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    try:
        return [str(v) for v in value]
    except TypeError:
        raise ValueError(f"expected {field} to be an env id or a list of env ids, got {value!r}") from None


def _seeds(value: Iterable[int] | None, field: str) -> list[int] | None:
    if value is None:
        return None
    try:
        seeds = [int(s) for s in value]
    except (TypeError, ValueError):
        raise ValueError(f"expected {field} to be null or a list of ints, got {value!r}") from None
    if not seeds:
        raise ValueError(f"expected {field} to be null (any level) or a non-empty list, got []")
    if any(s < 0 for s in seeds):
        raise ValueError(f"expected non-negative {field}, got {seeds}")
    return seeds


def _backend_ids(value: Mapping[str, Any] | None) -> dict[str, list[str]] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"train", "heldout"}:
        raise ValueError(f"expected jax to be null or a mapping with keys train and heldout, got {value!r}")
    return {field: _ids(value[field], f"jax.{field}") for field in ("train", "heldout")}


@dataclass
class Split:
    """A generalisation split: train on ``train`` (restricted to ``train_seeds``), evaluate on ``heldout``
    (restricted to ``heldout_seeds``).

    Lists given as any iterable (e.g. OmegaConf ``ListConfig``) are converted to plain lists, and a single env
    id string to a one-element list.

    :param name: the split's name (the config file's stem)
    :param train: training env ids; several make a mixture (vectorised env i gets ``train[i % len(train)]``)
    :param heldout: held-out env ids, each evaluated separately
    :param train_seeds: level seeds allowed in training; ``None`` means any level
    :param heldout_seeds: level seeds used for held-out evaluation; ``None`` means any level
    :param jax: the JAX env ids standing for ``train`` and ``heldout``, ``{"train": [...], "heldout": [...]}``;
        ``None`` means the JAX backend cannot run this split
    """

    name: str
    train: list[str]
    heldout: list[str]
    train_seeds: list[int] | None = None
    heldout_seeds: list[int] | None = None
    jax: dict[str, list[str]] | None = None

    def __post_init__(self) -> None:
        self.name = str(self.name)
        self.train = _ids(self.train, "train")
        self.heldout = _ids(self.heldout, "heldout")
        self.train_seeds = _seeds(self.train_seeds, "train_seeds")
        self.heldout_seeds = _seeds(self.heldout_seeds, "heldout_seeds")
        self.jax = _backend_ids(self.jax)

    def validate(self) -> Split:
        """Check the split before any training.

        Checks that ``train`` and ``heldout`` are non-empty, that every id is registered (with the closest
        registered ids in the error), that the ``jax`` lists are non-empty lists of known JAX env ids, and
        that an env id used for both training and held-out evaluation has
        disjoint ``train_seeds`` and ``heldout_seeds`` (otherwise "held-out" would replay training levels).

        :return: ``self``, for chaining
        :raises ValueError: on the first problem found
        """
        sides: list[tuple[str, list[str], Callable[[str], object]]]
        sides = [(field, ids, validate_env_id) for field, ids in (("train", self.train), ("heldout", self.heldout))]
        sides += [(f"jax.{field}", ids, validate_jax_env_id) for field, ids in (self.jax or {}).items()]
        for field, ids, validate in sides:
            if not ids:
                raise ValueError(f"split {self.name!r}: expected at least one {field} env id, got []")
            for env_id in ids:
                try:
                    validate(env_id)
                except ValueError as err:
                    raise ValueError(f"split {self.name!r}, {field}: {err}") from None
        shared = sorted(set(self.train) & set(self.heldout))
        if shared:
            if self.train_seeds is None or self.heldout_seeds is None:
                raise ValueError(
                    f"split {self.name!r}: {shared} are both train and held-out envs, so expected "
                    f"train_seeds and heldout_seeds lists, got train_seeds={self.train_seeds}, "
                    f"heldout_seeds={self.heldout_seeds}"
                )
            common = sorted(set(self.train_seeds) & set(self.heldout_seeds))
            if common:
                raise ValueError(
                    f"split {self.name!r}: expected disjoint train_seeds and heldout_seeds, got {common} in both"
                )
        return self

    def ids_for(self, backend: str) -> tuple[list[str], list[str]]:
        """The env ids a backend trains and evaluates on.

        :param backend: one of :data:`BACKENDS`
        :return: ``(train, heldout)`` env ids of that backend, in the order of ``train`` and ``heldout``
        :raises ValueError: for an unknown backend, or in one line naming the backend that can run the split

        >>> Split("multiroom", ["MiniGrid-MultiRoom-N2-S4-v0"], ["MiniGrid-MultiRoom-N6-v0"]).ids_for("jax")
        Traceback (most recent call last):
        ...
        ValueError: split 'multiroom' has no jax env ids; run it with backend=torch
        """
        if backend == "torch":
            return list(self.train), list(self.heldout)
        if backend == "jax":
            if self.jax is None:
                raise ValueError(f"split {self.name!r} has no jax env ids; run it with backend=torch")
            return list(self.jax["train"]), list(self.jax["heldout"])
        raise ValueError(f"expected backend in {BACKENDS}, got {backend!r}")


def as_id_list(env_ids: str | Sequence[str]) -> list[str]:
    """:param env_ids: one env id or a sequence of them
    :return: a list of env ids
    """
    return _ids(env_ids, "env_ids")
