"""``rims-rl-train``: train a recurrent agent on a split, evaluating on its train and held-out envs.

Examples::

    rims-rl-train env=doorkey model=rim model.k=3 agent=a2c seed=3 total_frames=3e5
    rims-rl-train -m model=lstm,rim seed=0,1,2                      # a sweep, one run after the other
    rims-rl-train -m hydra/launcher=parallel model=lstm,rim seed=0,1   # in parallel local processes
    rims-rl-train resume=outputs/2026-11-26/09-30-00                   # continue a killed run

The run directory (Hydra's output directory) gets ``metrics.jsonl``, ``run_info.json``, ``checkpoints/``,
``.hydra/``, unless ``logger.wandb.mode=disabled`` ``wandb/``, and for a core that reports its active units
``selection/`` and ``selection_raster.png`` (:mod:`rims_rl.experiments.selection`). A resumed run keeps writing to its
own directory with its saved config (other overrides are ignored); the resume command's Hydra directory only holds
its log.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

from rims_rl.experiments.builders import (
    build_agent,
    build_eval_targets,
    build_selection_envs,
    build_train_env,
    eval_seed_of,
    load_agent,
)
from rims_rl.experiments.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    latest_checkpoint,
    load_state,
    save_checkpoint,
    set_rng_states,
)
from rims_rl.experiments.config import (
    CONFIG_DIR,
    ConfigError,
    RunSpec,
    build_spec,
    check_command_line,
    derive_seed,
    fail,
    to_dict,
)
from rims_rl.experiments.eval_loop import EvalTarget, evaluate, reports_units, row_keys
from rims_rl.experiments.metrics import (
    METRICS_FILE,
    RUN_INFO_FILE,
    MetricsLog,
    init_wandb,
    new_wandb_id,
    sb3_logger,
    truncate_metrics,
)
from rims_rl.experiments.schema import TrainSchema
from rims_rl.experiments.selection import RASTER_FILE, SELECTION_DIR, record_selection

PROG = "rims-rl-train"

log = logging.getLogger(__name__)


def main() -> None:
    """Console entry point: check the command line (groups, keys, values), then run the Hydra app."""
    try:
        check_command_line(sys.argv[1:], "train", TrainSchema)
    except ConfigError as err:
        fail(err, PROG)
    hydra_main()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    """One training run (one job of a sweep): resolve ``resume``, check the config, train."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    resuming = cfg.resume is not None
    try:
        if resuming:
            run_dir, cfg = saved_run(Path(cfg.resume))
        spec = build_spec(cfg)
        if OmegaConf.select(cfg, "backend", default="torch") == "jax":
            from rims_rl.experiments.train_jax import check_jax, train_jax  # imports jax

            train_jax(cfg, spec, check_jax(cfg, spec), run_dir, resuming)
        else:
            train(cfg, spec, run_dir, resuming)
    except ConfigError as err:
        fail(err, PROG)


def saved_run(run_dir: Path) -> tuple[Path, DictConfig]:
    """:param run_dir: the directory of a run to resume
    :return: the directory and its saved config
    :raises ConfigError: if it has no ``.hydra/config.yaml``
    """
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume={str(run_dir)!r}: no .hydra/config.yaml there; expected a run directory")
    cfg = OmegaConf.load(saved)
    assert isinstance(cfg, DictConfig)
    return run_dir, cfg


