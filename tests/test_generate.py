"""Greedy decoding with the pruned KV cache equals re-running the pruned prefill at every step."""
import pytest
import torch

from conftest import left_pad, make_prompt
from vtr_bench.eval.generate import greedy_generate
from vtr_bench.models.base import VLMAdapter
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, RandomScorer, Scorer


class ReplayScorer(Scorer):
    """Wraps a scorer; records its scores by original token index, then replays them (so the re-run prefill of a
    longer prompt selects exactly the tokens the cached run selected)."""

    def __init__(self, inner):
        self.inner, self.needs_attention, self.source_offset = inner, inner.needs_attention, inner.source_offset
        self.recorded, self.replay = {}, False

    @staticmethod
    def slot_keys(orig):
        """A key per slot: its original index and, for merged tokens that share their anchor's index, which one."""
        seen, keys = {}, []
        for o in orig.tolist():
            keys.append(o * 64 + seen.get(o, 0))
            seen[o] = seen.get(o, 0) + 1
        return torch.tensor(keys)

    def score(self, inputs):
        keys = self.slot_keys(inputs.state.orig_index[0])
        if self.replay:
            return self.recorded[inputs.layer_index][0, keys].unsqueeze(0)
        scores = self.inner.score(inputs)
        table = torch.full((1, 1000 * 64), float("-inf"))
        table[0, keys] = scores[0].float()
        self.recorded[inputs.layer_index] = table
        return scores


def assert_cached_decode_equals_rerun(model, adapter, engine, scorer, ids, pixel_values):
    """Greedy decoding through the reduced KV cache picks the tokens that re-running the reduced prefill picks
    (``scorer.replay`` is set for the re-runs)."""
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixel_values}
    with engine.attached():
        out = greedy_generate(model, engine, inputs, adapter.vision_mask(ids), max_new_tokens=6,
                              eos_token_ids={-1}, keep_logits=True)
        assert len(out.tokens[0]) == 6 and len(out.decode_seconds) == 5 and len(out.step_logits) == 6
        scorer.replay = True
        prompt = ids[0]
        for step, token in enumerate(out.tokens[0]):
            full_ids, full_mask = left_pad([prompt])
            with torch.no_grad(), engine.request(adapter.vision_mask(full_ids), full_mask):
                logits = model(input_ids=full_ids, attention_mask=full_mask, pixel_values=pixel_values).logits
            # (with positions=renumber, decode positions continue from each layer's own cache length, which a
            # re-run prefill reproduces too)
            assert int(logits[0, -1].argmax()) == token, f"step {step}"
            # the logits themselves, not only their argmax (a 1e-3 error can hide behind a wide top-2 margin)
            torch.testing.assert_close(out.step_logits[step][0], logits[0, -1].float(), atol=1e-5, rtol=0)
            prompt = torch.cat([prompt, torch.tensor([token])])


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("inner", [LastTokenAttention(-1), RandomScorer(3)], ids=["fastv", "random"])
def test_cached_decode_equals_rerun_prefill(tiny_llava, pixel_values, positions, inner):
    adapter = VLMAdapter(tiny_llava)
    scorer = ReplayScorer(inner)
    schedule = KeepSchedule((1, 1, 0.5, 0.5, 0.25, 0.25))
    engine = adapter.engine(schedule, scorer, positions=positions)
    ids, _ = left_pad([make_prompt(3, 4, seed=5)])
    assert_cached_decode_equals_rerun(tiny_llava, adapter, engine, scorer, ids, pixel_values[:1])


def test_batched_generation_equals_single(tiny_llava, pixel_values):
    adapter = VLMAdapter(tiny_llava)
    engine = adapter.engine(KeepSchedule((1, 1, 0.5, 0.5, 0.25, 0.25)), LastTokenAttention(-1))
    rows = [make_prompt(2, 3, seed=1), make_prompt(6, 8, seed=2)]
    with engine.attached():
        ids, mask = left_pad(rows)
        batched = greedy_generate(tiny_llava, engine, {"input_ids": ids, "attention_mask": mask,
                                                       "pixel_values": pixel_values}, adapter.vision_mask(ids), 5, {-1})
        for i, row in enumerate(rows):
            ids1, mask1 = left_pad([row])
            single = greedy_generate(tiny_llava, engine, {"input_ids": ids1, "attention_mask": mask1,
                                                          "pixel_values": pixel_values[i:i + 1]},
                                     adapter.vision_mask(ids1), 5, {-1})
            assert batched.tokens[i] == single.tokens[0]
            assert batched.processed_counts[i] == single.processed_counts[0] == [16, 16, 8, 8, 4, 4]
