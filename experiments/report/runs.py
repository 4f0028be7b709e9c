"""Reading runs: the run directories ``rims-rl-train`` writes (``run_info.json``, ``metrics.jsonl``) and the runs a
report keeps (``runs.jsonl``), grouped by split and model label, and the metric scopes of their envs."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rims_rl.experiments.eval_loop import EPISODES
from rims_rl.experiments.metrics import METRICS_FILE, OVERRIDES_FILE, RUN_INFO_FILE, read_metrics

PROG = "rims-rl-report"
INFO_KEYS = ("split", "model", "seed", "train_envs", "heldout_envs")
#: Pooled scopes of the eval metrics (``eval/<scope>/<stat>``); the other scopes are env ids.
TRAIN, HELDOUT = "train", "heldout"
#: The file in which a report keeps its runs (:func:`save_runs`), so that a report directory is an input too.
RUNS_FILE = "runs.jsonl"


class ReportError(ValueError):
    """Bad input to the report (no runs, a malformed run directory); the message is one line."""


@dataclass(frozen=True)
class Run:
    """One finished (or partial) training run.

    :param path: its directory
    :param info: its ``run_info.json``
    :param rows: its ``metrics.jsonl`` rows, in file order
    :param overrides: its command-line overrides (``.hydra/overrides.yaml``, e.g. ``"agent.n_epochs=10"``)
    """

    path: Path
    info: dict[str, Any]
    rows: list[dict[str, Any]]
    overrides: tuple[str, ...] = ()

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

    def episodes(self, final_evals: int = 1) -> tuple[set[int | None], set[int | None]]:
        """The episode counts (per env id and action mode, ``eval/episodes``) behind this run's scores.

        :param final_evals: how many of the last evaluations make the final score (as :meth:`final`)
        :return: the counts of those last evaluations, and of the curve's other points; ``None`` where a row does
            not record it (runs logged before ``eval/episodes`` existed)
        """
        return self.eval_settings(EPISODES, final_evals)

    def eval_settings(self, key: str, final_evals: int = 1) -> tuple[set[int | None], set[int | None]]:
        """:param key: a setting an evaluation row records, e.g. :data:`EPISODES` or :data:`MAX_STEPS`
        :param final_evals: how many of the last evaluations make the final score (as :meth:`final`)
        :return: its values in those last evaluations, and at the curve's other points; ``None`` where a row does
            not record it
        """
        rows = sorted((row for row in self.rows if f"eval/{TRAIN}/return_mean" in row), key=lambda row: row["frames"])
        values = [int(row[key]) if key in row else None for row in rows]
        return set(values[-final_evals:]), set(values[:-final_evals])

    @property
    def last_eval_frames(self) -> int:
        frames, _ = self.curve(f"eval/{TRAIN}/return_mean")
        return int(frames[-1]) if len(frames) else 0


def find_runs(dirs: Sequence[Path]) -> list[Run]:
    """Every run under ``dirs``, sorted by path: the run directories under them (searched recursively), and the runs
    kept by the reports among them (a given directory that holds a ``runs.jsonl``, :func:`save_runs`; a report
    found deeper, such as a sweep's own ``report/``, is not read, so a run directory deleted since stays out). A run
    found both ways is read from its directory.

    :param dirs: sweep, run or report directories
    :return: the runs, with at least one eval row each (runs without any are skipped with a warning)
    :raises ReportError: for a missing directory, one with no runs, or an unreadable run
    """
    found: dict[Path, Run] = {}
    kept: dict[Path, Run] = {}
    for directory in dirs:
        if not directory.is_dir():
            raise ReportError(f"{directory}: not a directory")
        paths = sorted(p.parent for p in directory.rglob(RUN_INFO_FILE) if (p.parent / METRICS_FILE).is_file())
        files = [directory / RUNS_FILE] if (directory / RUNS_FILE).is_file() else []
        if not paths and not files:
            raise ReportError(
                f"{directory}: no runs found (expected folders with {RUN_INFO_FILE} and {METRICS_FILE}, "
                f"or a report's {RUNS_FILE})"
            )
        found.update((path.resolve(), load_run(path)) for path in paths)
        kept.update((run.path, run) for file in files for run in load_kept_runs(file))
    runs = {**kept, **found}
    for path, run in list(runs.items()):
        if not any(f"eval/{TRAIN}/return_mean" in row for row in run.rows):
            print(f"{PROG}: warning: {run.path}: no evaluation rows yet; skipped", file=sys.stderr)
            del runs[path]
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
    _check_info(info, path / RUN_INFO_FILE)
    overrides = path / OVERRIDES_FILE
    return Run(path, info, rows, tuple(yaml.safe_load(overrides.read_text()) or ()) if overrides.is_file() else ())


def save_runs(runs: Sequence[Run], out: Path) -> Path:
    """Keep the runs in ``out/runs.jsonl``, one JSON object per line (``path``, relative to ``out``; ``info``;
    ``overrides``; ``rows``, the eval rows only), so the report can be made again, or with more runs
    (``rims-rl-report <out> <new run dirs>``), once the run directories are gone. The training rows (most of a
    metrics file; no report reads them) and the recorded episodes of the selection rasters are not kept.

    :param runs: the runs
    :param out: the report's directory
    :return: the file's path
    """
    path = out / RUNS_FILE
    with path.open("w", encoding="utf-8") as file:
        for run in runs:
            rows = [row for row in run.rows if any(key.startswith("eval/") for key in row)]
            record = {"path": relative_path(run.path, out), "info": run.info, "overrides": list(run.overrides)}
            file.write(json.dumps({**record, "rows": rows}) + "\n")
    return path


def load_kept_runs(path: Path) -> list[Run]:
    """:param path: a report's ``runs.jsonl`` (:func:`save_runs`)
    :return: its runs, each with the resolved path of its run directory (which need not exist any more)
    :raises ReportError: if a line is not a kept run
    """
    runs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
            run = Run(
                (path.parent / record["path"]).resolve(), record["info"], record["rows"], tuple(record["overrides"])
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ReportError(f"{path}, line {number}: not a kept run ({type(err).__name__}: {err})") from None
        _check_info(run.info, path)
        runs.append(run)
    return runs


def relative_path(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (as is where there is no relative path, e.g. another drive)."""
    try:
        return os.path.relpath(path, start)
    except ValueError:
        return str(path)


def _check_info(info: dict[str, Any], where: Path) -> None:
    """:raises ReportError: if a run's ``info`` lacks a key the report reads"""
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise ReportError(f"{where}: missing {', '.join(missing)}")


def label_runs(runs: Sequence[Run], label_by: Sequence[str] = ()) -> dict[str, list[Run]]:
    """Group the runs of one split by model label (``"lstm64"``; ``"lstm64 (a2c)"`` when agents are mixed,
    ``"lstm64 (jax)"`` when backends are, ``"lstm64 (a2c, jax)"`` when both are), with the overrides a run was
    started with whose key begins with one of ``label_by`` (``"rim64_u4_k3 (normalize_advantage=true)"`` for
    ``label_by=("agent.",)``; the key's last part is shown), so runs that differ only in those are told apart.

    :param runs: runs of one split
    :param label_by: key prefixes of the overrides to label by, e.g. ``("agent.", "model.k")``
    :return: label -> runs, labels in sorted order
    """
    mixed = [key for key in ("agent", "backend") if len({_info(run, key) for run in runs}) > 1]
    groups: dict[str, list[Run]] = {}
    for run in runs:
        parts = [_info(run, key) for key in mixed] + _labelled_overrides(run, label_by)
        label = str(run.info["model"]) + (f" ({', '.join(parts)})" if parts else "")
        groups.setdefault(label, []).append(run)
    return {label: sorted(groups[label], key=lambda r: (r.seed, str(r.path))) for label in sorted(groups)}


def _labelled_overrides(run: Run, label_by: Sequence[str]) -> list[str]:
    """``run``'s overrides under the prefixes ``label_by`` as ``name=value`` (``~name`` for a deletion)."""
    parts = []
    for override in run.overrides:
        key, _, value = override.partition("=")
        bare = key.lstrip("+~")
        if any(bare.startswith(prefix) for prefix in label_by):
            name = bare.rsplit(".", 1)[-1]
            parts.append(f"~{name}" if key.startswith("~") else f"{name}={value}")
    return parts


def _info(run: Run, key: str) -> str:
    """A run's ``agent`` or ``backend`` (``torch`` for runs saved before backends existed)."""
    return str(run.info.get(key, "torch" if key == "backend" else None))


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


def short_env(env_id: str) -> str:
    """An env id without MiniGrid's prefix and ``-v0``: ``Empty-5x5``."""
    return env_id.removeprefix("MiniGrid-").removesuffix("-v0")
