r"""The evaluation loop: a recurrent agent played on the train and held-out envs of a split (used by training and
by ``rims-rl-eval``).

Each env id gets its own small VecEnv; a fixed seed makes every evaluation of a run play the same levels. The
recurrent state is threaded through ``model.predict(obs, state, episode_start, deterministic)``. Each sub-env
counts only its first ``(M + i) // n`` finished episodes (as SB3's ``evaluate_policy``), so exactly ``M``
episodes are counted per env id, without favouring short episodes.

Metric names: ``eval/<scope>/<stat>`` with scope ``train``, ``heldout`` (episodes pooled over that side's env
ids) or an env id, and stat in :data:`STATS`. An env id that is both a train and a held-out env (a split by
level seeds) gets the scopes ``<id>@train`` and ``<id>@heldout``.

Selection statistics: a core that reports which units were active (``last_active``, as :class:`rims_rl.RIM`
does), whatever its name, adds, per env (``eval/<env>/...``), per side (``eval/train/...``, ``eval/heldout/...``)
and over all evaluated envs (``eval/...``), counted over the steps of the counted episodes, sampled and greedy:

- ``unit_activity/l{layer}_u{unit}``: the fraction of steps in which that unit was active;
- ``switch_rate``: the fraction of consecutive step pairs ``(t - 1, t)`` of one episode of one sample in which a
  layer's active set changes, over all pairs and layers. The first step of an episode makes no pair with the
  step before it (a reset is not a switch). 0: the active set never changes within an episode;
  1: it changes at every step. Absent when no episode is longer than one step;
- ``selection_entropy``: the entropy in bits of the empirical distribution of the active *sets* (which units are
  active together) over all counted steps, per layer, averaged over layers. 0 when one fixed set is always
  active, at most :math:`\log_2 \binom{U}{k}` when every set is equally frequent. It is taken over sets rather
  than over the per-unit activity because the per-unit activity of a fixed set is not zero-entropy (it is
  :math:`\log_2 k` for k units each active always), so only the set entropy separates "one fixed set" from "sets
  that vary"; unlike ``switch_rate`` it also counts sets that change only from one episode (or env) to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
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
    targets = []
    for scope, ids, seeds in (
        ("train", split.train, split.train_seeds),
        ("heldout", split.heldout, split.heldout_seeds),
    ):
        for env_id in dict.fromkeys(ids):
            targets.append(EvalTarget(scope, target_name(split, env_id, scope), env_id, make_env(env_id, seeds)))
    return targets


def target_name(split: Any, env_id: str, scope: str) -> str:
    """:param split: an :class:`envs.Split`
    :param env_id: one of its env ids
    :param scope: the side it is evaluated on, ``"train"`` or ``"heldout"``
    :return: its metric scope: the id, or ``<id>@<scope>`` when the id is on both sides
    """
    return f"{env_id}@{scope}" if env_id in set(split.train) & set(split.heldout) else env_id


def reports_units(core: Any) -> bool:
    """Whether a core reports its active units: a ``last_active`` attribute (``(T, B, L, U)`` bool after a
    forward), as :class:`rims_rl.RIM` has. Capabilities, not names: any core with it gets unit activity.

    >>> from rims_rl import make_core
    >>> rim, gru = make_core("rim", 8, hidden_size=8, num_units=2, k=1), make_core("gru", 8, hidden_size=8)
    >>> reports_units(rim), reports_units(gru)
    (True, False)
    """
    return hasattr(core, "last_active")


class Switches(NamedTuple):
    """Switches of the active set between consecutive steps.

    :param switches: pairs of consecutive steps of one episode whose active set differs, summed over layers
    :param pairs: pairs of consecutive steps of one episode, times layers
    """

    switches: int
    pairs: int


def set_entropy(active: np.ndarray) -> float:
    r"""The entropy of the active sets, per layer, averaged over layers (see the module docstring).

    :param active: ``(N, L, U)`` bool, the active units of ``N`` steps (or the same bits packed along ``U``, as
        :func:`numpy.packbits` does: equal sets stay equal)
    :return: the mean over layers of :math:`-\sum_S p(S) \log_2 p(S)`, with :math:`p(S)` the fraction of the
        steps at which exactly the units of :math:`S` are active in that layer, in bits

    >>> a, b = [True, True, False], [False, True, True]
    >>> set_entropy(np.array([[a], [a], [a]])), set_entropy(np.array([[a, a], [b, a], [a, a], [b, a]]))
    (0.0, 0.5)
    """
    return float(
        np.mean(
            [
                entropy_bits(np.unique(active[:, layer], axis=0, return_counts=True)[1])
                for layer in range(active.shape[1])
            ]
        )
    )


def entropy_bits(counts: np.ndarray) -> float:
    """:param counts: ``(C,)`` how often each outcome occurred (zeros allowed)
    :return: the entropy of their empirical distribution in bits

    >>> entropy_bits(np.array([2, 2, 0])), entropy_bits(np.array([5]))
    (1.0, 0.0)
    """
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no -0.0


class SelectionStats:
    """Selection statistics of a core over evaluation steps (from ``core.last_active`` after each one-step
    forward): per-unit activity, switch rate and set entropy (see the module docstring). Pool counters with ``+=``.

    :param core: a core that :func:`reports_units`
    """

    def __init__(self, core: Any) -> None:
        self.core = core
        self.active: np.ndarray | None = None  # (L, U) steps active
        self.steps = 0
        self.switches = Switches(0, 0)
        self.sets: list[np.ndarray] = []  # (B', L, ceil(U / 8)) uint8 per step: the active sets, packed
        self.previous: np.ndarray | None = None  # (B, L, U): every sub-env's active units at the last step

    def update(self, counted: np.ndarray, episode_starts: np.ndarray) -> None:
        """Add the last one-step forward's selection of the sub-envs still counting episodes.

        :param counted: ``(B,)`` bool, the sub-envs whose step counts
        :param episode_starts: ``(B,)`` bool, the sub-envs whose step starts an episode
        """
        last = self.core.last_active  # (T, B, L, U) bool
        if last.shape[0] != 1:
            raise ValueError(f"expected the active units of one step, (1, B, L, U), got {tuple(last.shape)}")
        current = last[0].cpu().numpy()  # (B, L, U)
        rows = current[counted]  # (B', L, U)
        total = rows.sum(axis=0)
        self.active = total if self.active is None else self.active + total
        self.steps += len(rows)
        self.sets.append(np.packbits(rows, axis=-1))
        if self.previous is not None:  # pairs (last step, this step) of the sub-envs not starting an episode
            changed = (self.previous[counted] != rows).any(axis=-1)  # (B', L)
            within = ~episode_starts[counted]  # (B',)
            switches, pairs = int(changed[within].sum()), int(within.sum()) * rows.shape[1]
            self.switches = Switches(self.switches.switches + switches, self.switches.pairs + pairs)
        self.previous = current

    def metrics(self, prefix: str) -> dict[str, float]:
        """:param prefix: the metric names' prefix, e.g. ``"eval/train"``
        :return: ``<prefix>/unit_activity/l{layer}_u{unit}`` (fraction of counted steps active),
            ``<prefix>/switch_rate`` (when there were pairs of steps) and ``<prefix>/selection_entropy``
        """
        if self.active is None or self.steps == 0:
            return {}
        frac = (self.active / self.steps).tolist()
        metrics = {
            f"{prefix}/unit_activity/l{layer}_u{unit}": value
            for layer, units in enumerate(frac)
            for unit, value in enumerate(units)
        }
        if self.switches.pairs:
            metrics[f"{prefix}/switch_rate"] = self.switches.switches / self.switches.pairs
        metrics[f"{prefix}/selection_entropy"] = set_entropy(np.concatenate(self.sets))
        return metrics

    def __iadd__(self, other: SelectionStats) -> SelectionStats:
        """Pool another counter's steps into this one."""
        if other.active is not None:
            self.active = other.active.copy() if self.active is None else self.active + other.active
            self.steps += other.steps
            self.switches = Switches(
                self.switches.switches + other.switches.switches, self.switches.pairs + other.switches.pairs
            )
            self.sets += other.sets  # the lists, not their arrays, are joined
        return self


