"""Methods compile to the right keep schedules; budgets are validated and solved exactly."""
import pytest

from vtr_bench.errors import ConfigError, ScheduleError
from vtr_bench.methods import FastV, Full, RandomDrop, check_budget
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, RandomScorer


def test_fastv_k_r_schedule_and_counts():
    schedule, scorer = FastV(k=2, r=0.5).build(32, None)
    assert schedule.ratios == (1.0,) * 2 + (0.5,) * 30
    assert schedule.counts(576) == [576] * 2 + [288] * 30
    assert isinstance(scorer, LastTokenAttention) and scorer.source_offset == -1


@pytest.mark.parametrize("budget", [0.9, 0.5, 0.333, 0.2])
def test_fastv_budget_is_met_exactly(budget):
    schedule, _ = FastV(k=2).build(32, budget)
    assert schedule.budget == pytest.approx(budget, abs=1e-12)
    assert abs(schedule.achieved_budget(576) - budget) <= 1 / 576


def test_fastv_unreachable_budget_says_why():
    with pytest.raises(ConfigError, match="lowest budget is k/L = 0.25"):
        FastV(k=2).build(8, 0.1)


def test_fastv_rejects_budget_and_r_together():
    with pytest.raises(ConfigError, match="either budget or method.r"):
        FastV(k=2, r=0.5).build(8, 0.5)


def test_random_uses_fastv_schedule_with_random_scorer():
    schedule, scorer = RandomDrop(k=1).build(4, 0.625)
    assert schedule.ratios == (1.0, 0.5, 0.5, 0.5)
    assert isinstance(scorer, RandomScorer)


def test_full_takes_no_budget():
    assert Full().build(4, None)[0].is_full
    with pytest.raises(ConfigError, match="takes no budget"):
        Full().build(4, 0.5)


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), "abc", True])
def test_budget_outside_unit_interval_is_an_error(bad):
    with pytest.raises(ConfigError, match="budget"):
        check_budget(bad)


def test_schedule_must_be_non_increasing_and_in_range():
    with pytest.raises(ScheduleError, match="non-increasing"):
        KeepSchedule((1.0, 0.5, 0.7))
    with pytest.raises(ScheduleError, match="outside"):
        KeepSchedule((1.2, 0.5))
    with pytest.raises(ScheduleError, match="empty"):
        KeepSchedule(())


def test_counts_round_half_up_and_stay_non_increasing():
    schedule = KeepSchedule((1.0, 0.5, 0.499, 0.25, 0.0))
    assert schedule.counts(5) == [5, 3, 2, 1, 0]
