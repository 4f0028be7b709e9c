"""Config checking, in one place: the command line before Hydra composes anything, then the composed config
against the schema (:mod:`rims_rl.experiments.schema`), then the values derived from it.

Every check raises :class:`ConfigError` with a one-line message naming the key, the bad value and what is allowed
(the closest valid key for a typo); :func:`fail` prints it and exits with status 2. Derived values (the model
label, the core kwargs, frame counts as ints) live in :class:`RunSpec`, never in the config.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

import rims_rl
from rims_rl.experiments.limits import MAX_FRAMES, MAX_SEED
from rims_rl.experiments.schema import OPEN_SECTIONS, TrainSchema, schema_fields
from rims_rl.rim import AUTHORS, PAPER

#: The shipped configs (the Hydra apps' ``config_path``): ``rims_rl/configs``, a link to the repository's
#: ``configs/`` in a checkout and package data in an installed wheel, so the apps find them wherever they run.
CONFIG_DIR = (Path(rims_rl.__file__).parent / "configs").resolve()

#: The frame counts of a train config, each times ``budget.frames_scale``.
FRAME_KEYS = ("total_frames", "eval.every_frames", "checkpoint.every_frames")

#: Config groups whose options are files ``configs/<group>/<option>.yaml``.
GROUPS = ("env", "model", "agent", "logger", "budget", "experiment")


class ConfigError(ValueError):
    """A bad value in the config or on the command line; the message is one line."""


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    """A config section as a plain ``dict``, interpolations resolved."""
    return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))


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


def search_path(args: Iterable[str]) -> tuple[list[str], list[Path]]:
    """The config folders a command line adds with Hydra's ``hydra.searchpath=[file:///my/configs]``: users' own
    splits, models and experiments (``my/configs/model/my_rim.yaml`` is then ``model=my_rim``). Hydra searches them
    after the shipped configs, so a file there with a shipped name is not read.

    :param args: the command-line arguments
    :return: the ``hydra.searchpath`` overrides as given (to compose with) and the folders they name that exist
        (``file://`` paths, and ``pkg://`` packages that import)

    >>> search_path(["seed=1", "hydra.searchpath=[file:///tmp,pkg://rims_rl.configs]"])[0]
    ['hydra.searchpath=[file:///tmp,pkg://rims_rl.configs]']
    """
    import importlib.util

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    overrides, folders = [], []
    for arg in args:
        if "searchpath" not in arg or arg.startswith("-"):
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # Hydra's to report
            continue
        if override.key_or_group != "hydra.searchpath" or override.is_delete():
            continue
        overrides.append(arg)
        value = override.value()
        for entry in value if isinstance(value, list) else [value]:
            scheme, _, where = str(entry).partition("://")
            if scheme == "file":
                folders.append(Path(where))
            elif scheme == "pkg":
                try:
                    spec = importlib.util.find_spec(where)
                except ImportError:
                    spec = None
                folders += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    return overrides, [folder for folder in folders if folder.is_dir()]


def hydra_group_options(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """The options of a group of Hydra's own config (``hydra/launcher``, ``hydra/sweeper``, ``hydra/job_logging``,
    ...), as Hydra finds them on its config search path: its own and its plugins' configs and ours under
    ``configs/hydra/``.

    :param group: ``"hydra"`` for the groups, or ``"hydra/<group>"`` for a group's options
    :param config_dir: the configs directory
    :return: the names, sorted; empty for a group that does not exist

    >>> {"basic", "local", "parallel", "slurm"} <= set(hydra_group_options("hydra/launcher"))
    True
    >>> "sweeper" in hydra_group_options("hydra"), hydra_group_options("hydra/nope")
    (True, [])
    """
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    kind = ObjectType.GROUP if group == "hydra" else ObjectType.CONFIG
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group, results_filter=kind))


def check_group_overrides(args: Iterable[str], groups: Iterable[str] = GROUPS, config_dir: Path = CONFIG_DIR) -> None:
    """Check command-line choices of the config groups (``model=rim``, sweeps ``model=lstm,rim`` included) and of
    Hydra's own groups (``hydra/launcher=parallel``, :func:`hydra_group_options`) before Hydra composes anything,
    so an unknown group or option gets one line with the choices instead of Hydra's listing. A group's options
    are the files in ``config_dir`` and in the folders of ``hydra.searchpath`` (:func:`search_path`).

    Arguments that are not group overrides (flags, ``seed=1``, ``hydra.run.dir=...``) are left alone here.

    :param args: the command-line arguments (``sys.argv[1:]``)
    :param groups: the config groups to check
    :param config_dir: the configs directory
    :raises ConfigError: for an option with no ``configs/<group>/<option>.yaml`` (or no Hydra config), or a Hydra
        group that does not exist

    >>> check_group_overrides(["-m", "model=lstm,rim", "seed=0,1", "hydra/launcher=parallel"])
    >>> check_group_overrides(["agent=dqn"])
    Traceback (most recent call last):
    ...
    rims_rl.experiments.config.ConfigError: unknown agent 'dqn'; choices: a2c, ppo
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, groups = list(args), tuple(groups)
    config_dirs = [config_dir, *search_path(args)[1]]
    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # anything Hydra cannot parse is Hydra's to report
            continue
        group = override.key_or_group
        hydras = group.startswith("hydra/")
        if (group not in groups and not hydras) or override.package is not None or override.is_delete():
            continue
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.get_value_element_as_str()]
        if hydras:
            choices = hydra_group_options(group, config_dir)
        else:
            choices = sorted({option for folder in config_dirs for option in group_options(group, folder)})
        if hydras and not choices:
            known = ", ".join(f"hydra/{name}" for name in hydra_group_options("hydra", config_dir))
            raise ConfigError(f"unknown Hydra config group {group} ({arg}); choices: {known}")
        for value in values:
            if value not in choices and not (group == "experiment" and value == "null"):
                raise ConfigError(f"unknown {_group_noun(group)} {value!r}; choices: {', '.join(choices)}")


