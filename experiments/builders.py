"""What builds the agent and the envs from a checked config: the one place the runners touch ``agents`` and ``envs``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gymnasium as gym
from omegaconf import DictConfig
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

import rims_rl.envs
from rims_rl.agents import ALGORITHMS, MiniGridFeaturesExtractor
from rims_rl.experiments.config import ConfigError, RunSpec, derive_seed, to_dict
from rims_rl.experiments.eval_loop import EvalTarget, eval_targets, target_name

POLICY = "MultiInputRecurrentPolicy"
#: Mixed into the run seed to seed the evaluation envs (the same levels at every evaluation of a run).
EVAL_SEED_STREAM = 1


def build_agent(cfg: DictConfig, spec: RunSpec, env: VecEnv) -> BaseAlgorithm:
    """A new agent for ``env``: the ``agent`` group's keys are constructor kwargs of the registered algorithm
    (:data:`rims_rl.agents.ALGORITHMS`; except ``algo``), ``policy_kwargs`` go to the policy, the ``model`` group picks
    the core and, with ``model.features``, the features extractor's ``output``.

    :param cfg: the composed config
    :param spec: the run's checked spec (core and its kwargs)
    :param env: the training env
    :return: the algorithm
    :raises ConfigError: if the algorithm rejects its arguments (e.g. ``n_steps`` not a multiple of
        ``sequence_length``)
    """
    kwargs = to_dict(cfg.agent)
    algo = kwargs.pop("algo")
    extra = dict(kwargs.pop("policy_kwargs", None) or {})
    policy_kwargs = dict(
        core=spec.core,
        core_kwargs=dict(spec.core_kwargs),
        features_extractor_class=MiniGridFeaturesExtractor,
        features_extractor_kwargs={**(extra.pop("features_extractor_kwargs", None) or {}), "output": spec.features},
        normalize_images=False,
        **extra,
    )
    try:
        return ALGORITHMS[algo](
            POLICY, env, seed=cfg.seed, device=cfg.device, verbose=0, policy_kwargs=policy_kwargs, **kwargs
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"agent {algo}: {err}") from None


def load_agent(path: Path, algo: str, env: VecEnv | None = None, device: str = "cpu") -> BaseAlgorithm:
    """Load a saved agent.

    :param path: a ``model.zip`` written by ``model.save``
    :param algo: the registered name of the algorithm that saved it (``"ppo"``, ``"a2c"``)
    :param env: the env to continue training on, or ``None`` to only predict
    :param device: torch device
    :return: the algorithm, with its ``num_timesteps``
    """
    with moved_module_names():
        return ALGORITHMS[algo].load(path, env=env, device=device)


#: The packages that were top-level import names before they moved under ``rims_rl``.
MOVED_PACKAGES = ("agents", "envs", "experiments")


@contextmanager
def moved_module_names() -> Iterator[None]:
    """While loading, the packages' names from before they moved under ``rims_rl`` (``rims_rl.agents.policies``) alias
    the loaded modules (``rims_rl.agents.policies``): SB3 pickles the policy and extractor classes by module path, so
    checkpoints saved before the move load. Nothing changes where the names are top-level, and the aliases are
    removed afterwards.
    """
    prefix = __name__.rpartition("experiments")[0]  # "rims_rl." once moved
    aliases = {
        name.removeprefix(prefix): module
        for name, module in list(sys.modules.items())
        if prefix and name.startswith(prefix) and name.removeprefix(prefix).split(".")[0] in MOVED_PACKAGES
    }
    added = {name: module for name, module in aliases.items() if name not in sys.modules}
    sys.modules.update(added)
    try:
        yield
    finally:
        for name, module in added.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def build_train_env(cfg: DictConfig, spec: RunSpec, seed: int) -> VecEnv:
    """The training envs: ``n_envs`` of the split's train ids (a mixture when several), on its train levels.

    :param cfg: the composed config
    :param spec: the run's checked spec
    :param seed: the envs' base seed
    """
    split = spec.split
    return rims_rl.envs.make_vec_env(split.train, cfg.n_envs, seed, vec_env=cfg.vec_env, level_seeds=split.train_seeds)


def build_eval_targets(spec: RunSpec) -> list[EvalTarget]:
    """One :class:`EvalTarget` per train and held-out env id, on that side's levels (an evaluation seeds them, so
    that every evaluation of a run plays the same levels: :func:`eval_seed_of`).

    :param spec: the run's checked spec
    """
    return eval_targets(spec.split, lambda env_id, seeds: rims_rl.envs.make_env_fn(env_id, level_seeds=seeds))


def build_selection_envs(spec: RunSpec, seed: int) -> list[tuple[str, str, gym.Env]]:
    """One unvectorised env for the split's first train env id and for its first held-out env id, on that side's
    levels, for :func:`rims_rl.experiments.selection.record_selection`.

    :param spec: the run's checked spec
    :param seed: the envs' level-drawing seed (the evaluation seed)
    :return: ``(metric scope, side, env)`` for the train env, then the held-out env
    """
    split = spec.split
    return [
        (
            target_name(split, ids[0], scope),
            scope,
            rims_rl.envs.make_env_fn(ids[0], level_seeds=seeds, level_rng_seed=seed)(),
        )
        for scope, ids, seeds in (
            ("train", split.train, split.train_seeds),
            ("heldout", split.heldout, split.heldout_seeds),
        )
    ]


def eval_seed_of(seed: int) -> int:
    """:param seed: the run seed
    :return: the seed of its evaluations (derived, independent of the training envs' seeds)
    """
    return derive_seed(seed, EVAL_SEED_STREAM)
