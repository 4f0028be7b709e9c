"""The JAX backend of ``rims-rl-train`` (``backend=jax``): the envs (navix, :mod:`rims_rl.envs.jax`), the policy and the
PPO/A2C update (:mod:`rims_rl.agents.jax`) run as one jitted program per segment of updates, for ``seeds_per_job`` seeds
at once (``jax.vmap`` over a leading seed axis).

Each seed writes the run directory a torch run writes: ``metrics.jsonl`` with the same keys, ``run_info.json`` (with
``backend: jax``), ``checkpoints/``, ``.hydra/config.yaml``, W&B and, for a RIM, the selection rasters
(:mod:`rims_rl.experiments.selection_jax`), so ``rims-rl-report`` and ``resume=`` treat the backends alike. With
``seeds_per_job=N`` the job's directory holds ``seed_<s>/`` for seeds ``seed`` ..
``seed + N - 1``; each of them is a single-seed run directory (its config says ``seeds_per_job: 1``) that can be
reported or resumed on its own, and ``resume=<job dir>`` resumes all of them together. Metric scopes name the
MiniGrid world each navix env stands for (``eval/MiniGrid-DoorKey-5x5-v0/...``), so the two backends' curves line
up in one report.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig, OmegaConf

from rims_rl.agents.jax.networks import CORES
from rims_rl.agents.jax.ppo import CONFIGS, evaluate, init_seeds, update
from rims_rl.envs.jax import make
from rims_rl.experiments.builders import eval_seed_of
from rims_rl.experiments.checkpoint import TRAIN_STATE_FILE, Checkpoint, list_checkpoints, write_checkpoint
from rims_rl.experiments.config import ConfigError, RunSpec, to_dict
from rims_rl.experiments.eval_loop import entropy_bits, row_keys, target_name
from rims_rl.experiments.metrics import METRICS_FILE, OVERRIDES_FILE, MetricsLog, truncate_metrics
from rims_rl.experiments.selection import RASTER_FILE
from rims_rl.experiments.selection_jax import record_selection
from rims_rl.experiments.train import next_multiple, open_metrics, prepare_run_dir, progress_bar, write_run_info

log = logging.getLogger(__name__)

#: Agent keys of the torch backend that the JAX backend does not implement: allowed only at their default, false.
TORCH_ONLY = ("refresh_chunk_states", "shift_chunks", "policy_train_mode")


@dataclass(frozen=True)
class JaxTarget:
    """One evaluated env.

    :param scope: ``"train"`` or ``"heldout"``
    :param name: its metric scope (the MiniGrid id the navix env stands for, qualified as the torch backend does)
    :param env: the :class:`rims_rl.envs.jax.JaxEnv`
    """

    scope: str
    name: str
    env: Any


@dataclass(frozen=True)
class JaxPlan:
    """What a ``backend=jax`` job runs, checked before anything is built or compiled.

    :param config: the algorithm's :class:`rims_rl.agents.jax.ppo.PPOConfig`
    :param train_id: the navix id of the training env
    :param targets: ``(scope, metric scope, navix id, level seeds)`` of every evaluated env, train ones first
    :param seeds: the job's seeds
    """

    config: Any
    train_id: str
    targets: list[tuple[str, str, str, list[int] | None]]
    seeds: list[int]


def check_jax(cfg: DictConfig, spec: RunSpec) -> JaxPlan:
    """Check what the JAX backend needs beyond the common checks: navix ids for the split, one train env, vector
    features, a core and algorithm of :mod:`rims_rl.agents.jax`, no torch-only agent option.

    :param cfg: the composed config (checked by :func:`rims_rl.experiments.config.build_spec`)
    :param spec: its spec
    :return: the plan
    :raises ConfigError: on the first problem, in one line
    """
    split = spec.split
    try:
        train_ids, heldout_ids = split.ids_for("jax")
    except ValueError as err:
        raise ConfigError(f"env: {err}") from None
    for field, ids, jax_ids in (("train", split.train, train_ids), ("heldout", split.heldout, heldout_ids)):
        if len(jax_ids) != len(ids):
            raise ConfigError(
                f"env.jax.{field}={jax_ids} is invalid for env.{field}={ids}; expected one jax env id per env id "
                f"(override env.jax.{field} too)"
            )
    if len(train_ids) != 1:
        raise ConfigError(f"env: backend=jax trains on one env id, got {train_ids}; use backend=torch for a mixture")
    if spec.features != "vector":
        raise ConfigError(f"model.features={spec.features!r} is invalid with backend=jax; expected vector")
    if spec.core not in CORES:
        raise ConfigError(f"model.core={spec.core!r} is invalid with backend=jax; expected one of {', '.join(CORES)}")
    agent = to_dict(cfg.agent)
    algo = agent.pop("algo")
    for key in TORCH_ONLY:
        if agent.pop(key, False):
            raise ConfigError(f"agent.{key}=true is invalid with backend=jax; expected false (torch only)")
    policy = dict(agent.pop("policy_kwargs", None) or {})
    try:
        config = CONFIGS[algo](
            **agent,
            **policy,
            n_envs=int(cfg.n_envs),
            core=spec.core,
            core_kwargs=dict(spec.core_kwargs),
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"agent {algo} (backend=jax): {' '.join(str(err).split())}") from None
    sides = (
        ("train", split.train, train_ids, split.train_seeds),
        ("heldout", split.heldout, heldout_ids, split.heldout_seeds),
    )
    targets = [
        (scope, target_name(split, minigrid_id, scope), jax_id, seeds)
        for scope, minigrid_ids, jax_ids, seeds in sides
        for minigrid_id, jax_id in dict(zip(minigrid_ids, jax_ids, strict=True)).items()
    ]
    seeds = [int(cfg.seed) + i for i in range(int(cfg.seeds_per_job))]
    return JaxPlan(config, train_ids[0], targets, seeds)


# --- the job ------------------------------------------------------------------------------------------------------


def train_jax(cfg: DictConfig, spec: RunSpec, plan: JaxPlan, job_dir: Path, resuming: bool = False) -> None:
    """Train the plan's seeds together, evaluating every ``spec.eval_every`` frames and checkpointing every
    ``spec.checkpoint_every`` and at the end, as :func:`rims_rl.experiments.train.learn` does for the torch backend.

    :param cfg: the composed config
    :param spec: its spec
    :param plan: :func:`check_jax`'s plan
    :param job_dir: the job's directory (the run directory when there is one seed)
    :param resuming: continue every seed from the latest checkpoint they all have
    """
    config = plan.config
    runs = _run_dirs(cfg, plan, job_dir)
    start = _prepare(runs, resuming)
    if start >= spec.total_frames:
        log.info("%s is complete (%d frames)", job_dir, start)
        return

    env = make(plan.train_id, spec.split.train_seeds)
    targets = [JaxTarget(scope, name, make(jax_id, seeds)) for scope, name, jax_id, seeds in plan.targets]
    keys = jax.numpy.stack([jax.random.PRNGKey(seed) for seed in plan.seeds])
    state = init_seeds(keys, env, config)
    if start:
        state = _load_states(state, [_checkpoint_at(run_dir, start) for run_dir, _ in runs])

    logs = []
    for run_dir, run_cfg in runs:
        info = write_run_info(run_cfg, spec, run_dir, resuming and start > 0)
        logs.append(open_metrics(run_cfg, spec, run_dir, info))
    log.info("%s on %s, %s, backend jax, seeds %s -> %s", spec.label, spec.split.name, spec.algo, plan.seeds, job_dir)
    try:
        _learn(state, start, env, targets, spec, plan, runs, logs)
    finally:
        for metrics in logs:
            metrics.close()


def _run_dirs(cfg: DictConfig, plan: JaxPlan, job_dir: Path) -> list[tuple[Path, DictConfig]]:
    """Each seed's run directory and config (``seed``, ``seeds_per_job: 1``), its ``.hydra/config.yaml`` written
    (and the job's ``overrides.yaml`` copied, for the report's labels) when the directory is a sub-directory of the
    job's."""
    if len(plan.seeds) == 1:
        return [(job_dir, cfg)]
    overrides = job_dir / OVERRIDES_FILE
    runs = []
    for seed in plan.seeds:
        run_cfg = cfg.copy()
        run_cfg.seed = seed
        run_cfg.seeds_per_job = 1
        run_cfg.resume = None
        run_dir = job_dir / f"seed_{seed}"
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(run_cfg, run_dir / ".hydra" / "config.yaml")
        if overrides.is_file():
            shutil.copyfile(overrides, run_dir / OVERRIDES_FILE)
        runs.append((run_dir, run_cfg))
    return runs