def train(cfg: DictConfig, spec: RunSpec, run_dir: Path, resuming: bool = False) -> None:
    """Train, evaluate every ``eval.every_frames``, checkpoint every ``checkpoint.every_frames`` and at the end:
    seed, prepare the run directory, build the envs and the agent, open the logs, learn.

    :param cfg: the composed config
    :param spec: its checked spec (:func:`rims_rl.experiments.config.build_spec`)
    :param run_dir: the run directory
    :param resuming: continue from the latest checkpoint in ``run_dir`` (from scratch if there is none),
        dropping the metrics logged after it
    """
    # 1. Seed
    seed_everything(cfg.seed, cfg.torch_threads)

    # 2. Run directory: resume from its checkpoint, or replace an earlier run
    checkpoint = prepare_run_dir(run_dir, resuming)
    start = checkpoint.frames if checkpoint is not None else 0
    if start >= spec.total_frames:
        log.info("%s is complete (%d frames)", run_dir, start)
        return
    info = write_run_info(cfg, spec, run_dir, resuming)

    # 3. Envs: training envs seeded from the seed and the frame count (a resumed run plays new episodes)
    env_seed = cfg.seed if start == 0 else derive_seed(cfg.seed, start)
    env = build_train_env(cfg, spec, env_seed)
    targets = build_eval_targets(spec)

    # 4. Agent: new, or restored with its RNG states
    if checkpoint is None:
        model = build_agent(cfg, spec, env)
    else:
        model = load_agent(checkpoint.model_path, spec.algo, env=env, device=cfg.device)
        set_rng_states(load_state(checkpoint)["rng"])
        env.seed(env_seed)  # loading re-seeds the env with the run seed

    # 5. Logs: metrics.jsonl, W&B and SB3's logger into both
    metrics = open_metrics(cfg, spec, run_dir, info)
    model.set_logger(sb3_logger(metrics))
    log.info(
        "run %s: %s on %s, %s, seed %d -> %s",
        info["wandb_id"],
        spec.label,
        spec.split.name,
        spec.algo,
        cfg.seed,
        run_dir,
    )

    # 6. Learn, evaluating and saving on schedule; at the end, one episode's selection raster per side
    try:
        learn(model, spec, targets, metrics, run_dir, cfg.seed)
    finally:
        metrics.close()
        env.close()


def seed_everything(seed: int, torch_threads: int) -> None:
    """Seed python, numpy and torch, and set torch's thread count."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(int(torch_threads))


def prepare_run_dir(run_dir: Path, resuming: bool) -> Checkpoint | None:
    """Resuming: find the latest checkpoint and drop the metrics logged after it. A new run: replace an earlier
    run's files in ``run_dir``.

    :return: the checkpoint to resume from, or ``None`` to start from scratch
    """
    if not resuming:
        _clear_previous_run(run_dir)
        return None
    checkpoint = latest_checkpoint(run_dir)
    start = checkpoint.frames if checkpoint is not None else 0
    kept = truncate_metrics(run_dir / METRICS_FILE, start if checkpoint is not None else -1)
    log.info("resuming %s from frame %d (%d metric rows kept)", run_dir, start, kept)
    return checkpoint


def open_metrics(cfg: DictConfig, spec: RunSpec, run_dir: Path, info: dict[str, Any]) -> MetricsLog:
    """``metrics.jsonl`` (appended to) and, unless disabled, the run's W&B run (resumed under the same id)."""
    wandb_config = {**to_dict(cfg), "run_info": info}
    wandb_run = init_wandb(
        cfg.logger.wandb,
        run_dir,
        info["wandb_id"],
        f"{spec.label}_{spec.split.name}_s{cfg.seed}",
        info["wandb_group"],
        wandb_config,
    )
    return MetricsLog(run_dir / METRICS_FILE, wandb_run)


