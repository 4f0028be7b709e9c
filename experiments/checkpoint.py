"""Checkpoints: ``<run dir>/checkpoints/frames_<F>/`` holds the model, ``model.zip`` (``model.save``; the JAX
backend: ``train_state.npz``, the leaves of its train state) and ``state.pkl`` (the frame counter, the backend and
the python, numpy and torch RNG states).

A checkpoint directory is written under a temporary name and renamed when complete, so a run killed while
saving leaves no half-written checkpoint behind.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.zip"
#: The JAX backend's model file (:mod:`rims_rl.experiments.train_jax`).
TRAIN_STATE_FILE = "train_state.npz"
STATE_FILE = "state.pkl"


class Checkpoint(NamedTuple):
    """A saved checkpoint.

    :param path: its directory
    :param frames: the training frame count when it was saved
    """

    path: Path
    frames: int

    @property
    def model_path(self) -> Path:
        """The saved model (``model.zip``)."""
        return self.path / MODEL_FILE


def rng_states() -> dict[str, Any]:
    """:return: the python, numpy and torch global RNG states (and CUDA's, where available)"""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """:param states: as returned by :func:`rng_states`"""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(model: Any, run_dir: Path, frames: int) -> Checkpoint:
    """Save the model, the frame counter and the RNG states.

    :param model: an SB3 algorithm
    :param run_dir: the run directory
    :param frames: the training frame count
    :return: the checkpoint
    """
    return write_checkpoint(run_dir, frames, lambda path: model.save(path / MODEL_FILE))


def write_checkpoint(
    run_dir: Path, frames: int, write_model: Callable[[Path], None], backend: str = "torch"
) -> Checkpoint:
    """Write a checkpoint directory under a temporary name, then rename it.

    :param run_dir: the run directory
    :param frames: the training frame count
    :param write_model: writes the model's file(s) into the directory it is given
    :param backend: the training backend, recorded in ``state.pkl``
    :return: the checkpoint
    """
    root = run_dir / CHECKPOINT_DIR
    final = root / f"frames_{frames:012d}"
    tmp = root / f".tmp_frames_{frames:012d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_model(tmp)
    with open(tmp / STATE_FILE, "wb") as f:
        pickle.dump({"frames": int(frames), "backend": backend, "rng": rng_states()}, f)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return Checkpoint(final, int(frames))


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """:param run_dir: a run directory
    :return: its complete checkpoints, oldest first
    """
    root = run_dir / CHECKPOINT_DIR
    found = [
        Checkpoint(p, int(p.name.removeprefix("frames_")))
        for p in root.glob("frames_*")
        if ((p / MODEL_FILE).is_file() or (p / TRAIN_STATE_FILE).is_file()) and (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda c: c.frames)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """:param run_dir: a run directory
    :return: its latest complete checkpoint, or ``None``
    """
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """:param checkpoint: a checkpoint
    :return: ``{"frames": int, "rng": ...}`` as saved
    """
    with open(checkpoint.path / STATE_FILE, "rb") as f:
        return pickle.load(f)  # our own file


def resolve_checkpoint(path: Path) -> Checkpoint:
    """Find the checkpoint meant by a path given on the command line.

    :param path: a checkpoint directory, its ``model.zip``, or a run directory (its latest checkpoint)
    :return: the checkpoint
    :raises FileNotFoundError: if there is none there
    """
    if path.is_file() and path.name == MODEL_FILE:
        path = path.parent
    if (path / MODEL_FILE).is_file():
        frames = int(path.name.removeprefix("frames_")) if path.name.startswith("frames_") else -1
        return Checkpoint(path, frames)
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(
            f"no checkpoint at {str(path)!r}; expected a run directory with {CHECKPOINT_DIR}/frames_*/, "
            f"a checkpoint directory or its {MODEL_FILE}"
        )
    return latest


def run_dir_of(checkpoint: Checkpoint) -> Path:
    """:param checkpoint: a checkpoint inside a run directory
    :return: that run directory (``<run dir>/checkpoints/frames_<F>``)
    """
    return checkpoint.path.parent.parent
