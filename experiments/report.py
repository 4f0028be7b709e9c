"""``rims-rl-report``: generalization curves, final-score tables and a Markdown report from finished runs.

Examples::

    rims-rl-report multirun/2026-11-26_09-30-00                      # writes multirun/.../report/
    rims-rl-report multirun/sweep_a multirun/sweep_b --out report --final-evals 3 --greedy
    WANDB_MODE=online rims-rl-report multirun/sweep_a --wandb        # also log figures and tables to W&B

A run directory is any folder under the given directories that holds ``run_info.json`` and ``metrics.jsonl`` (as
written by ``rims-rl-train``). Runs are grouped by split (``run_info["split"]``), then by model label (the agent is
appended, ``lstm64 (a2c)``, when one split mixes agents); each run is one sample (one seed).

What is written to ``--out`` (default ``<first dir>/report``), per split ``<s>``:

- ``<s>_return.{png,svg}``, ``<s>_success.{png,svg}``: generalization curves, one panel for the train envs (the
  pooled ``train`` scope), one per held-out env id (and the pooled ``heldout`` scope when there are several);
  one line per model: the mean across seeds of each seed's eval curve, interpolated linearly onto the frames
  that all seeds cover, with a 95% percentile-bootstrap band across seeds;
- ``<s>_unit_activity.{png,svg}`` (RIM runs): which units are active on each env at the last evaluation, one
  heatmap per model and seed;
- ``<s>_final.csv``: final return and success rate per model and scope: IQM with a 95% stratified-bootstrap CI
  (rliable), mean, standard deviation and number of seeds; ``<s>_improvement.csv``: the probability that each
  ``rim*`` model beats each ``lstm*`` model on the held-out envs (rliable, averaged over held-out env ids), with CI;
- ``report.md`` embedding all of it, the runs (seed, frames, W&B id) and, when published numbers exist for the
  split (:mod:`experiments.published`), those numbers beside ours.

"Final" is the mean of a run's last ``--final-evals`` evaluations (default 1: its last eval row). Scores are the
sampled-action statistics ``return_mean`` and ``success_rate`` unless ``--greedy`` picks the greedy-action ones.
With one seed a model's CI is its value (no spread to resample); the report says so.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from experiments.metrics import METRICS_FILE, RUN_INFO_FILE, read_metrics
from experiments.published import Published, for_split

PROG = "rims-rl-report"
INFO_KEYS = ("split", "model", "seed", "train_envs", "heldout_envs")
#: Pooled scopes of the eval metrics (``eval/<scope>/<stat>``); the other scopes are env ids.
TRAIN, HELDOUT = "train", "heldout"
STAT_NAMES = {"return": "return", "success": "success rate"}


class ReportError(ValueError):
    """Bad input to the report (no runs, a malformed run directory); the message is one line."""


# --- reading runs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One finished (or partial) training run.

    :param path: its directory
    :param info: its ``run_info.json``
    :param rows: its ``metrics.jsonl`` rows, in file order
    """

    path: Path
    info: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def split(self) -> str:
        return str(self.info["split"])

    @property
    def seed(self) -> int:
        return int(self.info["seed"])

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """:param key: a metric, e.g. ``"eval/heldout/return_mean"``
        :return: ``(frames, values)``, both ``(E,)``, over the rows that have ``key``, by frame count
        """
        points = sorted((int(row["frames"]), float(row[key])) for row in self.rows if key in row)
        frames = np.array([p[0] for p in points], dtype=float)
        values = np.array([p[1] for p in points], dtype=float)
        return frames, values

    def final(self, key: str, final_evals: int = 1) -> float:
        """:param key: a metric
        :param final_evals: how many of the last evaluations to average
        :return: the mean of ``key`` over the run's last ``final_evals`` rows that have it (NaN if none)
        """
        _, values = self.curve(key)
        return float(values[-final_evals:].mean()) if len(values) else math.nan

    @property
    def last_eval_frames(self) -> int:
        frames, _ = self.curve(f"eval/{TRAIN}/return_mean")
        return int(frames[-1]) if len(frames) else 0


