"""P-Sigmoid (the paper's method under a budget): a parametric sigmoid keep schedule tuned by Bayesian optimisation.

Reconstruction (the paper's full text was not available to us; these are our choices, each a config value):

- Keep ratio of decoder layer ``l = 0..L-1``::

      r(l) = clip(b + (1 - b) * sigmoid(-k * (l - alpha)), 0, 1)
           = clip(1 - (1 - b) * sigmoid(k * (l - alpha)), 0, 1)

  a smooth step from ~1 in shallow layers down to the floor ``b``, centred at layer ``alpha`` with steepness
  ``k >= 0``; it is non-increasing in ``l``. ``k -> 0`` gives a uniform schedule, a large ``k`` FastV's step.
- The floor ``b`` is *solved*, not searched: for given ``(k, alpha)`` the mean keep ratio grows continuously and
  monotonically with ``b``, so bisection (on ``log(1 - b)``) meets the budget to machine precision; rounded to
  tokens every layer is within half a token. ``b`` may come out negative: the curve then reaches 0 at some depth
  and the deeper layers keep no vision tokens (the clip), which is what lets steep curves meet small budgets.
- ``(k, alpha)`` are found by Bayesian optimisation (``skopt.gp_minimize``, ``method.n_calls`` evaluations after
  ``method.n_initial_points`` random ones, seeded with ``seed``) maximising search-split accuracy; ``k`` is
  searched log-uniformly in ``method.k_range`` (per layer) and ``alpha`` uniformly in ``method.alpha_range``
  times ``L - 1`` (fractions of the depth, so one config serves every model).
- Tokens are ranked by last-token attention (FastV's scorer, layer ``l-1``'s map; ``method.source_offset``).
- With ``method.k`` and ``method.alpha`` given (``alpha`` in layers, as a search reports them) there is no search:
  the fixed sigmoid meets the budget (also usable in ``run.mode=flops`` and the efficiency benchmark).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vtr_bench.errors import ConfigError
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.search.bayes import maximise
from vtr_bench.search.method import SearchMethod
from vtr_bench.search.result import Objective, Recorder, SearchResult

_BISECTION_STEPS = 200


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def _ratios(log_drop: float, log_sig: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.clip(1.0 - np.exp(log_drop + log_sig), 0.0, 1.0)


def psigmoid_schedule(layers: int, k: float, alpha: float, budget: float) -> tuple[KeepSchedule, float]:
    """The P-Sigmoid schedule with steepness ``k`` and centre ``alpha`` whose mean keep ratio is ``budget``.

    Args:
        layers: number of decoder layers.
        k: steepness (per layer), >= 0.
        alpha: centre (a layer index, may be fractional).
        budget: mean keep ratio in (0, 1].

    Returns:
        The schedule and its floor ``b`` (``-inf`` when it is below what a float holds).
    """
    if k < 0:
        raise ConfigError(f"P-Sigmoid steepness k must be >= 0, got {k}")
    if budget >= 1:
        return KeepSchedule.full(layers), 1.0
    log_sig = _log_sigmoid(k * (np.arange(layers) - alpha))
    lo, hi = math.log1p(-budget), float(np.max(-log_sig))  # mean ratio >= budget at lo; every ratio is 0 at hi
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if _ratios(mid, log_sig).mean() > budget:
            lo = mid
        else:
            hi = mid
    log_drop = 0.5 * (lo + hi)
    floor = -math.expm1(log_drop) if log_drop < 700 else -math.inf
    return KeepSchedule(tuple(float(r) for r in _ratios(log_drop, log_sig))), floor


class PSigmoid(SearchMethod):
    """P-Sigmoid: a sigmoid keep schedule meeting the budget, its shape tuned by Bayesian optimisation.

    Args:
        n_calls: Bayesian-optimisation evaluations (the full-model reference is one more).
        n_initial_points: random evaluations before the Gaussian-process surrogate is used.
        k_range: bounds of the steepness ``k`` (per layer, searched log-uniformly).
        alpha_range: bounds of the centre ``alpha`` as fractions of the depth ``L - 1``.
        k: a fixed steepness (with ``alpha``: no search).
        alpha: a fixed centre, in layers (with ``k``: no search).
        source_offset: which layer's attention ranks tokens for layer l (-1: l-1, 0: l).
    """

    name = "psigmoid"

    def __init__(self, n_calls: int = 15, n_initial_points: int = 5, k_range: Sequence[float] = (0.1, 10.0),
                 alpha_range: Sequence[float] = (0.0, 1.0), k: float | None = None, alpha: float | None = None,
                 source_offset: int = -1) -> None:
        super().__init__(source_offset)
        if (k is None) != (alpha is None) or (k is not None and k < 0):
            raise ConfigError(f"give both method.k >= 0 and method.alpha (a fixed sigmoid) or neither (searched), "
                              f"got k={k}, alpha={alpha}")
        self.k, self.alpha = (None, None) if k is None else (float(k), float(alpha))
        if n_calls < 1 or n_initial_points < 1:
            raise ConfigError(f"method.n_calls and method.n_initial_points must be >= 1, got {n_calls}, "
                              f"{n_initial_points}")
        if len(k_range) != 2 or not 0 < k_range[0] < k_range[1]:
            raise ConfigError(f"method.k_range must be [low, high] with 0 < low < high, got {list(k_range)}")
        if len(alpha_range) != 2 or not alpha_range[0] < alpha_range[1]:
            raise ConfigError(f"method.alpha_range must be [low, high] with low < high, got {list(alpha_range)}")
        self.n_calls, self.n_initial_points = int(n_calls), int(n_initial_points)
        self.k_range = [float(v) for v in k_range]
        self.alpha_range = [float(v) for v in alpha_range]

    @property
    def needs_objective(self) -> bool:
        """True unless ``k`` and ``alpha`` are fixed."""
        return self.k is None

    def _needs_objective(self) -> ConfigError:
        error = super()._needs_objective()
        return ConfigError(f"{error}; or fix the sigmoid with method.k and method.alpha")

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        if self.needs_objective:
            return super().schedule(layers, budget)
        return psigmoid_schedule(layers, self.k, self.alpha, budget)[0]

    def check(self, budget) -> float:
        budget = super().check(budget)
        if budget is None:
            raise ConfigError("method=psigmoid needs a budget (mean keep ratio), e.g. budget=0.3")
        return budget

    def search(self, layers: int, budget: float | None, objective: Objective, seed: int) -> SearchResult:
        if layers < 2:
            raise ConfigError(f"P-Sigmoid needs at least 2 decoder layers, got {layers}")
        recorder = Recorder(objective)
        reference = recorder(KeepSchedule.full(layers))
        alpha_low, alpha_high = (a * (layers - 1) for a in self.alpha_range)
        bounds = [(self.k_range[0], self.k_range[1], "log-uniform"), (alpha_low, alpha_high, "uniform")]
        best = maximise(lambda x: recorder(psigmoid_schedule(layers, x[0], x[1], budget)[0]), bounds,
                        self.n_calls, self.n_initial_points, seed)
        k, alpha = best.x
        schedule, floor = psigmoid_schedule(layers, k, alpha, budget)
        return SearchResult(schedule, best.value, reference, recorder.history,
                            params={"budget": budget, "k": k, "alpha": alpha, "floor": floor,
                                    "bo_values": best.values, "bo_points": best.xs},
                            tag=f"b{budget:g}")
