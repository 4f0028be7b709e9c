"""Conversion between :class:`rims_rl.RIM` (torch) and :class:`rims_rl.jax.RIM` (Flax).

Both keep the same parameters under the same names and shapes, so conversion is a copy: torch's
``cells.{l}.{name}`` is Flax's ``params["cells_{l}"][name]``. Nothing here imports torch at module level;
:func:`to_torch` imports :mod:`rims_rl.rim` when called.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from rims_rl.jax.rim import RIM

if TYPE_CHECKING:
    import rims_rl

_SEQUENCE_ARGUMENTS = ("hidden_size", "num_units", "k", "cell", "num_layers", "batch_first", "dropout")
"""Arguments that :class:`rims_rl.RIM` keeps on itself; the others are kept on each of its cells."""
_ARGUMENTS = tuple(
    f.name for f in dataclasses.fields(RIM) if f.name not in ("deterministic", "param_dtype", "parent", "name")
)
"""The arguments the two modules share: the Flax module's fields less its own."""


def from_torch(rim: rims_rl.RIM) -> tuple[RIM, dict[str, Any]]:
    """A Flax :class:`~rims_rl.jax.RIM` configured like ``rim``, and a copy of ``rim``'s parameters.

    ``module.apply(variables, x, hx, episode_starts=starts)`` then returns what ``rim(x, hx,
    episode_starts=starts)`` returns in ``eval()`` mode (arrays for tensors, same shapes); pass
    ``deterministic=False`` and a ``"dropout"`` rng for train-mode dropout.

    :return: ``(module, variables)``, ``variables = {"params": {"cells_0": {...}, ...}}``.
    :raises ValueError: if ``rim`` sets an option of :data:`rims_rl.rim.PAPER` (the authors' variants): the JAX RIM
        implements the paper's version only.

    >>> import torch, jax.numpy as jnp
    >>> from rims_rl import RIM as TorchRIM
    >>> torch_rim = TorchRIM(10, 24, num_units=4, k=2).eval()
    >>> module, variables = from_torch(torch_rim)
    >>> x = torch.randn(5, 3, 10)
    >>> out, (h, c) = module.apply(variables, jnp.asarray(x.numpy()))
    >>> bool(jnp.allclose(out, torch_rim(x)[0].detach().numpy(), atol=1e-5))
    True
    """
    from rims_rl.rim import PAPER

    changed = ", ".join(f"{n}={getattr(rim, n)!r}" for n, v in PAPER.items() if getattr(rim, n) != v)
    if changed:
        raise ValueError(f"expected a torch RIM with the paper's options (the JAX RIM has no others), got {changed}")
    cell = rim.cells[0]
    module = RIM(
        **{name: getattr(rim if name in _SEQUENCE_ARGUMENTS else cell, name) for name in _ARGUMENTS},
        param_dtype=jnp.dtype(str(cell.weight_hh.dtype).removeprefix("torch.")),
    )
    params = {
        f"cells_{layer}": {name: jnp.asarray(p.detach().cpu().numpy()) for name, p in layer_cell.named_parameters()}
        for layer, layer_cell in enumerate(rim.cells)
    }
    return module, {"params": params}


def to_torch(module: RIM, variables: dict[str, Any]) -> rims_rl.RIM:
    """A :class:`rims_rl.RIM` configured like ``module``, holding a copy of ``variables``' parameters (on CPU).

    >>> import jax, jax.numpy as jnp
    >>> module = RIM(24, num_units=4, k=2, cell="gru")
    >>> variables = module.init(jax.random.key(0), jnp.ones((5, 3, 10)))
    >>> to_torch(module, variables)
    RIM(
      10, 24, num_units=4, k=2, cell='gru'
      (cells): ModuleList(...)
    )
    """
    import torch

    from rims_rl.rim import RIM as TorchRIM

    params = variables["params"]
    first = np.asarray(params["cells_0"]["weight_key"])
    rim = TorchRIM(
        first.shape[0],
        **{name: getattr(module, name) for name in _ARGUMENTS},
        dtype=getattr(torch, str(first.dtype)),
    )
    with torch.no_grad():
        for layer, cell in enumerate(rim.cells):
            for name, param in cell.named_parameters():
                param.copy_(torch.from_numpy(np.array(params[f"cells_{layer}"][name])))
    return rim