def find_runs(dirs: Sequence[Path]) -> list[Run]:
    """Every run directory under ``dirs`` (searched recursively), sorted by path.

    :param dirs: sweep or run directories
    :return: the runs, with at least one eval row each (runs without any are skipped with a warning)
    :raises ReportError: for a missing directory, one with no runs, or an unreadable run
    """
    runs: dict[Path, Run] = {}
    for directory in dirs:
        if not directory.is_dir():
            raise ReportError(f"{directory}: not a directory")
        found = sorted(p.parent for p in directory.rglob(RUN_INFO_FILE) if (p.parent / METRICS_FILE).is_file())
        if not found:
            raise ReportError(f"{directory}: no runs found (expected folders with {RUN_INFO_FILE} and {METRICS_FILE})")
        for path in found:
            run = load_run(path)
            if not any(f"eval/{TRAIN}/return_mean" in row for row in run.rows):
                print(f"{PROG}: warning: {path}: no evaluation rows yet; skipped", file=sys.stderr)
                continue
            runs[path.resolve()] = run
    if not runs:
        raise ReportError(f"{', '.join(map(str, dirs))}: no run has an evaluation row yet")
    return [runs[p] for p in sorted(runs)]


def load_run(path: Path) -> Run:
    """:param path: a run directory
    :return: the run
    :raises ReportError: if ``run_info.json`` lacks a key or a file is not valid JSON
    """
    try:
        info = json.loads((path / RUN_INFO_FILE).read_text(encoding="utf-8"))
        rows = read_metrics(path / METRICS_FILE)
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: invalid JSON ({err})") from None
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise ReportError(f"{path / RUN_INFO_FILE}: missing {', '.join(missing)}")
    return Run(path, info, rows)


def label_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Group the runs of one split by model label (``"lstm64"``; ``"lstm64 (a2c)"`` when agents are mixed).

    :param runs: runs of one split
    :return: label -> runs, labels in sorted order
    """
    mixed = len({run.info.get("agent") for run in runs}) > 1
    groups: dict[str, list[Run]] = {}
    for run in runs:
        label = str(run.info["model"])
        if mixed:
            label += f" ({run.info.get('agent')})"
        groups.setdefault(label, []).append(run)
    return {label: sorted(groups[label], key=lambda r: (r.seed, str(r.path))) for label in sorted(groups)}


def split_envs(runs: Sequence[Run]) -> tuple[list[str], list[str]]:
    """:param runs: runs of one split
    :return: ``(train env ids, held-out env ids)``, the union over the runs in first-seen order
    """
    train: dict[str, None] = {}
    heldout: dict[str, None] = {}
    for run in runs:
        train.update(dict.fromkeys(run.info["train_envs"]))
        heldout.update(dict.fromkeys(run.info["heldout_envs"]))
    return list(train), list(heldout)


def env_scope(run: Run, env_id: str, side: str) -> str:
    """The metric scope of ``env_id`` in ``run``: the id, or ``<id>@<side>`` when it is on both sides."""
    both = set(run.info["train_envs"]) & set(run.info["heldout_envs"])
    return f"{env_id}@{side}" if env_id in both else env_id


# --- statistics -------------------------------------------------------------------------------------------------


class Band(NamedTuple):
    """Mean curve across seeds with a bootstrap band.

    :param frames: ``(G,)`` common frame grid
    :param mean: ``(G,)`` mean across seeds
    :param low: ``(G,)`` lower bound of the 95% band (``mean`` with one seed)
    :param high: ``(G,)`` upper bound
    :param n: number of seeds
    """

    frames: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int


def mean_curve(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], reps: int, rng: np.random.Generator, size: float = 0.95
) -> Band | None:
    """Interpolate each seed's curve onto the frames all seeds cover, then average with a bootstrap band.

    The grid is every eval frame count of any seed between the latest first eval and the earliest last eval;
    seeds evaluated at the same frame counts are not interpolated at all.

    :param curves: per seed, ``(frames, values)``, each ``(E_i,)``
    :param reps: bootstrap resamples of the seeds
    :param rng: random generator
    :param size: band coverage
    :return: the band, or ``None`` when no seed has a point

    >>> seed_a = (np.array([0.0, 10.0]), np.array([0.0, 1.0]))
    >>> seed_b = (np.array([0.0, 5.0, 10.0]), np.array([0.0, 1.0, 1.0]))
    >>> band = mean_curve([seed_a, seed_b], reps=100, rng=np.random.default_rng(0))
    >>> band.frames.tolist(), band.mean.tolist(), band.n
    ([0.0, 5.0, 10.0], [0.0, 0.75, 1.0], 2)
    """
    curves = [(f, v) for f, v in curves if len(f)]
    if not curves:
        return None
    start = max(f[0] for f, _ in curves)
    stop = min(f[-1] for f, _ in curves)
    grid = np.unique(np.concatenate([f for f, _ in curves]))
    grid = grid[(grid >= start) & (grid <= stop)]
    if not len(grid):  # the seeds' eval ranges do not overlap: keep the last common point
        grid = np.array([stop])
    values = np.stack([np.interp(grid, f, v) for f, v in curves])  # (n, G)
    mean = values.mean(axis=0)
    if len(curves) < 2:
        return Band(grid, mean, mean.copy(), mean.copy(), 1)
    idx = rng.integers(0, len(curves), size=(reps, len(curves)))
    boot = values[idx].mean(axis=1)  # (reps, G)
    alpha = (1 - size) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha], axis=0)
    return Band(grid, mean, low, high, len(curves))


class Estimate(NamedTuple):
    """A point estimate with a confidence interval.

    :param value: the point estimate
    :param low: lower CI bound (``value`` when there is nothing to resample)
    :param high: upper CI bound
    :param n: runs (seeds) behind it; for a comparison, the smaller of the two groups
    """

    value: float
    low: float
    high: float
    n: int


@contextlib.contextmanager
def _quiet_arch() -> Iterator[None]:
    """Silence arch's FutureWarning about ``random_state`` (rliable 1.2 passes a ``RandomState``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
        yield