def _prepare(runs: Sequence[tuple[Path, DictConfig]], resuming: bool) -> int:
    """Resuming: the frame count of the latest checkpoint every seed has (0: none), each seed's metrics cut back to
    it. A new run: every seed's earlier files removed.

    :return: the frame count to start from
    """
    if not resuming:
        for run_dir, _ in runs:
            prepare_run_dir(run_dir, resuming=False)
        return 0
    common = set.intersection(*({c.frames for c in _checkpoints(run_dir)} for run_dir, _ in runs))
    start = max(common, default=0)
    for run_dir, _ in runs:
        kept = truncate_metrics(run_dir / METRICS_FILE, start if start else -1)
        log.info("resuming %s from frame %d (%d metric rows kept)", run_dir, start, kept)
    return start


def _checkpoints(run_dir: Path) -> list[Checkpoint]:
    return [c for c in list_checkpoints(run_dir) if (c.path / TRAIN_STATE_FILE).is_file()]


def _checkpoint_at(run_dir: Path, frames: int) -> Checkpoint:
    return next(c for c in _checkpoints(run_dir) if c.frames == frames)


def _learn(
    state: Any,
    frames: int,
    env: Any,
    targets: Sequence[JaxTarget],
    spec: RunSpec,
    plan: JaxPlan,
    runs: Sequence[tuple[Path, DictConfig]],
    logs: Sequence[MetricsLog],
) -> None:
    """Segments of updates that end at the next evaluation or checkpoint; evaluate, log and save between them."""
    per_update = plan.config.n_envs * plan.config.n_steps
    segments: dict[int, Callable[[Any], tuple[Any, dict[str, Any]]]] = {}
    evaluators = Evaluators(targets, plan, spec)
    bar = progress_bar(spec, frames, f"{spec.label} (jax, {len(plan.seeds)} seed{'s' if len(plan.seeds) > 1 else ''})")
    try:
        while frames < spec.total_frames:
            stop = min(next_multiple(frames, spec.eval_every), next_multiple(frames, spec.checkpoint_every))
            n = math.ceil((min(stop, spec.total_frames) - frames) / per_update)
            if n not in segments:
                segments[n] = _segment(env, plan.config, n)
            began = time.perf_counter()
            state, metrics = segments[n](state)
            metrics = {k: np.asarray(v) for k, v in metrics.items()}  # (n, S) each; waits for the segment
            seconds = time.perf_counter() - began
            previous, frames = frames, frames + n * per_update
            for i, metrics_log in enumerate(logs):
                for u in range(n):
                    row = {k: float(v[u, i]) for k, v in metrics.items() if np.isfinite(v[u, i])}
                    row["time/fps"] = n * per_update / seconds
                    metrics_log.log(previous + (u + 1) * per_update, row)
            bar.update(frames - previous)
            done = frames >= spec.total_frames
            if done or frames // spec.eval_every > previous // spec.eval_every:
                final = done
                began = time.perf_counter()
                results = evaluators(state.params, plan.seeds, final)
                episodes = spec.final_episodes if final else spec.eval_episodes
                # the seconds of all the job's seeds together
                keys = row_keys(episodes, time.perf_counter() - began, spec.eval_max_steps, final)
                for i, metrics_log in enumerate(logs):
                    metrics_log.log(frames, {**results[i], **keys})
                train_return = np.mean([r["eval/train/return_mean"] for r in results])
                heldout_return = np.mean([r["eval/heldout/return_mean"] for r in results])
                bar.set_postfix(train=train_return, heldout=heldout_return, refresh=False)
                log.info(
                    "frames %d: return train %.3f, held-out %.3f (seed mean)", frames, train_return, heldout_return
                )
            if done:  # before the final checkpoint, as the torch runner: a resumed run never ends without them
                _record_rasters(state.params, targets, spec, plan, runs)
            if done or frames // spec.checkpoint_every > previous // spec.checkpoint_every:
                _save_states(state, [run_dir for run_dir, _ in runs], frames)
    finally:
        bar.close()