def _group_noun(group: str) -> str:
    return "split (env)" if group == "env" else group


def model_label(core: str, core_kwargs: Mapping[str, Any], features: str = "vector") -> str:
    """The short name of a model in run names and reports, the one function every part uses: the core's name (an
    import path's attribute, lower case), its ``hidden_size``, ``_u{num_units}`` and ``_k{k}`` for a core with
    units, whatever its name, and ``_set`` for a model whose features are a set (``model.features=set``).

    >>> model_label("rim", {"hidden_size": 192, "num_units": 6, "k": 4})
    'rim192_u6_k4'
    >>> model_label("lstm", {"hidden_size": 64}), model_label("my_pkg.cores:MyCore", {"hidden_size": 32})
    ('lstm64', 'mycore32')
    >>> model_label("rim", {"hidden_size": 192, "num_units": 6, "k": 4}, "set")
    'rim192_u6_k4_set'
    >>> model_label("lstm", {"hidden_size": 192}, "set")
    'lstm192_set'
    """
    label = f"{core.rpartition(':')[2].lower()}{core_kwargs.get('hidden_size')}"
    for key, tag in (("num_units", "u"), ("k", "k")):
        if key in core_kwargs:
            label += f"_{tag}{core_kwargs[key]}"
    variant = {n: core_kwargs[n] for n, default in PAPER.items() if core_kwargs.get(n, default) != default}
    if variant:  # the RIM's options beyond the paper (rims_rl.rim.PAPER): "_authors" for all the authors' choices
        label += "_authors" if variant == AUTHORS else "".join(f"_{n}-{v}" for n, v in variant.items())
    return label if features == "vector" else f"{label}_{features}"


