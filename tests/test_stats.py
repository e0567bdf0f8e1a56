"""Paired statistics against hand-computed values, and the noise-aware G-Search criterion on a fixed objective."""
import numpy as np
import pytest

from vtr_bench.errors import ConfigError
from vtr_bench.eval.stats import (bootstrap_ci, bootstrap_distribution, bootstrap_mean_interval, is_binary,
                                  lower_bound, mcnemar_exact)
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.search.greedy import greedy_search


def test_mcnemar_exact_matches_the_binomial_by_hand():
    # 1 sample only A gets right, 6 only B: p = 2 * P(X <= 1 | n=7, 1/2) = 2 * (1 + 7) / 128 = 0.125
    a = [1, 0, 0, 0, 0, 0, 0, 1, 1, 0]
    b = [0, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    assert mcnemar_exact(a, b) == {"a_only": 1, "b_only": 6, "p_value": pytest.approx(0.125)}
    # 0 vs 3 discordant: 2 * (1/8) = 0.25; no discordant pair: 1
    assert mcnemar_exact([0, 0, 0, 1], [1, 1, 1, 1])["p_value"] == pytest.approx(0.25)
    assert mcnemar_exact([1, 0], [1, 0])["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact([0.5, 1], [1, 1])
    assert is_binary([0, 1, 1.0]) and not is_binary([0, 0.5])


def test_bootstrap_interval_of_two_values_is_their_range():
    """Resampling [0, 1] gives means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4: the 95% interval is [0, 1]."""
    ci = bootstrap_ci([0.0, 1.0], resamples=4000, seed=1)
    assert (ci["estimate"], ci["low"], ci["high"], ci["contains_zero"]) == (0.5, 0.0, 1.0, True)
    assert np.mean(bootstrap_distribution([0.0, 1.0], 4000, 1) == 0.5) == pytest.approx(0.5, abs=0.03)


def test_bootstrap_of_constant_differences_and_of_tasks():
    assert bootstrap_ci([0.25] * 7) == {"estimate": 0.25, "low": 0.25, "high": 0.25, "confidence": 0.95,
                                        "resamples": 2000, "seed": 0, "contains_zero": False}
    # two tasks are resampled apart and averaged as task means: (1 + 0) / 2, whatever the task sizes
    ci = bootstrap_ci({"a": [1.0] * 3, "b": [0.0] * 50})
    assert (ci["estimate"], ci["low"], ci["high"]) == (0.5, 0.5, 0.5)
    assert lower_bound([-0.5] * 4) == -0.5
    assert bootstrap_ci([0.0, 1.0], seed=3) == bootstrap_ci([0.0, 1.0], seed=3)  # seeded


def test_the_elementwise_interval_of_per_sample_matrices():
    values = np.array([[[1.0, 0.0]], [[1.0, 1.0]]])  # two samples of a 1x2 matrix
    low, high = bootstrap_mean_interval(values, resamples=4000, seed=0)
    assert low.tolist() == [[1.0, 0.0]] and high.tolist() == [[1.0, 1.0]]


class NoisyObjective:
    """100 search samples: the full model gets all right; a schedule keeping less than half of any layer gets
    one wrong (a 1-point drop, within a 2-point tolerance on average, but one sample's luck)."""

    def scores(self, schedule):
        return [1.0] * 100 if min(schedule.ratios) >= 0.5 else [1.0] * 99 + [0.0]

    def __call__(self, schedule):
        return float(np.mean(self.scores(schedule)))


def test_the_paired_criterion_rejects_a_drop_that_the_means_accept():
    mean = greedy_search(NoisyObjective(), 4, [0.25, 0.5, 1.0], tolerance=0.02, start_layer=2)
    paired = greedy_search(NoisyObjective(), 4, [0.25, 0.5, 1.0], tolerance=0.02, start_layer=2,
                           criterion="paired", resamples=4000)
    assert mean.schedule == KeepSchedule((1.0, 1.0, 0.25, 0.25)) and mean.params["criterion"] == "mean"
    # 1 wrong of 100: the bootstrap's 5% quantile of the mean difference is -0.03 < -0.02
    assert paired.schedule == KeepSchedule((1.0, 1.0, 0.5, 0.5))
    assert paired.params["criterion"] == "paired" and paired.tag == "tol0.02-paired"
    rejected = [b for b in paired.params["bounds"] if min(b["ratios"]) < 0.5]
    assert rejected and all(b["lower_bound"] < -0.02 and b["accuracy"] == 0.99 for b in rejected)
    accepted = [b for b in paired.params["bounds"] if min(b["ratios"]) >= 0.5]
    assert accepted and all(b["lower_bound"] == 0.0 for b in accepted)


def test_the_paired_criterion_needs_per_sample_scores():
    with pytest.raises(ConfigError, match="method.criterion=paired needs per-sample scores"):
        greedy_search(lambda s: 1.0, 4, [0.5, 1.0], 0.01, criterion="paired")
    with pytest.raises(ConfigError, match="method.criterion must be one of"):
        greedy_search(NoisyObjective(), 4, [0.5, 1.0], 0.01, criterion="median")
