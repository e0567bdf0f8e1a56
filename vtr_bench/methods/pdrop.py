"""PyramidDrop (Xing et al., CVPR 2025, arXiv 2410.17247): vision tokens dropped in stages, a ratio λ at each.

The decoder is split into stages at ``layers`` (default ``L/4, L/2, 3L/4``: 8/16/24 for 32 layers); stage ``i``
keeps ``λ^i`` of the vision tokens (1, λ, λ², λ³), ranked at each boundary layer by the attention the last
instruction (prompt) token pays them, recomputed from that layer's own q/k. Given a budget ``b`` (mean keep
ratio), λ is the root in (0, 1] of ``mean_l λ^stage(l) = b`` (bisection); budgets below ``layers[0] / L`` are
unreachable. PyramidDrop renumbers positions contiguously (``positions=renumber``).
"""
from __future__ import annotations

from typing import Sequence

from vtr_bench.errors import ConfigError
from vtr_bench.methods.base import Method
from vtr_bench.methods.stages import check_starts, scaled_layers, solve_stage_parameter, staged_schedule
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, Scorer

DEFAULT_LAMBDA = 0.5
REFERENCE_LAYERS = (8, 16, 24)  # of a 32-layer decoder: L/4, L/2, 3L/4


class PyramidDrop(Method):
    """PyramidDrop: stage ``i`` (from ``layers[i-1]`` on) keeps ``lam**i`` of the vision tokens.

    Args:
        layers: first layer of each dropping stage (None: ``L/4, L/2, 3L/4`` rounded half up).
        lam: the per-stage keep ratio λ in (0, 1]; solved from the budget when a budget is given (default 0.5).
    """

    name = "pdrop"

    def __init__(self, layers: Sequence[int] | None = None, lam: float | None = None) -> None:
        if lam is not None and not 0 < lam <= 1:
            raise ConfigError(f"method.lam must be in (0, 1], got {lam}")
        self.layers = None if layers is None else [int(layer) for layer in layers]
        self.lam = lam

    def stage_starts(self, layers: int) -> list[int]:
        """The first layer of each dropping stage for a ``layers``-layer decoder."""
        starts = self.layers if self.layers is not None else scaled_layers(REFERENCE_LAYERS, 32, layers)
        return check_starts(starts, layers, "method.layers")

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        if budget is not None and self.lam is not None:
            raise ConfigError("give either budget or method.lam, not both")
        starts = self.stage_starts(layers)
        ratios = lambda lam: [lam ** (stage + 1) for stage in range(len(starts))]  # noqa: E731
        lam = DEFAULT_LAMBDA if self.lam is None else self.lam
        if budget is not None:
            lam = solve_stage_parameter(layers, starts, ratios, budget, high=1.0)
        return staged_schedule(layers, starts, ratios(lam))

    def scorer(self, seed: int) -> Scorer:
        return LastTokenAttention(source_offset=0)
