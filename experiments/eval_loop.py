r"""The evaluation loop: a recurrent agent played on the train and held-out envs of a split (used by training and
by ``rims-rl-eval``).

One evaluation is one vectorised pass: every evaluated env id gets ``n`` sub-envs per action mode (sampled and
greedy), and every step makes one policy call for all the sub-envs still playing, with a per-row ``deterministic``
mask. Sub-env ``i`` of an env id is reset with seed ``seed + i`` at the start of each evaluation (as
``VecEnv.seed(seed)`` seeds its sub-envs), so every evaluation of a run plays the same levels, in both modes, as
playing each env id alone on its own ``n``-env VecEnv does. Each sub-env counts only its first ``(M + i) // n``
finished episodes (as SB3's ``evaluate_policy``), so exactly ``M`` episodes are counted per env id and mode,
without favouring short episodes; a sub-env that has counted its episodes stops (it costs no more env steps nor
policy rows).

The cap (``max_steps``, optional): an episode that reaches ``max_steps`` steps without ending is cut there and
counted as a failure with its return so far (0 in MiniGrid, whose only reward comes at success) and its length
``max_steps``; ``capped_fraction`` / ``greedy_capped_fraction`` give the fraction of counted episodes cut. The
episode counts stay ``M``; only long (failing or slow) episodes change.

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

import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from rims_rl import map_state

#: An eval row's episodes per env id and action mode, its cap on episode steps (``eval.max_steps``; absent: no
#: cap) and the mark of the final evaluation (:func:`row_keys`; read by ``rims-rl-report``).
EPISODES, MAX_STEPS, FINAL = "eval/episodes", "eval/max_steps", "eval/final"

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
    :param make_env: builds one sub-env (a gymnasium env on this side's levels)
    """

    scope: str
    name: str
    env_id: str
    make_env: Callable[[], Any]


class Episodes(NamedTuple):
    """Counted episodes.

    :param returns: ``(M,)`` undiscounted returns
    :param lengths: ``(M,)`` lengths in steps
    :param capped: ``(M,)`` bool, the episodes cut by the cap
    """

    returns: np.ndarray
    lengths: np.ndarray
    capped: np.ndarray


def eval_targets(split: Any, make_env: Callable[[str, Sequence[int] | None], Callable[[], Any]]) -> list[EvalTarget]:
    """One :class:`EvalTarget` per train env id and per held-out env id.

    :param split: an :class:`rims_rl.envs.Split`
    :param make_env: ``make_env(env_id, level_seeds)``, a thunk that builds one such env
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
    """:param split: an :class:`rims_rl.envs.Split`
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
    """Selection statistics over evaluation steps (the active units a core reports after each one-step forward):
    per-unit activity, switch rate and set entropy (see the module docstring). Pool counters with ``+=``.
    """

    def __init__(self) -> None:
        self.active: np.ndarray | None = None  # (L, U) steps active
        self.steps = 0
        self.switches = Switches(0, 0)
        self.sets: list[np.ndarray] = []  # (B', L, ceil(U / 8)) uint8 per step: the active sets, packed

    def update(self, active: np.ndarray, previous: np.ndarray, episode_starts: np.ndarray) -> None:
        """Add one step of ``B'`` counted sub-envs.

        :param active: ``(B', L, U)`` bool, their active units at this step
        :param previous: ``(B', L, U)`` bool, their active units at their previous step (read only where the step
            does not start an episode)
        :param episode_starts: ``(B',)`` bool, the sub-envs whose step starts an episode
        """
        total = active.sum(axis=0)
        self.active = total if self.active is None else self.active + total
        self.steps += len(active)
        self.sets.append(np.packbits(active, axis=-1))
        within = ~episode_starts  # pairs (previous step, this step) of one episode
        changed = (previous != active).any(axis=-1)  # (B', L)
        switches, pairs = int(changed[within].sum()), int(within.sum()) * active.shape[1]
        self.switches = Switches(self.switches.switches + switches, self.switches.pairs + pairs)

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


class _Rows(NamedTuple):
    """The sub-envs of one evaluation, ``R`` rows: target by target, sampled then greedy, sub-env by sub-env.

    :param target: ``(R,)`` index of the row's target
    :param greedy: ``(R,)`` bool, greedy actions
    :param sub_env: ``(R,)`` its index ``i`` among its target's and mode's ``n`` sub-envs
    :param quota: ``(R,)`` episodes it counts, ``(M + i) // n``
    """

    target: np.ndarray
    greedy: np.ndarray
    sub_env: np.ndarray
    quota: np.ndarray