def learn(
    model: BaseAlgorithm,
    spec: RunSpec,
    targets: list[EvalTarget],
    metrics: MetricsLog,
    run_dir: Path,
    seed: int,
) -> None:
    """Learn up to ``spec.total_frames`` in chunks that end at the next evaluation or checkpoint, evaluating every
    ``spec.eval_every`` and checkpointing every ``spec.checkpoint_every`` frames, and both at the end.

    Every evaluation row carries ``eval/episodes``, its episodes per env id and action mode: ``spec.eval_episodes``
    (on ``spec.eval_n_envs`` sub-envs) on the curve's points; the evaluation at the end is the final one,
    ``spec.final_episodes`` (on ``spec.final_n_envs``), marked ``eval/final: 1``; ``time/eval_seconds``, the wall
    time it took; and with a cap (``spec.eval_max_steps``) ``eval/max_steps``. It is logged before the final
    checkpoint, so a run killed before it is logged evaluates again after resuming, and exactly one final row
    remains. The selection rasters
    (:func:`record_rasters`) are recorded before the final checkpoint too, so a resumed run never ends without them.

    :param model: the agent (its ``num_timesteps`` is where it starts)
    :param spec: the run's spec
    :param targets: the evaluated envs
    :param metrics: where evaluation results go
    :param run_dir: where checkpoints (and rasters) go
    :param seed: the run seed (the evaluation envs' seed is derived from it)
    """
    eval_seed = eval_seed_of(seed)
    frames = model.num_timesteps
    bar = progress_bar(spec, frames, spec.label)
    try:
        while frames < spec.total_frames:
            stop = min(
                next_multiple(frames, spec.eval_every),
                next_multiple(frames, spec.checkpoint_every),
                spec.total_frames,
            )
            model.learn(stop - frames, callback=_LoopCallback(bar), reset_num_timesteps=False)
            model.logger.dump(model.num_timesteps)  # the last update's train/*, before evaluating and saving
            previous, frames = frames, model.num_timesteps
            done = frames >= spec.total_frames
            if done or frames // spec.eval_every > previous // spec.eval_every:
                episodes, n_envs = (
                    (spec.final_episodes, spec.final_n_envs) if done else (spec.eval_episodes, spec.eval_n_envs)
                )
                began = time.perf_counter()
                results = evaluate(model, targets, episodes, n_envs, eval_seed, spec.eval_max_steps, progress=True)
                results.update(row_keys(episodes, time.perf_counter() - began, spec.eval_max_steps, done))
                metrics.log(frames, results)
                train_return, heldout_return = results["eval/train/return_mean"], results["eval/heldout/return_mean"]
                bar.set_postfix(train=train_return, heldout=heldout_return, refresh=False)
                log.info(
                    "frames %d: return train %.3f, held-out %.3f (evaluation: %.1f s)",
                    frames,
                    train_return,
                    heldout_return,
                    results["time/eval_seconds"],
                )
            if done:
                record_rasters(model, spec, run_dir, seed)
            if done or frames // spec.checkpoint_every > previous // spec.checkpoint_every:
                save_checkpoint(model, run_dir, frames)
    finally:
        bar.close()


def progress_bar(spec: RunSpec, frames: int, desc: str) -> tqdm:
    """:return: a bar of training frames from ``frames`` to ``spec.total_frames`` (refreshed every second on a
    terminal, every 30 s into a log file)"""
    return tqdm(
        total=spec.total_frames,
        initial=frames,
        unit="frame",
        unit_scale=True,
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        desc=desc,
    )


def record_rasters(model: BaseAlgorithm, spec: RunSpec, run_dir: Path, seed: int) -> None:
    """For a core that reports its active units: one episode's selection raster on the split's first train env
    and first held-out env (:mod:`rims_rl.experiments.selection`), sampled actions, the evaluation seed.

    :param model: the trained agent
    :param spec: the run's spec
    :param run_dir: where ``selection/`` and ``selection_raster.png`` go
    :param seed: the run seed
    """
    if not reports_units(getattr(model.policy, "core", None)):
        return
    eval_seed = eval_seed_of(seed)
    selection_envs = build_selection_envs(spec, eval_seed)
    try:
        title = f"{spec.label} on {spec.split.name}, seed {seed}: active units per step (one episode)"
        paths = record_selection(model, selection_envs, eval_seed, run_dir, title)
    finally:
        for _, _, env in selection_envs:
            env.close()
    log.info("selection raster: %s", paths[-1])


def write_run_info(cfg: DictConfig, spec: RunSpec, run_dir: Path, resuming: bool) -> dict[str, Any]:
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
        "backend": OmegaConf.select(cfg, "backend", default="torch"),
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
    checkpoints, selection rasters and W&B files, so that the two are never mixed; ``resume=`` is the way to
    continue a run instead.
    """
    names = (METRICS_FILE, CHECKPOINT_DIR, SELECTION_DIR, RASTER_FILE, "wandb")
    previous = [run_dir / name for name in names if (run_dir / name).exists()]
    if previous:
        log.warning("%s holds an earlier run: replacing its metrics, checkpoints, rasters and W&B files", run_dir)
    for path in previous:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def next_multiple(frames: int, every: int) -> int:
    """The first multiple of ``every`` after ``frames``."""
    return (frames // every + 1) * every


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
