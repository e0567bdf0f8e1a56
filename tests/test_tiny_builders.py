"""Builders of the tiny checkpoints: tokenizer, token counts, determinism and offline save/load round trips."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from vtr_bench.models.tiny import PROMPT_TEMPLATE, build_tiny_internvl2, build_tiny_llava, build_tokenizer  # noqa: E402
from vtr_bench.tiny import data  # noqa: E402


def _batch(processor, n: int = 2) -> dict:
    samples = data.split_samples("test")[:n]
    images = [data.render(s["objects"]) for s in samples]
    texts = [PROMPT_TEMPLATE.format(question=s["question"]) for s in samples]
    return processor(images=images, text=texts, return_tensors="pt", padding=True)


def test_tokenizer_is_word_level_and_deterministic(tmp_path):
    tok = build_tokenizer(save_dir=tmp_path)
    assert tok.convert_ids_to_tokens(list(range(5))) == ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    assert tok(" red</s>", add_special_tokens=False).input_ids == [tok.convert_tokens_to_ids("red"), tok.eos_token_id]
    ids = tok("USER: <image>\nHow many circles are there?\nASSISTANT:").input_ids
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.padding_side == "left" and tok.model_input_names == ["input_ids", "attention_mask"]
    assert build_tokenizer().get_vocab() == tok.get_vocab()
    assert (tmp_path / "tokenizer.json").read_bytes() == (build_tokenizer(tmp_path / "again") and
                                                          (tmp_path / "again" / "tokenizer.json").read_bytes())


@pytest.fixture(scope="module")
def llava():
    return build_tiny_llava()


def test_tiny_llava_shape(llava):
    model, processor = llava
    text = model.config.text_config
    assert text.num_hidden_layers >= 8 and model.config.text_config._attn_implementation == "sdpa"
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")
    batch = _batch(processor)
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values"}
    assert (batch["input_ids"] == model.config.image_token_id).sum(1).tolist() == [144, 144]
    with torch.no_grad():
        features = model.get_image_features(pixel_values=batch["pixel_values"], vision_feature_layer=-2,
                                            vision_feature_select_strategy="default")
    assert [tuple(f.shape) for f in features] == [(144, text.hidden_size)] * 2
    assert sum(p.numel() for p in model.parameters()) * 4 < 20e6


def test_tiny_llava_is_seeded():
    a, _ = build_tiny_llava(seed=3)
    b, _ = build_tiny_llava(seed=3)
    c, _ = build_tiny_llava(seed=4)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(pa["lm_head.weight"], pc["lm_head.weight"])


def test_tiny_llava_save_load_round_trip(llava, tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model, processor = llava
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2 = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    processor2 = AutoProcessor.from_pretrained(tmp_path, use_fast=False)
    b1, b2 = _batch(processor), _batch(processor2)
    assert set(b2) == set(b1) and all(torch.equal(b1[k], b2[k]) for k in b1)
    with torch.no_grad():
        assert torch.equal(model(**b1).logits, model2(**b2).logits)
    assert model2.config.text_config._attn_implementation == "sdpa"


def test_tiny_internvl2_tokens_and_round_trip(tmp_path):
    from vtr_bench.models.tiny import TinyInternVLProcessor, load_tiny

    model, processor = build_tiny_internvl2()
    assert type(processor) is TinyInternVLProcessor
    text = model.config.text_config
    assert text.model_type == "qwen2" and text.num_hidden_layers >= 8 and text._attn_implementation == "sdpa"
    batch = _batch(processor)
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values"} and batch["pixel_values"].shape[0] == 2
    ids = batch["input_ids"][0].tolist()
    start = ids.index(processor.start_image_token_id)
    assert ids[start + 1:start + 145] == [model.config.image_token_id] * 144
    assert ids[start + 145] == processor.end_image_token_id and model.config.image_seq_length == 144
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2, processor2 = load_tiny(tmp_path)
    assert type(processor2) is TinyInternVLProcessor
    batch2 = _batch(processor2)
    assert all(torch.equal(batch[k], batch2[k]) for k in batch)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, model2(**batch2).logits)


@pytest.mark.parametrize("name", ["tiny_llava", "tiny_internvl2"])
def test_packed_training_rows_equal_single_prompts(name, llava):
    """Each packed segment (shared image prefix, 4-D mask) gives the logits of its own single-turn prompt, in both
    families (Llama and Qwen2 decoders take the 4-D mask and position ids alike)."""
    import random

    from vtr_bench.tiny.train import make_batch, questions

    model, processor = llava if name == "tiny_llava" else build_tiny_internvl2()
    tok = processor.tokenizer
    samples = data.split_samples("search")[:2]
    batch = make_batch(processor, samples, caption_share=1.0, rng=random.Random(0), extra_questions=4)
    assert (batch["input_ids"] == model.config.image_token_id).sum(1).tolist() == [144, 144]
    with torch.no_grad():
        packed = model(**batch).logits
    rng = random.Random(0)
    for i, s in enumerate(samples):
        pairs = questions(s, rng, 4, 1.0)
        assert pairs[0] == (s["question"], s["answer"]) and pairs[-1][1] == s["caption"] and len(pairs) >= 5
        labelled = (batch["labels"][i] != -100).nonzero().flatten().tolist()
        for question, answer in pairs:
            single = processor(images=data.render(s["objects"]), return_tensors="pt",
                               text=PROMPT_TEMPLATE.format(question=question) + f" {answer}</s>")
            n = len(tok(f" {answer}</s>", add_special_tokens=False).input_ids)
            pos, labelled = labelled[:n], labelled[n:]
            assert batch["labels"][i, pos].tolist() == single["input_ids"][0, -n:].tolist()
            with torch.no_grad():
                ref = model(**single).logits[0, -n - 1:-1]
            torch.testing.assert_close(packed[i, [p - 1 for p in pos]], ref, atol=1e-4, rtol=1e-4)
        assert not labelled


def test_vision_pretraining_targets_follow_the_grid(llava):
    from vtr_bench.tiny.train import _token_grid

    model, processor = llava
    samples = data.split_samples("test")[:2]
    with torch.no_grad():
        grid = _token_grid(model, _batch(processor)["pixel_values"])
        flat = torch.stack(list(model.model.get_image_features(
            pixel_values=_batch(processor)["pixel_values"], vision_feature_layer=-2,
            vision_feature_select_strategy="default")))
    assert grid.shape == (2, 12, 12, model.config.text_config.hidden_size)
    torch.testing.assert_close(grid[:, 1, 5], flat[:, 1 * 12 + 5])
    targets = data.token_targets(samples, 12)
    obj = samples[0]["objects"][0]
    block = targets["shape"][0, obj.row * 4:obj.row * 4 + 4, obj.col * 4:obj.col * 4 + 4]
    assert block.unique().tolist() == [data.SHAPES.index(obj.shape) + 1]
    obj_block = targets["object"][0, obj.row * 4:obj.row * 4 + 4, obj.col * 4:obj.col * 4 + 4]
    expected = list(data.COLORS).index(obj.color) * len(data.SHAPES) + data.SHAPES.index(obj.shape) + 1
    assert obj_block.unique().tolist() == [expected]
    assert targets["row"][0, :, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert targets["col"][1, 0, :].tolist() == [0] * 4 + [1] * 4 + [2] * 4


@pytest.mark.parametrize("name", ["tiny_llava", "tiny_internvl2"])
def test_bundled_checkpoint_answers_the_benchmark(name):
    """The shipped checkpoints are small, reach 0.85 on the test split (text-only baseline: 0.33) and are the weights
    their TRAINING.md reports on."""
    import re

    from vtr_bench.models.tiny import ASSETS, load_tiny
    from vtr_bench.tiny.train import evaluate

    path = ASSETS / name
    assert (path / "model.safetensors").stat().st_size < 20e6
    record = (path / "TRAINING.md").read_text()
    assert "Training wall time" in record
    model, processor = load_tiny(path)
    accuracy = evaluate(model, processor, data.split_samples("test"))["exact_match"]
    assert accuracy >= 0.85
    assert f"{accuracy:.3f}" == re.search(r"^\| exact_match \| ([0-9.]+) \|$", record, re.M).group(1)


@pytest.mark.parametrize("name", ["tiny_llava", "tiny_internvl2"])
def test_training_is_deterministic(name):
    """`make tiny-models` is reproducible: two short trainings with one seed give bitwise-identical weights."""
    from vtr_bench.tiny.train import BUILDERS, HPARAMS, fit

    hp = dict(vision_steps=2, steps=2, batch_size=2, lr=1e-3, caption_share=0.5, extra_questions=2,
              freeze_vision=True, type_weights=HPARAMS["tiny_internvl2"]["type_weights"])
    first, _, timings = fit(name, **hp)
    second = dict(fit(name, **hp)[0].named_parameters())
    initial = dict(BUILDERS[name]()[0].named_parameters())
    assert 0 <= timings["cell_accuracy"] <= 1
    for parameter, weights in first.named_parameters():
        assert torch.equal(weights, second[parameter]), parameter
    assert not torch.equal(first.lm_head.weight, initial["lm_head.weight"])  # it did train
