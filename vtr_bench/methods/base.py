"""The method interface: a method compiles to a keep schedule plus a scorer (DESIGN §2)."""
from __future__ import annotations

import math

from vtr_bench.errors import ConfigError
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import Scorer


def check_budget(budget) -> float | None:
    """Validate a requested budget (mean keep ratio): None, or a number in (0, 1]."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or math.isnan(budget):
        raise ConfigError(f"budget must be a number in (0, 1], got {budget!r}")
    if not 0 < budget <= 1:
        raise ConfigError(f"budget must be in (0, 1] (mean keep ratio of vision tokens), got {budget}")
    return float(budget)


class Method:
    """Base class. Subclasses set ``name`` and implement :meth:`schedule` and :meth:`scorer`.

    Attributes:
        name: the method's config name.
        takes_budget: whether a ``budget`` may be given.
        needs_objective: whether the schedule is searched on search data (``build`` then needs an objective).
        stage: where it reduces: ``pre-LLM`` (before the first decoder layer), ``in-LLM``, or ``none``.
        attention: which attention weights it reads: ``LLM`` (recomputed rows: SDPA / FlashAttention stay on),
            ``encoder`` (the vision encoder's), or ``none``.
    """

    name = "base"
    takes_budget = True
    needs_objective = False
    stage = "in-LLM"
    attention = "LLM"

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:  # pragma: no cover - interface
        """The keep schedule for a decoder of ``layers`` layers under ``budget`` (None: the method's own)."""
        raise NotImplementedError

    def scorer(self, seed: int) -> Scorer | None:  # pragma: no cover - interface
        """The scorer used at dropping layers."""
        raise NotImplementedError

    def planned_counts(self, schedule: KeepSchedule, n_vision: int) -> list[int]:
        """Vision tokens each layer processes for a sample of ``n_vision`` (weights-free plans; the engine records
        the real ones): the schedule's counts, plus any merged tokens a method adds on top (SparseVLM)."""
        return schedule.counts(n_vision)

    def label(self, budget: float | None) -> str | None:
        """The name the method's paper gives this setting (e.g. ``SparseVLM 64 tokens``), or None."""
        return None

    def check(self, budget) -> float | None:
        """Validate ``budget`` for this method (before any model is loaded); returns it as a float or None."""
        budget = check_budget(budget)
        if budget is not None and not self.takes_budget:
            raise ConfigError(f"method {self.name!r} takes no budget (got budget={budget})")
        return budget

    def build(self, layers: int, budget, seed: int = 0, objective=None) -> tuple[KeepSchedule, Scorer | None]:
        """Validate ``budget`` and return (schedule, scorer).

        Args:
            layers: number of decoder layers.
            budget: mean keep ratio, or None.
            seed: seed of random scorers and searches.
            objective: search accuracy of a schedule (``schedule -> float``); used by search methods only.
        """
        return self.schedule(layers, self.check(budget)), self.scorer(seed)

    def describe(self, budget: float | None = None) -> dict:
        """The method's parameters and the paper's label of this setting, for results files."""
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")},
                "label": self.label(budget), "stage": self.stage, "attention": self.attention}
