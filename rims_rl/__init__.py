"""rims_rl: Recurrent Independent Mechanisms with the ``nn.LSTM`` / ``nn.GRU`` interface, plus LSTM/GRU cores.

``RIM(600, 300, num_units=6, k=4)`` replaces ``nn.LSTM(600, 300)``. Every core also accepts ``episode_starts`` to
zero the state of samples where a new episode begins, which is what reinforcement learning needs.

The public names load torch on first use (PEP 562), so ``import rims_rl.jax`` (the JAX RIM) never loads torch, and
``import rims_rl`` never loads jax.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what __getattr__ provides, for type checkers
    from rims_rl.cores import (
        CORE_SURFACE,
        CORES,
        Core,
        GRUCore,
        LSTMCore,
        check_constructor,
        check_core,
        make_core,
        register_core,
        resolve_core,
    )
    from rims_rl.rim import RIM, RIMCell
    from rims_rl.sequence import State, map_state, reset_state

__all__ = [
    "CORES",
    "CORE_SURFACE",
    "RIM",
    "Core",
    "GRUCore",
    "LSTMCore",
    "RIMCell",
    "State",
    "check_constructor",
    "check_core",
    "make_core",
    "map_state",
    "register_core",
    "reset_state",
    "resolve_core",
]

_TORCH_MODULES = ("rims_rl.sequence", "rims_rl.rim", "rims_rl.cores")


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in map(importlib.import_module, _TORCH_MODULES):
            if name in vars(module):
                globals()[name] = value = vars(module)[name]  # later lookups skip this function
                return value
    raise AttributeError(f"module 'rims_rl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
