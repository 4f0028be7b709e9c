"""One split's report: its runs grouped by model, the figures drawn and the tables written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from rims_rl.experiments.report.figures import Drawn, draw_figures
from rims_rl.experiments.report.options import Options
from rims_rl.experiments.report.runs import Run, label_runs
from rims_rl.experiments.report.tables import (
    FinalRow,
    Improvement,
    SelectionRow,
    final_table,
    improvement_table,
    selection_table,
    write_tables,
)


class SplitReport(NamedTuple):
    """What the report computed for one split.

    :param split: the split's name
    :param groups: model label -> runs
    :param final: the final-score table
    :param improvement: the probability-of-improvement table
    :param selection: the unit-selection table (models whose cores report units)
    :param figures: the figures drawn, in :data:`~rims_rl.experiments.report.figures.FIGURES` order
    :param tables: the CSV files
    """

    split: str
    groups: dict[str, list[Run]]
    final: list[FinalRow]
    improvement: list[Improvement]
    selection: list[SelectionRow]
    figures: list[Drawn]
    tables: list[Path]


def report_split(split: str, runs: Sequence[Run], opts: Options, out: Path) -> SplitReport:
    """Figures, tables and CSV files of one split.

    :param split: the split's name
    :param runs: its runs
    :param opts: report options
    :param out: output directory
    """
    groups = label_runs(runs, opts.label_by)
    figures = draw_figures(split, groups, opts, out)
    final = final_table(split, groups, opts)
    improvement = improvement_table(groups, opts)
    selection = selection_table(groups)
    tables = write_tables(split, final, improvement, selection, out)
    return SplitReport(split, groups, final, improvement, selection, figures, tables)
