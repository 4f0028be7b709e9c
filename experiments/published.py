"""Published reference numbers that ``rims-rl-report`` prints beside ours.

Each :class:`Published` set is keyed ``split -> env id -> model label``; the labels are those of
:func:`rims_rl.experiments.config.model_label`, so a run trained with the matching preset (e.g. ``experiment=dido_empty
model=dido_rim_k3``, label ``rim64_u4_k3``) lines up with its reference number.

>>> DIDO_TABLE.values["empty"]["MiniGrid-Empty-16x16-v0"]["lstm64"]
0.84
>>> [p.name for p in for_split("doorkey")]
['dido_table']
>>> for_split("novel_distractors")
[]
"""

from __future__ import annotations

from typing import NamedTuple


class Published(NamedTuple):
    """A set of published numbers.

    :param name: short name (the experiment preset that reproduces its protocol)
    :param source: where the numbers come from
    :param metric: what they measure, in words
    :param values: ``split -> env id -> model label -> value``
    """

    name: str
    source: str
    metric: str
    values: dict[str, dict[str, dict[str, float]]]


def _row(rim_k3: float, rim_k2: float, lstm: float) -> dict[str, float]:
    return {"rim64_u4_k3": rim_k3, "rim64_u4_k2": rim_k2, "lstm64": lstm}


#: The MiniGrid table of the dido1998/Recurrent-Independent-Mechanisms README (PPO, 16 envs x 128 steps; LSTM with
#: 64 hidden units, RIMs with 4 units of 16, 3 or 2 active): mean return, no seeds or confidence intervals given.
#: Protocol: ``configs/experiment/dido_table.yaml``; budgets: ``dido_empty``, ``dido_multiroom``, ``dido_doorkey``.
DIDO_TABLE = Published(
    name="dido_table",
    source="dido1998/Recurrent-Independent-Mechanisms README, MiniGrid table (no seeds or CIs given)",
    metric="mean return",
    values={
        "empty": {
            "MiniGrid-Empty-5x5-v0": _row(0.91, 0.92, 0.80),
            "MiniGrid-Empty-16x16-v0": _row(0.92, 0.95, 0.84),
        },
        "multiroom": {
            "MiniGrid-MultiRoom-N2-S4-v0": _row(0.81, 0.81, 0.82),
            "MiniGrid-MultiRoom-N4-S5-v1": _row(0.66, 0.10, 0.04),
            "MiniGrid-MultiRoom-N6-v0": _row(0.05, 0.00, 0.00),
        },
        "doorkey": {
            "MiniGrid-DoorKey-5x5-v0": _row(0.90, 0.85, 0.90),
            "MiniGrid-DoorKey-6x6-v0": _row(0.68, 0.62, 0.63),
            "MiniGrid-DoorKey-8x8-v0": _row(0.38, 0.29, 0.35),
            "MiniGrid-DoorKey-16x16-v0": _row(0.18, 0.13, 0.12),
        },
    },
)

#: Every published set the report knows.
PUBLISHED: tuple[Published, ...] = (DIDO_TABLE,)


def for_split(split: str) -> list[Published]:
    """:param split: a split name, e.g. ``"doorkey"``
    :return: the published sets with numbers for that split
    """
    return [p for p in PUBLISHED if split in p.values]
