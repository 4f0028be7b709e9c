"""The package as users get it: a wheel installed outside the repository runs the three commands from any directory
with its shipped configs, and users add their own splits, models and experiments from their own folder (Hydra's
search path) without editing the install."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import HELDOUT, Run, ok

import experiments.config
import experiments.schema

#: A user's own configs: a model, a split and an experiment that picks both (``configs/<group>/<option>.yaml``).
USER_CONFIGS = {
    "model/my_gru.yaml": {"core": "gru", "features": "vector", "hidden_size": 8},
    "env/my_empty.yaml": {
        "name": "my_empty",
        "train": ["MiniGrid-Empty-5x5-v0"],
        "heldout": HELDOUT[:1],
        "train_seeds": None,
        "heldout_seeds": None,
    },
    "experiment/my_tiny.yaml": {"defaults": [{"override /env": "my_empty"}, {"override /model": "my_gru"}], "seed": 7},
}


def write_user_configs(folder: Path) -> str:
    """Write :data:`USER_CONFIGS` under ``folder``; return the ``hydra.searchpath`` override that adds it."""
    for name, content in USER_CONFIGS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "# @package _global_\n" if name.startswith("experiment/") else ""
        path.write_text(header + yaml.safe_dump(content, sort_keys=False))
    return f"hydra.searchpath=[file://{folder}]"


def test_users_own_configs_are_options_through_the_search_path(tmp_path: Path, train: Run) -> None:
    searchpath = write_user_configs(tmp_path / "my_configs")
    args = [searchpath, "model=my_gru", "env=my_empty", "experiment=my_tiny", "model.hidden_size=16"]
    experiments.config.check_command_line(args, "train", experiments.schema.TrainSchema)
    with pytest.raises(experiments.config.ConfigError, match=r"unknown model 'my_gruu'; choices: .*my_gru, rim"):
        experiments.config.check_command_line([searchpath, "model=my_gruu"], "train", experiments.schema.TrainSchema)
    with pytest.raises(experiments.config.ConfigError, match="unknown model 'my_gru'"):
        experiments.config.check_command_line(["model=my_gru"], "train", experiments.schema.TrainSchema)

    proc = train([*args, "--cfg", "job"])
    ok(proc)
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"] == {"features": "vector", "core": "gru", "hidden_size": 16}
    assert cfg["env"]["name"] == "my_empty" and cfg["seed"] == 7
