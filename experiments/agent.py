"""Building and loading the agent from a config: the one place the runners touch ``agents``."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents import MiniGridFeaturesExtractor, RecurrentA2C, RecurrentPPO
from experiments.config import ConfigError, RunSpec

#: The algorithm class of each ``agent.algo``.
ALGORITHMS: dict[str, type[RecurrentPPO]] = {"ppo": RecurrentPPO, "a2c": RecurrentA2C}

POLICY = "MultiInputRecurrentPolicy"


def build_agent(cfg: DictConfig, spec: RunSpec, env: VecEnv) -> BaseAlgorithm:
    """A new agent for ``env``: the ``agent`` group's keys are constructor kwargs (except ``algo`` and
    ``policy_kwargs``), the ``model`` group picks the core.

    :param cfg: the composed config
    :param spec: the run's checked spec (core and its kwargs)
    :param env: the training env
    :return: the algorithm
    :raises ConfigError: if the algorithm rejects its arguments (e.g. ``n_steps`` not a multiple of
        ``sequence_length``)
    """
    kwargs = OmegaConf.to_container(cfg.agent, resolve=True)
    assert isinstance(kwargs, dict)
    algo = kwargs.pop("algo")
    extra = dict(kwargs.pop("policy_kwargs", None) or {})
    policy_kwargs = dict(
        core=spec.core,
        core_kwargs=dict(spec.core_kwargs),
        features_extractor_class=MiniGridFeaturesExtractor,
        features_extractor_kwargs=dict(extra.pop("features_extractor_kwargs", None) or {}),
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
    :param algo: ``"ppo"`` or ``"a2c"``, the algorithm that saved it
    :param env: the env to continue training on, or ``None`` to only predict
    :param device: torch device
    :return: the algorithm, with its ``num_timesteps``
    """
    return ALGORITHMS[algo].load(path, env=env, device=device)
