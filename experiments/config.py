"""Checking a composed config before anything is built, and the values derived from it.

Every check raises :class:`ConfigError` with a one-line message naming the bad value and what was expected;
:func:`fail` prints it and exits non-zero. Derived values (the model label, the core kwargs, frame counts as
ints) live in :class:`RunSpec`, never in the config.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from omegaconf import DictConfig, OmegaConf

#: The repository's top-level ``configs/`` directory (the Hydra apps' ``config_path``).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

#: Config groups whose options are files ``configs/<group>/<option>.yaml``.
GROUPS = ("env", "model", "agent", "logger", "budget", "experiment")

#: Recurrent cores, learning algorithms, vectorised-env kinds and W&B modes the runners accept.
CORES = ("lstm", "gru", "rim")
ALGOS = ("ppo", "a2c")
VEC_ENVS = ("dummy", "subproc")
WANDB_MODES = ("online", "offline", "disabled")


class ConfigError(ValueError):
    """A bad value in the config or on the command line; the message is one line."""


def fail(err: Exception, prog: str) -> NoReturn:
    """Print ``err`` as one line on stderr and exit with status 2 (as argparse does for usage errors).

    :param err: the error
    :param prog: the program name, e.g. ``"rims-rl-train"``
    """
    message = " ".join(str(err).split())
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def group_options(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """:param group: a config group, e.g. ``"model"``
    :param config_dir: the configs directory
    :return: the group's options, sorted (the stems of ``configs/<group>/*.yaml``)

    >>> group_options("agent")
    ['a2c', 'ppo']
    """
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def check_group_overrides(args: Iterable[str], groups: Iterable[str] = GROUPS, config_dir: Path = CONFIG_DIR) -> None:
    """Check command-line choices of the config groups (``model=rim``, sweeps ``model=lstm,rim`` included)
    before Hydra composes anything, so an unknown option gets one clear line instead of Hydra's listing.

    Arguments that are not group overrides (flags, ``seed=1``, ``hydra/launcher=...``) are left to Hydra.

    :param args: the command-line arguments (``sys.argv[1:]``)
    :param groups: the config groups to check
    :param config_dir: the configs directory
    :raises ConfigError: for an option with no ``configs/<group>/<option>.yaml``

    >>> check_group_overrides(["-m", "model=lstm,rim", "seed=0,1"])
    >>> check_group_overrides(["agent=dqn"])
    Traceback (most recent call last):
    ...
    experiments.config.ConfigError: unknown agent 'dqn'; choices: a2c, ppo
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = tuple(groups)
    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # anything Hydra cannot parse is Hydra's to report
            continue
        group = override.key_or_group
        if group not in groups or override.package is not None or override.is_delete():
            continue
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.get_value_element_as_str()]
        choices = group_options(group, config_dir)
        for value in values:
            if value not in choices and not (group == "experiment" and value == "null"):
                raise ConfigError(f"unknown {_group_noun(group)} {value!r}; choices: {', '.join(choices)}")


def _group_noun(group: str) -> str:
    return "split (env)" if group == "env" else group


