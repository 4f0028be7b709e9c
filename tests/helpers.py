"""Constants and small checks shared by the runner, report and agent tests (their fixtures are in ``conftest.py``)."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch as th

if TYPE_CHECKING:
    from rims_rl.agents import RecurrentPPO

REPO = Path(__file__).resolve().parent.parent

#: A fixture that runs a command line and returns the finished process (``run_cli``, ``train``).
Run = Callable[..., "subprocess.CompletedProcess[str]"]

#: The held-out envs of the tiny runs (the ``empty`` split trains on Empty-5x5).
HELDOUT = ["MiniGrid-Empty-6x6-v0", "MiniGrid-Empty-8x8-v0"]
#: Frames, envs, evaluations and checkpoints of a run that takes seconds.
TINY = [
    "total_frames=256",
    "n_envs=2",
    "eval.episodes=1",
    "eval.final_episodes=2",
    "eval.every_frames=128",
    "checkpoint.every_frames=128",
    f"env.heldout=[{','.join(HELDOUT)}]",
]
TINY_AGENT = {
    "ppo": ["agent.n_steps=16", "agent.sequence_length=16", "agent.batch_size=32"],
    "a2c": ["agent.n_steps=16"],
}
TINY_MODEL = {
    "lstm": ["model.hidden_size=8"],
    "gru": ["model.hidden_size=8"],
    "rim": ["model.hidden_size=12", "model.num_units=3", "model.k=2"],
}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: no W&B or Hydra settings of the caller, the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
    env.update(extra)
    return env


def ok(proc: subprocess.CompletedProcess[str]) -> None:
    """Assert that a command succeeded, showing its output when it did not."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def keys_by_frames(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Metric name -> the frame counts of the rows that have it."""
    frames: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        for key in row:
            if key != "frames":
                frames[key].append(row["frames"])
    return frames


def check_no_duplicates(rows: list[dict[str, Any]]) -> None:
    """Every row has an int ``frames``, rows are in frame order, each metric appears once per frame count."""
    assert all(isinstance(row["frames"], int) for row in rows)
    all_frames = [row["frames"] for row in rows]
    assert all_frames == sorted(all_frames)
    for key, frames in keys_by_frames(rows).items():
        assert all(a < b for a, b in itertools.pairwise(frames)), (key, frames)


def wandb_bytes(run_dir: Path) -> list[bytes]:
    """The bytes of a run directory's offline W&B run files."""
    return [p.read_bytes() for p in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))]


def fill_buffer(model: RecurrentPPO) -> None:
    """One rollout, exactly as learn() does it, with no update."""
    _, callback = model._setup_learn(model.n_steps * model.n_envs, None)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


def check_replay(model: RecurrentPPO) -> None:
    """Replaying a filled rollout buffer in eval mode reproduces the rollout's log-probabilities and values (to
    1e-5), from minibatches of whole ``sequence_length``-step chunks that hold every step once (no padding, no
    mask); the rollout must have episode ends inside it."""
    buffer = model.rollout_buffer
    assert buffer.episode_starts[1:].sum() > 0, "the test needs episode ends inside the rollout"
    model.policy.set_training_mode(False)
    n_rows = 0
    for batch in buffer.get(model.batch_size):
        assert batch.episode_starts.shape == (model.sequence_length, model.batch_size // model.sequence_length)
        with th.no_grad():
            values, log_prob, _ = model.policy.evaluate_actions(
                batch.observations, batch.actions.long().flatten(), batch.states, batch.episode_starts
            )
        assert th.allclose(log_prob, batch.old_log_prob, atol=1e-5)
        assert th.allclose(values.flatten(), batch.old_values, atol=1e-5)
        n_rows += len(batch.actions)
    assert n_rows == model.n_steps * model.n_envs
