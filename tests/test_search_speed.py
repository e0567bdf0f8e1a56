"""Search speed-ups (#20): each gives the same answers and decisions as the plain evaluation, and can be switched off.

Prefix reuse is checked bit for bit on the engine (tokens, every step's logits, processed counts) for two model
families, both position policies and both attention sources; batched evaluation, early stopping and all of them
together on the trained tiny LLaVA, whose search answers are right and wrong (a random model's are all wrong).
"""
import json

import pytest
import torch

from test_models import _image, build_internvl_tiles
from test_search import compose_config
from vtr_bench.eval.generate import greedy_generate
from vtr_bench.models.loader import load_adapter
from vtr_bench.reduction.prefix import PrefixSnapshot, PrefixStore, record_depths
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention
from vtr_bench.run import run_id
from vtr_bench.search.greedy import greedy_search
from vtr_bench.search.objective import ModelObjective

SAMPLES = 16


@pytest.fixture(scope="module")
def trained():
    return load_adapter(compose_config("model=tiny_llava").model)


def objective(adapter, task_cache, cache_dir, **speed):
    return ModelObjective(adapter, LastTokenAttention(-1), "shapes_search", local="shapes", task_cache_dir=task_cache,
                          cache_dir=cache_dir, limit=SAMPLES, metric="exact_match",
                          trace_path=cache_dir / "trace.jsonl", **speed)


def _schedules(layers: int) -> list[KeepSchedule]:
    """Schedules in the order a greedy search meets them: full, then candidates that share longer prefixes."""
    return [KeepSchedule.full(layers),
            KeepSchedule((1.0,) * 2 + (0.25,) * (layers - 2)),
            KeepSchedule((1.0,) * 2 + (0.5,) * (layers - 2)),
            KeepSchedule((1.0,) * 3 + (0.25,) * (layers - 3)),
            KeepSchedule((1.0, 1.0, 0.5) + (0.25,) * (layers - 3)),
            KeepSchedule((1.0, 1.0, 0.5, 0.5) + (0.125,) * (layers - 4))]


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("source_offset", [-1, 0])
@pytest.mark.parametrize("family", ["llava", "internvl_tiles"])
def test_a_resumed_prefill_is_bit_for_bit_the_plain_one(family, source_offset, positions, trained):
    adapter = trained if family == "llava" else build_internvl_tiles()
    images = [_image(30, 20, seed=5), _image(16, 40, seed=6)]  # two tile counts for InternVL: padded, 2 counts
    inputs = adapter.prepare(images, ["what color is the shape?", "how many?"])
    vision_mask = adapter.vision_mask(inputs["input_ids"])
    layers, store, scorer = len(adapter.decoder_layers), PrefixStore(64), LastTokenAttention(source_offset)
    eos = {adapter.processor.tokenizer.eos_token_id}
    resumed = []
    for schedule in _schedules(layers):
        engine = adapter.engine(schedule, scorer, positions=positions)
        with engine.attached():
            plain = greedy_generate(adapter.model, engine, inputs, vision_mask, 4, eos, keep_logits=True)
            store.next_evaluation()
            reused = greedy_generate(adapter.model, engine, inputs, vision_mask, 4, eos, keep_logits=True,
                                     store=store, batch_key="batch")
        assert reused.tokens == plain.tokens and reused.processed_counts == plain.processed_counts
        assert len(reused.step_logits) == len(plain.step_logits)
        assert all(torch.equal(a, b) for a, b in zip(reused.step_logits, plain.step_logits))
        assert reused.layer_forwards["decode"] == plain.layer_forwards["decode"]
        skipped = reused.resumed_from or 0
        assert reused.layer_forwards["prefill"] == plain.layer_forwards["prefill"] - 2 * skipped
        resumed.append(reused.resumed_from)
    # the full run leaves the embeddings; each candidate resumes where it first differs from one seen before
    assert resumed == [None, 0, 2, 2, 3, 3]
    for layer in adapter.decoder_layers:
        assert "forward" not in vars(layer)  # the replayed layers compute again after the request


