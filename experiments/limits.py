"""The bounds every command shares, in one place, and the argparse helpers that enforce them in the commands that
are not Hydra apps (``rims-rl-report``, ``benchmarks/*.py``). Standard library only, so a benchmark pays nothing
to import it; :mod:`rims_rl.experiments.schema` reads the same bounds for the Hydra apps.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

#: The most frames a run may have (``total_frames``, ``eval.every_frames``, ``checkpoint.every_frames``, after
#: ``budget.frames_scale``; a benchmark's ``--frames``): 10^12 frames take 11 days at a million frames/s, four orders
#: beyond any budget of the RIM papers (Atari: 5 x 10^7); a larger count is a typo (``1e99``), refused before
#: anything is built.
MAX_FRAMES = 10**12

#: The most of any other count (envs, episodes, threads, seeds per job, rollout steps, epochs, batch and sequence
#: lengths, bootstrap resamples, benchmark iterations): a million of any of them is beyond one machine.
MAX_COUNT = 10**6

#: The largest seed: numpy's seeds are 32-bit.
MAX_SEED = 2**32 - 1


def count(minimum: int = 1, maximum: int = MAX_COUNT) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number in ``[minimum, maximum]`` (``1e3`` is accepted).

    >>> count()("1e3"), count(0, 9)("9")
    (1000, 9)
    >>> count()("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a whole number in [1, 1000000], got '0'
    """

    def parse(text: str) -> int:
        expected = f"expected a whole number in [{minimum}, {maximum}], got {text!r}"
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(expected) from None
        if not (math.isfinite(value) and value.is_integer() and minimum <= value <= maximum):
            raise argparse.ArgumentTypeError(expected)
        return int(value)

    parse.__name__ = "count"  # argparse names the type in some messages
    return parse


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose usage errors are one line, ``<prog>: error: <message>``, exit
    status 2, as the Hydra apps' (``rims_rl.experiments.config.fail``); ``--help`` still prints the usage."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
        sys.exit(2)
