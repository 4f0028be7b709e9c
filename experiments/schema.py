"""The configuration schema: one dataclass per config section, a docstring on every field, and the check each value
must pass. Registered in Hydra's ConfigStore (``train_schema``, ``eval_schema``) as the base of ``configs/train.yaml``
and ``configs/eval.yaml``; :mod:`rims_rl.experiments.config` checks a composed config and the command line against it.

A field's check lives in its metadata (:func:`rule`); a check returns ``None`` for a good value and otherwise
what is expected, which the error message shows beside the key and the value. Counts are whole numbers up to
:data:`~rims_rl.experiments.limits.MAX_COUNT`, frame counts up to :data:`~rims_rl.experiments.limits.MAX_FRAMES` (10^12;
why: there), seeds up to :data:`~rims_rl.experiments.limits.MAX_SEED`, and every real number is
finite. The ``model`` and ``agent`` sections
are open beyond their fields: their other keys are constructor arguments of the core and of the algorithm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields, is_dataclass
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from rims_rl.experiments.limits import MAX_COUNT, MAX_FRAMES, MAX_SEED

#: A value check: ``None`` for a good value, else what is expected (``"a whole number >= 1"``).
Check = Callable[[Any], "str | None"]


def rule(check: Check) -> dict[str, Check]:
    """The metadata of a schema field whose value must pass ``check`` (``field(default=MISSING, metadata=rule(...))``:
    values come from the YAML files, not from here).

    :param check: the value check
    """
    return {"check": check}


def group(schema: type) -> dict[str, type]:
    """The metadata of a config-group field checked against ``schema``. Hydra composes a group untyped (its options
    add their own keys: a core's or an algorithm's arguments); :mod:`rims_rl.experiments.config` checks it against
    ``schema``.

    :param schema: the section's dataclass
    """
    return {"schema": schema}


def whole(minimum: int, maximum: int = MAX_COUNT) -> Check:
    """:return: a check for a whole number in ``[minimum, maximum]`` (a whole float such as ``3e5`` passes; bools do
        not)

    >>> whole(1)(3e5), whole(1)(0), whole(0)(True), whole(1, 10)(11)
    (None, 'a whole number in [1, 1000000]', 'a whole number in [0, 1000000]', 'a whole number in [1, 10]')
    """

    def check(value: Any) -> str | None:
        ok = _is_number(value) and math.isfinite(value) and value == int(value) and minimum <= value <= maximum
        return None if ok else f"a whole number in [{minimum}, {maximum}]"

    return check


def number(low: float, high: float = math.inf, *, low_open: bool = False) -> Check:
    """:return: a check for a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)

    >>> number(0, 1)(1.5), number(0, low_open=True)(0.1), number(0)(float("inf"))
    ('a number in [0, 1]', None, 'a finite number >= 0')
    """

    def check(value: Any) -> str | None:
        ok = (
            _is_number(value) and math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
        )
        if ok:
            return None
        if high == math.inf:
            return f"a finite number {'>' if low_open else '>='} {low:g}"
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"

    return check


def one_of(choices: Callable[[], Any]) -> Check:
    """:param choices: returns the allowed values (read when checking, so a registry can grow)
    :return: a check for one of them
    """

    def check(value: Any) -> str | None:
        allowed = list(choices())
        return None if value in allowed else f"one of {', '.join(map(str, allowed))}"

    return check


def optional(check: Check) -> Check:
    """:return: ``check``, or ``null``"""

    def wrapped(value: Any) -> str | None:
        expected = check(value) if value is not None else None
        return None if expected is None else f"{expected} or null"

    return wrapped


def of_type(kind: type, noun: str) -> Check:
    """:return: a check for an instance of ``kind`` (not a bool unless ``kind`` is ``bool``)"""

    def check(value: Any) -> str | None:
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        return None if ok else noun

    return check


def device(value: Any) -> str | None:
    """A torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``) or ``auto`` (SB3: cuda when available).

    >>> device("cuda:0"), device("tpu")
    (None, 'a torch device: cpu, cuda, cuda:<index>, mps or auto')
    """
    expected = "a torch device: cpu, cuda, cuda:<index>, mps or auto"
    if not isinstance(value, str):
        return expected
    if value == "auto":
        return None
    try:
        torch.device(value)
    except RuntimeError:
        return expected
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _vec_envs() -> list[str]:
    from rims_rl.envs.factory import VEC_ENV_CLASSES

    return list(VEC_ENV_CLASSES)


def _algorithms() -> list[str]:
    from rims_rl.agents.registry import ALGORITHMS

    return list(ALGORITHMS)


def _extractor_outputs() -> list[str]:
    from rims_rl.agents.extractors import EXTRACTOR_OUTPUTS

    return list(EXTRACTOR_OUTPUTS)


def _backends() -> list[str]:
    from rims_rl.envs.splits import BACKENDS

    return list(BACKENDS)


WANDB_MODES = ("online", "offline", "disabled")
_STRING = of_type(str, "a string")


def _strings(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    return None if ok else "a list of strings"


_STRINGS = _strings
_BOOL = of_type(bool, "true or false")


# --- sections ----------------------------------------------------------------------------------------------------


@dataclass
class EvalSection:
    """Evaluation during training."""

    every_frames: Any = field(default=MISSING, metadata=rule(whole(1, MAX_FRAMES)))
    """Frames between evaluations (and at the end of training the final evaluation, ``final_episodes``); times
    ``budget.frames_scale``."""
    episodes: Any = field(default=MISSING, metadata=rule(whole(1)))
    """Episodes per env id, with sampled and with greedy actions."""
    n_envs: Any = field(default=MISSING, metadata=rule(whole(1)))
    """Envs per evaluated env id (at most ``episodes`` are used)."""
    final_episodes: Any = field(default=MISSING, metadata=rule(whole(1)))
    """Episodes per env id of the final evaluation (at the end of training; the final scores), with sampled and
    with greedy actions; logged as the last evaluation row with ``eval/final: 1``. Runs saved before the key
    existed use ``episodes``."""
    final_n_envs: Any = field(default=MISSING, metadata=rule(whole(1)))
    """Envs per evaluated env id in the final evaluation (at most ``final_episodes`` are used)."""
    max_steps: Any = field(default=MISSING, metadata=rule(optional(whole(1))))
    """A cap on every evaluation's episodes (the final one's too): the most steps an evaluation plays per episode;
    null = no cap. An episode that reaches it without ending is cut and counted as a failure with its return so far
    (0 in MiniGrid) and length ``max_steps``; the episode counts are unchanged. The evaluation rows record
    ``eval/max_steps`` and ``eval/<scope>/capped_fraction`` (and ``greedy_capped_fraction``), the fraction of counted
    episodes cut, and the report notes it. Both backends."""


@dataclass
class CheckpointSection:
    """Checkpoints (``<run dir>/checkpoints/frames_<F>/``)."""

    every_frames: Any = field(default=MISSING, metadata=rule(whole(1, MAX_FRAMES)))
    """Frames between checkpoints (also saved at the end of training); times ``budget.frames_scale``."""


@dataclass
class WandbSection:
    """Weights & Biases (offline by default: no login, no network)."""

    mode: str = field(default=MISSING, metadata=rule(one_of(lambda: WANDB_MODES)))
    """``online``, ``offline`` or ``disabled`` (no ``wandb/`` directory at all)."""
    project: str = field(default=MISSING, metadata=rule(_STRING))
    """The W&B project."""
    entity: Any = field(default=MISSING, metadata=rule(optional(_STRING)))
    """Your W&B user or team; null = the logged-in user's default entity."""
    group: Any = field(default=MISSING, metadata=rule(optional(_STRING)))
    """The W&B group; null = the sweep directory's name in a multirun, no group for a single run."""
    tags: Any = field(default=MISSING, metadata=rule(_STRINGS))
    """W&B tags."""


