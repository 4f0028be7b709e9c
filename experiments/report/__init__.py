"""``rims-rl-report``: generalization curves, final-score tables and a Markdown report from finished runs.

Examples::

    rims-rl-report multirun/2026-11-26_09-30-00                      # writes multirun/.../report/
    rims-rl-report multirun/sweep_a multirun/sweep_b --out report --final-evals 3 --greedy
    WANDB_MODE=online rims-rl-report multirun/sweep_a --wandb        # also log figures and tables to W&B

A run directory is any folder under the given directories that holds ``run_info.json`` and ``metrics.jsonl`` (as
written by ``rims-rl-train``); a report directory given as input brings the runs that report kept (its
``runs.jsonl``), so a committed report can be made again, or extended with new runs, once its run directories are
gone (``rims-rl-report results/x runs/new_seed --out results/x``). Runs are grouped by split
(``run_info["split"]``), then by model label (the agent is appended, ``lstm64 (a2c)``, when one split mixes agents);
each run is one sample (one seed).

What is written to ``--out`` (default ``<first dir>/report``), per split ``<s>``:

- the figures of :data:`rims_rl.experiments.report.figures.FIGURES`: ``<s>_return.{png,svg}``,
  ``<s>_success.{png,svg}``: generalization curves, one panel for the train envs (the pooled ``train`` scope), one per
  held-out env id (and the pooled ``heldout`` scope when there are several); one line per model: the mean across seeds
  of each seed's eval curve, interpolated linearly onto the frames that all seeds cover, with a 95% percentile-bootstrap
  band across seeds; ``<s>_unit_activity.{png,svg}`` (runs of cores that report their active units, such as RIMs):
  which units are active on each env at the last evaluation, one heatmap per model and seed;
  ``<s>_selection_raster.{png,svg}``: the episode each such run recorded at the end of training
  (:mod:`rims_rl.experiments.selection`), for the first seed of each model: active units per step, with the episode's
  events;
- ``<s>_final.csv``: final return and success rate per model and scope: IQM with a 95% stratified-bootstrap CI
  (rliable), mean, standard deviation and number of seeds; ``<s>_improvement.csv``: the probability that each
  model beats each model of the baseline core (``--baseline``, default ``lstm``) on the held-out envs (rliable,
  averaged over held-out env ids), with CI; ``<s>_selection.csv`` (models whose cores report units): train and
  held-out switch rate and set entropy at each run's last evaluation, mean over runs, and how many runs have a
  "static selection" (switch rate below 1% on both the train and the held-out envs; flagged in the runs table);
- ``report.md`` embedding all of it, the runs (seed, frames, final scores, W&B id) and, when published numbers
  exist for the split (:mod:`rims_rl.experiments.published`), those numbers beside ours;
- ``runs.jsonl`` (all splits): each run's info, overrides and eval rows
  (:func:`rims_rl.experiments.report.runs.save_runs`); the selection rasters need the run directories' recorded
  episodes.

"Final" is the mean of a run's last ``--final-evals`` evaluations (default 1: its last eval row). Scores are the
sampled-action statistics ``return_mean`` and ``success_rate`` unless ``--greedy`` picks the greedy-action ones.
With one seed a model's CI is its value (no spread to resample); the report says so.

The package has one module per job: :mod:`~rims_rl.experiments.report.runs` (reading runs),
:mod:`~rims_rl.experiments.report.stats` (statistics), :mod:`~rims_rl.experiments.report.options` (settings and panels),
:mod:`~rims_rl.experiments.report.figures`, :mod:`~rims_rl.experiments.report.tables`,
:mod:`~rims_rl.experiments.report.split` (one split's report), :mod:`~rims_rl.experiments.report.markdown`,
:mod:`~rims_rl.experiments.report.wandb_log` and :mod:`~rims_rl.experiments.report.cli`.
"""

from __future__ import annotations

from rims_rl.experiments.report.cli import build_report, main
from rims_rl.experiments.report.options import Options
from rims_rl.experiments.report.runs import ReportError, Run, find_runs, load_run
from rims_rl.experiments.report.stats import Band, Estimate, iqm, mean_curve, probability_of_improvement

__all__ = [
    "Band",
    "Estimate",
    "Options",
    "ReportError",
    "Run",
    "build_report",
    "find_runs",
    "iqm",
    "load_run",
    "main",
    "mean_curve",
    "probability_of_improvement",
]