def _record_rasters(
    params: Any, targets: Sequence[JaxTarget], spec: RunSpec, plan: JaxPlan, runs: Sequence[tuple[Path, DictConfig]]
) -> None:
    """For a core that reports its active units: each seed's selection raster of one episode on the first train
    target and the first held-out target (:mod:`rims_rl.experiments.selection_jax`), as the torch runner's
    :func:`rims_rl.experiments.train.record_rasters`."""
    firsts = [next(t for t in targets if t.scope == scope) for scope in ("train", "heldout")]
    titles = [f"{spec.label} on {spec.split.name}, seed {s}: active units per step (one episode)" for s in plan.seeds]
    run_dirs = [run_dir for run_dir, _ in runs]
    envs = [(t.name, t.scope, t.env) for t in firsts]
    paths = record_selection(params, plan.config, envs, plan.seeds, run_dirs, titles)
    if paths:
        log.info("selection rasters: %s", ", ".join(str(run_dir / RASTER_FILE) for run_dir in run_dirs))


def _segment(env: Any, config: Any, n: int) -> Callable[[Any], tuple[Any, dict[str, Any]]]:
    """``n`` updates of every seed, jitted: ``state (S, ...) -> (state, metrics (n, S))``."""
    step = functools.partial(update, env=env, config=config)

    def run(state: Any) -> tuple[Any, dict[str, Any]]:
        state, metrics = jax.lax.scan(lambda s, _: step(s), state, None, length=n)
        return state, metrics

    vmapped = jax.vmap(run, out_axes=(0, 1))
    return jax.jit(vmapped)