def iqm(scores: np.ndarray, reps: int, seed: int) -> Estimate:
    """Interquartile mean with a 95% stratified-bootstrap CI (rliable).

    :param scores: ``(N, M)`` final scores of N runs on M tasks
    :param reps: bootstrap resamples
    :param seed: seed of the bootstrap
    :return: the IQM; with one run the CI is the value

    >>> iqm(np.array([[0.5]]), reps=10, seed=0)
    Estimate(value=0.5, low=0.5, high=0.5, n=1)
    """
    from rliable import library, metrics

    value = float(metrics.aggregate_iqm(scores))
    if scores.shape[0] < 2:
        return Estimate(value, value, value, scores.shape[0])
    with _quiet_arch():
        _, intervals = library.get_interval_estimates(
            {"x": scores},
            lambda x: np.array([metrics.aggregate_iqm(x)]),
            reps=reps,
            random_state=np.random.RandomState(seed),
        )
    low, high = intervals["x"][:, 0]
    return Estimate(value, float(low), float(high), scores.shape[0])


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int, seed: int) -> Estimate:
    """P(X > Y) averaged over tasks, with a 95% CI from resampling the runs of each group independently (rliable).

    :param x: ``(N_x, M)`` final scores of model X
    :param y: ``(N_y, M)`` final scores of model Y on the same M tasks
    :param reps: bootstrap resamples
    :param seed: seed of the bootstrap
    :return: the probability; with one run on either side the CI is the value

    >>> probability_of_improvement(np.array([[1.0], [0.9]]), np.array([[0.1], [0.0]]), reps=10, seed=0).value
    1.0
    """
    from rliable import library, metrics

    value = float(metrics.probability_of_improvement(x, y))
    n = min(x.shape[0], y.shape[0])
    if n < 2:
        return Estimate(value, value, value, n)
    with _quiet_arch():
        _, intervals = library.get_interval_estimates(
            {"x,y": (x, y)},
            lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
            reps=reps,
            random_state=np.random.RandomState(seed),
        )
    low, high = intervals["x,y"][:, 0]
    return Estimate(value, float(low), float(high), n)


