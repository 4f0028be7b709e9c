"""The report's settings and what it shows: which metric a score reads, and the panels (scopes) of a split."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from rims_rl.experiments.report.runs import HELDOUT, TRAIN, Run, env_scope, short_env, split_envs

#: The scores a report shows: stat -> its name in titles.
STAT_NAMES = {"return": "return", "success": "success rate"}


@dataclass(frozen=True)
class Options:
    """The report's settings (from the command line).

    :param greedy: use the greedy-action statistics
    :param final_evals: evaluations averaged into a run's final score
    :param reps: bootstrap resamples
    :param seed: seed of the bootstraps
    :param baseline: the core every other model is compared with (``run_info["core"]``)
    :param label_by: key prefixes of the overrides that join a run's model label
        (:func:`~rims_rl.experiments.report.runs.label_runs`)
    """

    greedy: bool = False
    final_evals: int = 1
    reps: int = 2000
    seed: int = 0
    baseline: str = "lstm"
    label_by: tuple[str, ...] = ()

    def key(self, scope: str, stat: str) -> str:
        """:param scope: ``train``, ``heldout`` or an env scope
        :param stat: ``"return"`` or ``"success"``
        :return: the metric name, e.g. ``eval/heldout/greedy_success_rate``
        """
        name = {"return": "return_mean", "success": "success_rate"}[stat]
        return f"eval/{scope}/{'greedy_' if self.greedy else ''}{name}"

    def score(self, run: Run, scope: str, stat: str) -> float:
        """:param run: a run
        :param scope: ``train``, ``heldout`` or an env scope of ``run``
        :param stat: ``"return"`` or ``"success"``
        :return: the run's final score there (:meth:`Run.final` over ``final_evals``; NaN if never logged)
        """
        return run.final(self.key(scope, stat), self.final_evals)


class Panel(NamedTuple):
    """One panel of the curves: a title and, per run, the metric scope it reads.

    :param title: e.g. ``"train: MiniGrid-Empty-5x5-v0"``
    :param env_id: the env id it shows, or ``None`` for a pooled scope
    :param scope: ``run -> scope`` (``train``, ``heldout`` or the env's scope in that run)
    """

    title: str
    env_id: str | None
    scope: Callable[[Run], str]


def panels(runs: Sequence[Run]) -> list[Panel]:
    """The train panel (pooled ``train`` scope), one per held-out env id, and the pooled ``heldout`` scope
    when there are several held-out envs.

    :param runs: runs of one split
    """
    train, heldout = split_envs(runs)
    result = [Panel(f"train: {', '.join(short_env(e) for e in train)}", None, lambda run: TRAIN)]
    for env_id in heldout:
        result.append(Panel(f"held-out: {short_env(env_id)}", env_id, partial(env_scope, env_id=env_id, side=HELDOUT)))
    if len(heldout) > 1:
        result.append(Panel("held-out: all (pooled)", None, lambda run: HELDOUT))
    return result
