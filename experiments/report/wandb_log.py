"""Logging a report's figures and tables to a new W&B run."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rims_rl.experiments.report.runs import PROG, Run
from rims_rl.experiments.report.split import SplitReport
from rims_rl.experiments.report.tables import (
    FINAL_HEADER,
    IMPROVEMENT_HEADER,
    SELECTION_HEADER,
    final_records,
    improvement_records,
    selection_records,
)


def log_wandb(runs: Sequence[Run], reports: Sequence[SplitReport], out: Path, project: str) -> str | None:
    """Log the figures and tables to a new W&B run (``job_type="report"``), when the runs had W&B ids.

    The mode comes from ``WANDB_MODE`` (default ``offline``); the run's files go to ``<out>/wandb``.

    :param runs: all runs of the report
    :param reports: the per-split results
    :param out: the output directory
    :param project: the W&B project
    :return: the new run's id, or ``None`` when no run had a W&B id
    """
    ids = sorted({str(run.info["wandb_id"]) for run in runs if run.info.get("wandb_id")})
    if not ids:
        print(f"{PROG}: warning: --wandb: no run has a W&B id; nothing logged", file=sys.stderr)
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    groups = {run.info.get("wandb_group") for run in runs} - {None}
    wb = wandb.init(
        project=project,
        job_type="report",
        group=groups.pop() if len(groups) == 1 else None,
        dir=str(out),
        mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]  # checked by wandb
        config={"runs": ids, "splits": [rep.split for rep in reports]},
        settings=wandb.Settings(silent=True, console="off", disable_git=True, save_code=False),
    )
    logged: dict[str, Any] = {}
    for rep in reports:
        for figure in rep.figures:
            logged[f"report/{figure.png.stem}"] = wandb.Image(str(figure.png))
        logged[f"report/{rep.split}_final"] = wandb.Table(
            columns=list(FINAL_HEADER), data=[list(row) for row in final_records(rep.final)]
        )
        logged[f"report/{rep.split}_improvement"] = wandb.Table(
            columns=list(IMPROVEMENT_HEADER), data=[list(row) for row in improvement_records(rep.improvement)]
        )
        if rep.selection:
            logged[f"report/{rep.split}_selection"] = wandb.Table(
                columns=list(SELECTION_HEADER), data=[list(row) for row in selection_records(rep.selection)]
            )
    wb.log(logged)
    run_id = str(wb.id)
    wb.finish()
    return run_id
