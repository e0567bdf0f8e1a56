"""The base class of methods that search their schedule on search data (``method=gsearch`` / ``psigmoid``)."""
from __future__ import annotations

from vtr_bench.errors import ConfigError
from vtr_bench.methods.base import Method
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, Scorer
from vtr_bench.search.result import Objective, SearchResult


class SearchMethod(Method):
    """A method whose schedule is searched with a search objective; tokens are ranked by last-token attention.

    Args:
        source_offset: which layer's attention ranks tokens for layer l (-1: layer l-1, as FastV; 0: layer l).
    """

    needs_objective = True

    def __init__(self, source_offset: int = -1) -> None:
        if source_offset not in (-1, 0):
            raise ConfigError(f"method.source_offset must be -1 or 0, got {source_offset}")
        self.source_offset = int(source_offset)
        self._result: SearchResult | None = None

    @property
    def result(self) -> SearchResult | None:
        """The last search's result (None before :meth:`build`)."""
        return self._result

    def scorer(self, seed: int) -> Scorer:
        return LastTokenAttention(self.source_offset)

    def _needs_objective(self) -> ConfigError:
        return ConfigError(f"method {self.name!r} searches its schedule on search data, so it needs a loaded model "
                           f"(run.mode=eval); to plan a finished search use method=schedule method.path=<saved json>")

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        """The schedule without a search (search methods that can fix their parameters override this)."""
        raise self._needs_objective()

    def search(self, layers: int, budget: float | None, objective: Objective,
               seed: int) -> SearchResult:  # pragma: no cover - interface
        """Search the schedule of a ``layers``-layer decoder with ``objective``."""
        raise NotImplementedError

    def build(self, layers: int, budget, seed: int = 0, objective: Objective | None = None):
        """Validate ``budget``, search with ``objective`` (if ``needs_objective``) and return (schedule, scorer).

        Raises:
            ConfigError: a search without an objective.
        """
        budget = self.check(budget)
        if not self.needs_objective:
            return self.schedule(layers, budget), self.scorer(seed)
        if objective is None:
            raise self._needs_objective()
        self._result = self.search(layers, budget, objective, seed)
        return self._result.schedule, self.scorer(seed)

    def describe(self, budget: float | None = None) -> dict:
        described = super().describe(budget)
        if self._result is not None:
            described["search"] = self._result.summary()
        return described
