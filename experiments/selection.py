"""Selection rasters: which units a core selects at each step of one episode, with the episode's events.

At the end of training, for a core that reports its active units (``last_active``, as :class:`rims_rl.RIM`),
``rims-rl-train`` plays one episode (sampled actions, the evaluation seed) on the split's first train env and on
its first held-out env, and writes into the run directory:

- ``selection/<env>.json``: the episode (:func:`save_episode`): ``env``, ``scope`` (``train`` or ``heldout``),
  ``active`` ``(T, L, U)`` as 0/1, ``events`` (``{"step": t, "event": kind}``), ``return``;
- ``selection_raster.png``: those episodes drawn by :func:`raster_figure`, units (rows, per layer) x steps
  (columns), active in colour, events as vertical lines.

Events (:data:`EVENTS`, detected by :func:`step_events` from :func:`snapshot` before and after each step, where the
env exposes them, as MiniGrid does): ``key``, the agent's ``carrying`` becomes a key; ``door``, a door's
``is_open`` turns true; ``goal``, a positive reward (MiniGrid's success); ``end``, the episode ends (terminated or
truncated). An event at step ``t`` is caused by the action chosen at step ``t``, with the units of column ``t``.

Symbols: T steps of the episode, L layers, U units per layer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError as err:  # a dependency of the package; say how to get it back
    raise ImportError(f"selection rasters are drawn with matplotlib: pip install matplotlib ({err})") from err

from rims_rl.experiments.layout import fit_titles

#: The events of an episode: kind -> label (and the order a step's events are listed in).
EVENTS = {"key": "key picked up", "door": "door opened", "goal": "goal reached", "end": "episode end"}
#: The line of each event (colour, style, width), drawn in this order (the episode's end under its goal).
EVENT_LINES = {
    "end": ("black", ":", 1.5),
    "key": ("tab:orange", "-", 1.5),
    "door": ("tab:green", "-", 1.5),
    "goal": ("tab:red", "-", 1.5),
}
#: The folder of a run directory with the recorded episodes, and the raster drawn from them.
SELECTION_DIR, RASTER_FILE = "selection", "selection_raster.png"


class Event(NamedTuple):
    """Something that happened in an episode.

    :param step: the step whose action caused it
    :param kind: a key of :data:`EVENTS`
    """

    step: int
    kind: str


class SelectionEpisode(NamedTuple):
    """One recorded episode.

    :param env: the env's metric scope (its id, ``<id>@<scope>`` when on both sides)
    :param scope: ``"train"`` or ``"heldout"``
    :param active: ``(T, L, U)`` bool, the active units at each step
    :param events: the events, by step
    :param episode_return: the undiscounted return
    """

    env: str
    scope: str
    active: np.ndarray
    events: list[Event]
    episode_return: float


class Snapshot(NamedTuple):
    """What an env shows of its events at one moment (:func:`snapshot`).

    :param carrying: the type of the object the agent carries (``"key"``), or ``None``
    :param open_doors: the grid cells (flat indices) of the open doors
    """

    carrying: str | None
    open_doors: frozenset[int]


def snapshot(env: gym.Env) -> Snapshot:
    """:param env: an env, MiniGrid's (``carrying``, ``grid``) or any other (then nothing is seen)
    :return: what it carries and which doors are open
    """
    base = env.unwrapped
    carrying = getattr(base, "carrying", None)
    grid = getattr(base, "grid", None)
    cells = getattr(grid, "grid", [])
    doors = frozenset(
        i for i, obj in enumerate(cells) if getattr(obj, "type", None) == "door" and getattr(obj, "is_open", False)
    )
    return Snapshot(getattr(carrying, "type", None), doors)


def step_events(before: Snapshot, after: Snapshot, reward: float, done: bool) -> list[str]:
    """The events of one step.

    :param before: the env before the step
    :param after: the env after it
    :param reward: the step's reward
    :param done: whether the episode ended (terminated or truncated)
    :return: kinds of :data:`EVENTS`, in its order

    >>> closed, held = Snapshot(None, frozenset()), Snapshot("key", frozenset())
    >>> step_events(closed, held, 0.0, False), step_events(held, Snapshot("key", frozenset({12})), 0.0, False)
    (['key'], ['door'])
    >>> step_events(held, held, 0.9, True)
    ['goal', 'end']
    """
    events = []
    if after.carrying == "key" and before.carrying != "key":
        events.append("key")
    if after.open_doors - before.open_doors:
        events.append("door")
    if reward > 0:
        events.append("goal")
    if done:
        events.append("end")
    return events


def record_episode(model: Any, env: gym.Env, seed: int, name: str, scope: str) -> SelectionEpisode:
    """Play one episode with sampled actions and record the core's active units and the events.

    :param model: an SB3 recurrent algorithm whose ``policy.core`` reports ``last_active`` ``(1, 1, L, U)``
    :param env: one (not vectorised) env with the observations the model was trained on; reset with ``seed``
    :param seed: the env's seed and the action sampling's (torch's RNG is restored afterwards)
    :param name: the env's metric scope
    :param scope: ``"train"`` or ``"heldout"``
    :return: the episode
    """
    core = model.policy.core
    active: list[np.ndarray] = []
    events: list[Event] = []
    total = 0.0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        obs, _ = env.reset(seed=seed)
        state, start, done = None, True, False
        while not done:
            action, state = model.predict(obs, state=state, episode_start=np.array([start]), deterministic=False)
            active.append(core.last_active[0, 0].cpu().numpy())  # (L, U)
            before = snapshot(env)
            obs, reward, terminated, truncated, _ = env.step(action.item())
            done = bool(terminated or truncated)
            events += [Event(len(active) - 1, kind) for kind in step_events(before, snapshot(env), float(reward), done)]
            total += float(reward)
            start = False
    return SelectionEpisode(name, scope, np.stack(active), events, total)


def save_episode(path: Path, episode: SelectionEpisode) -> Path:
    """Write an episode as JSON (the format of the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "env": episode.env,
        "scope": episode.scope,
        "active": episode.active.astype(int).tolist(),
        "events": [{"step": e.step, "event": e.kind} for e in episode.events],
        "return": episode.episode_return,
    }
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return path


def load_episode(path: Path) -> SelectionEpisode:
    """Read an episode written by :func:`save_episode`."""
    record = json.loads(path.read_text(encoding="utf-8"))
    active = np.array(record["active"], dtype=bool)
    events = [Event(int(e["step"]), str(e["event"])) for e in record["events"]]
    return SelectionEpisode(record["env"], record["scope"], active, events, float(record["return"]))


def load_episodes(run_dir: Path) -> list[SelectionEpisode]:
    """:param run_dir: a run directory
    :return: its recorded episodes, train ones first (``[]`` for a run without any)
    """
    episodes = [load_episode(p) for p in sorted((run_dir / SELECTION_DIR).glob("*.json"))]
    return sorted(episodes, key=lambda e: e.scope != "train")


def draw_raster(ax: Axes, episode: SelectionEpisode, title: str) -> None:
    """Draw one episode: units (rows, layer by layer) x steps (columns), active in colour, events as lines.

    :param ax: where to draw
    :param episode: the episode
    :param title: the panel's title
    """
    steps, layers, units = episode.active.shape
    image = episode.active.reshape(steps, layers * units).T  # (L * U, T)
    ax.imshow(image, cmap=ListedColormap(["#f2f2f2", "tab:blue"]), vmin=0, vmax=1, aspect="auto", interpolation="none")
    names = [f"u{u}" if layers == 1 else f"l{layer} u{u}" for layer in range(layers) for u in range(units)]
    ax.set_yticks(range(layers * units), names, fontsize=7)
    for layer in range(1, layers):
        ax.axhline(layer * units - 0.5, color="black", linewidth=0.8)
    for kind, (color, style, width) in EVENT_LINES.items():
        for i, event in enumerate(e for e in episode.events if e.kind == kind):
            label = EVENTS[kind] if i == 0 else None
            ax.axvline(event.step, color=color, linestyle=style, linewidth=width, label=label)
    ax.set_xlim(-0.5, steps - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_title(title, fontsize=9)
    if episode.events:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def panel_title(episode: SelectionEpisode) -> str:
    """``"held-out: MiniGrid-DoorKey-8x8-v0, return 0.812, 3 switches in 57 steps"`` (a switch: a step at which a
    layer's active set differs from the step before, counted per layer)."""
    side = "train" if episode.scope == "train" else "held-out"
    switches = int((episode.active[1:] != episode.active[:-1]).any(axis=-1).sum())
    steps = len(episode.active)
    return f"{side}: {episode.env}, return {episode.episode_return:.3f}, {switches} switches in {steps} steps"


def raster_figure(episodes: Sequence[SelectionEpisode], title: str) -> Figure:
    """One raster per episode, stacked.

    :param episodes: the episodes (at least one)
    :param title: the figure's title
    :return: the figure
    """
    rows = [e.active.shape[1] * e.active.shape[2] for e in episodes]
    width = min(18.0, 4.0 + 0.05 * max(e.active.shape[0] for e in episodes))
    fig, axes = plt.subplots(
        len(episodes),
        1,
        figsize=(width, sum(1.2 + 0.22 * r for r in rows)),
        squeeze=False,
        layout="constrained",
        height_ratios=[1.2 + 0.22 * r for r in rows],
    )
    for ax, episode in zip(axes[:, 0], episodes, strict=True):
        draw_raster(ax, episode, panel_title(episode))
    fit_titles(fig, fig.suptitle(title, fontsize=10))
    return fig


def record_selection(
    model: Any, envs: Sequence[tuple[str, str, gym.Env]], seed: int, run_dir: Path, title: str
) -> list[Path]:
    """Record one episode per env and write ``selection/<env>.json`` and ``selection_raster.png`` in ``run_dir``.

    :param model: the trained agent (its core reports units)
    :param envs: ``(name, scope, env)`` per env, e.g. the first train env and the first held-out env
    :param seed: the episodes' seed
    :param run_dir: the run directory
    :param title: the raster's title
    :return: the written files
    """
    episodes = [record_episode(model, env, seed, name, scope) for name, scope, env in envs]
    return write_selection(episodes, run_dir, title)


def write_selection(episodes: Sequence[SelectionEpisode], run_dir: Path, title: str) -> list[Path]:
    """Write ``selection/<env>.json`` per episode and their ``selection_raster.png`` in ``run_dir`` (both
    backends' runners).

    :param episodes: the recorded episodes (at least one), train ones first
    :param run_dir: the run directory
    :param title: the raster's title
    :return: the written files
    """
    paths = [save_episode(run_dir / SELECTION_DIR / f"{e.env}.json", e) for e in episodes]
    fig = raster_figure(episodes, title)
    fig.savefig(run_dir / RASTER_FILE, dpi=120, bbox_inches="tight")  # the legends stand right of the axes
    plt.close(fig)
    return [*paths, run_dir / RASTER_FILE]
