"""What a search returns, and a wrapper that counts the objective calls a search makes."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vtr_bench.reduction.schedule import KeepSchedule

Objective = Callable[[KeepSchedule], float]
"""A search objective: the search-split accuracy of a keep schedule (higher is better)."""


class Recorder:
    """Calls an objective and remembers every call, in order.

    Args:
        objective: the objective to call.
    """

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.history: list[tuple[tuple[float, ...], float]] = []

    def __call__(self, schedule: KeepSchedule) -> float:
        accuracy = float(self.objective(schedule))
        self.history.append((schedule.ratios, accuracy))
        return accuracy

    def decide(self, schedule: KeepSchedule, threshold: float) -> tuple[bool, float | None]:
        """Whether the accuracy of ``schedule`` is at least ``threshold`` and the accuracy (None when the objective
        decided early without it: ``objective.decide``; objectives without it are simply evaluated)."""
        decide = getattr(self.objective, "decide", None)
        if decide is None:
            accuracy = self(schedule)
            return accuracy >= threshold, accuracy
        passed, accuracy = decide(schedule, threshold)
        self.history.append((schedule.ratios, accuracy))
        return passed, accuracy


@dataclass
class SearchResult:
    """The outcome of a search.

    Attributes:
        schedule: the schedule found.
        accuracy: its search-split accuracy.
        reference_accuracy: the search-split accuracy of the full model.
        history: every objective call of the search: (ratios, accuracy), in order (cached calls included; accuracy
            None where an early stop decided without it).
        params: method-specific results (e.g. the sigmoid's ``k``, ``alpha``, ``floor``).
        tag: short label of the search's setting for file names (e.g. ``tol0.01``, ``b0.3``).
    """

    schedule: KeepSchedule
    accuracy: float
    reference_accuracy: float
    history: list[tuple[tuple[float, ...], float]]
    params: dict = field(default_factory=dict)
    tag: str = ""

    @property
    def evaluations(self) -> int:
        """Objective calls the search made (cached ones included)."""
        return len(self.history)

    def summary(self) -> dict:
        """JSON-friendly summary (no history)."""
        return {"ratios": list(self.schedule.ratios), "budget": self.schedule.budget,
                "search_accuracy": self.accuracy, "reference_accuracy": self.reference_accuracy,
                "evaluations": self.evaluations, **self.params}
