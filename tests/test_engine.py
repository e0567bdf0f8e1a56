"""Engine equivalences on a tiny random LLaVA: identity, slow reference, counts, batching, hooks."""
import pytest
import torch

from conftest import left_pad, make_prompt
from vtr_bench.models.base import VLMAdapter
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, RandomScorer


def _prefill_logits(adapter, ids, mask, pixel_values, engine=None, positions_from_mask=True):
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixel_values, position_ids=position_ids)
    with torch.no_grad():
        if engine is None:
            return adapter.model(**kwargs).logits, None
        with engine.request(adapter.vision_mask(ids), mask) as ctx:
            return adapter.model(**kwargs).logits, ctx


def _eager_attention(adapter, layer_index, hidden, cos, sin):
    """HF's own eager attention weights (batch 1), mean over heads: (queries, keys) (the oracle)."""
    layer = adapter.decoder_layers[layer_index]
    config = layer.self_attn.config
    previous, config._attn_implementation = config._attn_implementation, "eager"
    try:
        seq = hidden.shape[1]
        causal = torch.full((seq, seq), torch.finfo(hidden.dtype).min).triu(1)[None, None]
        _, weights = layer.self_attn(hidden_states=layer.input_layernorm(hidden), position_embeddings=(cos, sin),
                                     attention_mask=causal)
    finally:
        config._attn_implementation = previous
    return weights.mean(1)[0]


def _prompt_embeddings(adapter, ids, pixel_values):
    """The decoder's input embeddings of a batch-1 prompt (image features scattered in) and its vision mask."""
    model = adapter.model
    embeds = model.model.get_input_embeddings()(ids)
    features = model.model.get_image_features(pixel_values=pixel_values, vision_feature_layer=-1,
                                              vision_feature_select_strategy="default")
    features = torch.cat(features, 0) if isinstance(features, (list, tuple)) else features
    vision = adapter.vision_mask(ids)[0]
    return embeds.masked_scatter(vision[None, :, None].expand_as(embeds), features.reshape(-1)), vision


def _run_layer(adapter, layer, hidden, pos):
    """One decoder layer on a batch-1 sequence with RoPE positions ``pos``, no mask (causal), no cache."""
    cos, sin = adapter.language_model.rotary_emb(hidden, pos)
    hidden = layer(hidden, attention_mask=None, position_ids=pos, position_embeddings=(cos, sin))
    return hidden[0] if isinstance(hidden, tuple) else hidden


def _reference_logits(adapter, ids, pixel_values, schedule, scorer_kind, positions, seed=0, record=None,
                      start=None, renumber=None):
    """Slow reference: decoder layers run by hand on explicitly gathered tokens (batch 1, no cache). ``record``
    (a dict) receives, per reducing layer, the prompt indices of the vision tokens it keeps and the score margin
    between the last kept and the first dropped one. ``start``: the prompt's position ids in the layout the
    model's rotary module takes (default ``arange``); ``renumber(pos, is_vision)``: the reduced sequence's ids
    under ``positions=renumber`` (default ``arange``)."""
    model, lm = adapter.model, adapter.language_model
    with torch.no_grad():
        embeds, vision = _prompt_embeddings(adapter, ids, pixel_values)
        n_vision = int(vision.sum())
        counts = schedule.counts(n_vision)
        hidden, pos = embeds, torch.arange(ids.shape[1])[None] if start is None else start
        prompt_index = torch.arange(ids.shape[1])
        is_vision, ordinal = vision.clone(), torch.cumsum(vision.long(), 0) - 1
        previous_input = None
        for index, layer in enumerate(adapter.decoder_layers):
            current = int(is_vision.sum())
            if counts[index] < current:
                if scorer_kind == "random":
                    table = torch.rand(n_vision, generator=torch.Generator().manual_seed(seed + index))
                    scores = table[ordinal.clamp(min=0)]
                else:
                    source = hidden if (scorer_kind == "pdrop" or previous_input is None) else previous_input
                    cos, sin = lm.rotary_emb(source, pos)
                    source_layer = index if scorer_kind == "pdrop" else max(index - 1, 0)
                    scores = _eager_attention(adapter, source_layer, source, cos, sin)[-1]
                vis_idx = is_vision.nonzero().flatten()
                ranked = scores[vis_idx].float().sort(descending=True, stable=True)
                top = vis_idx[ranked.indices[: counts[index]]]
                keep = torch.cat([(~is_vision).nonzero().flatten(), top]).sort().values
                if record is not None:
                    cut = ranked.values[counts[index] - 1] - ranked.values[counts[index]] if counts[index] else 0.0
                    record[index] = ({(int(i),) for i in prompt_index[top]}, float(cut))
                hidden, pos = hidden[:, keep], pos[..., keep]
                is_vision, ordinal, prompt_index = is_vision[keep], ordinal[keep], prompt_index[keep]
                if positions == "renumber":
                    pos = torch.arange(hidden.shape[1])[None] if renumber is None else renumber(pos, is_vision)
            previous_input = hidden
            hidden = _run_layer(adapter, layer, hidden, pos)
        return model.lm_head(lm.norm(hidden))[:, -1]


