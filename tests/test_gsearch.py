"""G-Search on synthetic objectives with known optima: result, evaluation bound, cache reuse, kill and resume."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vtr_bench.errors import ConfigError
from vtr_bench.methods import GSearch
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.search.greedy import greedy_search
from vtr_bench.search.objective import SyntheticObjective

GRID = (0.0, 0.0625, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)
ESSENTIAL = (1.0, 1.0, 0.7, 0.5, 0.5, 0.3, 0.1, 0.0)
OPTIMUM = (1.0, 1.0, 0.75, 0.5, 0.5, 0.375, 0.125, 0.0)  # smallest grid ratio covering each essential ratio


class Interrupted(Exception):
    """Stands in for a kill."""


class DiesAfter(SyntheticObjective):
    """A synthetic objective whose process 'dies' after ``budget`` new evaluations."""

    def __init__(self, essential, cache_dir, budget):
        super().__init__(essential, cache_dir)
        self.budget = budget

    def evaluate(self, schedule):
        if self.new_evaluations >= self.budget:
            raise Interrupted
        return super().evaluate(schedule)


def bound(layers, grid):
    return (layers - 2) * math.ceil(math.log2(len(grid))) + layers


@pytest.mark.parametrize("essential, grid, expected", [
    (ESSENTIAL, GRID, OPTIMUM),
    (ESSENTIAL, GRID[:-1], OPTIMUM),  # without 1.0 in the grid
    ((1.0,) * 8, GRID, (1.0,) * 8),  # nothing can be dropped
    ((1.0, 1.0) + (0.0,) * 6, GRID, (1.0, 1.0) + (0.0,) * 6),  # everything can be dropped from layer 2
    ((1.0,) * 4 + (0.2,) * 28, GRID, (1.0,) * 4 + (0.25,) * 28),  # 32 layers, first essentials at start_layer
])
def test_finds_the_known_optimum_within_the_evaluation_bound_and_reruns_for_free(tmp_path, essential, grid,
                                                                                 expected):
    layers = len(essential)
    objective = SyntheticObjective(essential, tmp_path, trace_path=tmp_path / "trace.jsonl")
    result = greedy_search(objective, layers, grid, tolerance=0.0, start_layer=2)
    assert result.schedule.ratios == expected
    assert result.accuracy == result.reference_accuracy == 1.0
    assert result.evaluations <= bound(layers, grid)
    assert objective.new_evaluations == result.evaluations  # no schedule was evaluated twice
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert [t["ratios"] for t in trace] == [list(r) for r, _ in result.history]
    assert not any(t["cached"] for t in trace)

    again = SyntheticObjective(essential, tmp_path)
    rerun = greedy_search(again, layers, grid, tolerance=0.0, start_layer=2)
    assert rerun.schedule == result.schedule and again.new_evaluations == 0
    assert all(t["cached"] for t in again.trace)


def test_tolerance_trades_accuracy_for_tokens(tmp_path):
    strict = greedy_search(SyntheticObjective(ESSENTIAL, tmp_path), 8, GRID, tolerance=0.0)
    loose = greedy_search(SyntheticObjective(ESSENTIAL, tmp_path), 8, GRID, tolerance=0.05)
    assert loose.schedule.budget < strict.schedule.budget
    assert loose.accuracy >= loose.reference_accuracy - 0.05
    assert all(a >= b for a, b in zip(loose.schedule.ratios, loose.schedule.ratios[1:]))


def test_killed_search_resumes_from_the_cache_with_the_same_result(tmp_path):
    expected = greedy_search(SyntheticObjective(ESSENTIAL, tmp_path / "clean"), 8, GRID, 0.0)
    with pytest.raises(Interrupted):
        greedy_search(DiesAfter(ESSENTIAL, tmp_path / "killed", budget=5), 8, GRID, 0.0)
    resumed_objective = SyntheticObjective(ESSENTIAL, tmp_path / "killed")
    resumed = greedy_search(resumed_objective, 8, GRID, 0.0)
    assert resumed.schedule == expected.schedule and resumed.accuracy == expected.accuracy
    assert resumed_objective.new_evaluations == expected.evaluations - 5


SCRIPT = """
import json, sys, time
from vtr_bench.search.greedy import greedy_search
from vtr_bench.search.objective import SyntheticObjective

class Slow(SyntheticObjective):
    def evaluate(self, schedule):
        time.sleep(0.2)
        return super().evaluate(schedule)

objective = Slow({essential}, sys.argv[1])
result = greedy_search(objective, 8, {grid}, 0.0)
print(json.dumps({{"ratios": result.schedule.ratios, "new": objective.new_evaluations}}))
"""


def test_sigkilled_search_process_resumes(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(SCRIPT.format(essential=ESSENTIAL, grid=GRID))
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, str(script), str(cache)], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list(cache.glob("*.json"))) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = len(list(cache.glob("*.json")))
    assert 3 <= done < 16 and not list(cache.glob(".*.tmp"))
    out = subprocess.run([sys.executable, str(script), str(cache)], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert json.loads(out) == {"ratios": list(OPTIMUM), "new": 16 - done}


def test_method_compiles_to_the_search_result_and_needs_an_objective(tmp_path):
    method = GSearch(tolerance=0.0, grid=GRID)
    schedule, scorer = method.build(8, None, seed=0, objective=SyntheticObjective(ESSENTIAL, tmp_path))
    assert schedule.ratios == OPTIMUM and scorer.source_offset == -1
    assert method.describe()["search"]["ratios"] == list(OPTIMUM)
    with pytest.raises(ConfigError, match="needs a loaded model"):
        GSearch().build(8, None)
    with pytest.raises(ConfigError, match="takes no budget"):
        GSearch().check(0.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"grid": [0.5, 1.5]}, "method.grid"),
    ({"grid": []}, "method.grid"),
    ({"tolerance": -0.1}, "must be >= 0"),
    ({"source_offset": 2}, "source_offset"),
])
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GSearch(**kwargs)


def test_start_layer_beyond_the_decoder_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="start_layer"):
        greedy_search(SyntheticObjective(ESSENTIAL, tmp_path), 8, GRID, 0.0, start_layer=8)


def test_plain_callables_are_objectives():
    result = greedy_search(lambda s: float(s.ratios[-1] >= 0.25), 4, GRID, 0.0, start_layer=1)
    assert result.schedule == KeepSchedule((1.0, 0.25, 0.25, 0.25))
