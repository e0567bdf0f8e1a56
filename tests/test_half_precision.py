"""bfloat16 / float16 (#23): what the engine guarantees in half precision, with the tolerances measured here.

- keep-all hooks change nothing: logits are bit for bit the unmodified model's;
- against the slow reference (decoder layers by hand on gathered tokens, HF's eager attention as the ranking
  oracle, on a float32 copy of the layer): the same kept tokens at every reducing layer up to the first cut that
  is a near-tie (a score gap up to ``MARGIN``), and last-token logits within ``ATOL`` when every cut is clear;
- the scorers' attention rows are float32 whatever the model dtype.
"""
import pytest
import torch

import test_engine
from conftest import left_pad, make_prompt, make_random_llava
from vtr_bench.device_check import float32_attention
from vtr_bench.models.base import VLMAdapter
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, ScoringInputs, attention_rows
from vtr_bench.reduction.sequence import SequenceState

DTYPES = [torch.bfloat16, torch.float16]
# Measured over 80 prompts x settings per dtype: with a float32 oracle the kept sets first differed (bf16: 4 of 80;
# fp16: none) only at cuts whose score gap was <= 2.2e-6 (probabilities ~1/seq); last-token logits of prompts with
# every cut clear were equal (difference 0: the same half-precision layers run on the same tokens).
MARGIN = 1e-5
ATOL = 1e-3


@pytest.fixture(scope="module", params=DTYPES, ids=["bf16", "fp16"])
def half(request):
    return VLMAdapter(make_random_llava(seed=1).to(request.param)), request.param


def test_keep_all_is_bit_for_bit_the_unmodified_model(half, pixel_values):
    adapter, dtype = half
    ids, mask = left_pad([make_prompt(3, 5, seed=4), make_prompt(6, 2, seed=5)])
    pixels = pixel_values.to(dtype)
    expected, _ = test_engine._prefill_logits(adapter, ids, mask, pixels)
    engine = adapter.engine(KeepSchedule.full(6), None)
    with engine.attached():
        got, _ = test_engine._prefill_logits(adapter, ids, mask, pixels, engine)
    assert got.dtype == dtype and torch.equal(got, expected)


def _float32_oracle(adapter, layer_index, hidden, cos, sin):
    """The ranking oracle in half precision: HF's eager attention of a float32 copy of the layer."""
    return float32_attention(adapter.decoder_layers[layer_index], hidden, cos, sin)


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("scorer_kind", ["fastv", "pdrop"])
def test_engine_agrees_with_the_slow_reference(half, pixel_values, scorer_kind, positions, monkeypatch):
    adapter, dtype = half
    monkeypatch.setattr(test_engine, "_eager_attention", _float32_oracle)
    schedule = test_engine.SCHEDULES["pyramid"]
    scorer = LastTokenAttention(-1 if scorer_kind == "fastv" else 0)
    pixels = pixel_values[:1].to(dtype)
    compared, clear = 0, 0
    for seed in range(3, 13):
        ids, mask = left_pad([make_prompt(4, 6, seed=seed)])
        engine = adapter.engine(schedule, scorer, positions=positions)
        with engine.attached(), torch.no_grad(), engine.request(adapter.vision_mask(ids), mask, trace=True) as ctx:
            logits = adapter.model(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                                   position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
            sets = ctx.token_sets()
        record = {}
        expected = test_engine._reference_logits(adapter, ids, pixels, schedule, scorer_kind, positions,
                                                 record=record)
        for layer, (kept, margin) in sorted(record.items()):
            if margin <= MARGIN:
                break  # a near-tie: either choice is right, and everything after may differ
            assert sets[layer][0] == kept, f"seed {seed} layer {layer}: kept tokens differ, cut margin {margin:.1e}"
            compared += 1
        else:
            clear += 1
            torch.testing.assert_close(logits.float(), expected.float(), atol=ATOL, rtol=0)
    assert clear >= 5 and compared >= 25  # measured: 6-10 of 10 prompts clear per setting, 4 reducing layers each


def test_scorers_compute_in_float32(half):
    adapter, dtype = half
    layer = adapter.decoder_layers[1]
    seq, dim = 12, adapter.model.config.text_config.hidden_size
    hidden = torch.randn(1, seq, dim).to(dtype)
    vision = torch.zeros(1, seq, dtype=torch.bool)
    vision[:, 2:8] = True
    positions = torch.arange(seq)[None]
    cos, sin = adapter.language_model.rotary_emb(hidden, positions)
    state = SequenceState.initial(vision, torch.ones(1, seq), positions, cos, sin)
    inputs = ScoringInputs(1, layer, hidden, state)
    rows = attention_rows(inputs, torch.tensor([[seq - 1]]))
    assert rows.dtype == torch.float32 and torch.allclose(rows.sum(-1), torch.ones(1, 1))


def test_bundled_model_answers_in_bfloat16_as_in_float32():
    """On the bundled tiny LLaVA's own test prompts, bf16 answers equal fp32 answers nearly always, reduced or not
    (measured on all 500 test questions: benchmarks/results/half_precision_bfloat16.md)."""
    from vtr_bench.half_precision import agreement

    rows = agreement("tiny_llava", "bfloat16", 40, settings=(("full", None, {}), ("fastv", 0.5, {"k": 1})))
    assert [r["questions"] for r in rows] == [40, 40]
    assert all(r["agreement"] >= 0.9 for r in rows), rows
