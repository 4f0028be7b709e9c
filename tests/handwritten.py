"""Hand-written run directories in the runner's format (``run_info.json``, ``metrics.jsonl``) for the report tests:
every score distinct and known, so the report's numbers can be checked exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from rims_rl.experiments.selection import Event, SelectionEpisode, save_episode

TRAIN = ["MiniGrid-Empty-5x5-v0"]
HELDOUT = ["MiniGrid-Empty-6x6-v0", "MiniGrid-Empty-16x16-v0"]
STATS = ("return_mean", "success_rate", "greedy_return_mean", "greedy_success_rate")
REPS = "50"  # bootstrap resamples: enough to exercise the CIs, fast on a shared CPU


def score_of(
    model: str, seed: int, frames: int, scope: str, stat: str, envs: tuple[list[str], list[str]] = (TRAIN, HELDOUT)
) -> float:
    """A deterministic, distinct score for every (model, seed, frames, scope, stat); ``envs``: the run's train and
    held-out envs."""
    scopes = ["train", "heldout", *envs[0], *envs[1]]
    base = {"lstm64": 0.2, "rim64_u4_k3": 0.5}.get(model, 0.3)
    return round(base + 0.05 * seed + frames / 1e4 + 0.01 * scopes.index(scope) + 0.001 * STATS.index(stat), 6)


def write_run(
    path: Path,
    model: str,
    seed: int,
    eval_frames: list[int],
    split: str = "empty",
    wandb_id: str | None = None,
    agent: str = "ppo",
    backend: str | None = None,
    units: int = 0,
    switch_rate: float | None = None,
    raster: bool = False,
    envs: tuple[list[str], list[str]] = (TRAIN, HELDOUT),
) -> None:
    """A run directory in the runner's format: SB3 rows between eval rows, every eval key of the contract, and with
    ``units`` the unit activity a core with ``last_active`` logs (unit ``u`` active a fraction ``u / units``), with
    ``switch_rate`` also its switch rate (that value on every scope; the set entropy is ``2 * switch_rate``), and
    with ``raster`` a recorded episode per side (``selection/``; unit ``u`` active at steps ``t`` with
    ``(t + u) % units == 0``, a key picked up at step 1, the end at step 5); ``envs``: its train and held-out envs."""
    train, heldout = envs
    path.mkdir(parents=True)
    info = {
        "split": split,
        "model": model,
        "core": model[:3] if model.startswith("rim") else "lstm",
        "agent": agent,
        "seed": seed,
        "train_envs": train,
        "heldout_envs": heldout,
        "total_frames": eval_frames[-1],
        "wandb_id": wandb_id,
        **({"backend": backend} if backend is not None else {}),
    }
    (path / "run_info.json").write_text(json.dumps(info, indent=2))
    rows: list[dict[str, Any]] = []
    for frames in eval_frames:
        rows.append({"frames": frames - 16, "rollout/ep_rew_mean": 0.1, "time/fps": 100.0})
        row: dict[str, Any] = {"frames": frames}
        for scope in ["train", "heldout", *train, *heldout]:
            for stat in STATS:
                row[f"eval/{scope}/{stat}"] = score_of(model, seed, frames, scope, stat, envs)
        for prefix in ["eval/", *[f"eval/{env}/" for env in [*train, *heldout]]] if units else []:
            row.update({f"{prefix}unit_activity/l0_u{u}": u / units for u in range(units)})
        scopes = ["train", "heldout", *train, *heldout]
        for prefix in ["eval/", *[f"eval/{scope}/" for scope in scopes]] if switch_rate is not None else []:
            row.update({f"{prefix}switch_rate": switch_rate, f"{prefix}selection_entropy": 2 * switch_rate})
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for env, scope in [(train[0], "train"), (heldout[0], "heldout")] if raster else []:
        active = np.array([[[(t + u) % units == 0 for u in range(units)]] for t in range(6)])  # (T, L, U)
        events = [Event(1, "key"), Event(5, "end")]
        save_episode(path / "selection" / f"{env}.json", SelectionEpisode(env, scope, active, events, 0.0))


def write_sweep(root: Path, seeds: int = 2, wandb: bool = False) -> Path:
    """Two models x ``seeds`` seeds on the ``empty`` split, evaluated at 100, 200, 300 frames."""
    sweep = root / "sweep"
    for i, model in enumerate(["lstm64", "rim64_u4_k3"]):
        for seed in range(seeds):
            write_run(
                sweep / str(i * seeds + seed), model, seed, [100, 200, 300], wandb_id=f"w{i}{seed}" if wandb else None
            )
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file, as dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def final_row(rows: list[dict[str, str]], model: str, scope: str, stat: str) -> dict[str, str]:
    """The one row of a final-score table for that model, scope and stat."""
    (row,) = [r for r in rows if (r["model"], r["scope"], r["stat"]) == (model, scope, stat)]
    return row


def runs_column(md: str, model: str, column: str) -> list[str]:
    """The cells of ``column`` (a header of a one-split report's Runs table) in the rows of ``model``, in order."""
    lines = md.split("### Runs", 1)[1].strip().splitlines()
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]
    index = cells[0].index(column)
    return [row[index] for row in cells[2:] if row[0] == f"`{model}`"]
