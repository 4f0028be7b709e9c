"""Plain reference computations shared by the RIM tests (``test_rim.py``, ``test_rim_variants.py``)."""

from __future__ import annotations

import torch
from torch import Tensor


def unit_recurrence(cell: str, gates_x: Tensor, gates_h: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor | None]:
    """One unit's LSTM or GRU candidate from its gate pre-activations, written out as torch documents the cells.

    :param cell: ``"lstm"`` (gates i, f, o, g) or ``"gru"`` (gates r, z, n)
    :param gates_x: ``(B, G)``, the input-to-gate part, its bias included
    :param gates_h: ``(B, G)``, the hidden-to-gate part, its bias included
    :param h: ``(B, s)``, the unit's state
    :param c: ``(B, s)``, the unit's cell state (read by the LSTM only)
    :return: the candidate ``h`` and ``c`` (``None`` for a GRU), ``(B, s)`` each
    """
    s = h.shape[-1]
    if cell == "lstm":
        i, f, o, g = (gates_x + gates_h).split(s, -1)
        new_c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(new_c), new_c
    (xr, xz, xn), (hr, hz, hn) = gates_x.split(s, -1), gates_h.split(s, -1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    return (1 - z) * torch.tanh(xn + r * hn) + z * h, None
