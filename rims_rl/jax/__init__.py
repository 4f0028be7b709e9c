"""RIMs in JAX: :class:`RIMCell`, a Flax cell in place of an LSTM/GRU cell, and :class:`RIM`, the sequence module,
numerically equal to :class:`rims_rl.RIM`; :func:`from_torch` / :func:`to_torch` convert between the two.

Needs the ``jax`` extra (``pip install -e ".[jax]"``). This subpackage imports jax and flax, never torch (the
converters take or return torch modules and import torch when called); ``import rims_rl`` never imports jax.
"""

from rims_rl.jax.convert import from_torch, to_torch
from rims_rl.jax.rim import RIM, RIMCell, torch_tie_order

__all__ = ["RIM", "RIMCell", "from_torch", "to_torch", "torch_tie_order"]