def _rows(n_targets: int, n_episodes: int, n_envs: int) -> _Rows:
    target, greedy, sub_env = (
        a.ravel() for a in np.meshgrid(np.arange(n_targets), [False, True], np.arange(n_envs), indexing="ij")
    )
    return _Rows(target, greedy, sub_env, (n_episodes + sub_env) // n_envs)


def _stack(observations: Sequence[Any]) -> Any:
    """``B`` observations (dicts of arrays, or arrays) as one batch, as a VecEnv returns them."""
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return np.stack(observations)


def play(
    model: Any,
    targets: Sequence[EvalTarget],
    n_episodes: int,
    n_envs: int,
    seed: int,
    max_steps: int | None = None,
    on_step: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None,
    bar: tqdm | None = None,
) -> list[tuple[Episodes, Episodes]]:
    """Play ``n_episodes`` counted episodes per target and action mode in one vectorised pass (module docstring).

    :param model: anything with SB3's recurrent ``predict(obs, state, episode_start, deterministic)`` that accepts a
        ``(B,)`` bool array as ``deterministic`` (as :class:`rims_rl.agents.RecurrentActorCriticPolicy` does)
    :param targets: the evaluated envs
    :param n_episodes: ``M``, episodes counted per target and mode
    :param n_envs: ``n``, sub-envs per target and mode (at most ``M`` are used)
    :param seed: sub-env ``i`` of every target and mode is reset with ``seed + i`` first
    :param max_steps: the cap on an episode's steps (``None``: none)
    :param on_step: ``on_step(rows, episode_starts, targets)`` after each ``predict``: the ``(B,)`` indices of the
        rows played (every one counting), whether their step starts an episode, and their target indices
    :param bar: advanced by one per counted episode, its postfix the episodes done per target
    :return: ``(sampled, greedy)`` episodes per target, ``(M,)`` each
    """
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"expected max_steps >= 1 or None, got {max_steps}")
    rows = _rows(len(targets), n_episodes, min(n_envs, n_episodes))
    envs = [targets[t].make_env() for t in rows.target]
    played: dict[tuple[int, bool], list[tuple[float, int, bool]]] = {
        (t, greedy): [] for t in range(len(targets)) for greedy in (False, True)
    }
    try:
        obs = [env.reset(seed=seed + int(i))[0] for env, i in zip(envs, rows.sub_env, strict=True)]
        counts = np.zeros(len(envs), dtype=int)
        returns = np.zeros(len(envs))
        lengths = np.zeros(len(envs), dtype=int)
        starts = np.ones(len(envs), dtype=bool)
        live = np.flatnonzero(counts < rows.quota)  # the rows still counting, played this step
        state = None
        while live.size:
            actions, state = model.predict(
                _stack([obs[r] for r in live]), state=state, episode_start=starts[live], deterministic=rows.greedy[live]
            )
            if on_step is not None:
                on_step(live, starts[live], rows.target[live])
            for j, r in enumerate(live):
                obs[r], reward, terminated, truncated, _ = envs[r].step(actions[j])
                returns[r] += float(reward)
                lengths[r] += 1
                capped = max_steps is not None and lengths[r] >= max_steps and not (terminated or truncated)
                starts[r] = terminated or truncated or capped
                if starts[r]:
                    played[(int(rows.target[r]), bool(rows.greedy[r]))].append((returns[r], lengths[r], capped))
                    counts[r] += 1
                    returns[r], lengths[r] = 0.0, 0
                    if counts[r] < rows.quota[r]:
                        obs[r] = envs[r].reset()[0]
                    if bar is not None:
                        bar.update(1)
            if bar is not None and starts[live].any():
                done = np.bincount(rows.target, weights=counts, minlength=len(targets))
                bar.set_postfix_str(
                    ", ".join(f"{t.name} {int(d)}/{2 * n_episodes}" for t, d in zip(targets, done, strict=True)),
                    refresh=False,
                )
            keep = counts[live] < rows.quota[live]
            if not keep.all():
                live = live[keep]
                state = None if state is None else map_state(lambda s, keep=keep: s[:, keep], state)
    finally:
        for env in envs:
            env.close()
    return [
        tuple(  # type: ignore[misc]  # a pair
            Episodes(*(np.array(column) for column in zip(*played[(t, greedy)], strict=True)))
            for greedy in (False, True)
        )
        for t in range(len(targets))
    ]


def episode_stats(sampled: Episodes, greedy: Episodes, capped: bool = False) -> dict[str, float]:
    """:param sampled: episodes with sampled actions
    :param greedy: episodes with greedy actions
    :param capped: add ``capped_fraction`` and ``greedy_capped_fraction`` (an evaluation with a cap)
    :return: :data:`STATS` (success: return > 0)
    """
    stats = {}
    for prefix, eps in (("", sampled), ("greedy_", greedy)):
        stats[f"{prefix}return_mean"] = float(eps.returns.mean())
        stats[f"{prefix}return_std"] = float(eps.returns.std())
        stats[f"{prefix}success_rate"] = float((eps.returns > 0).mean())
        stats[f"{prefix}length_mean"] = float(eps.lengths.mean())
        if capped:
            stats[f"{prefix}capped_fraction"] = float(eps.capped.mean())
    return stats


def _concat(episodes: Sequence[Episodes]) -> Episodes:
    return Episodes(*(np.concatenate(column) for column in zip(*episodes, strict=True)))