def run_episodes(
    model: Any,
    env: VecEnv,
    n_episodes: int,
    deterministic: bool,
    seed: int,
    on_step: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> Episodes:
    """Play ``n_episodes`` episodes with a recurrent agent.

    :param model: anything with SB3's recurrent ``predict(obs, state, episode_start, deterministic)``
    :param env: the VecEnv (``n`` sub-envs); it is re-seeded with ``seed``
    :param n_episodes: ``M``, episodes to count; sub-env ``i`` counts its first ``(M + i) // n``
    :param deterministic: greedy instead of sampled actions
    :param seed: seed of the env for this evaluation
    :param on_step: ``on_step(counted, episode_starts)``, called after each ``predict`` with two ``(n,)`` bool
        masks: the sub-envs still counting episodes, and those whose step starts an episode
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
            on_step(counts < targets, episode_starts)
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
    :return: ``eval/<scope>/<stat>`` for each target and for the pooled ``train`` and ``heldout`` scopes, plus,
        for a core that :func:`reports_units`, the selection statistics of :class:`SelectionStats` per target,
        per side and over all targets (``eval/unit_activity/*``, ``eval/switch_rate``, ...)
    """
    core = getattr(model.policy, "core", None)
    metrics: dict[str, float] = {}
    pooled: dict[str, tuple[list[Episodes], list[Episodes]]] = {}
    all_selection = SelectionStats(core) if reports_units(core) else None
    side_selection: dict[str, SelectionStats] = {}
    for target in targets:
        selection = SelectionStats(core) if all_selection is not None else None
        on_step = selection.update if selection is not None else None
        sampled = run_episodes(model, target.env, n_episodes, False, seed, on_step)
        greedy = run_episodes(model, target.env, n_episodes, True, seed, on_step)
        metrics.update({f"eval/{target.name}/{k}": v for k, v in episode_stats(sampled, greedy).items()})
        if selection is not None and all_selection is not None:
            metrics.update(selection.metrics(f"eval/{target.name}"))
            side = side_selection.setdefault(target.scope, SelectionStats(core))
            side += selection
            all_selection += selection
        side_episodes = pooled.setdefault(target.scope, ([], []))
        side_episodes[0].append(sampled)
        side_episodes[1].append(greedy)
    for scope, (sampled_list, greedy_list) in pooled.items():
        stats = episode_stats(_concat(sampled_list), _concat(greedy_list))
        metrics.update({f"eval/{scope}/{k}": v for k, v in stats.items()})
    for scope, side in side_selection.items():
        metrics.update(side.metrics(f"eval/{scope}"))
    if all_selection is not None:
        metrics.update(all_selection.metrics("eval"))
    return metrics
