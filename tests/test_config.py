"""Composing configs and checking them: presets, launchers, console scripts, and bad input that gets one clear line
(exit code 2) before any env is built."""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import HELDOUT, REPO, Run, clean_env, ok
from omegaconf import OmegaConf

import rims_rl.experiments.config
import rims_rl.experiments.schema
from rims_rl.experiments.published import DIDO_TABLE


@pytest.mark.parametrize("module", [rims_rl.experiments.config, rims_rl.experiments.schema])
def test_doctests(module: Any) -> None:
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_experiment_preset_overrides_groups(tmp_path: Path, train: Run) -> None:
    proc = train(["experiment=doorkey_rim", "--cfg", "job"])
    ok(proc)
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["env"]["name"] == "doorkey"
    assert cfg["model"] == {"features": "vector", "core": "rim", "hidden_size": 192, "num_units": 6, "k": 4}
    assert cfg["agent"]["algo"] == "ppo"
    assert cfg["total_frames"] == 300000


@pytest.mark.parametrize(("script", "config_key"), [("rims-rl-train", "total_frames"), ("rims-rl-eval", "episodes")])
def test_console_scripts_find_the_configs_from_any_directory(tmp_path: Path, script: str, config_key: str) -> None:
    path = Path(sys.executable).parent / script
    if not path.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    proc = subprocess.run(
        [str(path), "checkpoint=x", "--cfg", "job"] if script == "rims-rl-eval" else [str(path), "--cfg", "job"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    ok(proc)
    assert config_key in yaml.safe_load(proc.stdout)


def test_missing_config_dir_gives_a_line_without_an_empty_key(tmp_path: Path) -> None:
    with pytest.raises(rims_rl.experiments.config.ConfigError) as info:
        rims_rl.experiments.config.check_command_line(
            ["seed=1"], "train", rims_rl.experiments.schema.TrainSchema, config_dir=tmp_path / "missing"
        )
    message = str(info.value)
    assert message.startswith("Primary config directory not found"), message


@pytest.mark.parametrize(
    ("launcher", "fields"),
    [
        ("parallel", {"n_jobs"}),
        ("slurm", {"partition", "timeout_min", "cpus_per_task", "mem_gb"}),
        ("local", {"timeout_min", "cpus_per_task"}),
    ],
)
def test_launcher_configs_compose(tmp_path: Path, launcher: str, fields: set[str], train: Run) -> None:
    proc = train([f"hydra/launcher={launcher}", "--cfg", "hydra"])
    ok(proc)
    cfg = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert fields <= set(cfg)
    assert cfg["_target_"].startswith("hydra_plugins.")


#: A core module with an object that is no core: ``forward`` without ``episode_starts``, no ``initial_state``.
NO_SURFACE = """
from torch import nn


class NoSurface(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size, self.linear = hidden_size, nn.Linear(input_size, hidden_size)

    def forward(self, input, hx=None):
        return self.linear(input), hx
"""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["env=nope"], ["'nope'", "doorkey", "empty"]),
        (["model=lsmt"], ["'lsmt'", "gru, lstm, rim"]),
        (["agent=dqn"], ["'dqn'", "a2c, ppo"]),
        (["-m", "model=lstm,lsmt"], ["'lsmt'", "gru, lstm, rim"]),
        (["model=rim", "model.k=7"], ["k=7", "num_units=6"]),
        (["model=rim", "model.hidden_size=100"], ["hidden_size=100", "num_units=6"]),
        (["total_frames=0"], ["total_frames=0", "a whole number in [1, 1000000000000]"]),
        (["env.train=[MiniGrid-Emptyy-5x5-v0]"], ["'MiniGrid-Emptyy-5x5-v0'", "'MiniGrid-Empty-5x5-v0'"]),
        (["seed=-1"], ["seed=-1", "a whole number in [0, 4294967295]"]),
        (["device=tpu"], ["device='tpu'", "cpu, cuda"]),
        (["agent.gamma=1.5"], ["agent.gamma=1.5", "[0, 1]"]),
        (["seeed=1"], ["seeed=1", "did you mean seed?"]),
        (["-m", "seed=0,-2"], ["seed=-2", "a whole number in [0, 4294967295]"]),
        (["agent=a2c", "agent.batch_size=64"], ["agent.batch_size=64", "agent.n_steps"]),
        (["+model.hidden_size=64"], ["model.hidden_size is already set", "without the '+'"]),
        (["model.core=no_such_pkg.cores:Core"], ["'no_such_pkg.cores'", "cannot import"]),
        (["model.core=byo_cores:NoCore"], ["'byo_cores'", "no attribute 'NoCore'"]),
        (
            ["model.core=byo_cores:NoSurface"],
            ["is not a core: class NoSurface lacks", "initial_state", "episode_starts"],
        ),
        (["agent.policy_kwargs.shared_core=maybe"], ["agent.policy_kwargs.shared_core='maybe'", "true or false"]),
        (["model.features=foo"], ["model.features='foo' is invalid", "expected one of vector, set"]),
        (
            ["model=rim_set", "+agent.policy_kwargs.features_extractor_kwargs.output=vector"],
            ["features_extractor_kwargs.output='vector'", "'set' (model.features chooses it)"],
        ),
        (["+agent.policy_train_mode=1"], ["agent.policy_train_mode=1", "true or false"]),
        (["eval.final_episodes=0"], ["eval.final_episodes=0", "a whole number in [1, 1000000]"]),
        (["eval.final_n_envs=2.5"], ["eval.final_n_envs=2.5", "a whole number in [1, 1000000]"]),
        # issue 31: each was accepted, or failed with a traceback or a message about something else
        (["model=rim", "model.k=2.5"], ["model.k=2.5 is invalid; expected an int"]),
        (["total_frames=1e99"], ["total_frames=1e+99 is invalid", "[1, 1000000000000]"]),
        (["hydra/launcher=nope"], ["unknown hydra/launcher 'nope'; choices: basic", "parallel"]),
        (["model.core=os.path:join"], ["'os.path:join' is not a core", "join(a, *p) cannot take (input_size"]),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path: Path, args: list[str], expected: list[str], train: Run) -> None:
    (tmp_path / "byo_cores.py").write_text(NO_SURFACE)
    proc = train([*args, "hydra.run.dir=run", "hydra.sweep.dir=sweep"])
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rims-rl-train: error: ")
    for text in expected:
        assert text in lines[0]
    assert not list(tmp_path.rglob("metrics.jsonl"))
    assert not list(tmp_path.rglob("checkpoints"))


