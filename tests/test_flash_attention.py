"""FlashAttention-2 (#23): the engine's masks and positions under transformers' FA2 code path, on the CPU.

The kernels are SDPA stand-ins (``flash_emulation``); everything transformers does around them runs as on a GPU.
A reduced model under FA2 must give the answers and logits it gives under SDPA, for padded batches, both position
policies, merging scorers, and prompts whose first token is a vision token (without an explicit mask FA2 would
read the kept tokens' position gaps as packed sequences and lose the sequence start).
"""
import pytest
import torch

from conftest import left_pad, make_prompt, make_random_llava
from flash_emulation import emulated_flash_attention
from test_models import _image, build_internvl_tiles
from vtr_bench.errors import ConfigError
from vtr_bench.eval.generate import greedy_generate
from vtr_bench.models.base import VLMAdapter
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, RandomScorer
from vtr_bench.reduction.sequence import layer_mask

PYRAMID = KeepSchedule((1, 0.75, 0.75, 0.5, 0.25, 0.125))


def _generate(adapter, inputs, schedule, scorer, positions):
    engine = adapter.engine(schedule, scorer, positions=positions)
    with engine.attached():
        return greedy_generate(adapter.model, engine, inputs, adapter.vision_mask(inputs["input_ids"]), 3, {2},
                               keep_logits=True)


def _same(fa2, sdpa):
    assert fa2.tokens == sdpa.tokens and fa2.processed_counts == sdpa.processed_counts
    for a, b in zip(fa2.step_logits, sdpa.step_logits, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=0)


def _compare(adapter, inputs, schedule, scorer, positions):
    sdpa = _generate(adapter, inputs, schedule, scorer, positions)
    with emulated_flash_attention(adapter.model):
        fa2 = _generate(adapter, inputs, schedule, scorer, positions)
    _same(fa2, sdpa)


@pytest.fixture(scope="module")
def internvl():
    return build_internvl_tiles()


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("scorer", ["fastv", "pdrop", "random"])
def test_reduced_internvl_under_flash_attention_equals_sdpa(internvl, scorer, positions):
    images = [_image(30, 20, seed=3), _image(16, 40, seed=4)]  # padded batch with two tile counts
    inputs = internvl.prepare(images, ["what color is the shape?", "how many circles are there?"])
    scorer = {"fastv": LastTokenAttention(-1), "pdrop": LastTokenAttention(0), "random": RandomScorer(0)}[scorer]
    _compare(internvl, inputs, PYRAMID, scorer, positions)
    _compare(internvl, internvl.prepare(images[:1], ["what color?"]), PYRAMID, scorer, positions)  # batch 1


@pytest.mark.parametrize("positions", ["keep", "renumber"])
def test_prompts_that_start_with_vision_tokens(positions):
    """Batch 1, no padding, the vision tokens first: after a drop every key is valid and the kept positions have
    gaps — and position 0 itself may be gone."""
    adapter = VLMAdapter(make_random_llava(seed=3))
    ids, mask = left_pad([make_prompt(0, 6, seed=2)])
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(1, 3, 16, 16)}
    for seed in range(4):
        _compare(adapter, inputs, PYRAMID, RandomScorer(seed), positions)


def test_merging_scorer_under_flash_attention_equals_sdpa(internvl):
    from vtr_bench.methods.sparsevlm import SparseVLM

    method = SparseVLM()
    schedule, scorer = method.build(len(internvl.decoder_layers), 0.5)
    inputs = internvl.prepare([_image(30, 20, seed=5), _image(40, 16, seed=6)], ["what color?", "how many?"])
    _compare(internvl, inputs, schedule, scorer, "renumber")


def test_flash_attention_masks_are_2d_and_always_given():
    valid = torch.tensor([[False, True, True], [True, True, True]])
    assert torch.equal(layer_mask(valid, 3, torch.float32, "flash_attention_2"), valid)
    assert layer_mask(torch.ones(1, 3, dtype=torch.bool), 1, torch.float32, "flash_attention_2") is not None
    assert layer_mask(torch.ones(1, 3, dtype=torch.bool), 3, torch.float32, "sdpa") is None
    assert layer_mask(valid, 3, torch.float32, "sdpa").shape == (2, 1, 3, 3)


def test_flash_attention_without_flash_attn_is_one_line():
    from hydra import compose, initialize_config_dir

    from test_search import CONF
    from vtr_bench.checks import check_config

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config",
                      overrides=["model=llava15_7b", "model.attn_implementation=flash_attention_2"])
    with pytest.raises(ConfigError, match="flash_attention_2 needs the flash-attn package and a CUDA GPU"):
        check_config(cfg)
