"""P-Sigmoid: schedules meet the budget and never increase; Bayesian optimisation is seeded and resumable."""
import pytest
from test_gsearch import DiesAfter, Interrupted

from vtr_bench.errors import ConfigError
from vtr_bench.methods import PSigmoid
from vtr_bench.methods.psigmoid import psigmoid_schedule
from vtr_bench.search.objective import SyntheticObjective

BUDGETS = [0.05, 0.1, 0.125, 0.2, 0.3, 0.333, 0.5, 0.7, 0.9, 0.95]
SHAPES = [(0.1, 0.0), (0.1, 1.0), (1.0, 0.5), (10.0, 0.0), (10.0, 1.0), (3.0, 0.1), (0.5, 0.9)]  # k, alpha/(L-1)


@pytest.mark.parametrize("layers, n_vision", [(8, 144), (32, 576), (24, 64)])
@pytest.mark.parametrize("budget", BUDGETS)
def test_schedules_are_non_increasing_and_meet_the_budget(layers, n_vision, budget):
    for k, alpha in SHAPES:
        schedule, floor = psigmoid_schedule(layers, k, alpha * (layers - 1), budget)  # KeepSchedule checks order
        assert schedule.budget == pytest.approx(budget, abs=1e-9)
        assert abs(sum(schedule.counts(n_vision)) - budget * layers * n_vision) <= layers  # one token per layer
        assert floor <= budget


def test_shape_follows_the_parameters():
    smooth, _ = psigmoid_schedule(8, 1e-6, 3.5, 0.4)
    assert smooth.ratios == pytest.approx((0.4,) * 8, abs=1e-5)  # k -> 0: uniform
    step, floor = psigmoid_schedule(8, 50.0, 1.5, 0.25 + 0.75 * 0.5)
    assert step.ratios == pytest.approx((1, 1) + (0.5,) * 6, abs=1e-9) and floor == pytest.approx(0.5)  # FastV
    assert psigmoid_schedule(8, 2.0, 3.0, 1.0)[0].is_full


def test_bayesian_optimisation_is_seeded_and_resumes_for_free(tmp_path):
    target, _ = psigmoid_schedule(8, 2.0, 3.0, 0.3)
    method = PSigmoid(n_calls=5, n_initial_points=3)
    objective = SyntheticObjective(target.ratios, tmp_path)
    schedule, scorer = method.build(8, 0.3, seed=0, objective=objective)
    result = method.result
    assert schedule.budget == pytest.approx(0.3) and scorer.source_offset == -1
    assert result.evaluations == 6 and result.reference_accuracy == 1.0  # reference + n_calls
    assert result.accuracy == max(result.params["bo_values"]) == max(a for _, a in result.history[1:])
    assert schedule == psigmoid_schedule(8, result.params["k"], result.params["alpha"], 0.3)[0]
    again = SyntheticObjective(target.ratios, tmp_path)
    rerun = PSigmoid(n_calls=5, n_initial_points=3)
    assert rerun.build(8, 0.3, seed=0, objective=again)[0] == schedule and again.new_evaluations == 0


def test_killed_bayesian_search_resumes_with_the_same_result(tmp_path):
    target, _ = psigmoid_schedule(8, 2.0, 3.0, 0.3)
    expected = PSigmoid(n_calls=4, n_initial_points=2).build(8, 0.3, objective=SyntheticObjective(target.ratios,
                                                                                                  tmp_path / "a"))
    with pytest.raises(Interrupted):
        PSigmoid(n_calls=4, n_initial_points=2).build(8, 0.3, objective=DiesAfter(target.ratios, tmp_path / "b", 3))
    resumed = SyntheticObjective(target.ratios, tmp_path / "b")
    assert PSigmoid(n_calls=4, n_initial_points=2).build(8, 0.3, objective=resumed)[0] == expected[0]
    assert resumed.new_evaluations == 5 - 3


def test_fixed_sigmoid_needs_no_search():
    method = PSigmoid(k=2.0, alpha=3.0)
    assert not method.needs_objective
    assert method.build(8, 0.3)[0] == psigmoid_schedule(8, 2.0, 3.0, 0.3)[0]
    with pytest.raises(ConfigError, match="method.k and method.alpha"):
        PSigmoid().build(8, 0.3)
    with pytest.raises(ConfigError, match="both method.k"):
        PSigmoid(k=2.0)


def test_needs_a_budget_and_valid_ranges():
    with pytest.raises(ConfigError, match="needs a budget"):
        PSigmoid().check(None)
    with pytest.raises(ConfigError, match="k_range"):
        PSigmoid(k_range=[0.0, 1.0])
    with pytest.raises(ConfigError, match="alpha_range"):
        PSigmoid(alpha_range=[1.0, 0.5])
    with pytest.raises(ConfigError, match="n_calls"):
        PSigmoid(n_calls=0)