@dataclass
class LoggerSection:
    """Where metrics go besides ``metrics.jsonl``."""

    wandb: WandbSection = field(default_factory=WandbSection)
    """The W&B run."""


@dataclass
class BudgetSection:
    """A training budget."""

    frames_scale: Any = field(default=MISSING, metadata=rule(number(0, low_open=True)))
    """Factor on ``total_frames``, ``eval.every_frames`` and ``checkpoint.every_frames`` (rounded, at least 1; the
    scaled counts must stay within :data:`~rims_rl.experiments.limits.MAX_FRAMES`)."""


@dataclass
class SplitSection:
    """A generalisation split (``configs/env/``): the fields of :class:`rims_rl.envs.Split`, which checks them."""

    name: str = field(default=MISSING, metadata=rule(_STRING))
    """The split's name (its file's stem)."""
    train: Any = MISSING
    """Training env ids; several make a mixture."""
    heldout: Any = MISSING
    """Held-out env ids, each evaluated separately."""
    train_seeds: Any = None
    """Level seeds allowed in training; null = any level."""
    heldout_seeds: Any = None
    """Level seeds of the held-out evaluation; null = any level."""
    jax: Any = None
    """The JAX env ids standing for train and heldout, ``{train: [...], heldout: [...]}``; null = torch only."""


