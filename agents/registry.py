"""The algorithm registry: one dictionary of the learning algorithms by name, read by ``experiments`` (config
checks, error messages, building and loading agents).

>>> from rims_rl.agents.registry import ALGORITHMS
>>> sorted(ALGORITHMS)
['a2c', 'ppo']
"""

from __future__ import annotations

from rims_rl.agents.a2c import RecurrentA2C
from rims_rl.agents.ppo import RecurrentPPO

__all__ = ["ALGORITHMS", "get_algorithm"]

#: The registered algorithms: name (``agent.algo`` in configs) -> class.
ALGORITHMS: dict[str, type[RecurrentPPO]] = {"ppo": RecurrentPPO, "a2c": RecurrentA2C}


def get_algorithm(name: str) -> type[RecurrentPPO]:
    """:param name: a registered algorithm name, e.g. ``"ppo"``
    :return: its class
    :raises ValueError: for an unknown name, listing the registered ones

    >>> get_algorithm("a2c").__name__
    'RecurrentA2C'
    >>> get_algorithm("dqn")
    Traceback (most recent call last):
    ...
    ValueError: unknown algorithm 'dqn'; expected one of 'ppo', 'a2c'
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {', '.join(map(repr, ALGORITHMS))}")
    return ALGORITHMS[name]
