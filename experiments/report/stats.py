"""Statistics across seeds: mean curves with bootstrap bands, IQM and the probability of improvement (rliable),
each with a 95% CI."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np


class Band(NamedTuple):
    """Mean curve across seeds with a bootstrap band.

    :param frames: ``(G,)`` common frame grid
    :param mean: ``(G,)`` mean across seeds
    :param low: ``(G,)`` lower bound of the 95% band (``mean`` with one seed)
    :param high: ``(G,)`` upper bound
    :param n: number of seeds
    """

    frames: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int


def mean_curve(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], reps: int, rng: np.random.Generator, size: float = 0.95
) -> Band | None:
    """Interpolate each seed's curve onto the frames all seeds cover, then average with a bootstrap band.

    The grid is every eval frame count of any seed between the latest first eval and the earliest last eval;
    seeds evaluated at the same frame counts are not interpolated at all.

    :param curves: per seed, ``(frames, values)``, each ``(E_i,)``
    :param reps: bootstrap resamples of the seeds
    :param rng: random generator
    :param size: band coverage
    :return: the band, or ``None`` when no seed has a point

    >>> seed_a = (np.array([0.0, 10.0]), np.array([0.0, 1.0]))
    >>> seed_b = (np.array([0.0, 5.0, 10.0]), np.array([0.0, 1.0, 1.0]))
    >>> band = mean_curve([seed_a, seed_b], reps=100, rng=np.random.default_rng(0))
    >>> band.frames.tolist(), band.mean.tolist(), band.n
    ([0.0, 5.0, 10.0], [0.0, 0.75, 1.0], 2)
    """
    curves = [(f, v) for f, v in curves if len(f)]
    if not curves:
        return None
    start = max(f[0] for f, _ in curves)
    stop = min(f[-1] for f, _ in curves)
    grid = np.unique(np.concatenate([f for f, _ in curves]))
    grid = grid[(grid >= start) & (grid <= stop)]
    if not len(grid):  # the seeds' eval ranges do not overlap: keep the last common point
        grid = np.array([stop])
    values = np.stack([np.interp(grid, f, v) for f, v in curves])  # (n, G)
    mean = values.mean(axis=0)
    if len(curves) < 2:
        return Band(grid, mean, mean.copy(), mean.copy(), 1)
    idx = rng.integers(0, len(curves), size=(reps, len(curves)))
    boot = values[idx].mean(axis=1)  # (reps, G)
    alpha = (1 - size) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha], axis=0)
    return Band(grid, mean, low, high, len(curves))


class Estimate(NamedTuple):
    """A point estimate with a confidence interval.

    :param value: the point estimate
    :param low: lower CI bound (``value`` when there is nothing to resample)
    :param high: upper CI bound
    :param n: runs (seeds) behind it; for a comparison, the smaller of the two groups
    """

    value: float
    low: float
    high: float
    n: int


@contextlib.contextmanager
def _rliable_bootstrap(seed: int) -> Iterator[np.random.RandomState]:
    """A seeded bootstrap in rliable 1.2: its stratified bootstraps draw their resampling indices from numpy's global
    RNG (``np.random.choice`` in ``update_indices``), not from the ``random_state`` they take, so the global RNG is
    seeded for the call and restored after it. Also silences arch's FutureWarning about ``random_state``.

    :param seed: seed of the bootstrap
    :return: the ``random_state`` to pass to rliable
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            yield np.random.RandomState(seed)
    finally:
        np.random.set_state(state)


def iqm(scores: np.ndarray, reps: int, seed: int) -> Estimate:
    """Interquartile mean with a 95% stratified-bootstrap CI (rliable).

    :param scores: ``(N, M)`` final scores of N runs on M tasks
    :param reps: bootstrap resamples
    :param seed: seed of the bootstrap
    :return: the IQM; with one run the CI is the value

    >>> iqm(np.array([[0.5]]), reps=10, seed=0)
    Estimate(value=0.5, low=0.5, high=0.5, n=1)
    """
    from rliable import library, metrics

    value = float(metrics.aggregate_iqm(scores))
    if scores.shape[0] < 2:
        return Estimate(value, value, value, scores.shape[0])
    with _rliable_bootstrap(seed) as random_state:
        _, intervals = library.get_interval_estimates(
            {"x": scores}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps, random_state=random_state
        )
    low, high = intervals["x"][:, 0]
    return Estimate(value, float(low), float(high), scores.shape[0])


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int, seed: int) -> Estimate:
    """P(X > Y) averaged over tasks, with a 95% CI from resampling the runs of each group independently (rliable).

    :param x: ``(N_x, M)`` final scores of model X
    :param y: ``(N_y, M)`` final scores of model Y on the same M tasks
    :param reps: bootstrap resamples
    :param seed: seed of the bootstrap
    :return: the probability; with one run on either side the CI is the value

    >>> probability_of_improvement(np.array([[1.0], [0.9]]), np.array([[0.1], [0.0]]), reps=10, seed=0).value
    1.0
    """
    from rliable import library, metrics

    value = float(metrics.probability_of_improvement(x, y))
    n = min(x.shape[0], y.shape[0])
    if n < 2:
        return Estimate(value, value, value, n)
    with _rliable_bootstrap(seed) as random_state:
        _, intervals = library.get_interval_estimates(
            {"x,y": (x, y)},
            lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
            reps=reps,
            random_state=random_state,
        )
    low, high = intervals["x,y"][:, 0]
    return Estimate(value, float(low), float(high), n)
