"""The figures of a report: pure functions from a split's runs to a matplotlib figure, and :data:`FIGURES`, the list
a report draws (the Markdown embeds whatever it produced, in this order). A new figure is one function and one
entry in the list.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure as MplFigure
except ImportError as err:  # a dependency of the package; say how to get it back
    raise ImportError(f"rims-rl-report draws with matplotlib: pip install matplotlib ({err})") from err

from rims_rl.experiments.layout import fit_titles
from rims_rl.experiments.report.options import STAT_NAMES, Options, panels
from rims_rl.experiments.report.runs import HELDOUT, TRAIN, Run, env_scope, short_env, split_envs
from rims_rl.experiments.report.stats import mean_curve
from rims_rl.experiments.selection import draw_raster, load_episodes, panel_title

#: ``draw(split, groups, opts)``: the figure of a split (``groups``: model label -> runs), or ``None`` when it has
#: nothing to show.
Draw = Callable[[str, dict[str, list[Run]], Options], "MplFigure | None"]


class Figure(NamedTuple):
    """A figure a report draws for every split: ``<split>_<name>.png`` and ``.svg``.

    :param name: the file name's suffix, e.g. ``"return"``
    :param title: the alt text after the split's name, e.g. ``"return"``
    :param draw: draws it
    """

    name: str
    title: str
    draw: Draw


class Drawn(NamedTuple):
    """A figure written for one split.

    :param title: its alt text, e.g. ``"empty return"``
    :param paths: the PNG and the SVG
    """

    title: str
    paths: list[Path]

    @property
    def png(self) -> Path:
        """The PNG file (the one the Markdown embeds)."""
        return self.paths[0]


def draw_figures(split: str, groups: dict[str, list[Run]], opts: Options, out: Path) -> list[Drawn]:
    """Draw every figure of :data:`FIGURES` that has something to show and write it as PNG and SVG.

    :param split: the split's name
    :param groups: model label -> runs
    :param opts: report options
    :param out: output directory
    :return: the written figures, in :data:`FIGURES` order
    """
    drawn = []
    for figure in FIGURES:
        fig = figure.draw(split, groups, opts)
        if fig is None:
            continue
        paths = [out / f"{split}_{figure.name}.{ext}" for ext in ("png", "svg")]
        for path in paths:
            fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        drawn.append(Drawn(f"{split} {figure.title}", paths))
    return drawn


def curves(stat: str) -> Draw:
    """:param stat: ``"return"`` or ``"success"``
    :return: a :data:`Draw` of the generalization curves of ``stat``: one panel per :func:`panels`, one line per
        model, the mean across seeds with a 95% bootstrap band
    """

    def draw(split: str, groups: dict[str, list[Run]], opts: Options) -> MplFigure:
        runs = [run for group in groups.values() for run in group]
        shown = panels(runs)
        cols = min(len(shown), 4)
        rows = math.ceil(len(shown) / cols)
        fig, axes = plt.subplots(
            rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False, sharey=True, layout="constrained"
        )
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
        for ax in axes[:, 0]:
            ax.set_ylabel(("greedy " if opts.greedy else "") + STAT_NAMES[stat])
        spare = axes.flat[len(shown) :]
        for ax in spare:
            ax.axis("off")
        if len(spare):  # the legend in the first unused slot, long labels (--label-by) wrapped
            handles, labels = axes.flat[0].get_legend_handles_labels()
            spare[0].legend(handles, [textwrap.fill(label, 45) for label in labels], loc="upper left", fontsize=8)
        else:
            axes.flat[0].legend(fontsize=8)
        fit_titles(
            fig, fig.suptitle(f"{split}: {STAT_NAMES[stat]}, mean across seeds, 95% bootstrap band", fontsize=10)
        )
        return fig

    return draw


def unit_activity(split: str, groups: dict[str, list[Run]], opts: Options) -> MplFigure | None:
    """Which units are active on each env at the last evaluation, for the runs that log unit activity (any core
    with ``last_active``): one heatmap per (model, seed), rows the envs (train first), columns the units. Seeds are
    not averaged: which unit learns what differs from seed to seed.

    :param split: the split's name
    :param groups: label -> runs
    :param opts: report options (unused: activity has no score to pick)
    :return: the figure, or ``None`` when no run logs unit activity
    """
    shown = [(label, run, _last_activity(run)) for label, group in groups.items() for run in group]
    shown = [item for item in shown if item[2]]
    if not shown:
        return None
    train, heldout = split_envs([run for _, run, _ in shown])
    cols = min(len(shown), 3)
    rows = math.ceil(len(shown) / cols)
    height = 1.5 + 0.35 * (len(train) + len(heldout))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 2.0, height * rows), squeeze=False, layout="constrained")
    for i, (ax, (label, run, last)) in enumerate(zip(axes.flat, shown, strict=False)):
        units = [k.removeprefix("eval/unit_activity/") for k in last if k.startswith("eval/unit_activity/")]
        envs = [(f"train: {short_env(e)}", env_scope(run, e, TRAIN)) for e in train]
        envs += [(f"held-out: {short_env(e)}", env_scope(run, e, HELDOUT)) for e in heldout]
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
    fit_titles(fig, fig.suptitle(f"{split}: unit activity at the last evaluation", fontsize=10))
    return fig


def _last_activity(run: Run) -> dict[str, Any]:
    """The run's last eval row that has unit activity (``{}`` if none)."""
    return next((row for row in reversed(run.rows) if any(k.startswith("eval/unit_activity/") for k in row)), {})


def selection_raster(split: str, groups: dict[str, list[Run]], opts: Options) -> MplFigure | None:
    """One episode's selection raster (:mod:`rims_rl.experiments.selection`) for the first seed of each model that
    recorded one (runs of cores that report units): one row per model, one column per recorded env (train first), units
    x steps, active in colour, the episode's events as vertical lines.

    :param split: the split's name
    :param groups: label -> runs
    :param opts: report options (unused: a raster has no score to pick)
    :return: the figure, or ``None`` when no run recorded an episode
    """
    shown = []
    for label, group in groups.items():
        recorded = [(run, episodes) for run in group if (episodes := load_episodes(run.path))]
        if recorded:
            shown.append((label, *recorded[0]))
    if not shown:
        return None
    cols = max(len(episodes) for _, _, episodes in shown)
    units = [max(e.active.shape[1] * e.active.shape[2] for e in episodes) for _, _, episodes in shown]
    steps = max(e.active.shape[0] for _, _, episodes in shown for e in episodes)
    heights = [1.4 + 0.22 * u for u in units]
    fig, axes = plt.subplots(
        len(shown),
        cols,
        figsize=(cols * min(9.0, 4.5 + 0.04 * steps), sum(heights)),
        squeeze=False,
        height_ratios=heights,
        layout="constrained",
    )
    for row, (label, run, episodes) in zip(axes, shown, strict=True):
        for ax, episode in zip(row, episodes, strict=False):
            draw_raster(ax, episode, f"{label}, seed {run.seed}\n{panel_title(episode)}")
        for ax in row[len(episodes) :]:
            ax.set_visible(False)
    title = f"{split}: active units per step of one episode (sampled actions), first seed of each model"
    fit_titles(fig, fig.suptitle(title, fontsize=10))
    return fig


#: The figures of every split, in the order the Markdown shows them.
FIGURES: list[Figure] = [
    Figure("return", STAT_NAMES["return"], curves("return")),
    Figure("success", STAT_NAMES["success"], curves("success")),
    Figure("unit_activity", "unit activity", unit_activity),
    Figure("selection_raster", "selection rasters", selection_raster),
]
