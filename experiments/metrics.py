"""Where metrics go: ``metrics.jsonl`` in the run directory (always) and a W&B run (offline by default).

Every row is one JSON object with an integer ``frames``. SB3's own logger (``time/*``, ``rollout/*``,
``train/*``) reaches the same sinks through :class:`SB3MetricsWriter`.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import KVWriter, Logger

METRICS_FILE = "metrics.jsonl"
#: The run's identity (split, model label, seed, env ids, W&B id), written by ``rims-rl-train``.
RUN_INFO_FILE = "run_info.json"
#: The command-line overrides a run was started with, as Hydra saves them (the report can label runs by them).
OVERRIDES_FILE = ".hydra/overrides.yaml"


class MetricsLog:
    """Appends metric rows to a JSONL file (flushed per row) and, if given, logs them to a W&B run.

    W&B gets ``step=frames``: rows logged at the same frame count share a W&B step, and a resumed online run
    drops (with a warning) rows at frame counts it already has, so nothing is duplicated there.

    :param path: the JSONL file, appended to
    :param wandb_run: a ``wandb`` run, or ``None``
    """

    def __init__(self, path: Path, wandb_run: Any = None) -> None:
        self.path = path
        self.wandb_run = wandb_run
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115  # closed by close()

    def log(self, frames: int, metrics: Mapping[str, float]) -> None:
        """Write one row.

        :param frames: the training frame count the metrics belong to
        :param metrics: metric name -> number
        """
        row = {"frames": int(frames), **{k: float(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(row, step=row["frames"])

    def close(self) -> None:
        """Close the file and finish the W&B run."""
        self._file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


class SB3MetricsWriter(KVWriter):
    """An SB3 logger output that forwards every numeric value to a :class:`MetricsLog` at dump time.

    :param log: the destination
    """

    def __init__(self, log: MetricsLog) -> None:
        self.log = log

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        """:param key_values: SB3's recorded values; non-numbers (videos, figures, strings) are skipped
        :param key_excluded: SB3's per-key excluded formats (ignored: this sink keeps everything numeric)
        :param step: the frame count (SB3 dumps with ``step=num_timesteps``)
        """
        values = {k: float(v) for k, v in key_values.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}
        if values:
            self.log.log(step, values)

    def close(self) -> None:
        """Nothing to close: the :class:`MetricsLog` is closed by its owner."""


def sb3_logger(log: MetricsLog) -> Logger:
    """:param log: the destination
    :return: an SB3 logger (for ``model.set_logger``) whose only output is ``log``
    """
    return Logger(folder=None, output_formats=[SB3MetricsWriter(log)])


def truncate_metrics(path: Path, max_frames: int) -> int:
    """Drop the rows of a JSONL metrics file past ``max_frames`` (and a torn last line), atomically.

    Used on resume: rows logged after the checkpoint being resumed from are logged again by the resumed run.

    :param path: the metrics file (missing: nothing to do)
    :param max_frames: keep rows with ``frames <= max_frames``; ``-1`` drops every row
    :return: the number of rows kept
    """
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(row["frames"]) <= max_frames:
            kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)
    return len(kept)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """:param path: a metrics file
    :return: its rows, in order; a last line torn by a kill is ignored
    :raises json.JSONDecodeError: for an invalid line elsewhere
    """
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [json.loads(line) for line in lines[:-1]]
    with contextlib.suppress(json.JSONDecodeError):
        rows.extend(json.loads(line) for line in lines[-1:])
    return rows


def init_wandb(
    wandb_cfg: Mapping[str, Any],
    run_dir: Path,
    run_id: str,
    name: str,
    group: str | None,
    config: dict[str, Any],
) -> Any:
    """Start (or resume, same ``run_id``) a W&B run whose files live in ``run_dir/wandb``.

    Offline mode needs no login and no network. Nothing is printed and the console is not captured.

    :param wandb_cfg: the ``logger.wandb`` config (mode, project, entity, tags)
    :param run_dir: the run directory
    :param run_id: the W&B run id, kept across resumes
    :param name: the run's display name
    :param group: the W&B group, or ``None``
    :param config: the resolved run config
    :return: the run, or ``None`` when ``mode`` is ``disabled`` (then no ``wandb`` directory is written)
    """
    if wandb_cfg["mode"] == "disabled":
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=wandb_cfg["project"],
        entity=wandb_cfg["entity"],
        group=group,
        tags=[str(t) for t in wandb_cfg["tags"]],
        name=name,
        id=run_id,
        resume="allow",
        dir=str(run_dir),
        config=config,
        mode=wandb_cfg["mode"],
        reinit="create_new",  # one process may hold several runs (backend=jax, seeds_per_job > 1)
        settings=wandb.Settings(silent=True, console="off", disable_git=True, save_code=False),
    )
    run.define_metric("frames")
    return run


def check_wandb_login(mode: str) -> None:
    """Make sure starting W&B will not prompt: ``online`` mode needs stored credentials or ``WANDB_API_KEY``.

    :param mode: ``logger.wandb.mode``
    :raises ValueError: in ``online`` mode without credentials
    """
    if mode != "online":
        return
    import wandb

    if not wandb.login(prompt=False, verify=False):
        raise ValueError(
            "logger.wandb.mode=online needs W&B credentials: run `wandb login` or set WANDB_API_KEY; "
            "or use logger.wandb.mode=offline (sync later) or disabled"
        )


def new_wandb_id() -> str:
    """:return: a fresh W&B run id: 8 random lower-case letters and digits, as W&B makes them (no network)"""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))
