"""Stage-wise keep schedules (PyramidDrop, SparseVLM): a keep ratio per stage, stages starting at given layers,
and the bisection that solves a method's one parameter for a budget."""
from __future__ import annotations

from typing import Callable, Sequence

from vtr_bench.errors import ConfigError, InfeasibleBudgetError
from vtr_bench.reduction.schedule import ROUNDINGS, KeepSchedule, round_half_up

_BISECTIONS = 200


def scaled_layers(reference: Sequence[int], reference_depth: int, layers: int) -> list[int]:
    """Layer indices of a ``reference_depth``-layer decoder scaled to ``layers`` layers: ``round(l * layers /
    reference_depth)`` (halves up), then pushed up to stay strictly increasing."""
    scaled: list[int] = []
    for layer in reference:
        scaled.append(max(round_half_up(layer * layers / reference_depth), scaled[-1] + 1 if scaled else 0))
    return scaled


def check_starts(starts: Sequence[int], layers: int, what: str) -> list[int]:
    """Validate stage start layers: strictly increasing, each in ``[1, layers - 1]``."""
    starts = [int(s) for s in starts]
    if not starts or any(b <= a for a, b in zip(starts, starts[1:])) or starts[0] < 1 or starts[-1] >= layers:
        raise ConfigError(f"{what} {starts} must be strictly increasing layers in [1, {layers - 1}] for a "
                          f"{layers}-layer decoder")
    return starts


def check_rounding(rounding: str) -> str:
    """Validate a method's ``rounding`` option (how ``ratio * n`` becomes a count)."""
    if rounding not in ROUNDINGS:
        raise ConfigError(f"method.rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return rounding


def staged_schedule(layers: int, starts: Sequence[int], ratios: Sequence[float],
                    rounding: str = "half_up") -> KeepSchedule:
    """Layers before ``starts[0]`` keep everything; layers from ``starts[i]`` on keep ``ratios[i]``."""
    per_layer = [1.0] * layers
    for start, ratio in zip(starts, ratios):
        per_layer[start:] = [ratio] * (layers - start)
    return KeepSchedule(tuple(per_layer), rounding)


def solve_stage_parameter(layers: int, starts: Sequence[int], ratios: Callable[[float], Sequence[float]],
                          budget: float, high: float,
                          measure: Callable[[KeepSchedule], float] = lambda schedule: schedule.budget) -> float:
    """The smallest parameter ``p`` in ``[0, high]`` whose staged schedule ``ratios(p)`` has ``measure`` (default: its
    mean keep ratio) at least ``budget``.

    ``ratios`` must be non-decreasing in ``p`` with ``ratios(high)`` all 1; the lowest reachable budget is
    ``measure`` at ``p = 0`` (the layers before the first stage keep every token): lower budgets are an error.
    """
    lowest = measure(staged_schedule(layers, starts, ratios(0.0)))
    if budget < lowest - 1e-12:
        raise InfeasibleBudgetError(f"budget {budget} is unreachable: layers before {starts[0]} keep every token, "
                                    f"so the lowest budget of this {layers}-layer schedule is {lowest:.4g}")
    low = 0.0
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if measure(staged_schedule(layers, starts, ratios(middle))) < budget:
            low = middle
        else:
            high = middle
    return high