# --- evaluation ---------------------------------------------------------------------------------------------------


class Evaluators:
    """The jitted evaluations of every target, sampled and greedy in one program, vmapped over seeds; their results
    as the torch backend's ``eval/*`` metrics (:func:`rims_rl.experiments.eval_loop.evaluate`), including the selection
    statistics of a RIM core, pooled over steps exactly as there.

    :param targets: the evaluated envs
    :param plan: the job's plan
    :param spec: the run's spec (episode and env counts)
    """

    def __init__(self, targets: Sequence[JaxTarget], plan: JaxPlan, spec: RunSpec) -> None:
        self.targets = targets
        self.plan = plan
        self.spec = spec
        self._compiled: dict[tuple[int, bool], Callable[..., Any]] = {}

    def _evaluate(self, index: int, final: bool) -> Callable[..., Any]:
        """``(params (S, ...), keys (S,)) -> results (S, 2, ...)``: mode 0 sampled, mode 1 greedy."""
        if (index, final) not in self._compiled:
            spec = self.spec
            episodes, n_envs = (
                (spec.final_episodes, spec.final_n_envs) if final else (spec.eval_episodes, spec.eval_n_envs)
            )
            env, config = self.targets[index].env, self.plan.config

            def both_modes(params: Any, key: Any) -> Any:
                def play(greedy: Any) -> Any:
                    return evaluate(
                        params,
                        key,
                        env=env,
                        config=config,
                        episodes=episodes,
                        n_envs=n_envs,
                        greedy=greedy,
                        max_steps=spec.eval_max_steps,
                    )

                return jax.vmap(play)(jax.numpy.array([False, True]))

            self._compiled[(index, final)] = jax.jit(jax.vmap(both_modes))
        return self._compiled[(index, final)]

    def __call__(self, params: Any, seeds: Sequence[int], final: bool) -> list[dict[str, float]]:
        """:return: one ``eval/*`` dict per seed; every evaluation of a seed plays the same levels"""
        keys = jax.numpy.stack([jax.random.PRNGKey(eval_seed_of(seed)) for seed in seeds])
        played = []
        for index, target in enumerate(self.targets):
            began = time.perf_counter()
            keys_i = jax.vmap(lambda k, i=index: jax.random.fold_in(k, i))(keys)
            played.append(jax.device_get(self._evaluate(index, final)(params, keys_i)))
            log.info(
                "evaluation %d/%d: %s played (%.1f s)",
                index + 1,
                len(self.targets),
                target.name,
                time.perf_counter() - began,
            )
        return [self._metrics(played, s) for s in range(len(seeds))]

    def _metrics(self, played: list[dict[str, Any]], s: int) -> dict[str, float]:
        capped = self.spec.eval_max_steps is not None
        metrics: dict[str, float] = {}
        sides: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        for target, results in zip(self.targets, played, strict=True):
            pair = ({k: v[s, 0] for k, v in results.items()}, {k: v[s, 1] for k, v in results.items()})
            metrics.update(_episode_metrics(f"eval/{target.name}", [pair], capped))
            metrics.update(_selection_metrics(f"eval/{target.name}", [pair]))
            sides.setdefault(target.scope, []).append(pair)
        for scope, pairs in sides.items():
            metrics.update(_episode_metrics(f"eval/{scope}", pairs, capped))
            metrics.update(_selection_metrics(f"eval/{scope}", pairs))
        metrics.update(_selection_metrics("eval", [pair for pairs in sides.values() for pair in pairs]))
        return metrics


