"""Bayesian optimisation of a few real parameters with scikit-optimize's ``gp_minimize`` (seeded)."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vtr_bench.errors import ConfigError

PRIORS = ("uniform", "log-uniform")


@dataclass
class BayesResult:
    """Outcome of :func:`maximise`.

    Attributes:
        x: the best point found.
        value: its value.
        xs: every point evaluated, in order.
        values: their values.
    """

    x: list[float]
    value: float
    xs: list[list[float]]
    values: list[float]


def maximise(fn: Callable[[list[float]], float], bounds: Sequence[tuple[float, float, str]], n_calls: int,
             n_initial_points: int, seed: int) -> BayesResult:
    """Maximise ``fn`` over a box with a Gaussian-process surrogate (expected-improvement family, skopt's default
    ``gp_hedge``), after ``n_initial_points`` random points.

    Args:
        fn: the function of a point (one value per dimension).
        bounds: ``(low, high, prior)`` per dimension; prior is ``uniform`` or ``log-uniform``.
        n_calls: total evaluations of ``fn``.
        n_initial_points: random points before the surrogate is used (at most ``n_calls``).
        seed: seeds the random points and the surrogate, so equal values give equal runs.

    Raises:
        ConfigError: ``n_calls`` < 1, ``n_initial_points`` < 1, or a bad dimension.
    """
    from skopt import gp_minimize
    from skopt.space import Real
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    if n_calls < 1 or n_initial_points < 1:
        raise ConfigError(f"n_calls and n_initial_points must be >= 1, got {n_calls} and {n_initial_points}")
    for low, high, prior in bounds:
        if not low < high or prior not in PRIORS or (prior == "log-uniform" and low <= 0):
            raise ConfigError(f"bad search range [{low}, {high}] with prior {prior!r} (need low < high, "
                              f"low > 0 for log-uniform)")
    space = [Real(low, high, prior=prior) for low, high, prior in bounds]
    # Repeated points and GP convergence notes are expected on flat objectives. One BLAS thread: the surrogate is
    # tiny and threaded BLAS on a busy CPU is several times slower (torch's own threads are left alone).
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore")
        result = gp_minimize(lambda x: -float(fn([float(v) for v in x])), space, n_calls=int(n_calls),
                             n_initial_points=min(int(n_initial_points), int(n_calls)), random_state=int(seed))
    return BayesResult([float(v) for v in result.x], -float(result.fun),
                       [[float(v) for v in x] for x in result.x_iters], [-float(v) for v in result.func_vals])
