"""The model search objective (lmms-eval on the search split, cached on disk) and the saved schedules."""
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from vtr_bench.errors import ConfigError
from vtr_bench.methods import GivenSchedule, PSigmoid
from vtr_bench.models.loader import load_adapter
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, RandomScorer
from vtr_bench.search.objective import ModelObjective, model_fingerprint, objective_from_config
from vtr_bench.search.report import record_search
from vtr_bench.tracking.wandb_logger import NullLogger

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(compose_config("model=tiny_random_llava").model)


def make_objective(adapter, task_cache, cache_dir, scorer=None, positions="keep", trace_path=None):
    return ModelObjective(adapter, scorer or LastTokenAttention(-1), "shapes_search", local="shapes",
                          task_cache_dir=task_cache, cache_dir=cache_dir, limit=1, metric="exact_match",
                          positions=positions, trace_path=trace_path)


def test_key_uses_resolved_counts_and_everything_that_changes_answers(adapter, task_cache, tmp_path):
    objective = make_objective(adapter, task_cache, tmp_path)
    assert objective.vision_token_counts == [144] and objective.provenance["split"] == "search"
    half = KeepSchedule((1, 1) + (0.5,) * 6)
    same_counts = KeepSchedule((1, 1) + (0.501,) * 6)  # 72.1 tokens round to 72
    assert objective.key(half) == objective.key(same_counts)
    assert objective.key(half) != objective.key(KeepSchedule((1, 1) + (0.51,) * 6))
    assert objective.key(KeepSchedule.full(8))["scorer"] is None
    assert objective.key(half)["scorer"] == {"class": "LastTokenAttention", "source_offset": -1}
    assert make_objective(adapter, task_cache, tmp_path, scorer=RandomScorer(0)).key(half) != objective.key(half)
    assert make_objective(adapter, task_cache, tmp_path, positions="renumber").key(half) != objective.key(half)
    with pytest.raises(ConfigError, match="layers"):
        objective.key(KeepSchedule.full(4))


def test_evaluations_are_cached_on_disk_and_traced(adapter, task_cache, tmp_path):
    trace = tmp_path / "trace.jsonl"
    objective = make_objective(adapter, task_cache, tmp_path / "cache", trace_path=trace)
    schedule = KeepSchedule((1, 1) + (0.25,) * 6)
    accuracy = objective(schedule)
    assert 0 <= accuracy <= 1 and objective.new_evaluations == 1
    [entry] = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*.json")]
    assert entry["samples"] == 1 and entry["accuracy"] == accuracy and "exact_match" in entry["metrics"]
    fresh = make_objective(adapter, task_cache, tmp_path / "cache", trace_path=trace)
    assert fresh(KeepSchedule((1, 1) + (0.2501,) * 6)) == accuracy and fresh.new_evaluations == 0
    assert [json.loads(line)["cached"] for line in trace.read_text().splitlines()] == [False, True]


def test_fingerprint_follows_the_weights(adapter):
    before = model_fingerprint(adapter)
    assert model_fingerprint(adapter) == before
    weight = adapter.decoder_layers[0].mlp.down_proj.weight
    with torch.no_grad():
        weight[0, 0] += 1
        try:
            assert model_fingerprint(adapter) != before
        finally:
            weight[0, 0] -= 1


def test_search_task_must_not_be_a_test_task(adapter, tmp_path):
    cfg = compose_config("search.task=shapes")
    with pytest.raises(ConfigError, match="never score schedules on test data"):
        objective_from_config(cfg, adapter, LastTokenAttention(-1), tmp_path)


def test_saved_schedule_has_provenance_and_is_reusable(adapter, task_cache, tmp_path, capsys):
    objective = make_objective(adapter, task_cache, tmp_path / "cache")
    method = PSigmoid(n_calls=1, n_initial_points=1)
    schedule, _ = method.build(8, 0.3, seed=0, objective=objective)
    path = record_search(method, objective, tmp_path / "schedules", tmp_path, NullLogger())
    assert f"saved to {path}" in capsys.readouterr().out
    saved = json.loads(path.read_text())
    assert saved["ratios"] == list(schedule.ratios) and saved["budget"] == pytest.approx(0.3)
    assert saved["model"] == "tiny_random_llava" and len(saved["model_hash"]) == 64
    assert saved["task"] == "shapes_search" and saved["split"] == "search" and saved["samples"] == 1
    assert saved["evaluations"] == 2 and saved["new_evaluations"] == 2 and "search_accuracy" in saved
    assert saved["method"] == "psigmoid" and saved["method_params"]["n_calls"] == 1
    assert (tmp_path / "search_schedule.png").stat().st_size > 0 and (tmp_path / "bo_convergence.png").exists()
    assert GivenSchedule(path=str(path)).build(8, None)[0] == schedule
