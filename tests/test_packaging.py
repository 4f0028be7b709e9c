"""The package as users get it: a wheel installed outside the repository runs the three commands from any directory
with its shipped configs, and users add their own splits, models and experiments from their own folder (Hydra's
search path) without editing the install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from helpers import HELDOUT, REPO, TINY, TINY_AGENT, Run, ok

import rims_rl.experiments.config
import rims_rl.experiments.schema

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
#: The names a project must not take at the top of site-packages: other projects have modules called so.
GENERIC = ("agents", "envs", "experiments")


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
    rims_rl.experiments.config.check_command_line(args, "train", rims_rl.experiments.schema.TrainSchema)
    with pytest.raises(
        rims_rl.experiments.config.ConfigError, match=r"unknown model 'my_gruu'; choices: .*my_gru, rim"
    ):
        rims_rl.experiments.config.check_command_line(
            [searchpath, "model=my_gruu"], "train", rims_rl.experiments.schema.TrainSchema
        )
    with pytest.raises(rims_rl.experiments.config.ConfigError, match="unknown model 'my_gru'"):
        rims_rl.experiments.config.check_command_line(["model=my_gru"], "train", rims_rl.experiments.schema.TrainSchema)

    proc = train([*args, "--cfg", "job"])
    ok(proc)
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"] == {"features": "vector", "core": "gru", "hidden_size": 16}
    assert cfg["env"]["name"] == "my_empty" and cfg["seed"] == 7


def test_checkpoints_pickled_with_the_old_module_names_load() -> None:
    import pickle

    from rims_rl.agents.policies import RecurrentActorCriticPolicy
    from rims_rl.experiments.builders import moved_module_names

    old = b"cagents.policies\nRecurrentActorCriticPolicy\n."  # a class pickled when agents was a top-level name
    with moved_module_names():
        assert pickle.loads(old) is RecurrentActorCriticPolicy
    assert "agents" not in sys.modules or sys.modules["agents"].__name__ == "agents"


def fresh_venv(path: Path) -> Path:
    """A new virtualenv at ``path`` that sees this one's packages (dependencies) but not the repository: a ``.pth``
    file adds this interpreter's site-packages, whose own ``.pth`` files (the editable install's finder) Python does
    not process from there. :return: its ``bin`` folder"""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([python, "-c", code], text=True, capture_output=True, check=True)
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(out.stdout.strip()) / "_test_dependencies.pth").write_text("\n".join(ours) + "\n")
    return path / "bin"


#: Run in the installed venv: the wheel's import names are the declared ones, the generic names do not import,
#: every import statement in the installed package names an importable module, and ``import rims_rl`` loads no jax.
CHECK_INSTALL = """
import ast, importlib.util, pathlib, sys
declared, generic = set(sys.argv[1].split(",")), sys.argv[2].split(",")
import rims_rl
assert not {"jax", "flax"} & set(sys.modules), "import rims_rl loaded jax"
root = pathlib.Path(rims_rl.__file__).parent
assert "site-packages" in str(root), root
for name in generic:
    found = importlib.util.find_spec(name)
    assert (found is not None) == (name in declared), (name, found and found.origin)
for path in root.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
        heads = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        heads += [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        for head in {h.split(".")[0] for h in heads}:
            assert importlib.util.find_spec(head) is not None, f"{path}: import {head}: no such module installed"
print("ok")
"""


def declared_packages() -> list[str]:
    """The top-level import packages ``pyproject.toml`` ships (``[tool.setuptools.packages.find] include``)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return [pattern.rstrip("*") for pattern in find["include"]]


def test_wheel_installed_outside_the_repository_runs_train_eval_and_report(tmp_path: Path) -> None:
    # the working tree as a wheel (built from a copy, so the repository gets no build/ folder)
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "results", "tests", "outputs")
    shutil.copytree(REPO, src, symlinks=True, ignore=skip)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", tmp_path], check=True)
    (wheel,) = tmp_path.glob("rims_rl-*.whl")

    # into a fresh venv, with this venv's packages as its dependencies
    bin_dir = fresh_venv(tmp_path / "venv")
    install = [*pip, "--python", bin_dir / "python", "install", "--no-deps", "--no-index", wheel]
    subprocess.run(install, check=True)

    # from a directory outside the repository, with nothing of the repository on the path
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_", "PYTHON", "VIRTUAL_ENV"))}

    def run(*command: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        ok(proc)
        return proc

    check = run(bin_dir / "python", "-c", CHECK_INSTALL, ",".join(declared_packages()), ",".join(GENERIC))
    assert check.stdout.strip() == "ok"

    # the user's own model, split and experiment, a tiny run, its evaluation and its report
    searchpath = write_user_configs(tmp_path / "my_configs")
    tiny = [*TINY_AGENT["ppo"], *(a for a in TINY if not a.startswith("env.")), "logger.wandb.mode=disabled"]
    tiny.append("hydra.run.dir=run")
    run(bin_dir / "rims-rl-train", searchpath, "experiment=my_tiny", *tiny)
    saved = yaml.safe_load((work / "run" / ".hydra" / "config.yaml").read_text())
    assert (saved["env"]["name"], saved["model"]["core"], saved["seed"]) == ("my_empty", "gru", 7)
    rows = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/heldout/return_mean" in row for row in rows), rows[-1]
    run(bin_dir / "rims-rl-eval", "checkpoint=run", "episodes=1", "output=eval.json", "hydra.run.dir=eval")
    assert (work / "eval.json").is_file()
    run(bin_dir / "rims-rl-report", "run", "--out", "report", "--reps", "10")
    assert "## Split `my_empty`" in (work / "report" / "report.md").read_text()