@dataclass
class ModelSection:
    """The recurrent core (``configs/model/``). Keys other than ``core`` and ``features`` are the core's constructor
    arguments (``hidden_size``; for ``rim`` also ``num_units``, ``k``, ...), checked by building the core."""

    core: str = field(default=MISSING, metadata=rule(_STRING))
    """A registered core (:data:`rims_rl.CORES`) or an import path ``package.module:Name`` of a class or callable
    taking ``(input_size, **kwargs)`` that returns a core (``forward(input, hx=None, *, episode_starts=None)``,
    ``hidden_size``, ``initial_state``)."""
    features: str = field(default=MISSING, metadata=rule(one_of(_extractor_outputs)))
    """What the core reads (:data:`rims_rl.agents.extractors.EXTRACTOR_OUTPUTS`, the features extractor's ``output``):
    ``vector``, one feature vector per step; ``set``, the view's cells (and direction, mission) as a set of elements,
    which a core with ``accepts_sets`` (``rim``) reads as a set and any other core flattened. ``vector`` unless a
    model config says otherwise (the schema's default of ``model``); not a core argument."""


@dataclass
class PolicySection:
    """``agent.policy_kwargs``: arguments of :class:`rims_rl.agents.RecurrentActorCriticPolicy` (other keys pass
    through)."""

    net_arch: Any = None
    """MLP layers after the core, as in SB3: ``{pi: [64], vf: [64]}`` or one list for both."""
    features_extractor_kwargs: Any = field(default=MISSING, metadata=rule(optional(of_type(dict, "a mapping"))))
    """Arguments of :class:`rims_rl.agents.MiniGridFeaturesExtractor` (e.g. ``mission_encoder: gru``)."""
    shared_core: Any = field(default=MISSING, metadata=rule(optional(of_type(bool, "true or false"))))
    """True: actor and critic share one core; false: the critic gets its own core of the same kind."""


