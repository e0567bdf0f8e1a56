"""G-Search: the greedy shallow-to-deep search of the fewest vision tokens per layer (paper, DESIGN §1.3).

The full model's search accuracy is the reference. Layers before ``start_layer`` keep every token (the paper
found layer-1 rankings unstable). For layer ``l = start_layer .. L-1`` in turn, layers ``l..L-1`` are set to one
candidate keep ratio from the grid (only ratios below layer ``l-1``'s, so the schedule stays non-increasing);
assuming accuracy does not decrease with the ratio (the monotone assumption), a binary search finds the smallest
candidate whose accuracy is at least ``reference - tolerance``; it is fixed and the search moves to ``l+1``. If no
candidate passes, layer ``l`` keeps layer ``l-1``'s ratio (which is known to pass).

Cost: one reference evaluation plus at most ``ceil(log2(c + 1))`` per layer, where ``c`` is the number of grid
ratios below the previous layer's (``|G| - 1`` when the grid holds 1.0): at most ``(L-2)·ceil(log2|G|) + L``.
"""
from __future__ import annotations

from collections.abc import Sequence

from vtr_bench.errors import ConfigError
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.search.result import Objective, Recorder, SearchResult

_EPS = 1e-12  # accuracies are means of 0/1 scores: compare with a hair of slack against float error


def check_grid(grid: Sequence[float]) -> tuple[float, ...]:
    """The candidate keep ratios, sorted and de-duplicated; each must be in [0, 1].

    Raises:
        ConfigError: an empty grid or a ratio outside [0, 1].
    """
    ratios = sorted({float(r) for r in grid})
    if not ratios or not all(0 <= r <= 1 for r in ratios):
        raise ConfigError(f"method.grid must be a non-empty list of keep ratios in [0, 1], got {list(grid)}")
    return tuple(ratios)


def greedy_search(objective: Objective, layers: int, grid: Sequence[float], tolerance: float,
                  start_layer: int = 2) -> SearchResult:
    """Run G-Search.

    Args:
        objective: search-split accuracy of a schedule.
        layers: number of decoder layers.
        grid: candidate keep ratios.
        tolerance: accepted accuracy drop below the full model's (absolute, e.g. 0.01 = one point).
        start_layer: first layer that may drop tokens.

    Returns:
        The schedule found, its accuracy, the reference accuracy and every objective call.

    Raises:
        ConfigError: a bad grid, a negative tolerance or ``start_layer`` outside ``[0, layers)``.
    """
    candidates = check_grid(grid)
    if tolerance < 0:
        raise ConfigError(f"method.tolerance must be >= 0, got {tolerance}")
    if not 0 <= start_layer < layers:
        raise ConfigError(f"method.start_layer must be in [0, {layers}) for a {layers}-layer decoder, "
                          f"got {start_layer}")
    recorder = Recorder(objective)
    reference = recorder(KeepSchedule.full(layers))
    threshold = reference - tolerance - _EPS
    ratios, accuracy = [1.0] * layers, reference
    for layer in range(start_layer, layers):
        previous = ratios[layer - 1] if layer else 1.0
        below = [c for c in candidates if c < previous]
        lo, hi, passed = 0, len(below), {}
        while lo < hi:  # smallest index whose schedule passes; len(below) = keep the previous ratio
            mid = (lo + hi) // 2
            trial = recorder(KeepSchedule(tuple(ratios[:layer]) + (below[mid],) * (layers - layer)))
            if trial >= threshold:
                hi, passed[mid] = mid, trial
            else:
                lo = mid + 1
        if hi < len(below):
            ratios[layer:] = [below[hi]] * (layers - layer)
            accuracy = passed[hi]
    return SearchResult(KeepSchedule(tuple(ratios)), accuracy, reference, recorder.history,
                        params={"tolerance": tolerance, "grid": list(candidates), "start_layer": start_layer},
                        tag=f"tol{tolerance:g}")
