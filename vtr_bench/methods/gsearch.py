"""G-Search (the paper's greedy search, no budget): see :mod:`vtr_bench.search.greedy` for the algorithm."""
from __future__ import annotations

from collections.abc import Sequence

from vtr_bench.errors import ConfigError
from vtr_bench.eval.stats import DEFAULT_RESAMPLES
from vtr_bench.search.greedy import CRITERIA, check_grid, greedy_search
from vtr_bench.search.method import SearchMethod
from vtr_bench.search.result import Objective, SearchResult

DEFAULT_GRID = (0.0, 0.0625, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)


class GSearch(SearchMethod):
    """Fewest vision tokens per layer, shallow to deep, with no search-accuracy drop beyond ``tolerance``.

    Args:
        tolerance: accepted drop of search accuracy below the full model's (absolute; 0.01 = one point).
        grid: candidate keep ratios.
        start_layer: first layer that may drop tokens (earlier layers keep all).
        source_offset: which layer's attention ranks tokens for layer l (-1: l-1, 0: l).
        criterion: ``mean`` (the paper's: compare search-split means) or ``paired`` (noise-aware: the one-sided
            paired-bootstrap lower bound of the accuracy difference must be >= -tolerance).
        confidence, resamples: of the paired criterion's bound.
    """

    name = "gsearch"
    takes_budget = False

    def __init__(self, tolerance: float = 0.01, grid: Sequence[float] = DEFAULT_GRID, start_layer: int = 2,
                 source_offset: int = -1, criterion: str = "mean", confidence: float = 0.95,
                 resamples: int = DEFAULT_RESAMPLES) -> None:
        super().__init__(source_offset)
        if tolerance < 0 or start_layer < 0:
            raise ConfigError(f"method.tolerance and method.start_layer must be >= 0, got {tolerance}, {start_layer}")
        self.tolerance = float(tolerance)
        self.grid = list(check_grid(grid))
        self.start_layer = int(start_layer)
        if criterion not in CRITERIA or not 0 < confidence < 1 or resamples < 100:
            raise ConfigError(f"method.criterion must be one of {CRITERIA}, method.confidence in (0, 1) and "
                              f"method.resamples >= 100, got {criterion!r}, {confidence}, {resamples}")
        self.criterion, self.confidence, self.resamples = criterion, float(confidence), int(resamples)

    def search(self, layers: int, budget: float | None, objective: Objective, seed: int) -> SearchResult:
        return greedy_search(objective, layers, self.grid, self.tolerance, self.start_layer, self.criterion,
                             self.confidence, self.resamples, seed)