@dataclass
class AgentSection:
    """The learning algorithm (``configs/agent/``). Keys other than ``algo`` and ``policy_kwargs`` are constructor
    arguments of the algorithm's class; any other argument of that class may be added with ``+agent.<name>=``."""

    algo: str = field(default=MISSING, metadata=rule(one_of(_algorithms)))
    """A registered algorithm (:data:`rims_rl.agents.ALGORITHMS`), e.g. ``ppo``."""
    learning_rate: Any = field(default=MISSING, metadata=rule(number(0, low_open=True)))
    """The optimizer's learning rate."""
    n_steps: Any = field(default=MISSING, metadata=rule(whole(1)))
    """Steps per env per rollout."""
    batch_size: Any = field(default=MISSING, metadata=rule(optional(whole(1))))
    """Minibatch size in steps (PPO), a multiple of ``sequence_length``."""
    n_epochs: Any = field(default=MISSING, metadata=rule(whole(1)))
    """Passes over each rollout (PPO)."""
    gamma: Any = field(default=MISSING, metadata=rule(number(0, 1)))
    """Discount factor."""
    gae_lambda: Any = field(default=MISSING, metadata=rule(number(0, 1)))
    """GAE's lambda."""
    clip_range: Any = field(default=MISSING, metadata=rule(optional(number(0, low_open=True))))
    """PPO's clipping range."""
    ent_coef: Any = field(default=MISSING, metadata=rule(number(0)))
    """Weight of the entropy bonus."""
    vf_coef: Any = field(default=MISSING, metadata=rule(number(0)))
    """Weight of the value loss."""
    max_grad_norm: Any = field(default=MISSING, metadata=rule(number(0, low_open=True)))
    """Gradient clipping norm."""
    sequence_length: Any = field(default=MISSING, metadata=rule(optional(whole(1))))
    """Length of the replayed BPTT chunks; ``n_steps`` must be a multiple of it."""
    normalize_advantage: Any = field(default=MISSING, metadata=rule(_BOOL))
    """Normalise advantages per minibatch (torch-ac does not)."""
    clip_range_vf: Any = field(default=MISSING, metadata=rule(optional(number(0, low_open=True))))
    """Clip the value loss as torch-ac (PPO); null: the plain squared error."""
    bootstrap_truncated: Any = field(default=MISSING, metadata=rule(_BOOL))
    """Bootstrap time-limit truncations; false: truncation is terminal, as torch-ac's ``mask = 1 - done``."""
    refresh_chunk_states: Any = field(default=MISSING, metadata=rule(_BOOL))
    """Write the recurrent states recomputed in the update back as chunk start states, as torch-ac (PPO)."""
    shift_chunks: Any = field(default=MISSING, metadata=rule(_BOOL))
    """Start chunks ``sequence_length // 2`` later on every other epoch, as torch-ac (PPO)."""
    policy_train_mode: Any = field(default=MISSING, metadata=rule(_BOOL))
    """Collect rollouts and update with the policy in train mode, as torch-ac: a core's ``dropout`` acts (the update
    then does not reproduce the rollout's log-probs exactly); false: eval mode, dropout off."""
    policy_kwargs: Any = field(default=MISSING, metadata=group(PolicySection))
    """Arguments of the policy."""