def _episode_metrics(
    prefix: str, pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]], capped: bool
) -> dict[str, float]:
    """:data:`rims_rl.experiments.eval_loop.STATS` over the episodes of ``pairs`` (``(sampled, greedy)`` results), and
    with ``capped`` (an evaluation with a cap) ``capped_fraction`` and ``greedy_capped_fraction``."""
    metrics = {}
    for mode, name in ((0, ""), (1, "greedy_")):
        returns = np.concatenate([pair[mode]["returns"] for pair in pairs])
        lengths = np.concatenate([pair[mode]["lengths"] for pair in pairs])
        metrics[f"{prefix}/{name}return_mean"] = float(returns.mean())
        metrics[f"{prefix}/{name}return_std"] = float(returns.std())
        metrics[f"{prefix}/{name}success_rate"] = float((returns > 0).mean())
        metrics[f"{prefix}/{name}length_mean"] = float(lengths.mean())
        if capped:
            metrics[f"{prefix}/{name}capped_fraction"] = float(
                np.concatenate([p[mode]["capped"] for p in pairs]).mean()
            )
    return metrics


def _selection_metrics(prefix: str, pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, float]:
    """The selection statistics of :class:`rims_rl.experiments.eval_loop.SelectionStats` over the counted steps of
    ``pairs``, sampled and greedy together (empty for a core without active units)."""
    results = [result for pair in pairs for result in pair if "active_steps" in result]
    if not results:
        return {}
    active = sum(r["active_steps"] for r in results)  # (L, U)
    steps = sum(float(r["steps"]) for r in results)
    metrics = {
        f"{prefix}/unit_activity/l{layer}_u{unit}": float(active[layer, unit]) / max(steps, 1.0)
        for layer in range(active.shape[0])
        for unit in range(active.shape[1])
    }
    pairs_count = sum(float(r["pairs"]) for r in results)
    if pairs_count > 0:
        metrics[f"{prefix}/switch_rate"] = sum(float(r["switches"]) for r in results) / pairs_count
    set_counts = sum(r["set_counts"] for r in results)  # (L, 2**U)
    metrics[f"{prefix}/selection_entropy"] = float(np.mean([entropy_bits(layer) for layer in set_counts]))
    return metrics


# --- checkpoints --------------------------------------------------------------------------------------------------


def _save_states(state: Any, run_dirs: Sequence[Path], frames: int) -> None:
    """Each seed's slice of ``state`` as a checkpoint of its run directory: ``train_state.npz``, the leaves of its
    ``rims_rl.agents.jax.ppo.TrainState`` in tree order."""
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(jax.device_get(state))]

    def save(path: Path, seed_leaves: list[np.ndarray]) -> None:
        np.savez(path / TRAIN_STATE_FILE, *seed_leaves)

    for i, run_dir in enumerate(run_dirs):
        seed_leaves = [leaf[i] for leaf in leaves]
        write_checkpoint(run_dir, frames, functools.partial(save, seed_leaves=seed_leaves), backend="jax")


def _load_states(template: Any, checkpoints: Sequence[Checkpoint]) -> Any:
    """The seeds' saved states stacked into ``template``'s tree (its shapes checked)."""
    leaves, treedef = jax.tree.flatten(template)
    saved = []
    for checkpoint in checkpoints:
        with np.load(checkpoint.path / TRAIN_STATE_FILE) as data:
            saved.append([data[f"arr_{j}"] for j in range(len(data.files))])
    for checkpoint, arrays in zip(checkpoints, saved, strict=True):
        shapes = [tuple(leaf.shape[1:]) for leaf in leaves]
        if len(arrays) != len(leaves) or [a.shape for a in arrays] != shapes:
            raise ConfigError(f"{checkpoint.path}: its train state does not match this run's model and config")
    stacked = [np.stack([arrays[j] for arrays in saved]).astype(leaf.dtype) for j, leaf in enumerate(leaves)]
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in stacked])
