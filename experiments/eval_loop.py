"""The evaluation loop: a recurrent agent played on the train and held-out envs of a split (used by training and
by ``rims-rl-eval``).

Each env id gets its own small VecEnv; a fixed seed makes every evaluation of a run play the same levels. The
recurrent state is threaded through ``model.predict(obs, state, episode_start, deterministic)``. Each sub-env
counts only its first ``(M + i) // n`` finished episodes (as SB3's ``evaluate_policy``), so exactly ``M``
episodes are counted per env id, without favouring short episodes.

Metric names: ``eval/<scope>/<stat>`` with scope ``train``, ``heldout`` (episodes pooled over that side's env
ids) or an env id, and stat in :data:`STATS`. An env id that is both a train and a held-out env (a split by
level seeds) gets the scopes ``<id>@train`` and ``<id>@heldout``. A core that reports which units were active
(``last_active``, as :class:`rims_rl.RIM` does), whatever its name, adds ``eval/unit_activity/l{layer}_u{unit}``:
the fraction of evaluation steps in which that unit was active, over all evaluated envs, and
``eval/<env>/unit_activity/l{layer}_u{unit}`` per env.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

#: The statistics logged per scope; ``greedy_*`` are the same with deterministic actions.
STATS = (
    "return_mean",
    "return_std",
    "success_rate",
    "length_mean",
    "greedy_return_mean",
    "greedy_return_std",
    "greedy_success_rate",
    "greedy_length_mean",
)


class EvalTarget(NamedTuple):
    """One evaluated env id.

    :param scope: ``"train"`` or ``"heldout"``
    :param name: the metric scope of this env (its id, qualified when the id is on both sides)
    :param env_id: the gymnasium id
    :param env: its VecEnv
    """

    scope: str
    name: str
    env_id: str
    env: VecEnv


class Episodes(NamedTuple):
    """Finished episodes.

    :param returns: ``(M,)`` undiscounted returns
    :param lengths: ``(M,)`` lengths in steps
    """

    returns: np.ndarray
    lengths: np.ndarray


def eval_targets(split: Any, make_env: Callable[[str, Sequence[int] | None], VecEnv]) -> list[EvalTarget]:
    """One :class:`EvalTarget` per train env id and per held-out env id.

    :param split: an :class:`envs.Split`
    :param make_env: ``make_env(env_id, level_seeds) -> VecEnv``
    :return: the targets, train ones first
    """
    both = set(split.train) & set(split.heldout)
    targets = []
    for scope, ids, seeds in (
        ("train", split.train, split.train_seeds),
        ("heldout", split.heldout, split.heldout_seeds),
    ):
        for env_id in dict.fromkeys(ids):
            name = f"{env_id}@{scope}" if env_id in both else env_id
            targets.append(EvalTarget(scope, name, env_id, make_env(env_id, seeds)))
    return targets


def reports_units(core: Any) -> bool:
    """Whether a core reports its active units: a ``last_active`` attribute (``(T, B, L, U)`` bool after a
    forward), as :class:`rims_rl.RIM` has. Capabilities, not names: any core with it gets unit activity.

    >>> from rims_rl import make_core
    >>> rim, gru = make_core("rim", 8, hidden_size=8, num_units=2, k=1), make_core("gru", 8, hidden_size=8)
    >>> reports_units(rim), reports_units(gru)
    (True, False)
    """
    return hasattr(core, "last_active")


class UnitActivity:
    """Counts how often each unit of a core is active over evaluation steps (from ``core.last_active``).

    :param core: a core that :func:`reports_units`
    """

    def __init__(self, core: Any) -> None:
        self.core = core
        self.active: torch.Tensor | None = None
        self.steps = 0

    def update(self, counted: np.ndarray) -> None:
        """Add the last forward's activity of the sub-envs still counting episodes.

        :param counted: ``(B,)`` bool, the sub-envs whose step counts
        """
        last = self.core.last_active  # (T, B, L, U) bool
        mask = torch.as_tensor(counted, device=last.device)
        rows = last[:, mask].reshape(-1, *last.shape[2:]).float()  # (T * B', L, U)
        total = rows.sum(dim=0).cpu()
        self.active = total if self.active is None else self.active + total
        self.steps += rows.shape[0]

    def metrics(self, prefix: str = "eval/unit_activity") -> dict[str, float]:
        """:param prefix: the metric names' prefix
        :return: ``<prefix>/l{layer}_u{unit}`` -> fraction of counted steps active
        """
        if self.active is None or self.steps == 0:
            return {}
        frac = (self.active / self.steps).tolist()
        return {
            f"{prefix}/l{layer}_u{unit}": value for layer, units in enumerate(frac) for unit, value in enumerate(units)
        }

    def __iadd__(self, other: UnitActivity) -> UnitActivity:
        """Pool another counter's steps into this one."""
        if other.active is not None:
            self.active = other.active.clone() if self.active is None else self.active + other.active
            self.steps += other.steps
        return self