def split_model(model: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Split a ``model`` section into what builds the core and what the features extractor reads.

    :param model: the section, e.g. ``{"core": "rim", "features": "set", "hidden_size": 192}``
    :return: the core, the features (``"vector"`` where the key is absent: configs saved before it existed) and the
        core's constructor kwargs

    >>> split_model({"core": "lstm", "features": "set", "hidden_size": 64})
    ('lstm', 'set', {'hidden_size': 64})
    """
    kwargs = dict(model)
    return kwargs.pop("core"), kwargs.pop("features", "vector"), kwargs


def derive_seed(*entropy: int) -> int:
    """A 31-bit seed derived from integers, e.g. ``(seed, frames)``, independent across different inputs.

    >>> derive_seed(0, 4096) == derive_seed(0, 4096) != derive_seed(1, 4096)
    True
    """
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0] >> 1)


def scaled_frames(frames: int, scale: float) -> int:
    """A frame count times ``budget.frames_scale``, rounded, at least 1.

    >>> scaled_frames(300000, 0.1), scaled_frames(20000, 1.0), scaled_frames(3, 0.1)
    (30000, 20000, 1)
    """
    return max(1, round(frames * scale))


@dataclass(frozen=True)
class RunSpec:
    """What a run is, derived from its config and checked.

    :param split: the generalisation split (an :class:`rims_rl.envs.Split`, validated)
    :param core: the core: a registered name (:data:`rims_rl.CORES`) or an import path ``package.module:Name``
    :param core_kwargs: the core's constructor kwargs (the ``model`` group minus ``core`` and ``features``)
    :param features: ``model.features``: the features extractor's ``output`` (``"vector"`` or ``"set"``)
    :param label: :func:`model_label` of the model
    :param algo: a registered algorithm (:data:`rims_rl.agents.ALGORITHMS`), e.g. ``"ppo"``
    :param total_frames: training frames (environment steps over all training envs)
    :param eval_every: frames between evaluations
    :param eval_episodes: episodes per env id and action mode
    :param eval_n_envs: envs per evaluated env id
    :param final_episodes: episodes per env id and action mode of the final evaluation (at the end of training)
    :param final_n_envs: envs per evaluated env id in the final evaluation
    :param eval_max_steps: the cap on an evaluated episode's steps (``eval.max_steps``), ``None``: no cap
    :param checkpoint_every: frames between checkpoints
    """

    split: Any
    core: str
    core_kwargs: dict[str, Any]
    features: str
    label: str
    algo: str
    total_frames: int
    eval_every: int
    eval_episodes: int
    eval_n_envs: int
    final_episodes: int
    final_n_envs: int
    eval_max_steps: int | None
    checkpoint_every: int


def build_spec(cfg: DictConfig) -> RunSpec:
    """Check a composed ``train`` config and derive the run's values, without building any environment.

    Every key and value is checked against :class:`~rims_rl.experiments.schema.TrainSchema` (:func:`check_config`), env
    ids with :meth:`rims_rl.envs.Split.validate`, the model by building its core with :func:`rims_rl.make_core` on a
    dummy input size (an import path that does not import, or an object without the core surface, fails here).

    :param cfg: the composed config
    :return: the run's spec
    :raises ConfigError: on the first bad value
    """
    import rims_rl.envs
    from rims_rl import make_core
    from rims_rl.experiments.metrics import check_wandb_login

    check_config(cfg, TrainSchema)
    backend = OmegaConf.select(cfg, "backend", default="torch")
    seeds_per_job = int(OmegaConf.select(cfg, "seeds_per_job", default=1))
    if seeds_per_job > 1 and backend != "jax":
        raise ConfigError(
            f"seeds_per_job={seeds_per_job} is invalid with backend={backend}; expected 1 (several seeds in one job "
            f"need backend=jax)"
        )
    if int(cfg.seed) + seeds_per_job - 1 > MAX_SEED:
        raise ConfigError(
            f"seed={cfg.seed} with seeds_per_job={seeds_per_job} is invalid; expected seed + seeds_per_job - 1 <= "
            f"{MAX_SEED} (numpy's seeds are 32-bit)"
        )
    scale = float(OmegaConf.select(cfg, "budget.frames_scale", default=1.0))  # 1: saved before budgets existed
    frames = {key: scaled_frames(int(OmegaConf.select(cfg, key)), scale) for key in FRAME_KEYS}
    for key, value in frames.items():
        if value > MAX_FRAMES:
            raise ConfigError(
                f"{key}={OmegaConf.select(cfg, key)!r} times budget.frames_scale={scale:g} is {value:.3g} frames; "
                f"expected at most {MAX_FRAMES:.0e} (rims_rl.experiments.limits.MAX_FRAMES)"
            )
    try:
        check_wandb_login(cfg.logger.wandb.mode)
    except ValueError as err:
        raise ConfigError(str(err)) from None

    try:
        split = rims_rl.envs.Split(**to_dict(cfg.env)).validate()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"env: {err}") from None

    core, features, model = split_model(to_dict(cfg.model))
    label = model_label(core, model, features)
    output = OmegaConf.select(cfg, "agent.policy_kwargs.features_extractor_kwargs.output", default=None)
    if output not in (None, features):
        raise ConfigError(
            f"agent.policy_kwargs.features_extractor_kwargs.output={output!r} is invalid; expected it unset or "
            f"{features!r} (model.features chooses it)"
        )
    try:
        make_core(core, 8, **model)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model {label}: {err}") from None
    if backend == "torch":  # backend=jax checks its algorithm's arguments in rims_rl.experiments.train_jax.check_jax
        check_algorithm(cfg.agent)

    eval_episodes = int(cfg.eval.episodes)  # counts are whole numbers here (checked); 3e5 arrives as a float
    # A run saved before the final evaluation had its own count finishes as it was configured.
    final_episodes = int(OmegaConf.select(cfg, "eval.final_episodes", default=eval_episodes))
    return RunSpec(
        split=split,
        core=core,
        core_kwargs=model,
        features=features,
        label=label,
        algo=cfg.agent.algo,
        total_frames=frames["total_frames"],
        eval_every=frames["eval.every_frames"],
        eval_episodes=eval_episodes,
        eval_n_envs=min(int(cfg.eval.n_envs), eval_episodes),
        final_episodes=final_episodes,
        final_n_envs=min(int(OmegaConf.select(cfg, "eval.final_n_envs", default=cfg.eval.n_envs)), final_episodes),
        eval_max_steps=_optional_int(OmegaConf.select(cfg, "eval.max_steps", default=None)),  # None: saved before
        checkpoint_every=frames["checkpoint.every_frames"],
    )


def compose_run(overrides: list[str]) -> tuple[DictConfig, RunSpec]:
    """The config that ``rims-rl-train <overrides>`` runs, with W&B disabled, checked as that command checks it
    (:func:`check_command_line`, then :func:`build_spec`): for scripts that drive the training loop themselves
    (``benchmarks/``).

    :param overrides: ``rims-rl-train`` overrides, e.g. ``["env=doorkey"]``
    :return: the composed config and its spec
    :raises ConfigError: on the first bad value, before any env is built
    """
    check_command_line(overrides, "train", TrainSchema)
    cfg = _compose("train", [*overrides, "logger.wandb.mode=disabled"], CONFIG_DIR)
    return cfg, build_spec(cfg)


def check_algorithm(agent: DictConfig) -> None:
    """Check the ``agent`` section's arguments by constructing the algorithm without an env (nothing is built: no
    policy, no buffer), so its own checks (``n_steps`` a multiple of ``sequence_length``, ...) run before any env.

    :param agent: the composed ``agent`` section
    :raises ConfigError: with the algorithm's message, in one line
    """
    from rims_rl.agents import ALGORITHMS, RecurrentActorCriticPolicy

    kwargs = to_dict(agent)
    algo = kwargs.pop("algo")
    kwargs.pop("policy_kwargs", None)  # read when the policy is built, with the env's spaces
    no_env: Any = None  # only the arguments are checked (SB3's load() constructs without an env too)
    try:
        ALGORITHMS[algo](RecurrentActorCriticPolicy, no_env, _init_setup_model=False, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"agent {algo}: {err}") from None


def _optional_int(value: Any) -> int | None:
    """A checked whole number or null (``1e3`` arrives as a float) as ``int | None``."""
    return None if value is None else int(value)


# --- the composed config against the schema -----------------------------------------------------------------------


def check_config(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Check every key and value of a composed config against a schema dataclass.

    Keys the schema does not know are errors (with the closest known key), except in the open sections
    (:data:`~rims_rl.experiments.schema.OPEN_SECTIONS`), where they must be arguments of the core's or the algorithm's
    constructor; a field's rule (:func:`rims_rl.experiments.schema.rule`) checks its value. Keys absent from ``cfg`` are
    not checked (configs saved by older versions lack some).

    :param cfg: the composed config (or one of its sections)
    :param schema: its schema dataclass
    :param prefix: the section's path with a trailing dot, for the messages
    :raises ConfigError: for the first unknown key or bad value
    """
    fields = schema_fields(schema)
    for key in cfg:
        path = prefix + str(key)
        if key not in fields:
            if schema not in OPEN_SECTIONS:
                raise ConfigError(unknown_key(path, cfg.get(key), [f"{prefix}{name}" for name in fields]))
            continue
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{path} is not set (???); expected a value")
        node = cfg[key]
        value = OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
        field = fields[key]
        section = field.metadata.get("schema", field.default_factory)
        if is_dataclass(section) and value is not None:
            if not isinstance(node, DictConfig):
                raise ConfigError(f"{path}={value!r} is invalid; expected a mapping")
            check_config(node, section, f"{path}.")  # type: ignore[arg-type]  # a dataclass type
        rule = field.metadata.get("check")
        expected = rule(value) if rule is not None else None
        if expected is not None:
            raise ConfigError(f"{path}={value!r} is invalid; expected {expected}")
    if schema is TrainSchema:
        _check_constructor_keys(cfg)