def compact_grid(pos, is_vision):
    """Reference M-RoPE renumbering of a reduced batch-1 sequence, ``pos`` (3, 1, seq): text tokens count on by
    one; a run of vision tokens re-indexes each axis's distinct kept values 0, 1, ... from where the text stopped,
    and the text after it starts ``max`` of those extents later (Qwen2-VL's rule for a smaller image)."""
    new, start, i = torch.zeros_like(pos), 0, 0
    vision = is_vision.tolist()
    while i < len(vision):
        if not vision[i]:
            new[:, 0, i], start, i = start, start + 1, i + 1
            continue
        j = i
        while j < len(vision) and vision[j]:
            j += 1
        extent = 0
        for axis in range(3):
            values = sorted(set(pos[axis, 0, i:j].tolist()))
            new[axis, 0, i:j] = torch.tensor([start + values.index(v) for v in pos[axis, 0, i:j].tolist()])
            extent = max(extent, len(values))
        start, i = start + extent, j
    return new


def test_keep_all_equals_unmodified_model_and_hooks_are_removed(tiny_llava, pixel_values):
    adapter = VLMAdapter(tiny_llava)
    ids, mask = left_pad([make_prompt(3, 5)])
    expected, _ = _prefill_logits(adapter, ids, mask, pixel_values[:1])
    engine = adapter.engine(KeepSchedule.full(6), None)
    with engine.attached():
        got, ctx = _prefill_logits(adapter, ids, mask, pixel_values[:1], engine)
        assert all(len(layer._forward_pre_hooks) == 1 for layer in adapter.decoder_layers)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert ctx.processed_counts() == [[16] * 6]
    assert all(len(layer._forward_pre_hooks) == 0 for layer in adapter.decoder_layers)


def test_hooks_are_removed_after_an_error(tiny_llava):
    adapter = VLMAdapter(tiny_llava)
    engine = adapter.engine(KeepSchedule.full(6), None)
    with pytest.raises(ValueError):
        with engine.attached():
            raise ValueError("boom")
    assert all(len(layer._forward_pre_hooks) == 0 for layer in adapter.decoder_layers)


SCHEDULES = {
    "fastv": KeepSchedule((1, 1, 0.5, 0.5, 0.5, 0.5)),
    "pyramid": KeepSchedule((1, 0.75, 0.75, 0.5, 0.25, 0.125)),
}


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("scorer_kind", ["fastv", "random", "pdrop"])
@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
def test_engine_equals_slow_reference(tiny_llava, pixel_values, positions, scorer_kind, schedule_name):
    adapter = VLMAdapter(tiny_llava)
    schedule = SCHEDULES[schedule_name]
    scorer = {"fastv": LastTokenAttention(-1), "pdrop": LastTokenAttention(0), "random": RandomScorer(0)}[scorer_kind]
    ids, mask = left_pad([make_prompt(4, 6, seed=3)])
    engine = adapter.engine(schedule, scorer, positions=positions)
    with engine.attached():
        logits, ctx = _prefill_logits(adapter, ids, mask, pixel_values[:1], engine)
    expected = _reference_logits(adapter, ids, pixel_values[:1], schedule, scorer_kind, positions)
    torch.testing.assert_close(logits[:, -1], expected, atol=1e-5, rtol=0)
    assert ctx.processed_counts() == [schedule.counts(16)]


@pytest.mark.parametrize("positions", ["keep", "renumber"])
def test_batch_with_padding_equals_single_runs(tiny_llava, pixel_values, positions):
    adapter = VLMAdapter(tiny_llava)
    rows = [make_prompt(2, 3, seed=1), make_prompt(5, 9, seed=2)]
    engine = adapter.engine(SCHEDULES["pyramid"], LastTokenAttention(-1), positions=positions)
    assert_batch_equals_single_runs(adapter, engine, rows, pixel_values)


def assert_batch_equals_single_runs(adapter, engine, rows, pixel_values):
    """A left-padded batch of ``rows`` gives each row's single-run logits and processed counts; returns the
    batch's processed counts."""
    with engine.attached():
        ids, mask = left_pad(rows)
        batched, ctx = _prefill_logits(adapter, ids, mask, pixel_values, engine)
        for i, row in enumerate(rows):
            single_ids, single_mask = left_pad([row])
            single, single_ctx = _prefill_logits(adapter, single_ids, single_mask, pixel_values[i:i + 1], engine)
            torch.testing.assert_close(batched[i, -1], single[0, -1], atol=1e-5, rtol=0)
            assert ctx.processed_counts()[i] == single_ctx.processed_counts()[0]
    return ctx.processed_counts()


@pytest.mark.parametrize("positions", ["keep", "renumber"])
def test_scoring_from_cached_keys_equals_recomputed_keys(tiny_llava, pixel_values, positions):
    """With a KV cache the scorer reads the previous layer's keys from it; without one it recomputes them."""
    adapter = VLMAdapter(tiny_llava)
    engine = adapter.engine(SCHEDULES["pyramid"], LastTokenAttention(-1), positions=positions)
    ids, mask = left_pad([make_prompt(2, 3, seed=1), make_prompt(5, 9, seed=2)])
    kwargs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixel_values,
                  position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    logits = {}
    with engine.attached(), torch.no_grad():
        for use_cache in (True, False):
            with engine.request(adapter.vision_mask(ids), mask) as ctx:
                logits[use_cache] = tiny_llava(**kwargs, use_cache=use_cache).logits[:, -1]
                assert ctx.processed_counts() == [SCHEDULES["pyramid"].counts(16)] * 2
    torch.testing.assert_close(logits[True], logits[False], atol=1e-5, rtol=0)