def row_keys(episodes: int, seconds: float, max_steps: int | None, final: bool) -> dict[str, float]:
    """The keys an evaluation row carries beside its metrics, in both backends' training loops.

    :param episodes: the evaluation's episodes per env id and action mode
    :param seconds: its wall time
    :param max_steps: its cap on an episode's steps (``None``: none)
    :param final: whether it is the final evaluation
    :return: ``eval/episodes``, ``time/eval_seconds``; ``eval/max_steps`` with a cap; ``eval/final: 1`` for the
        final evaluation

    >>> row_keys(10, 1.5, None, False), row_keys(100, 2.0, 256, True)[MAX_STEPS]
    ({'eval/episodes': 10, 'time/eval_seconds': 1.5}, 256)
    """
    keys: dict[str, float] = {EPISODES: episodes, "time/eval_seconds": seconds}
    if max_steps is not None:
        keys[MAX_STEPS] = max_steps
    if final:
        keys[FINAL] = 1
    return keys


def eval_bar(total: int, desc: str) -> tqdm:
    """:return: a bar of counted episodes (to stderr; refreshed every second on a terminal and cleared when done,
    every 30 s and kept into a log file)"""
    tty = sys.stderr.isatty()
    return tqdm(total=total, unit="episode", desc=desc, leave=not tty, mininterval=1.0 if tty else 30.0)


def evaluate(
    model: Any,
    targets: Sequence[EvalTarget],
    n_episodes: int,
    n_envs: int,
    seed: int,
    max_steps: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Evaluate on every target, with sampled and with greedy actions, in one vectorised pass (:func:`play`).

    :param model: an SB3 recurrent algorithm of :mod:`agents`
    :param targets: the evaluated envs (:func:`eval_targets`)
    :param n_episodes: episodes per target and action mode
    :param n_envs: sub-envs per target and action mode (at most ``n_episodes`` are used)
    :param seed: env seed shared by all targets and both modes (same levels each evaluation)
    :param max_steps: the cap on an episode's steps (module docstring); ``None``: no cap
    :param progress: show a bar of counted episodes on stderr, with the episodes done per target
    :return: ``eval/<scope>/<stat>`` for each target and for the pooled ``train`` and ``heldout`` scopes (with a
        cap, ``capped_fraction`` and ``greedy_capped_fraction`` too), plus, for a core that :func:`reports_units`,
        the selection statistics of :class:`SelectionStats` per target, per side and over all targets
        (``eval/unit_activity/*``, ``eval/switch_rate``, ...)
    """
    core = getattr(model.policy, "core", None)
    selection = [SelectionStats() for _ in targets] if reports_units(core) else None
    last_active: dict[int, np.ndarray] = {}  # row -> (L, U), its active units at its last step

    def record(rows: np.ndarray, episode_starts: np.ndarray, target_of: np.ndarray) -> None:
        assert selection is not None and core is not None
        last = core.last_active  # (T, B, L, U) bool
        if last.shape[0] != 1 or last.shape[1] != len(rows):
            raise ValueError(f"expected the active units of one step, (1, {len(rows)}, L, U), got {tuple(last.shape)}")
        active = last[0].cpu().numpy()  # (B, L, U)
        previous = np.stack([last_active.get(int(r), a) for r, a in zip(rows, active, strict=True)])
        for t in np.unique(target_of):
            mine = target_of == t
            selection[t].update(active[mine], previous[mine], episode_starts[mine])
        last_active.update(zip(rows.tolist(), active, strict=True))

    desc = f"eval ({n_episodes} episodes per env and mode)"
    bar = eval_bar(2 * n_episodes * len(targets), desc) if progress else None
    try:
        played = play(model, targets, n_episodes, n_envs, seed, max_steps, record if selection else None, bar)
    finally:
        if bar is not None:
            bar.close()
    capped = max_steps is not None
    metrics: dict[str, float] = {}
    pooled: dict[str, list[tuple[Episodes, Episodes]]] = {}
    for target, pair in zip(targets, played, strict=True):
        metrics.update({f"eval/{target.name}/{k}": v for k, v in episode_stats(*pair, capped).items()})
        pooled.setdefault(target.scope, []).append(pair)
    for scope, pairs in pooled.items():
        stats = episode_stats(_concat([p[0] for p in pairs]), _concat([p[1] for p in pairs]), capped)
        metrics.update({f"eval/{scope}/{k}": v for k, v in stats.items()})
    if selection is not None:
        every, sides = SelectionStats(), {scope: SelectionStats() for scope in pooled}
        for target, stats_t in zip(targets, selection, strict=True):
            metrics.update(stats_t.metrics(f"eval/{target.name}"))
            sides[target.scope] += stats_t
            every += stats_t
        for scope, side in sides.items():
            metrics.update(side.metrics(f"eval/{scope}"))
        metrics.update(every.metrics("eval"))
    return metrics
