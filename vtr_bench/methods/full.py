"""The unreduced model: every layer keeps every vision token."""
from vtr_bench.methods.base import Method
from vtr_bench.reduction.schedule import KeepSchedule


class Full(Method):
    """No reduction (the reference every method is compared with)."""

    name = "full"
    stage = "none"
    attention = "none"
    takes_budget = False

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        return KeepSchedule.full(layers)

    def scorer(self, seed: int):
        return None
