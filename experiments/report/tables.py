"""The tables of a report: final scores per model and scope (IQM with a 95% CI, mean, std), the probability that
each model beats the baseline on the held-out envs, and their CSV files."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from experiments.published import for_split
from experiments.report.options import STAT_NAMES, Options, Panel
from experiments.report.runs import HELDOUT, TRAIN, Run, env_scope, split_envs
from experiments.report.stats import Estimate, iqm, probability_of_improvement


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
    values = np.array([run.final(opts.key(panel.scope(run), stat), opts.final_evals) for run in group])
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
    published = {}
    for ref in for_split(split):
        for env_id, by_model in ref.values[split].items():
            for label, value in by_model.items():
                published.setdefault((env_id, label), value)
    scopes: list[Panel] = [
        Panel("train", None, lambda run: TRAIN),
        Panel("heldout", None, lambda run: HELDOUT),
        *[Panel(e, e, lambda run, e=e: env_scope(run, e, "train")) for e in train],
        *[Panel(e, e, lambda run, e=e: env_scope(run, e, HELDOUT)) for e in heldout],
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
                [
                    [run.final(opts.key(env_scope(run, e, HELDOUT), stat), opts.final_evals) for e in heldout]
                    for run in groups[label]
                ]
            ).reshape(len(groups[label]), len(heldout))
            matrices[label] = matrix[~np.isnan(matrix).any(axis=1)]
        for x in models:
            for y in baselines:
                if len(matrices[x]) and len(matrices[y]) and len(heldout):
                    estimate = probability_of_improvement(matrices[x], matrices[y], opts.reps, opts.seed)
                    rows.append(Improvement(x, y, stat, estimate, len(heldout)))
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


def final_records(rows: Iterable[FinalRow]) -> list[tuple[Any, ...]]:
    """:return: the rows as :data:`FINAL_HEADER` tuples (for the CSV file and W&B)"""
    return [
        (r.model, r.scope, r.stat, r.iqm.value, r.iqm.low, r.iqm.high, r.mean, r.std, r.n, r.published) for r in rows
    ]


def improvement_records(rows: Iterable[Improvement]) -> list[tuple[Any, ...]]:
    """:return: the rows as :data:`IMPROVEMENT_HEADER` tuples (for the CSV file and W&B)"""
    return [(r.x, r.y, r.stat, r.estimate.value, r.estimate.low, r.estimate.high, r.estimate.n, r.tasks) for r in rows]


def write_tables(split: str, final: Sequence[FinalRow], improvement: Sequence[Improvement], out: Path) -> list[Path]:
    """Write ``<split>_final.csv`` and ``<split>_improvement.csv``.

    :return: the written files
    """
    return [
        write_csv(out / f"{split}_final.csv", FINAL_HEADER, final_records(final)),
        write_csv(out / f"{split}_improvement.csv", IMPROVEMENT_HEADER, improvement_records(improvement)),
    ]
