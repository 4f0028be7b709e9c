"""``rims-rl-report``: the command line, and :func:`build_report`, which reads the runs, reports every split and
writes ``report.md``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rims_rl.experiments.limits import MAX_SEED, ArgumentParser, count
from rims_rl.experiments.report.markdown import markdown
from rims_rl.experiments.report.options import Options
from rims_rl.experiments.report.runs import PROG, ReportError, Run, find_runs, save_runs
from rims_rl.experiments.report.split import report_split
from rims_rl.experiments.report.wandb_log import log_wandb


def build_report(dirs: Sequence[Path], out: Path, opts: Options, wandb_project: str | None = None) -> Path:
    """Read the runs under ``dirs`` and write the report into ``out``, with the runs it was made from.

    :param dirs: sweep, run or report directories
    :param out: output directory (created)
    :param opts: report options
    :param wandb_project: also log to a new W&B run in this project
    :return: the path of ``report.md``
    :raises ReportError: on bad input
    """
    runs = find_runs(dirs)
    out.mkdir(parents=True, exist_ok=True)
    save_runs(runs, out)
    by_split: dict[str, list[Run]] = {}
    for run in runs:
        by_split.setdefault(run.split, []).append(run)
    reports = [report_split(split, by_split[split], opts, out) for split in sorted(by_split)]
    path = out / "report.md"
    path.write_text(markdown(reports, dirs, opts, out), encoding="utf-8")
    if wandb_project is not None:
        log_wandb(runs, reports, out, wandb_project)
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """:param argv: the arguments (``sys.argv[1:]`` when ``None``)"""
    parser = ArgumentParser(
        prog=PROG,
        description="Generalization curves, final-score tables (IQM with 95% CIs, rliable) and a Markdown report "
        "from rims-rl-train runs (folders with run_info.json and metrics.jsonl, searched recursively) and from the "
        "runs earlier reports kept (their runs.jsonl).",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="sweep, run or report directories")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <first DIR>/report)")
    parser.add_argument("--greedy", action="store_true", help="use the greedy-action statistics")
    parser.add_argument(
        "--final-evals",
        type=count(),
        default=1,
        metavar="N",
        help="a run's final score is the mean of its last N evals",
    )
    parser.add_argument("--reps", type=count(), default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=count(0, MAX_SEED), default=0, help="seed of the bootstraps")
    parser.add_argument(
        "--baseline", default="lstm", metavar="CORE", help="compare every model with the models of this core (lstm)"
    )
    parser.add_argument(
        "--label-by",
        nargs="+",
        default=[],
        metavar="PREFIX",
        help="add the overrides a run was started with whose key begins with PREFIX to its model label, e.g. "
        "--label-by agent. (runs that differ only in those get their own rows and curves)",
    )
    parser.add_argument("--wandb", action="store_true", help="log figures and tables to a new W&B run (WANDB_MODE)")
    parser.add_argument("--wandb-project", default="rims-rl", help="W&B project for --wandb (default rims-rl)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``rims-rl-report``); bad input exits with status 2 and one line on stderr."""
    args = parse_args(argv)
    out = args.out if args.out is not None else args.dirs[0] / "report"
    opts = Options(
        greedy=args.greedy,
        final_evals=args.final_evals,
        reps=args.reps,
        seed=args.seed,
        baseline=args.baseline,
        label_by=tuple(args.label_by),
    )
    try:
        path = build_report(args.dirs, out, opts, args.wandb_project if args.wandb else None)
    except ReportError as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(path)


if __name__ == "__main__":
    main()