def _check_constructor_keys(cfg: DictConfig) -> None:
    """The open keys of ``model`` and ``agent`` must be constructor arguments of the core and the algorithm."""
    from rims_rl.agents import ALGORITHMS
    from rims_rl.cores import check_constructor, resolve_core
    from rims_rl.experiments.builders import POLICY

    try:  # an object that is no core is named as such before its keys are judged as its arguments
        core = resolve_core(cfg.model.core)
        check_constructor(core, cfg.model.core, split_model(to_dict(cfg.model))[2])
    except ValueError as err:
        raise ConfigError(f"model.core: {err}") from None
    algorithm = ALGORITHMS[cfg.agent.algo]
    sections: list[tuple[str, Callable[..., Any], Iterable[str]]] = [("model", core, ("core", "features"))]
    sections.append(("agent", algorithm, ("algo", "policy_kwargs")))
    if OmegaConf.select(cfg, "backend", default="torch") == "torch":  # backend=jax: its policy's, in check_jax
        sections.append(("agent.policy_kwargs", algorithm.policy_aliases[POLICY], ()))
    for name, constructor, own in sections:
        allowed = constructor_arguments(constructor)
        hints = constructor_hints(constructor)
        section = OmegaConf.select(cfg, name, default=None)
        values = to_dict(section) if isinstance(section, DictConfig) else {}
        for key, value in values.items():
            if key in own:
                continue
            if allowed is not None and key not in allowed:
                choices = [f"{name}.{arg}" for arg in (*own, *sorted(allowed))]
                raise ConfigError(unknown_key(f"{name}.{key}", value, choices))
            expected = expected_by_hint(hints[key], value) if key in hints else None
            if expected is not None:
                raise ConfigError(f"{name}.{key}={value!r} is invalid; expected {expected}")


