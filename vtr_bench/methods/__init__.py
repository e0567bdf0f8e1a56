"""Token-reduction methods, one small module each, registered by config name."""
from vtr_bench.methods.base import Method, check_budget
from vtr_bench.methods.fastv import FastV, RandomDrop
from vtr_bench.methods.full import Full
from vtr_bench.methods.schedule import GivenSchedule

__all__ = ["Method", "check_budget", "Full", "FastV", "RandomDrop", "GivenSchedule"]