def _snapshot(depth: int, mib: float) -> PrefixSnapshot:
    tensor = torch.zeros(int(mib * 2**20) // 4)
    return PrefixSnapshot(depth, tensor, None, torch.zeros(0), [], [], None, None, None, None, None)


def test_the_prefix_store_keeps_to_its_memory_bound():
    keep = torch.tensor([[8, 8, 4, 4]])
    store = PrefixStore(limit_mib=2)
    store.next_evaluation()
    assert store.put("a", keep, _snapshot(2, 1)) and store.put("b", keep, _snapshot(2, 1))
    assert not store.put("c", keep, _snapshot(2, 1))  # full: the running evaluation's snapshots stay
    assert not store.put("a", keep, _snapshot(2, 1))  # stored already
    store.next_evaluation()
    assert store.put("c", keep, _snapshot(3, 1.5))  # both older ones make room
    assert len(store) == 1 and store.bytes <= 2 * 2**20
    assert store.find("a", keep) is None and store.find("c", keep).depth == 3
    assert store.find("c", torch.tensor([[8, 8, 4, 2]])).depth == 3  # layers before 3 agree
    assert store.find("c", torch.tensor([[8, 8, 2, 2]])) is None
    assert not PrefixStore(0).put("a", keep, _snapshot(1, 0.001))
    assert record_depths(keep, [8]) == {0, 2, 3}
    assert record_depths(torch.tensor([[8, 8, 8, 8]]), [8]) == {0}


def test_batched_search_evaluations_score_every_sample_as_batch_1(trained, task_cache, tmp_path):
    one = objective(trained, task_cache, tmp_path / "b1", batch_size=1)
    eight = objective(trained, task_cache, tmp_path / "b8", batch_size=8, prefix_cache_mib=64)
    for schedule in _schedules(12)[:4]:
        assert eight.entry(schedule)["scores"] == one.entry(schedule)["scores"]
    assert one.key(KeepSchedule.full(12)) != eight.key(KeepSchedule.full(12))  # batch size is in the cache key


def test_early_stop_decides_as_the_full_evaluation_and_keeps_its_bounds(trained, task_cache, tmp_path):
    full = objective(trained, task_cache, tmp_path / "full", batch_size=8)
    schedule = KeepSchedule((1.0,) * 2 + (0.125,) * 10)
    accuracy = full(schedule)
    assert 0.3 < accuracy < 0.7
    for threshold in (accuracy - 0.3, accuracy, accuracy + 1e-9):
        fresh = objective(trained, task_cache, tmp_path / f"t{threshold}", batch_size=8, early_stop=True)
        assert fresh.decide(schedule, threshold)[0] == (accuracy >= threshold)
    early = objective(trained, task_cache, tmp_path / "early", batch_size=8, early_stop=True)
    assert early.decide(schedule, accuracy + 0.3) == (False, None) and early.new_evaluations == 1
    [line] = early.trace
    assert line["early"] and line["samples_seen"] == 8 and line["layer_forwards"]["prefill"] == 12 * 8
    [bounds] = [json.loads(p.read_text()) for p in (tmp_path / "early").glob("*.json")]
    assert bounds["low"] <= accuracy <= bounds["high"] < accuracy + 0.3
    assert early.decide(schedule, accuracy + 0.5) == (False, None) and early.new_evaluations == 1  # its bounds
    assert early(schedule) == accuracy and early.new_evaluations == 2  # a full accuracy is still computed
    assert early.decide(schedule, accuracy) == (True, accuracy) and early.new_evaluations == 2


def test_gsearch_with_every_speed_up_finds_the_plain_schedule(trained, task_cache, tmp_path):
    plain = objective(trained, task_cache, tmp_path / "plain", batch_size=8)
    fast = objective(trained, task_cache, tmp_path / "fast", batch_size=8, early_stop=True, prefix_cache_mib=64)
    grid = (0.0, 0.25, 0.5, 1.0)
    expected = greedy_search(plain, 12, grid, tolerance=0.0)
    found = greedy_search(fast, 12, grid, tolerance=0.0)
    assert found.schedule == expected.schedule and found.accuracy == expected.accuracy
    assert [r for r, _ in found.history] == [r for r, _ in expected.history]  # the same candidates, in order
    assert expected.schedule != KeepSchedule.full(12)
    early = [line for line in fast.trace if line.get("early")]
    assert early and all(not line["passed"] or line["accuracy"] is None for line in early)
    prefill = [sum(line["layer_forwards"]["prefill"] for line in o.trace) for o in (plain, fast)]
    assert prefill[1] < 0.7 * prefill[0]


def test_early_stop_is_off_where_single_answers_cannot_decide(trained, task_cache, tmp_path, capsys):
    # exact_match_count averages only the count questions (mean_of_present): not a mean over all samples
    off = ModelObjective(trained, LastTokenAttention(-1), "shapes_search", local="shapes", task_cache_dir=task_cache,
                         cache_dir=tmp_path, limit=4, metric="exact_match_count", early_stop=True)
    assert not off.stops_early
    assert "search.early_stop is off: shapes_search's exact_match_count is not aggregated by the mean" in \
        capsys.readouterr().err


def test_run_ids_follow_what_a_run_computes():
    def rid(*overrides):
        return run_id(compose_config("model=tiny_llava", *overrides))

    assert rid("method=fastv", "budget=0.5") == rid("method=fastv", "budget=0.5", "search.limit=7")
    assert rid("method=gsearch") != rid("method=gsearch", "search.limit=7")
    assert rid("method=gsearch") != rid("method=gsearch", "search.batch_size=1")
    assert rid("method=gsearch") == rid("method=gsearch", "search.early_stop=false", "search.prefix_cache_mib=0")
    fixed = ("method=psigmoid", "budget=0.5", "method.k=1.0", "method.alpha=2.0")
    assert rid(*fixed) == rid(*fixed, "search.limit=7")


@pytest.mark.parametrize("override, expected", [
    ("search.early_stop=sometimes", "search.early_stop must be true or false, got 'sometimes'"),
    ("search.prefix_cache_mib=-1", "search.prefix_cache_mib must be a number of MiB >= 0 (0: off), got -1"),
    ("search.prefix_cache_mib=lots", "search.prefix_cache_mib must be a number of MiB >= 0 (0: off), got 'lots'"),
    ("search.batch_size=0", "search.batch_size must be >= 1, got 0"),
])
def test_speed_up_settings_are_checked_up_front(override, expected):
    from vtr_bench.checks import check_config
    from vtr_bench.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        check_config(compose_config("method=gsearch", override))
    assert str(error.value) == expected


def test_psigmoid_with_prefix_reuse_follows_the_same_trajectory(trained, task_cache, tmp_path):
    from vtr_bench.methods import PSigmoid

    results = []
    for name, mib in (("plain", 0), ("prefix", 64)):
        method = PSigmoid(n_calls=3, n_initial_points=2)
        results.append(method.search(12, 0.3, objective(trained, task_cache, tmp_path / name, batch_size=8,
                                                        early_stop=True, prefix_cache_mib=mib), seed=0))
    plain, fast = results
    assert fast.params["bo_points"] == plain.params["bo_points"]
    assert fast.params["bo_values"] == plain.params["bo_values"]
    assert fast.schedule == plain.schedule and fast.history == plain.history


@pytest.mark.parametrize("override, expected", [
    ("search.limit=abc", "vtr_bench: error: search.limit must be an integer or null, got 'abc'"),
    ("search.nope=1", "vtr_bench: error: Could not override 'search.nope'."),
])
def test_bench_search_rejects_bad_overrides_in_one_line(tmp_path, capsys, override, expected):
    from vtr_bench.bench_search import main

    assert main(["--out", str(tmp_path / "out"), override]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == expected and not (tmp_path / "out").exists()