#: The types a config value can have, as a constructor's annotation names them -> how a message says it.
PLAIN_TYPES: dict[type, str] = {
    bool: "true or false",
    int: "an int",
    float: "a number",
    str: "a string",
    type(None): "null",
    list: "a list",
    dict: "a mapping",
}


def constructor_hints(constructor: Callable[..., Any]) -> dict[str, Any]:
    """The type annotations of a class's ``__init__`` (and its bases', for what it passes on with ``**kwargs``) or
    of a callable; empty where they cannot be resolved.

    >>> from rims_rl import RIM
    >>> constructor_hints(RIM)["k"]
    <class 'int'>
    """
    hints: dict[str, Any] = {}
    items = (
        [vars(c).get("__init__") for c in inspect.getmro(constructor)]
        if inspect.isclass(constructor)
        else [constructor]
    )
    for item in filter(None, items):
        try:
            found = typing.get_type_hints(item)
        except Exception:  # an annotation that does not resolve (or a builtin's): nothing to check by
            continue
        hints = {**found, **hints}  # the most derived class's annotation wins
    return hints


def expected_by_hint(hint: Any, value: Any) -> str | None:
    """Check a config value against a constructor argument's annotation.

    Only annotations made of what a config can write (:data:`PLAIN_TYPES`, ``Literal``) are judged; any other
    member (a callable, a class, a tensor type) leaves the value to the constructor.

    :return: ``None`` for a value that fits, else what is expected

    >>> from typing import Literal
    >>> expected_by_hint(int | None, 2.5), expected_by_hint(float, 3), expected_by_hint(Literal["a", "b"], "c")
    ('an int or null', None, "one of 'a', 'b'")
    """
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    expected = []
    for member in typing.get_args(hint) if union else (hint,):
        origin = typing.get_origin(member) or member
        if origin is typing.Literal:
            choices = typing.get_args(member)
            if any(value == choice and type(value) is type(choice) for choice in choices):
                return None
            expected.append(f"one of {', '.join(map(repr, choices))}")
        elif origin in PLAIN_TYPES:
            fits = isinstance(value, origin) and (origin in (bool, float) or not isinstance(value, bool))
            if fits or (origin is float and isinstance(value, int) and not isinstance(value, bool)):
                return None
            expected.append(PLAIN_TYPES[origin])
        else:
            return None
    return " or ".join(expected) or None