@dataclass
class TrainSchema:
    """``rims-rl-train`` (``configs/train.yaml``)."""

    env: Any = field(default=MISSING, metadata=group(SplitSection))
    """The split (``configs/env/<name>.yaml``)."""
    model: Any = field(default_factory=lambda: {"features": "vector"}, metadata=group(ModelSection))
    """The recurrent core (``configs/model/<name>.yaml``), composed over ``features: vector``, so that every model
    config has ``model.features`` (runs saved before the key existed read as ``vector``)."""
    agent: Any = field(default=MISSING, metadata=group(AgentSection))
    """The algorithm (``configs/agent/<name>.yaml``)."""
    logger: LoggerSection = field(default_factory=LoggerSection)
    """W&B settings."""
    budget: BudgetSection = field(default_factory=BudgetSection)
    """The frame budget (``configs/budget/``)."""
    seed: Any = field(default=MISSING, metadata=rule(whole(0, MAX_SEED)))
    """Seeds python, numpy, torch, the training envs and (derived) the evaluation envs."""
    backend: str = field(default="torch", metadata=rule(one_of(_backends)))
    """``torch`` (SB3 agents on MiniGrid) or ``jax`` (navix envs, policy and update as one jitted JAX program;
    the same config keys, metrics and run directories). Runs saved before the key existed read as ``torch``."""
    seeds_per_job: Any = field(default=1, metadata=rule(whole(1)))
    """Seeds ``seed`` .. ``seed + seeds_per_job - 1`` trained together in one vmapped program (``backend=jax``
    only), each in its own run directory ``<run dir>/seed_<s>/``."""
    total_frames: Any = field(default=MISSING, metadata=rule(whole(1, MAX_FRAMES)))
    """Environment steps over all training envs (``3e5`` is accepted); times ``budget.frames_scale``; at most
    :data:`~rims_rl.experiments.limits.MAX_FRAMES` (10^12) before and after the scale."""
    n_envs: Any = field(default=MISSING, metadata=rule(whole(1)))
    """Training envs in one VecEnv."""
    vec_env: str = field(default=MISSING, metadata=rule(one_of(_vec_envs)))
    """``dummy`` (one process) or ``subproc`` (one process per env)."""
    device: str = field(default=MISSING, metadata=rule(device))
    """The torch device of the agent."""
    torch_threads: Any = field(default=MISSING, metadata=rule(whole(1)))
    """``torch.set_num_threads``; keep 1 when running several jobs per machine."""
    eval: EvalSection = field(default_factory=EvalSection)
    """Evaluation during training."""
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    """Checkpoints."""
    resume: Any = field(default=MISSING, metadata=rule(optional(_STRING)))
    """A run directory: continue that run from its latest checkpoint, with its own config."""


@dataclass
class EvalSchema:
    """``rims-rl-eval`` (``configs/eval.yaml``)."""

    env: Any = field(default=None, metadata=group(SplitSection))
    """A split from ``configs/env/``; null = the split the checkpoint's run trained on."""
    checkpoint: str = field(default=MISSING, metadata=rule(_STRING))
    """A run directory (its latest checkpoint), a checkpoint directory or its ``model.zip``."""
    episodes: Any = field(default=MISSING, metadata=rule(whole(1)))
    """Episodes per env id, with sampled and with greedy actions."""
    n_envs: Any = field(default=MISSING, metadata=rule(whole(1)))
    """Envs per evaluated env id (at most ``episodes`` are used)."""
    max_steps: Any = field(default=MISSING, metadata=rule(optional(whole(1))))
    """A cap on the episodes: the most steps an evaluation plays per episode; null = no cap. An episode that
    reaches it without ending is cut and counted as a failure with its return so far (0 in MiniGrid) and length
    ``max_steps``; the episode counts are unchanged. The JSON records ``max_steps`` and
    ``eval/<scope>/capped_fraction`` (and ``greedy_capped_fraction``), the fraction of counted episodes cut."""
    seed: Any = field(default=MISSING, metadata=rule(whole(0, MAX_SEED)))
    """Seeds the evaluation envs and the sampled actions."""
    device: str = field(default=MISSING, metadata=rule(device))
    """The torch device."""
    torch_threads: Any = field(default=MISSING, metadata=rule(whole(1)))
    """``torch.set_num_threads``."""
    output: Any = field(default=MISSING, metadata=rule(optional(_STRING)))
    """The JSON file; null = ``eval.json`` in this command's Hydra directory."""


#: The sections whose keys beyond the schema's fields are constructor arguments (not typos): a core's, an
#: algorithm's, a policy's.
OPEN_SECTIONS = (ModelSection, AgentSection, PolicySection)


def schema_fields(schema: type) -> dict[str, Field[Any]]:
    """:param schema: a schema dataclass
    :return: field name -> the field
    """
    assert is_dataclass(schema)
    return {f.name: f for f in fields(schema)}


# The bases of configs/train.yaml and configs/eval.yaml (their defaults lists name them first).
ConfigStore.instance().store(name="train_schema", node=TrainSchema)
ConfigStore.instance().store(name="eval_schema", node=EvalSchema)
