"""The tables of a report: final scores per model and scope (IQM with a 95% CI, mean, std), the probability that
each model beats the baseline on the held-out envs, the unit selection of the models whose cores report their
active units (switch rate, set entropy, static runs), and their CSV files."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rims_rl.experiments.published import for_split
from rims_rl.experiments.report.options import STAT_NAMES, Options, Panel
from rims_rl.experiments.report.runs import HELDOUT, TRAIN, Run, env_scope, split_envs
from rims_rl.experiments.report.stats import Estimate, iqm, probability_of_improvement


class FinalRow(NamedTuple):
    """One line of a split's final-score table.

    :param model: model label
    :param scope: ``train``, ``heldout`` or an env id
    :param stat: ``return`` or ``success``
    :param iqm: IQM with its 95% CI
    :param mean: mean over seeds
    :param std: standard deviation over seeds (0 with one seed)
    :param n: seeds
    :param published: published value for this env and model, or ``None``
    """

    model: str
    scope: str
    stat: str
    iqm: Estimate
    mean: float
    std: float
    n: int
    published: float | None


def final_scores(group: Sequence[Run], panel: Panel, stat: str, opts: Options) -> np.ndarray:
    """:return: ``(N,)`` final scores of the runs that logged this panel's metric"""
    values = np.array([opts.score(run, panel.scope(run), stat) for run in group])
    return values[~np.isnan(values)]


def final_table(split: str, groups: dict[str, list[Run]], opts: Options) -> list[FinalRow]:
    """Final return and success rate per model, for the pooled train and held-out scopes and each env id.

    :param split: the split's name (to look up published numbers)
    :param groups: label -> runs
    :param opts: report options
    :return: rows, ordered by stat, scope (train, heldout, envs), model
    """
    runs = [run for group in groups.values() for run in group]
    train, heldout = split_envs(runs)
    published: dict[tuple[str, str], float] = {}
    for source in for_split(split):
        for env_id, by_model in source.values[split].items():
            for label, value in by_model.items():
                published.setdefault((env_id, label), value)
    scopes: list[Panel] = [
        Panel("train", None, lambda run: TRAIN),
        Panel("heldout", None, lambda run: HELDOUT),
        *[Panel(e, e, partial(env_scope, env_id=e, side="train")) for e in train],
        *[Panel(e, e, partial(env_scope, env_id=e, side=HELDOUT)) for e in heldout],
    ]
    rows = []
    for stat in STAT_NAMES:
        for panel in scopes:
            for label, group in groups.items():
                scores = final_scores(group, panel, stat, opts)
                if not len(scores):
                    continue
                ref = published.get((panel.env_id, label)) if stat == "return" and panel.env_id else None
                estimate = iqm(scores[:, None], opts.reps, opts.seed)
                rows.append(
                    FinalRow(
                        label, panel.title, stat, estimate, float(scores.mean()), float(scores.std()), len(scores), ref
                    )
                )
    return rows


class Improvement(NamedTuple):
    """P(model X beats model Y) on the held-out envs.

    :param x: the model's label
    :param y: the baseline model's label
    :param stat: ``return`` or ``success``
    :param estimate: the probability with its CI
    :param tasks: held-out env ids it averages over
    """

    x: str
    y: str
    stat: str
    estimate: Estimate
    tasks: int


def improvement_table(groups: dict[str, list[Run]], opts: Options) -> list[Improvement]:
    """P(model beats baseline) on the held-out envs, for every model against every model of the baseline core
    (``opts.baseline``, the ``core`` of ``run_info.json``), averaged over the held-out env ids (runs lacking one
    of them are left out of that comparison).

    :param groups: label -> runs
    :param opts: report options
    """
    runs = [run for group in groups.values() for run in group]
    _, heldout = split_envs(runs)
    baselines = [label for label, group in groups.items() if group[0].info.get("core") == opts.baseline]
    models = [label for label in groups if label not in baselines]
    rows = []
    for stat in STAT_NAMES:
        matrices = {}
        for label in models + baselines:
            matrix = np.array(
                [[opts.score(run, env_scope(run, e, HELDOUT), stat) for e in heldout] for run in groups[label]]
            ).reshape(len(groups[label]), len(heldout))
            matrices[label] = matrix[~np.isnan(matrix).any(axis=1)]
        for x in models:
            for y in baselines:
                if len(matrices[x]) and len(matrices[y]) and len(heldout):
                    estimate = probability_of_improvement(matrices[x], matrices[y], opts.reps, opts.seed)
                    rows.append(Improvement(x, y, stat, estimate, len(heldout)))
    return rows


#: A run whose switch rate at its last evaluation is below this on the train and on the held-out envs has a
#: "static selection" (:func:`static_selection`).
STATIC_SWITCH_RATE = 0.01
#: The selection statistics of :mod:`rims_rl.experiments.eval_loop` the selection table reports.
SELECTION_STATS = ("switch_rate", "selection_entropy")