# --- the report -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """The report's settings (from the command line).

    :param greedy: use the greedy-action statistics
    :param final_evals: evaluations averaged into a run's final score
    :param reps: bootstrap resamples
    :param seed: seed of the bootstraps
    """

    greedy: bool = False
    final_evals: int = 1
    reps: int = 2000
    seed: int = 0

    def key(self, scope: str, stat: str) -> str:
        """:param scope: ``train``, ``heldout`` or an env scope
        :param stat: ``"return"`` or ``"success"``
        :return: the metric name, e.g. ``eval/heldout/greedy_success_rate``
        """
        name = {"return": "return_mean", "success": "success_rate"}[stat]
        return f"eval/{scope}/{'greedy_' if self.greedy else ''}{name}"


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
    result = [Panel(f"train: {', '.join(_short(e) for e in train)}", None, lambda run: TRAIN)]
    for env_id in heldout:
        result.append(Panel(f"held-out: {_short(env_id)}", env_id, lambda run, e=env_id: env_scope(run, e, HELDOUT)))
    if len(heldout) > 1:
        result.append(Panel("held-out: all (pooled)", None, lambda run: HELDOUT))
    return result


def _short(env_id: str) -> str:
    return env_id.removeprefix("MiniGrid-").removesuffix("-v0")


def plot_split(split: str, groups: dict[str, list[Run]], stat: str, opts: Options, out: Path) -> list[Path]:
    """Write ``<split>_<stat>.png`` and ``.svg``: one panel per :func:`panels`, one line per model.

    :param split: the split's name
    :param groups: label -> runs
    :param stat: ``"return"`` or ``"success"``
    :param opts: report options
    :param out: output directory
    :return: the written files
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run for group in groups.values() for run in group]
    shown = panels(runs)
    cols = min(len(shown), 4)
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    rng = np.random.default_rng(opts.seed)
    for ax, panel in zip(axes.flat, shown, strict=False):
        for i, (label, group) in enumerate(groups.items()):
            band = mean_curve([run.curve(opts.key(panel.scope(run), stat)) for run in group], opts.reps, rng)
            if band is None:
                continue
            color = colors[i % len(colors)]
            ax.plot(
                band.frames,
                band.mean,
                color=color,
                label=f"{label} (n={band.n})",
                marker="." if len(band.frames) < 3 else None,
            )
            if band.n > 1:
                ax.fill_between(band.frames, band.low, band.high, color=color, alpha=0.2, linewidth=0)
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel("frames")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(("greedy " if opts.greedy else "") + STAT_NAMES[stat])
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{split}: {STAT_NAMES[stat]}, mean across seeds, 95% bootstrap band", fontsize=10)
    fig.tight_layout()
    paths = [out / f"{split}_{stat}.{ext}" for ext in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths


def plot_unit_activity(split: str, groups: dict[str, list[Run]], out: Path) -> list[Path]:
    """Write ``<split>_unit_activity.png`` and ``.svg`` for the runs that log RIM unit activity.

    One heatmap per (RIM model, seed): rows are the envs (train first), columns the units, the colour is the
    fraction of steps a unit was active at the run's last evaluation. Seeds are not averaged: which unit learns
    what differs from seed to seed.

    :param split: the split's name
    :param groups: label -> runs
    :param out: output directory
    :return: the written files (none when no run logs unit activity)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(label, run, _last_activity(run)) for label, group in groups.items() for run in group]
    shown = [item for item in shown if item[2]]
    if not shown:
        return []
    train, heldout = split_envs([run for _, run, _ in shown])
    cols = min(len(shown), 3)
    rows = math.ceil(len(shown) / cols)
    height = 1.5 + 0.35 * (len(train) + len(heldout))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 2.0, height * rows), squeeze=False, layout="constrained")
    image = None
    for i, (ax, (label, run, last)) in enumerate(zip(axes.flat, shown, strict=False)):
        units = [k.removeprefix("eval/unit_activity/") for k in last if k.startswith("eval/unit_activity/")]
        envs = [(f"train: {_short(e)}", env_scope(run, e, TRAIN)) for e in train]
        envs += [(f"held-out: {_short(e)}", env_scope(run, e, HELDOUT)) for e in heldout]
        # Runs from before per-env activity was logged have only the pooled row.
        envs = [(name, f"eval/{scope}/") for name, scope in envs if f"eval/{scope}/unit_activity/{units[0]}" in last]
        envs = envs or [("all envs", "eval/")]
        grid = np.array([[last[f"{prefix}unit_activity/{unit}"] for unit in units] for _, prefix in envs])
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(units)), units, fontsize=7, rotation=45)
        ax.set_yticks(range(len(envs)), [name for name, _ in envs] if i % cols == 0 else [], fontsize=7)
        ax.set_title(f"{label}, seed {run.seed}", fontsize=9)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, label="fraction of steps active", shrink=0.8)
    fig.suptitle(f"{split}: RIM unit activity at the last evaluation", fontsize=10)
    paths = [out / f"{split}_unit_activity.{ext}" for ext in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def _last_activity(run: Run) -> dict[str, Any]:
    """The run's last eval row that has unit activity (``{}`` if none)."""
    return next((row for row in reversed(run.rows) if any(k.startswith("eval/unit_activity/") for k in row)), {})


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

    :param x: the RIM model's label
    :param y: the LSTM model's label
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
    """P(rim beats lstm) on the held-out envs, for every ``rim*`` vs every ``lstm*`` label, averaged over the
    held-out env ids (runs lacking one of them are left out of that comparison).

    :param groups: label -> runs
    :param opts: report options
    """
    runs = [run for group in groups.values() for run in group]
    _, heldout = split_envs(runs)
    rims = [label for label in groups if label.startswith("rim")]
    lstms = [label for label in groups if label.startswith("lstm")]
    rows = []
    for stat in STAT_NAMES:
        matrices = {}
        for label in rims + lstms:
            matrix = np.array(
                [
                    [run.final(opts.key(env_scope(run, e, HELDOUT), stat), opts.final_evals) for e in heldout]
                    for run in groups[label]
                ]
            ).reshape(len(groups[label]), len(heldout))
            matrices[label] = matrix[~np.isnan(matrix).any(axis=1)]
        for x in rims:
            for y in lstms:
                if len(matrices[x]) and len(matrices[y]) and len(heldout):
                    estimate = probability_of_improvement(matrices[x], matrices[y], opts.reps, opts.seed)
                    rows.append(Improvement(x, y, stat, estimate, len(heldout)))
    return rows


def _fmt(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


def _ci(est: Estimate) -> str:
    if est.n < 2:
        return f"{est.value:.3f} (n=1, no CI)" if est.n == 1 else "—"
    return f"{est.value:.3f} [{est.low:.3f}, {est.high:.3f}]"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV file with a header row."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


FINAL_HEADER = ("model", "scope", "stat", "iqm", "iqm_low", "iqm_high", "mean", "std", "n_seeds", "published")
IMPROVEMENT_HEADER = ("x", "y", "stat", "probability", "low", "high", "n_min", "heldout_envs")


class SplitReport(NamedTuple):
    """What the report computed for one split."""

    split: str
    groups: dict[str, list[Run]]
    final: list[FinalRow]
    improvement: list[Improvement]
    figures: list[Path]
    tables: list[Path]


def report_split(split: str, runs: Sequence[Run], opts: Options, out: Path) -> SplitReport:
    """Figures, tables and CSV files of one split.

    :param split: the split's name
    :param runs: its runs
    :param opts: report options
    :param out: output directory
    """
    groups = label_runs(runs)
    figures = [p for stat in STAT_NAMES for p in plot_split(split, groups, stat, opts, out)]
    figures += plot_unit_activity(split, groups, out)
    final = final_table(split, groups, opts)
    improvement = improvement_table(groups, opts)
    tables = [
        write_csv(
            out / f"{split}_final.csv",
            FINAL_HEADER,
            [
                (r.model, r.scope, r.stat, r.iqm.value, r.iqm.low, r.iqm.high, r.mean, r.std, r.n, r.published)
                for r in final
            ],
        ),
        write_csv(
            out / f"{split}_improvement.csv",
            IMPROVEMENT_HEADER,
            [
                (r.x, r.y, r.stat, r.estimate.value, r.estimate.low, r.estimate.high, r.estimate.n, r.tasks)
                for r in improvement
            ],
        ),
    ]
    return SplitReport(split, groups, final, improvement, figures, tables)


def markdown(reports: Sequence[SplitReport], dirs: Sequence[Path], opts: Options, out: Path) -> str:
    """The text of ``report.md``.

    :param reports: one per split
    :param dirs: the directories the runs came from
    :param opts: report options
    :param out: the output directory (links are relative to it)
    """
    kind = "greedy-action" if opts.greedy else "sampled-action"
    final = "its last evaluation" if opts.final_evals == 1 else f"the mean of its last {opts.final_evals} evaluations"
    lines = [
        "# rims-rl report",
        "",
        f"Runs from: {', '.join(f'`{d}`' for d in dirs)}.",
        "",
        f"Scores are {kind} statistics (`{opts.key('<scope>', 'return').split('/')[-1]}`, "
        f"`{opts.key('<scope>', 'success').split('/')[-1]}`). A run's final score is {final}. "
        "Curves: mean across seeds of each seed's eval curve (interpolated onto the frames all seeds cover) with a "
        "95% percentile-bootstrap band across seeds. Tables: interquartile mean (IQM) with a 95% stratified-bootstrap "
        f"CI ({opts.reps} resamples, rliable), mean and standard deviation across seeds. With one seed there is no CI.",
        "",
    ]
    for rep in reports:
        runs = [run for group in rep.groups.values() for run in group]
        train, heldout = split_envs(runs)
        lines += [
            f"## Split `{rep.split}`",
            "",
            f"Train: {', '.join(f'`{e}`' for e in train)}; held-out: {', '.join(f'`{e}`' for e in heldout)}.",
            "",
        ]
        for stat in STAT_NAMES:
            lines += [f"![{rep.split} {STAT_NAMES[stat]}]({rep.split}_{stat}.png)", ""]
        if any(p.name == f"{rep.split}_unit_activity.png" for p in rep.figures):
            lines += [f"![{rep.split} unit activity]({rep.split}_unit_activity.png)", ""]
        for stat, title in STAT_NAMES.items():
            lines += [f"### Final {title}: train and held-out (pooled)", ""]
            by = {(r.model, r.scope): r for r in rep.final if r.stat == stat}
            body = []
            for label in rep.groups:
                cells = [f"`{label}`"]
                n = 0
                for scope in (TRAIN, HELDOUT):
                    r = by.get((label, scope))
                    cells += [_ci(r.iqm), _fmt(r.mean)] if r else ["—", "—"]
                    n = max(n, r.n if r else 0)
                body.append([*cells, str(n)])
            lines += _md_table(
                ["model", "train IQM [95% CI]", "train mean", "held-out IQM [95% CI]", "held-out mean", "seeds"], body
            )
        lines += ["### Final return per env (mean ± std across seeds)", ""]
        env_scopes = [*train, *heldout]
        by = {(r.model, r.scope): r for r in rep.final if r.stat == "return"}
        body = []
        for label in rep.groups:
            cells = [f"`{label}`"]
            for scope in env_scopes:
                r = by.get((label, scope))
                cells.append(f"{r.mean:.3f} ± {r.std:.3f} (n={r.n})" if r else "—")
            body.append(cells)
        lines += _md_table(["model", *[f"{_short(e)}{' (train)' if e in train else ''}" for e in env_scopes]], body)
        for ref in for_split(rep.split):
            lines += _published_section(ref, rep, by)
        lines += ["### Probability that RIM beats LSTM on the held-out envs", ""]
        if rep.improvement:
            lines += [
                "P(X > Y): the chance that a random run of X scores higher than a random run of Y on a held-out env "
                "(ties count half), averaged over the held-out envs; 95% CI from resampling each model's runs.",
                "",
            ]
            lines += _md_table(
                ["X", "Y", "score", "P(X > Y) [95% CI]", "seeds (min)"],
                [
                    [f"`{r.x}`", f"`{r.y}`", STAT_NAMES[r.stat], _ci(r.estimate), str(r.estimate.n)]
                    for r in rep.improvement
                ],
            )
        else:
            lines += ["No comparison: this split needs both a `rim*` and an `lstm*` model.", ""]
        lines += ["### Runs", ""]
        lines += _md_table(
            ["model", "agent", "seed", "frames (last eval)", "total frames", "W&B id", "run dir"],
            [
                [
                    f"`{label}`",
                    str(run.info.get("agent", "—")),
                    str(run.seed),
                    str(run.last_eval_frames),
                    str(run.info.get("total_frames", "—")),
                    str(run.info.get("wandb_id") or "—"),
                    f"`{_rel(run.path, out)}`",
                ]
                for label, group in rep.groups.items()
                for run in group
            ],
        )
        lines += [f"Tables as CSV: {', '.join(f'[{p.name}]({p.name})' for p in rep.tables)}.", ""]
    return "\n".join(lines)


def _published_section(ref: Published, rep: SplitReport, by: dict[tuple[str, str], FinalRow]) -> list[str]:
    values = ref.values[rep.split]
    lines = [
        f"### Published vs ours: {ref.name}",
        "",
        f"Source: {ref.source}; metric: {ref.metric}. They match ours when the runs used the same protocol "
        f"(`experiment={ref.name}` presets); ours: final return as above, mean across seeds.",
        "",
    ]
    body = []
    for env_id, by_model in values.items():
        for label, value in by_model.items():
            ours = by.get((label, env_id))
            body.append(
                [
                    f"`{_short(env_id)}`",
                    f"`{label}`",
                    f"{value:.2f}",
                    _fmt(ours.mean) if ours else "—",
                    _ci(ours.iqm) if ours else "—",
                    str(ours.n) if ours else "0",
                ]
            )
    return lines + _md_table(["env", "model", "published", "ours (mean)", "ours IQM [95% CI]", "seeds"], body)


def _rel(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:
        return str(path)


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
        for path in rep.figures:
            if path.suffix == ".png":
                logged[f"report/{path.stem}"] = wandb.Image(str(path))
        logged[f"report/{rep.split}_final"] = wandb.Table(
            columns=list(FINAL_HEADER),
            data=[
                [r.model, r.scope, r.stat, r.iqm.value, r.iqm.low, r.iqm.high, r.mean, r.std, r.n, r.published]
                for r in rep.final
            ],
        )
        logged[f"report/{rep.split}_improvement"] = wandb.Table(
            columns=list(IMPROVEMENT_HEADER),
            data=[
                [r.x, r.y, r.stat, r.estimate.value, r.estimate.low, r.estimate.high, r.estimate.n, r.tasks]
                for r in rep.improvement
            ],
        )
    wb.log(logged)
    run_id = str(wb.id)
    wb.finish()
    return run_id


def build_report(dirs: Sequence[Path], out: Path, opts: Options, wandb_project: str | None = None) -> Path:
    """Read the runs under ``dirs`` and write the report into ``out``.

    :param dirs: sweep or run directories
    :param out: output directory (created)
    :param opts: report options
    :param wandb_project: also log to a new W&B run in this project
    :return: the path of ``report.md``
    :raises ReportError: on bad input
    """
    runs = find_runs(dirs)
    out.mkdir(parents=True, exist_ok=True)
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
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generalization curves, final-score tables (IQM with 95% CIs, rliable) and a Markdown report "
        "from rims-rl-train runs (folders with run_info.json and metrics.jsonl, searched recursively).",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="sweep or run directories")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <first DIR>/report)")
    parser.add_argument("--greedy", action="store_true", help="use the greedy-action statistics")
    parser.add_argument(
        "--final-evals", type=int, default=1, metavar="N", help="a run's final score is the mean of its last N evals"
    )
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstraps")
    parser.add_argument("--wandb", action="store_true", help="log figures and tables to a new W&B run (WANDB_MODE)")
    parser.add_argument("--wandb-project", default="rims-rl", help="W&B project for --wandb (default rims-rl)")
    args = parser.parse_args(argv)
    if args.final_evals < 1:
        parser.error(f"--final-evals must be >= 1, got {args.final_evals}")
    if args.reps < 1:
        parser.error(f"--reps must be >= 1, got {args.reps}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``rims-rl-report``); bad input exits with status 2 and one line on stderr."""
    args = parse_args(argv)
    out = args.out if args.out is not None else args.dirs[0] / "report"
    opts = Options(greedy=args.greedy, final_evals=args.final_evals, reps=args.reps, seed=args.seed)
    try:
        path = build_report(args.dirs, out, opts, args.wandb_project if args.wandb else None)
    except ReportError as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(path)


if __name__ == "__main__":
    main()