def _check_train_args(args: list[str]) -> None:
    """What ``rims-rl-train`` checks before it builds anything: the command line, then the composed config."""
    from hydra import compose, initialize_config_dir

    from rims_rl.experiments.config import CONFIG_DIR, build_spec, check_command_line
    from rims_rl.experiments.schema import TrainSchema

    check_command_line(args, "train", TrainSchema)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=args)
    build_spec(cfg)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # types: a constructor argument's annotation, or the constructor's own check
        (["model=rim", "model.k=true"], "model.k=True is invalid; expected an int"),
        (["model=rim", "+model.cell=rnn"], "model.cell='rnn' is invalid; expected one of 'lstm', 'gru'"),
        (["model=rim", "+model.attention_bias=1"], "model.attention_bias=1 is invalid; expected true or false"),
        (["+model.num_layers=2.5"], "model.num_layers=2.5 is invalid; expected an int"),
        (["model.hidden_size=true"], "model.hidden_size=True is invalid; expected an int"),
        (["model.hidden_size=0"], "model lstm0: expected an int hidden_size > 0, got hidden_size=0"),
        (["+agent.stats_window_size=abc"], "agent.stats_window_size='abc' is invalid; expected an int"),
        (["+agent.target_kl=abc"], "agent.target_kl='abc' is invalid; expected a number or null"),
        (["agent.policy_kwargs.net_arch=5"], "agent.policy_kwargs.net_arch=5 is invalid; expected a list or a mapping"),
        (["+agent.policy_kwargs.ortho_init=maybe"], "agent.policy_kwargs.ortho_init='maybe' is invalid; expected true"),
        (["+agent.policy_kwargs.foo=1"], "unknown key agent.policy_kwargs.foo=1; expected one of: agent.policy_kwargs"),
        (["logger.wandb.tags=[1]"], "logger.wandb.tags=[1] is invalid; expected a list of strings"),
        # bounds
        (["seed=4294967296"], "seed=4294967296 is invalid; expected a whole number in [0, 4294967295]"),
        (["n_envs=1e9"], "n_envs=1000000000.0 is invalid; expected a whole number in [1, 1000000]"),
        (["agent.learning_rate=inf"], "agent.learning_rate=inf is invalid; expected a finite number > 0"),
        (["model=rim", "+model.dropout=1"], "expected dropout in [0, 1), got dropout=1"),
        # the algorithm's own constraints, before any env
        (["agent.n_steps=100"], "agent ppo: expected n_steps to be a multiple of sequence_length=32, got n_steps=100"),
        (["agent.batch_size=100"], "expected batch_size to be a positive multiple of sequence_length=32"),
        # absurd budgets, before and after budget.frames_scale
        (
            ["eval.every_frames=1e30"],
            "eval.every_frames=1e+30 is invalid; expected a whole number in [1, 1000000000000]",
        ),
        (["budget.frames_scale=1e300"], "times budget.frames_scale=1e+300 is 1e+305 frames; expected at most 1e+12"),
        (["budget.frames_scale=inf"], "budget.frames_scale=inf is invalid; expected a finite number > 0"),
        # objects that are not cores, named before their keys are judged as arguments
        (["model.core=os:path"], "'os:path' is not a core: expected a core class or a callable"),
        (["model.core=torch.nn:Linear"], "class Linear lacks initial_state("),
        (["model.core=collections:OrderedDict"], "class OrderedDict is not a torch.nn.Module and lacks forward("),
        # Hydra's own groups and keys
        (["hydra/sweeper=nope"], "unknown hydra/sweeper 'nope'; choices: basic"),
        (["hydra/job_logging=x"], "unknown hydra/job_logging 'x'; choices: default, disabled"),
        (["hydra/nope=x"], "unknown Hydra config group hydra/nope (hydra/nope=x); choices: hydra/env, hydra/help"),
        (["hydra.job.chdirr=true"], "unknown key hydra.job.chdirr=True; did you mean hydra.job.chdir?"),
        (["hydra.job.chdir=maybe"], "Value 'maybe' is not a valid bool"),
    ],
)
def test_bad_values_are_refused_before_anything_is_built(args: list[str], expected: str) -> None:
    """Every class of bad value fails in the checks ``rims-rl-train`` runs before building an env (one line, the
    key or value named); the subprocess cases above show the same checks through the real command."""
    with pytest.raises(rims_rl.experiments.config.ConfigError) as info:
        _check_train_args(args)
    message = " ".join(str(info.value).split())
    assert expected in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["episodes=1e9"], "episodes=1000000000.0 is invalid; expected a whole number in [1, 1000000]"),
        (["seed=4294967296"], "seed=4294967296 is invalid; expected a whole number in [0, 4294967295]"),
        (["torch_threads=0"], "torch_threads=0 is invalid; expected a whole number in [1, 1000000]"),
        (["env=nope"], "unknown split (env) 'nope'; choices: distshift"),
        (["hydra/launcher=nope"], "unknown hydra/launcher 'nope'; choices: basic"),
    ],
)
def test_eval_command_line_is_checked_against_its_schema(args: list[str], expected: str) -> None:
    """``rims-rl-eval`` runs the same checks on its own schema before it loads anything."""
    from rims_rl.experiments.config import check_command_line
    from rims_rl.experiments.schema import EvalSchema

    with pytest.raises(rims_rl.experiments.config.ConfigError, match=re.escape(expected)):
        check_command_line(["checkpoint=run", *args], "eval", EvalSchema, groups=("env",))