def logs_units(run: Run) -> bool:
    """Whether a run's core reported its active units (it logged unit activity or switch rates)."""
    return any(k.startswith("eval/unit_activity/") or k == "eval/switch_rate" for row in run.rows for k in row)


def static_selection(run: Run) -> bool | None:
    """:return: whether the run's switch rate at its last evaluation is below :data:`STATIC_SWITCH_RATE` on both the
    train and the held-out envs, or ``None`` when it did not log switch rates (a run from before they were
    logged, or a core that does not report units)
    """
    rates = [run.final(f"eval/{scope}/switch_rate") for scope in (TRAIN, HELDOUT)]
    if any(np.isnan(rates)):
        return None
    return all(rate < STATIC_SWITCH_RATE for rate in rates)


class SelectionRow(NamedTuple):
    """The unit selection of one model whose core reports its active units, at each run's last evaluation.

    :param model: model label
    :param runs: its runs
    :param logged: the runs that logged switch rates (older runs did not)
    :param means: ``(scope, stat) -> mean over the logged runs`` for scope ``train``, ``heldout`` and stat in
        :data:`SELECTION_STATS`
    :param static: the logged runs with a static selection (:func:`static_selection`)
    """

    model: str
    runs: int
    logged: int
    means: dict[tuple[str, str], float]
    static: int


def selection_table(groups: dict[str, list[Run]]) -> list[SelectionRow]:
    """The selection of every model that has a run whose core reports units (models without any are left out).

    :param groups: label -> runs
    :return: one row per such model, in label order
    """
    rows = []
    for label, group in groups.items():
        shown = [run for run in group if logs_units(run)]
        if not shown:
            continue
        logged = [run for run in shown if static_selection(run) is not None]
        means = {
            (scope, stat): float(np.mean([run.final(f"eval/{scope}/{stat}") for run in logged])) if logged else np.nan
            for scope in (TRAIN, HELDOUT)
            for stat in SELECTION_STATS
        }
        rows.append(SelectionRow(label, len(shown), len(logged), means, sum(bool(static_selection(r)) for r in logged)))
    return rows


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV file with a header row."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


FINAL_HEADER = ("model", "scope", "stat", "iqm", "iqm_low", "iqm_high", "mean", "std", "n_seeds", "published")
IMPROVEMENT_HEADER = ("x", "y", "stat", "probability", "low", "high", "n_min", "heldout_envs")
SELECTION_HEADER = (
    "model",
    *[f"{scope}_{stat}_mean" for scope in (TRAIN, HELDOUT) for stat in SELECTION_STATS],
    "static_runs",
    "logged_runs",
    "runs",
)


def final_records(rows: Iterable[FinalRow]) -> list[tuple[Any, ...]]:
    """:return: the rows as :data:`FINAL_HEADER` tuples (for the CSV file and W&B)"""
    return [
        (r.model, r.scope, r.stat, r.iqm.value, r.iqm.low, r.iqm.high, r.mean, r.std, r.n, r.published) for r in rows
    ]


def improvement_records(rows: Iterable[Improvement]) -> list[tuple[Any, ...]]:
    """:return: the rows as :data:`IMPROVEMENT_HEADER` tuples (for the CSV file and W&B)"""
    return [(r.x, r.y, r.stat, r.estimate.value, r.estimate.low, r.estimate.high, r.estimate.n, r.tasks) for r in rows]


def selection_records(rows: Iterable[SelectionRow]) -> list[tuple[Any, ...]]:
    """:return: the rows as :data:`SELECTION_HEADER` tuples (for the CSV file and W&B); means of models with no
    logged run are ``None`` (empty in the CSV file)"""
    return [
        (
            r.model,
            *[
                None if np.isnan(r.means[scope, stat]) else r.means[scope, stat]
                for scope in (TRAIN, HELDOUT)
                for stat in SELECTION_STATS
            ],
            r.static,
            r.logged,
            r.runs,
        )
        for r in rows
    ]


def write_tables(
    split: str,
    final: Sequence[FinalRow],
    improvement: Sequence[Improvement],
    selection: Sequence[SelectionRow],
    out: Path,
) -> list[Path]:
    """Write ``<split>_final.csv``, ``<split>_improvement.csv`` and, when a model reports units,
    ``<split>_selection.csv``.

    :return: the written files
    """
    paths = [
        write_csv(out / f"{split}_final.csv", FINAL_HEADER, final_records(final)),
        write_csv(out / f"{split}_improvement.csv", IMPROVEMENT_HEADER, improvement_records(improvement)),
    ]
    if selection:
        paths.append(write_csv(out / f"{split}_selection.csv", SELECTION_HEADER, selection_records(selection)))
    return paths