def run_episodes(
    model: Any,
    env: VecEnv,
    n_episodes: int,
    deterministic: bool,
    seed: int,
    on_step: Callable[[np.ndarray], None] | None = None,
) -> Episodes:
    """Play ``n_episodes`` episodes with a recurrent agent.

    :param model: anything with SB3's recurrent ``predict(obs, state, episode_start, deterministic)``
    :param env: the VecEnv (``n`` sub-envs); it is re-seeded with ``seed``
    :param n_episodes: ``M``, episodes to count; sub-env ``i`` counts its first ``(M + i) // n``
    :param deterministic: greedy instead of sampled actions
    :param seed: seed of the env for this evaluation
    :param on_step: called after each ``predict`` with the ``(n,)`` bool mask of sub-envs still counting
    :return: the counted episodes, ``(M,)`` each
    """
    n = env.num_envs
    targets = np.array([(n_episodes + i) // n for i in range(n)])
    counts = np.zeros(n, dtype=int)
    returns: list[float] = []
    lengths: list[int] = []
    current_return = np.zeros(n)
    current_length = np.zeros(n, dtype=int)
    env.seed(seed)
    obs = env.reset()
    state = None
    episode_starts = np.ones(n, dtype=bool)
    while (counts < targets).any():
        actions, state = model.predict(obs, state=state, episode_start=episode_starts, deterministic=deterministic)
        if on_step is not None:
            on_step(counts < targets)
        obs, rewards, dones, _ = env.step(actions)
        current_return += rewards
        current_length += 1
        for i in np.flatnonzero(dones):
            if counts[i] < targets[i]:
                returns.append(float(current_return[i]))
                lengths.append(int(current_length[i]))
                counts[i] += 1
            current_return[i] = 0.0
            current_length[i] = 0
        episode_starts = dones
    return Episodes(np.array(returns), np.array(lengths))


def episode_stats(sampled: Episodes, greedy: Episodes) -> dict[str, float]:
    """:param sampled: episodes with sampled actions
    :param greedy: episodes with greedy actions
    :return: :data:`STATS` (success: return > 0)
    """
    stats = {}
    for prefix, eps in (("", sampled), ("greedy_", greedy)):
        stats[f"{prefix}return_mean"] = float(eps.returns.mean())
        stats[f"{prefix}return_std"] = float(eps.returns.std())
        stats[f"{prefix}success_rate"] = float((eps.returns > 0).mean())
        stats[f"{prefix}length_mean"] = float(eps.lengths.mean())
    return stats


def _concat(episodes: Sequence[Episodes]) -> Episodes:
    return Episodes(np.concatenate([e.returns for e in episodes]), np.concatenate([e.lengths for e in episodes]))


def evaluate(model: Any, targets: Sequence[EvalTarget], n_episodes: int, seed: int) -> dict[str, float]:
    """Evaluate on every target, with sampled and with greedy actions.

    :param model: an SB3 recurrent algorithm
    :param targets: the evaluated envs (:func:`eval_targets`)
    :param n_episodes: episodes per target and action mode
    :param seed: env seed shared by all targets and both modes (same levels each evaluation)
    :return: ``eval/<scope>/<stat>`` for each target and for the pooled ``train`` and ``heldout`` scopes, plus
        ``eval/unit_activity/*`` and ``eval/<env>/unit_activity/*`` for a core that :func:`reports_units`
    """
    core = getattr(model.policy, "core", None)
    metrics: dict[str, float] = {}
    pooled: dict[str, tuple[list[Episodes], list[Episodes]]] = {}
    all_activity = UnitActivity(core) if reports_units(core) else None
    for target in targets:
        activity = UnitActivity(core) if all_activity is not None else None
        on_step = activity.update if activity is not None else None
        sampled = run_episodes(model, target.env, n_episodes, False, seed, on_step)
        greedy = run_episodes(model, target.env, n_episodes, True, seed, on_step)
        metrics.update({f"eval/{target.name}/{k}": v for k, v in episode_stats(sampled, greedy).items()})
        if activity is not None and all_activity is not None:
            metrics.update(activity.metrics(f"eval/{target.name}/unit_activity"))
            all_activity += activity
        side = pooled.setdefault(target.scope, ([], []))
        side[0].append(sampled)
        side[1].append(greedy)
    for scope, (sampled_list, greedy_list) in pooled.items():
        stats = episode_stats(_concat(sampled_list), _concat(greedy_list))
        metrics.update({f"eval/{scope}/{k}": v for k, v in stats.items()})
    if all_activity is not None:
        metrics.update(all_activity.metrics())
    return metrics