#: Constructor arguments the code supplies, never a config: a core's input size, an algorithm's policy and env, a
#: policy's spaces and learning-rate schedule.
SUPPLIED = {"self", "input_size", "policy", "env", "observation_space", "action_space", "lr_schedule"}


def constructor_arguments(constructor: Callable[..., Any]) -> set[str] | None:
    """The keyword arguments a class or callable accepts beyond those the code supplies (:data:`SUPPLIED`), with a
    class's bases' arguments when it passes ``**kwargs`` on.

    :param constructor: a class or callable
    :return: the argument names, or ``None`` when they cannot be known (a ``**kwargs`` that goes nowhere visible)

    >>> from rims_rl import GRUCore
    >>> {"hidden_size", "num_layers", "batch_first"} <= constructor_arguments(GRUCore)
    True
    """
    classes = inspect.getmro(constructor) if inspect.isclass(constructor) else (constructor,)
    names: set[str] = set()
    for item in classes:
        if item is object:
            return None
        try:
            parameters = list(inspect.signature(item).parameters.values())
        except (TypeError, ValueError):
            return None
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names |= {p.name for p in parameters if p.kind in kinds and not p.name.startswith("_")}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return names - SUPPLIED
    return None


def unknown_key(path: str, value: Any, choices: Iterable[str]) -> str:
    """The message for a key that is not in the config.

    :param path: the key, e.g. ``"seeed"``
    :param value: its value
    :param choices: the keys allowed there
    :return: one line naming the key, its value, the closest allowed key and the allowed keys

    >>> unknown_key("seeed", 1, ["seed", "device"])
    'unknown key seeed=1; did you mean seed? expected one of: seed, device'
    """
    choices = list(choices)
    by_name = {choice.rpartition(".")[2]: choice for choice in choices}  # match names, not the shared prefix
    close = difflib.get_close_matches(path.rpartition(".")[2], list(by_name), n=1, cutoff=0.6)
    hint = f"; did you mean {by_name[close[0]]}?" if close else ";"
    return f"unknown key {path}={value!r}{hint} expected one of: {', '.join(choices)}"


# --- the command line, before Hydra composes --------------------------------------------------------------------


