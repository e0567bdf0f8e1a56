"""FastV (Chen et al., ECCV 2024, arXiv 2403.06764) and the random-dropping control with the same schedule.

Layers ``0..k-1`` see every vision token; from layer ``k`` on a fraction ``r`` is dropped, ranked by the attention
the last prompt token pays in layer ``k-1`` (recomputed from that layer's q/k, so SDPA stays on). Kept tokens keep
their original positions (``positions: keep``) and the count is ``int(n * (1 - r))`` (``rounding: floor``), as in
FastV's code. Selection happens once, at prefill, as FastV's KV-cache path does (its no-cache path re-ranks at every
decode step). Given a budget ``b`` (mean keep ratio), ``r = (1 - b) * L / (L - k)``; budgets below ``k / L`` are
unreachable and are an error.

Published settings, runnable by label (``method.preset``): FastV's scripts use ``K=2`` with ``R`` = 25 / 50 / 75 /
87.5 % (kept 432 / 288 / 144 / 72 of 576: ``K2R25`` ... ``K2R87.5``); its lmms-eval file uses ``K=3, R=50 %``
(``K3R50``) and its HF demo ``K=3, R=75 %`` (``K3R75``).
"""
from __future__ import annotations

from vtr_bench.errors import ConfigError, InfeasibleBudgetError
from vtr_bench.methods.base import Method
from vtr_bench.methods.stages import check_rounding
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, RandomScorer, Scorer

DEFAULT_R = 0.5
PRESETS = {"K2R25": (2, 0.25), "K2R50": (2, 0.5), "K2R75": (2, 0.75), "K2R87.5": (2, 0.875), "K3R50": (3, 0.5),
           "K3R75": (3, 0.75)}


def solve_drop_fraction(budget: float, layers: int, k: int) -> float:
    """The fraction dropped at layer ``k`` so that the mean keep ratio over ``layers`` layers is ``budget``."""
    if k >= layers:
        raise ConfigError(f"k={k} must be smaller than the number of decoder layers ({layers})")
    r = (1 - budget) * layers / (layers - k)
    if r > 1 + 1e-12:
        raise InfeasibleBudgetError(
            f"budget {budget} is unreachable with k={k} on a {layers}-layer decoder: layers before k keep "
            f"every token, so the lowest budget is k/L = {k / layers:.4g}"
        )
    return min(r, 1.0)


class FastV(Method):
    """FastV: drop a fraction ``r`` of vision tokens at layer ``k``, ranked by last-token attention.

    Args:
        k: the first layer that sees the reduced sequence (FastV's K).
        r: fraction of vision tokens dropped (FastV's R); solved from the budget when a budget is given.
        preset: a published (K, R) setting by label (``K2R50`` ...): sets ``k`` and ``r``.
        rounding: ``floor`` (FastV's ``int()``) or ``half_up``.
    """

    name = "fastv"

    def __init__(self, k: int = 2, r: float | None = None, preset: str | None = None,
                 rounding: str = "floor") -> None:
        if preset is not None:
            if str(preset) not in PRESETS:
                raise ConfigError(f"method.preset must be one of {sorted(PRESETS)}, got {preset!r}")
            if r is not None:
                raise ConfigError("give either method.preset or method.r, not both")
            k, r = PRESETS[str(preset)]
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"method.k must be an integer >= 0, got {k!r}")
        if r is not None and not 0 <= r <= 1:
            raise ConfigError(f"method.r must be in [0, 1], got {r}")
        self.k = int(k)
        self.r = r
        self.preset = None if preset is None else str(preset)
        self.rounding = check_rounding(rounding)

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        if budget is not None and self.r is not None:
            raise ConfigError("give either budget or method.r, not both")
        if self.k >= layers:
            raise ConfigError(f"method.k={self.k} must be smaller than the number of decoder layers ({layers})")
        r = self.r if budget is None else solve_drop_fraction(budget, layers, self.k)
        r = DEFAULT_R if r is None else r
        return KeepSchedule((1.0,) * self.k + (1.0 - r,) * (layers - self.k), self.rounding)

    def label(self, budget: float | None) -> str | None:
        return f"FastV {self.preset} (K={self.k}, R={self.r:g})" if self.preset and budget is None else None

    def scorer(self, seed: int) -> Scorer:
        return LastTokenAttention(source_offset=-1)


class RandomDrop(FastV):
    """The random control: FastV's schedule, vision tokens dropped uniformly at random (seeded)."""

    name = "random"
    attention = "none"

    def label(self, budget: float | None) -> str | None:
        return None

    def scorer(self, seed: int) -> Scorer:
        return RandomScorer(seed)