def as_frames(name: str, value: Any, minimum: int = 1) -> int:
    """Read a frame count given as an int or a whole float (``3e5`` arrives from the command line as a float).

    :param name: the config key, for the error message
    :param value: the value
    :param minimum: the smallest allowed value
    :return: the count as an int
    :raises ConfigError: if it is not a whole number >= ``minimum``

    >>> as_frames("total_frames", 3e5)
    300000
    >>> as_frames("total_frames", 0)
    Traceback (most recent call last):
    ...
    experiments.config.ConfigError: total_frames=0 is invalid; expected a whole number >= 1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
        raise ConfigError(f"{name}={value!r} is invalid; expected a whole number >= {minimum}")
    return int(value)


def model_label(core: str, core_kwargs: Mapping[str, Any]) -> str:
    """The short name of a model used in run names and reports: ``lstm{H}``, ``gru{H}``, ``rim{H}_u{U}_k{k}``.

    >>> model_label("rim", {"hidden_size": 192, "num_units": 6, "k": 4})
    'rim192_u6_k4'
    """
    label = f"{core}{core_kwargs.get('hidden_size')}"
    if core == "rim":
        label += f"_u{core_kwargs.get('num_units')}_k{core_kwargs.get('k')}"
    return label


def derive_seed(*entropy: int) -> int:
    """A 31-bit seed derived from integers, e.g. ``(seed, frames)``, independent across different inputs.

    >>> derive_seed(0, 4096) == derive_seed(0, 4096) != derive_seed(1, 4096)
    True
    """
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0] >> 1)


def frames_scale(cfg: DictConfig) -> float:
    """The ``budget`` group's ``frames_scale`` (1 for configs saved before the group existed).

    :param cfg: the composed config
    :return: the factor applied to ``total_frames``, ``eval.every_frames`` and ``checkpoint.every_frames``
    :raises ConfigError: if it is not a number > 0
    """
    scale = OmegaConf.select(cfg, "budget.frames_scale", default=1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ConfigError(f"budget.frames_scale={scale!r} is invalid; expected a number > 0")
    return float(scale)


def scaled_frames(frames: int, scale: float) -> int:
    """A frame count times ``budget.frames_scale``, rounded, at least 1.

    >>> scaled_frames(300000, 0.1), scaled_frames(20000, 1.0), scaled_frames(3, 0.1)
    (30000, 20000, 1)
    """
    return max(1, round(frames * scale))


@dataclass(frozen=True)
class RunSpec:
    """What a run is, derived from its config and checked.

    :param split: the generalisation split (an :class:`envs.Split`, validated)
    :param core: the recurrent core's name
    :param core_kwargs: the core's constructor kwargs (the ``model`` group minus ``core``)
    :param label: :func:`model_label` of the model
    :param algo: ``"ppo"`` or ``"a2c"``
    :param total_frames: training frames (environment steps over all training envs)
    :param eval_every: frames between evaluations
    :param eval_episodes: episodes per env id and action mode
    :param eval_n_envs: envs per evaluated env id
    :param checkpoint_every: frames between checkpoints
    """

    split: Any
    core: str
    core_kwargs: dict[str, Any]
    label: str
    algo: str
    total_frames: int
    eval_every: int
    eval_episodes: int
    eval_n_envs: int
    checkpoint_every: int


def build_spec(cfg: DictConfig) -> RunSpec:
    """Check a composed ``train`` config and derive the run's values, without building any environment.

    Env ids are checked with :meth:`envs.Split.validate`, model sizes by building the core with
    :func:`rims_rl.make_core` on a dummy input size.

    :param cfg: the composed config
    :return: the run's spec
    :raises ConfigError: on the first bad value
    """
    import envs
    from experiments.metrics import check_wandb_login
    from rims_rl import make_core

    scale = frames_scale(cfg)
    total_frames = scaled_frames(as_frames("total_frames", cfg.total_frames), scale)
    eval_every = scaled_frames(as_frames("eval.every_frames", cfg.eval.every_frames), scale)
    eval_episodes = as_frames("eval.episodes", cfg.eval.episodes)
    eval_n_envs = as_frames("eval.n_envs", cfg.eval.n_envs)
    checkpoint_every = scaled_frames(as_frames("checkpoint.every_frames", cfg.checkpoint.every_frames), scale)
    as_frames("n_envs", cfg.n_envs)
    as_frames("torch_threads", cfg.torch_threads)
    _check_choice("vec_env", cfg.vec_env, VEC_ENVS)
    _check_choice("logger.wandb.mode", cfg.logger.wandb.mode, WANDB_MODES)
    try:
        check_wandb_login(cfg.logger.wandb.mode)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _check_choice("agent.algo", cfg.agent.algo, ALGOS)

    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    assert isinstance(env_cfg, dict)
    try:
        split = envs.Split(**env_cfg).validate()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"env: {err}") from None

    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    core = model.pop("core", None)
    _check_choice("model.core", core, CORES)
    label = model_label(core, model)
    try:
        make_core(core, 8, **model)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model {label}: {err}") from None

    return RunSpec(
        split=split,
        core=core,
        core_kwargs=model,
        label=label,
        algo=cfg.agent.algo,
        total_frames=total_frames,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        eval_n_envs=min(eval_n_envs, eval_episodes),
        checkpoint_every=checkpoint_every,
    )


def _check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is invalid; choices: {', '.join(choices)}")