def check_command_line(
    args: Iterable[str], config_name: str, schema: type, groups: Iterable[str] = GROUPS, config_dir: Path = CONFIG_DIR
) -> None:
    """Check a command line before Hydra runs: group choices (:func:`check_group_overrides`), then every
    ``key=value`` against the config each combination of group choices composes to (unknown keys, ``+key`` for a
    key that exists, and every value of a sweep against the schema).

    Hydra's own groups (``hydra/launcher=...``) are checked against its search path, its own keys (``hydra.*``)
    against its composed config; whatever Hydra cannot parse is left to Hydra.

    :param args: the command-line arguments (``sys.argv[1:]``)
    :param config_name: the primary config, ``"train"`` or ``"eval"``
    :param schema: its schema dataclass
    :param groups: its config groups
    :param config_dir: the configs directory
    :raises ConfigError: on the first problem
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, groups = list(args), tuple(groups)
    check_group_overrides(args, groups, config_dir)
    searchpath = search_path(args)[0]  # composed with, so that users' own options compose too
    parser = OverridesParser.create()
    choices, plain, hydra_keys = [], [], []
    for arg in args:
        if arg.startswith("-") or ("=" not in arg and not arg.startswith("~")):
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # anything Hydra cannot parse is Hydra's to report
            continue
        key = override.key_or_group
        if override.package is not None or (override.is_delete() and key.startswith("hydra")):
            continue
        if key in groups or key.startswith("hydra/"):
            choices.append(override)
        elif key == "hydra" or key.startswith("hydra."):
            hydra_keys.append(override)
        else:
            plain.append(override)
    if not plain and not hydra_keys:
        return
    options = [_values(override) for override in choices]
    for combination in itertools.product(*options):
        chosen = [f"{override.key_or_group}={value}" for override, value in zip(choices, combination, strict=True)]
        base = _compose(
            config_name, searchpath + chosen, config_dir, with_hydra=bool(hydra_keys)
        )  # Hydra's keys: its config
        for override in plain + hydra_keys:
            _check_key(base, override)
        if hydra_keys:  # their values, against the types of Hydra's config
            hydra_values = [str(o.input_line) for o in hydra_keys]
            _compose(config_name, searchpath + chosen + hydra_values, config_dir, with_hydra=True)
        chosen = [choice for choice in chosen if not choice.startswith("hydra/")]
        fixed = [str(o.input_line) for o in plain if not o.is_sweep_override()]
        cfg = _compose(config_name, searchpath + chosen + fixed, config_dir)
        check_config(cfg, schema)
        for override in plain:
            if override.is_sweep_override():
                for value in _values(override):
                    variant = cfg.copy()
                    OmegaConf.update(variant, override.key_or_group, value, force_add=True)
                    check_config(variant, schema)


def _values(override: Any) -> list[Any]:
    """The values of a Hydra override: its sweep's elements, or its one value."""
    if not override.is_sweep_override():
        return [override.value()]
    try:
        return list(override.sweep_iterator())
    except Exception:  # an interval sweep has no list of values
        return []


def _check_key(cfg: DictConfig, override: Any) -> None:
    """An override must change an existing key, or add (``+``) a new one."""
    key = override.key_or_group
    parent, _, name = key.rpartition(".")
    section = OmegaConf.select(cfg, parent) if parent else cfg
    keys = [str(k) for k in section] if isinstance(section, DictConfig) else []
    if override.is_add() and name in keys:
        current = section[name] if not OmegaConf.is_missing(section, name) else "???"
        raise ConfigError(f"+{key}: {key} is already set ({key}={current!r}); write {key}=<value> without the '+'")
    if not override.is_add() and not override.is_force_add() and name not in keys:
        values = [] if override.is_delete() else _values(override)
        value = values[0] if len(values) == 1 else values
        raise ConfigError(unknown_key(key, value, [f"{parent}.{k}" if parent else k for k in keys]))


def _compose(config_name: str, overrides: list[str], config_dir: Path, with_hydra: bool = False) -> DictConfig:
    """Compose a config with Hydra's compose API, as the app would (Hydra's errors become :class:`ConfigError`);
    ``with_hydra`` keeps Hydra's own config under ``hydra``."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        try:
            return compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
        except Exception as err:  # Hydra's composition errors span several lines; their cause says why
            prefix = f"{' '.join(overrides)}: " if overrides else ""  # no empty "error: : ..." key
            cause = f" ({err.__cause__})" if err.__cause__ is not None else ""
            raise ConfigError(f"{prefix}{err}{cause}") from None