def test_wandb_online_without_credentials_fails_instead_of_prompting(tmp_path: Path) -> None:
    env = {**clean_env(), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config")}
    proc = subprocess.run(
        [sys.executable, "-m", "rims_rl.experiments.train", "logger.wandb.mode=online", "hydra.run.dir=run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "wandb login" in line and "WANDB_API_KEY" in line
    assert not list(tmp_path.rglob("metrics.jsonl"))


def _job_cfg(train: Run, args: list[str]) -> dict[str, Any]:
    proc = train([*args, "--cfg", "job"])
    ok(proc)
    return yaml.safe_load(proc.stdout)


@pytest.mark.parametrize(
    ("experiment", "split", "frames"),
    [("dido_empty", "empty", 80000), ("dido_multiroom", "multiroom", 1000000), ("dido_doorkey", "doorkey", 300000)],
)
def test_dido_presets(train: Run, experiment: str, split: str, frames: int) -> None:
    cfg = _job_cfg(train, [f"experiment={experiment}", "model=dido_rim_k2"])
    assert cfg["env"]["name"] == split and cfg["total_frames"] == frames
    assert cfg["model"] == {"features": "vector", "core": "rim", "hidden_size": 64, "num_units": 4, "k": 2}
    agent = cfg["agent"]
    assert cfg["n_envs"] == 16
    assert (agent["algo"], agent["n_steps"], agent["batch_size"], agent["n_epochs"]) == ("ppo", 128, 256, 4)
    assert (agent["learning_rate"], agent["sequence_length"], agent["gamma"], agent["gae_lambda"]) == (
        1e-4,
        32,
        0.99,
        0.95,
    )
    assert (agent["ent_coef"], agent["clip_range"], agent["max_grad_norm"]) == (0.01, 0.2, 0.5)
    assert set(DIDO_TABLE.values[split]) <= set(cfg["env"]["train"] + cfg["env"]["heldout"])
    default_model = _job_cfg(train, [f"experiment={experiment}"])["model"]
    assert default_model == {"features": "vector", "core": "lstm", "hidden_size": 64}


@pytest.mark.parametrize(
    ("args", "features", "label"),
    [
        (["model=rim_set"], "set", "rim192_u6_k4_set"),
        (["model=rim_set_authors"], "set", "rim192_u6_k4_authors_set"),
        (["model=dido_rim_k3_set"], "set", "rim64_u4_k3_set"),
        (["model=lstm", "model.features=set"], "set", "lstm192_set"),
        (["model=rim"], "vector", "rim192_u6_k4"),
    ],
)
def test_model_features_choose_the_extractor_output_and_mark_the_label(
    train: Run, args: list[str], features: str, label: str
) -> None:
    from rims_rl.experiments.config import build_spec

    cfg = _job_cfg(train, args)
    assert cfg["model"]["features"] == features
    spec = build_spec(OmegaConf.create(cfg))
    assert (spec.features, spec.label) == (features, label)
    assert "features" not in spec.core_kwargs


def test_dido_model_labels_match_the_published_keys() -> None:
    from rims_rl.experiments.config import model_label

    labels = set()
    for name in ("dido_lstm", "dido_rim_k3", "dido_rim_k2"):
        model = yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text())
        labels.add(model_label(model.pop("core"), model))
    assert labels == {"lstm64", "rim64_u4_k3", "rim64_u4_k2"}


@pytest.mark.parametrize(
    ("experiment", "split", "mission"),
    [
        ("paper_novel_distractors", "novel_distractors", "gru"),
        ("paper_novel_distractors_hard", "novel_distractors_hard", "gru"),
        ("paper_multiroom", "multiroom", None),
    ],
)
def test_paper_minigrid_presets(train: Run, experiment: str, split: str, mission: str | None) -> None:
    cfg = _job_cfg(train, [f"experiment={experiment}", "model=rim"])
    agent = cfg["agent"]
    assert cfg["env"]["name"] == split
    assert (agent["algo"], agent["learning_rate"]) == ("a2c", 7e-4)
    assert agent["policy_kwargs"]["net_arch"] == {"pi": [128, 128], "vf": [128, 128, 128]}
    assert agent["policy_kwargs"]["features_extractor_kwargs"].get("mission_encoder") == mission


def test_cpu_small_budget_scales_frames(tmp_path: Path, train: Run) -> None:
    cfg = _job_cfg(train, ["experiment=dido_doorkey", "budget=cpu_small"])
    assert cfg["budget"] == {"frames_scale": 0.1}
    assert _job_cfg(train, [])["budget"] == {"frames_scale": 1.0}
    run_dir = tmp_path / "run"
    args = [
        "model=lstm",
        "model.hidden_size=8",
        "agent.n_steps=16",
        "agent.sequence_length=16",
        "agent.batch_size=32",
        "n_envs=2",
        "total_frames=1280",
        "eval.every_frames=640",
        "checkpoint.every_frames=1280",
        "budget=cpu_small",
        "eval.episodes=1",
        "eval.final_episodes=1",
        f"env.heldout=[{HELDOUT[0]}]",
        "logger.wandb.mode=disabled",
        f"hydra.run.dir={run_dir}",
    ]
    ok(train(args))
    assert json.loads((run_dir / "run_info.json").read_text())["total_frames"] == 128
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["frames"] for r in rows if "eval/train/return_mean" in r] == [64, 128]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["frames_000000000128"]


def test_dido_table_follows_torch_acs_ppo_protocol(train: Run) -> None:
    agent = _job_cfg(train, ["experiment=dido_doorkey"])["agent"]
    assert (agent["clip_range_vf"], agent["normalize_advantage"], agent["bootstrap_truncated"]) == (0.2, False, False)
    assert (agent["refresh_chunk_states"], agent["shift_chunks"], agent["policy_train_mode"]) == (True, True, True)
    proc = train(["experiment=dido_doorkey", "agent.shift_chunks=maybe", "hydra.run.dir=run"])
    assert proc.returncode != 0 and "agent.shift_chunks='maybe' is invalid; expected true or false" in proc.stderr
