"""``rims-rl-eval``: evaluate a saved model on a split and print (and write) the metrics as JSON.

Examples::

    rims-rl-eval checkpoint=outputs/2026-11-26/09-30-00                 # latest checkpoint, its own split
    rims-rl-eval checkpoint=outputs/.../checkpoints/frames_000000300032 env=doorkey episodes=100

The metrics are those logged during training (:mod:`rims_rl.experiments.eval_loop`): ``eval/<scope>/<stat>``. A bar of
the counted episodes (with the episodes done per env id) is shown on stderr while it plays.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import rims_rl.envs
from rims_rl.experiments.builders import load_agent
from rims_rl.experiments.checkpoint import resolve_checkpoint, run_dir_of
from rims_rl.experiments.config import (
    CONFIG_DIR,
    ConfigError,
    check_command_line,
    check_config,
    fail,
    model_label,
    split_model,
    to_dict,
)
from rims_rl.experiments.eval_loop import eval_targets, evaluate
from rims_rl.experiments.schema import EvalSchema

PROG = "rims-rl-eval"


def main() -> None:
    """Console entry point: check the command line (split choice, keys, values), then run the Hydra app."""
    try:
        check_command_line(sys.argv[1:], "eval", EvalSchema, groups=("env",))
    except ConfigError as err:
        fail(err, PROG)
    hydra_main()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    """Evaluate, print the JSON on stdout and write it to ``output`` (default: ``eval.json`` in the Hydra dir)."""
    try:
        result = evaluate_checkpoint(cfg)
    except ConfigError as err:
        fail(err, PROG)
    text = json.dumps(result, indent=2)
    output = Path(cfg.output) if cfg.output is not None else Path(HydraConfig.get().runtime.output_dir) / "eval.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    print(text)


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Load the checkpoint and the config of the run that saved it, then evaluate on the split.

    :param cfg: the composed ``eval`` config
    :return: ``{"checkpoint", "frames", "split", "model", "agent", "seed", "episodes", "max_steps", "metrics"}``
    :raises ConfigError: for a missing checkpoint or run config, a bad split or bad counts
    """
    check_config(cfg, EvalSchema)
    episodes = int(cfg.episodes)  # a whole number (checked); 1e2 arrives as a float
    n_envs = min(int(cfg.n_envs), episodes)
    try:
        checkpoint = resolve_checkpoint(Path(cfg.checkpoint))
    except FileNotFoundError as err:
        raise ConfigError(f"checkpoint={cfg.checkpoint!r}: {err}") from None
    if not checkpoint.model_path.is_file():
        raise ConfigError(
            f"checkpoint={cfg.checkpoint!r}: {str(checkpoint.path)!r} is a backend=jax checkpoint; rims-rl-eval "
            f"evaluates torch runs (a jax run's final evaluation is its last eval row, eval.final_episodes)"
        )
    saved = run_dir_of(checkpoint) / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"checkpoint={cfg.checkpoint!r}: expected the run's config at {str(saved)!r}")
    run_cfg = OmegaConf.load(saved)
    split_cfg = cfg.get("env") or run_cfg.env
    try:
        split = rims_rl.envs.Split(**to_dict(split_cfg)).validate()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"env: {err}") from None

    torch.set_num_threads(int(cfg.torch_threads))
    algo = run_cfg.agent.algo
    model = load_agent(checkpoint.model_path, algo, device=cfg.device)
    model.set_random_seed(cfg.seed)  # after loading, which re-seeds python, numpy and torch with the run's seed
    targets = eval_targets(split, lambda env_id, seeds: rims_rl.envs.make_env_fn(env_id, level_seeds=seeds))
    max_steps = None if cfg.max_steps is None else int(cfg.max_steps)
    metrics = evaluate(model, targets, episodes, n_envs, cfg.seed, max_steps, progress=True)
    core, features, core_kwargs = split_model(to_dict(run_cfg.model))
    return {
        "checkpoint": str(checkpoint.path),
        "frames": int(model.num_timesteps),
        "split": split.name,
        "model": model_label(core, core_kwargs, features),
        "agent": algo,
        "seed": int(cfg.seed),
        "episodes": episodes,
        "max_steps": max_steps,
        "metrics": metrics,
    }


if __name__ == "__main__":
    main()
