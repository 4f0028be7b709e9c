"""``rims-rl-train``: train a recurrent agent on a split, evaluating on its train and held-out envs.

Examples::

    rims-rl-train env=doorkey model=rim model.k=3 agent=a2c seed=3 total_frames=3e5
    rims-rl-train -m model=lstm,rim seed=0,1,2                      # a sweep, one run after the other
    rims-rl-train -m hydra/launcher=parallel model=lstm,rim seed=0,1   # in parallel local processes
    rims-rl-train resume=outputs/2026-11-26/09-30-00                   # continue a killed run

The run directory (Hydra's output directory) gets ``metrics.jsonl``, ``run_info.json``, ``checkpoints/``,
``.hydra/`` and, unless ``logger.wandb.mode=disabled``, ``wandb/``. A resumed run keeps writing to its own
directory with its saved config (other overrides are ignored); the resume command's Hydra directory only holds
its log.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

import envs
from experiments.agent import build_agent, load_agent
from experiments.checkpoint import CHECKPOINT_DIR, latest_checkpoint, load_state, save_checkpoint, set_rng_states
from experiments.config import (
    CONFIG_DIR,
    ConfigError,
    RunSpec,
    build_spec,
    check_group_overrides,
    derive_seed,
    fail,
)
from experiments.evaluation import EvalTarget, eval_targets, evaluate
from experiments.metrics import (
    METRICS_FILE,
    RUN_INFO_FILE,
    MetricsLog,
    init_wandb,
    new_wandb_id,
    sb3_logger,
    truncate_metrics,
)

PROG = "rims-rl-train"
#: Mixed into the run seed to seed the evaluation envs (the same levels at every evaluation of a run).
EVAL_SEED_STREAM = 1

log = logging.getLogger(__name__)


def main() -> None:
    """Console entry point: check the command line's config-group choices, then run the Hydra app."""
    try:
        check_group_overrides(sys.argv[1:])
    except ConfigError as err:
        fail(err, PROG)
    hydra_main()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    """One training run (one job of a sweep): resolve ``resume``, check the config, train."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    resuming = cfg.resume is not None
    if resuming:
        run_dir = Path(cfg.resume)
        saved = run_dir / ".hydra" / "config.yaml"
        if not saved.is_file():
            fail(ConfigError(f"resume={cfg.resume!r}: no .hydra/config.yaml there; expected a run directory"), PROG)
        loaded = OmegaConf.load(saved)
        assert isinstance(loaded, DictConfig)
        cfg = loaded
    try:
        spec = build_spec(cfg)
        train(cfg, spec, run_dir, resuming)
    except ConfigError as err:
        fail(err, PROG)


def train(cfg: DictConfig, spec: RunSpec, run_dir: Path, resuming: bool = False) -> None:
    """Train, evaluate every ``eval.every_frames``, checkpoint every ``checkpoint.every_frames`` and at the end.

    :param cfg: the composed config
    :param spec: its checked spec (:func:`experiments.config.build_spec`)
    :param run_dir: the run directory
    :param resuming: continue from the latest checkpoint in ``run_dir`` (from scratch if there is none),
        dropping the metrics logged after it
    """
    # Seed
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(int(cfg.torch_threads))

    checkpoint = latest_checkpoint(run_dir) if resuming else None
    start = checkpoint.frames if checkpoint is not None else 0
    metrics_path = run_dir / METRICS_FILE
    if resuming:
        kept = truncate_metrics(metrics_path, start if checkpoint is not None else -1)
        log.info("resuming %s from frame %d (%d metric rows kept)", run_dir, start, kept)
    else:
        _clear_previous_run(run_dir)
    if start >= spec.total_frames:
        log.info("%s is complete (%d frames)", run_dir, start)
        return
    info = _run_info(cfg, spec, run_dir, resuming)

    # Envs: training envs seeded from the seed and the frame count (a resumed run plays new episodes)
    split = spec.split
    env_seed = cfg.seed if start == 0 else derive_seed(cfg.seed, start)
    env = envs.make_vec_env(split.train, cfg.n_envs, env_seed, vec_env=cfg.vec_env, level_seeds=split.train_seeds)
    eval_seed = derive_seed(cfg.seed, EVAL_SEED_STREAM)
    targets = eval_targets(
        split, lambda env_id, seeds: envs.make_vec_env(env_id, spec.eval_n_envs, eval_seed, level_seeds=seeds)
    )

    # Agent
    if checkpoint is None:
        model = build_agent(cfg, spec, env)
    else:
        model = load_agent(checkpoint.model_path, spec.algo, env=env, device=cfg.device)
        set_rng_states(load_state(checkpoint)["rng"])
        env.seed(env_seed)  # loading re-seeds the env with the run seed
    wandb_config = {**OmegaConf.to_container(cfg, resolve=True), "run_info": info}  # type: ignore[dict-item]
    wandb_run = init_wandb(
        cfg.logger.wandb,
        run_dir,
        info["wandb_id"],
        f"{spec.label}_{split.name}_s{cfg.seed}",
        info["wandb_group"],
        wandb_config,
    )
    metrics = MetricsLog(metrics_path, wandb_run)
    model.set_logger(sb3_logger(metrics))
    log.info(
        "run %s: %s on %s, %s, seed %d -> %s", info["wandb_id"], spec.label, split.name, spec.algo, cfg.seed, run_dir
    )

    # Learn, evaluate, save
    frames = model.num_timesteps
    bar = tqdm(
        total=spec.total_frames,
        initial=frames,
        unit="frame",
        unit_scale=True,
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        desc=spec.label,
    )
    try:
        while frames < spec.total_frames:
            stop = min(
                _next_multiple(frames, spec.eval_every),
                _next_multiple(frames, spec.checkpoint_every),
                spec.total_frames,
            )
            model.learn(stop - frames, callback=_LoopCallback(bar), reset_num_timesteps=False)
            model.logger.dump(model.num_timesteps)  # the last update's train/*, before evaluating and saving
            previous, frames = frames, model.num_timesteps
            done = frames >= spec.total_frames
            if done or frames // spec.eval_every > previous // spec.eval_every:
                results = evaluate(model, targets, spec.eval_episodes, eval_seed)
                metrics.log(frames, results)
                bar.set_postfix(
                    train=results["eval/train/return_mean"], heldout=results["eval/heldout/return_mean"], refresh=False
                )
                log.info(
                    "frames %d: return train %.3f, held-out %.3f",
                    frames,
                    results["eval/train/return_mean"],
                    results["eval/heldout/return_mean"],
                )
            if done or frames // spec.checkpoint_every > previous // spec.checkpoint_every:
                save_checkpoint(model, run_dir, frames)
    finally:
        bar.close()
        metrics.close()
        _close_envs(env, targets)


def _run_info(cfg: DictConfig, spec: RunSpec, run_dir: Path, resuming: bool) -> dict[str, Any]:
    """Write (or, on resume, re-read the W&B id and group from) ``run_info.json``."""
    path = run_dir / RUN_INFO_FILE
    previous = json.loads(path.read_text()) if resuming and path.is_file() else {}
    group = cfg.logger.wandb.group
    if group is None and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        group = Path(HydraConfig.get().sweep.dir).name
    info = {
        "split": spec.split.name,
        "model": spec.label,
        "core": spec.core,
        "agent": spec.algo,
        "seed": int(cfg.seed),
        "train_envs": list(spec.split.train),
        "heldout_envs": list(spec.split.heldout),
        "total_frames": spec.total_frames,
        "wandb_id": previous.get("wandb_id") or new_wandb_id(),
        "wandb_group": previous.get("wandb_group", group),
    }
    path.write_text(json.dumps(info, indent=2) + "\n")
    return info


def _clear_previous_run(run_dir: Path) -> None:
    """A new run in the directory of an earlier one (a rerun of a fixed sweep dir) replaces its metrics,
    checkpoints and W&B files, so that the two are never mixed; ``resume=`` is the way to continue a run instead.
    """
    previous = [path for path in (run_dir / METRICS_FILE, run_dir / CHECKPOINT_DIR, run_dir / "wandb") if path.exists()]
    if previous:
        log.warning("%s holds an earlier run: replacing its metrics, checkpoints and W&B files", run_dir)
    for path in previous:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _next_multiple(frames: int, every: int) -> int:
    """The first multiple of ``every`` after ``frames``."""
    return (frames // every + 1) * every


def _close_envs(env: Any, targets: list[EvalTarget]) -> None:
    env.close()
    for target in targets:
        target.env.close()


class _LoopCallback(BaseCallback):
    """Advances a tqdm bar at each env step, and logs each update's ``train/*`` values at the frame count of
    the rollout it learned from (SB3 alone would log them with the next rollout's ``time/*`` row).
    """

    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self.bar = bar

    def _on_rollout_start(self) -> None:
        self.model.logger.dump(self.model.num_timesteps)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True


if __name__ == "__main__":
    main()
