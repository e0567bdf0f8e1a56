"""Keep schedules: how many vision tokens each decoder layer processes.

A :class:`KeepSchedule` holds one keep *ratio* per decoder layer (non-increasing with depth). It is resolved per
sample into integer keep *counts* against that sample's number of vision tokens, so models with a variable number
of vision tokens (tiled or dynamic-resolution images) share one schedule. Counts round half up by default; FastV's and
PyramidDrop's code take ``int()`` of ``ratio * n`` (``rounding="floor"``). The *budget* is the mean keep ratio over
layers (DESIGN §2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from vtr_bench.errors import ScheduleError

_TOLERANCE = 1e-9
ROUNDINGS = ("half_up", "floor")


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (monotone, unlike Python's banker's rounding)."""
    return int(math.floor(x + 0.5))


@dataclass(frozen=True)
class KeepSchedule:
    """Per-layer vision-token keep ratios, non-increasing with depth.

    Args:
        ratios: keep ratio of each decoder layer, each in [0, 1].
        rounding: how ``ratio * n`` becomes a count: ``half_up`` (nearest, halves up) or ``floor`` (``int()``, as
            FastV's and PyramidDrop's code; a ratio within 1e-9 of an integer count gives that count).
    """

    ratios: tuple[float, ...]
    rounding: str = "half_up"

    def __post_init__(self) -> None:
        ratios = tuple(float(r) for r in self.ratios)
        object.__setattr__(self, "ratios", ratios)
        if self.rounding not in ROUNDINGS:
            raise ScheduleError(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if not ratios:
            raise ScheduleError("keep schedule is empty")
        for layer, ratio in enumerate(ratios):
            if not (-_TOLERANCE <= ratio <= 1 + _TOLERANCE) or math.isnan(ratio):
                raise ScheduleError(f"keep ratio of layer {layer} is {ratio}, outside [0, 1]")
        for layer in range(1, len(ratios)):
            if ratios[layer] > ratios[layer - 1] + _TOLERANCE:
                raise ScheduleError(
                    f"keep schedule must be non-increasing with depth: layer {layer} keeps {ratios[layer]:.4g} "
                    f"> layer {layer - 1} keeps {ratios[layer - 1]:.4g}"
                )

    @classmethod
    def full(cls, layers: int) -> "KeepSchedule":
        """The schedule that keeps every vision token in every layer."""
        return cls((1.0,) * layers)

    @classmethod
    def from_counts(cls, counts: Sequence[int], n_vision: int, rounding: str = "half_up") -> "KeepSchedule":
        """A schedule from absolute keep counts of a model with ``n_vision`` vision tokens."""
        return cls(tuple(c / n_vision for c in counts), rounding)

    @property
    def layers(self) -> int:
        """Number of decoder layers the schedule covers."""
        return len(self.ratios)

    @property
    def budget(self) -> float:
        """Mean keep ratio over layers (the nominal budget; counts round per sample)."""
        return sum(self.ratios) / len(self.ratios)

    @property
    def is_full(self) -> bool:
        """True when no layer drops anything."""
        return all(r >= 1 - _TOLERANCE for r in self.ratios)

    def counts(self, n_vision: int) -> list[int]:
        """Keep counts per layer for a sample with ``n_vision`` vision tokens (non-increasing)."""
        if self.rounding == "floor":
            return [min(n_vision, max(0, math.floor(r * n_vision + _TOLERANCE))) for r in self.ratios]
        return [min(n_vision, max(0, round_half_up(r * n_vision))) for r in self.ratios]

    def achieved_budget(self, n_vision: int) -> float:
        """Mean keep ratio after rounding to counts for ``n_vision`` tokens."""
        return sum(self.counts(n_vision)) / (len(self.ratios) * n_vision)

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"ratios": list(self.ratios), "budget": self.budget, "rounding": self.rounding}
