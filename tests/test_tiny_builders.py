"""Builders of the tiny checkpoints: tokenizer, token counts, determinism and offline save/load round trips."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from vtr_bench.models.tiny import PROMPT_TEMPLATE, build_tiny_llava, build_tokenizer  # noqa: E402
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
    from vtr_bench.models.tiny import TinyInternVLProcessor, build_tiny_internvl2, load_tiny

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


def test_training_batch_labels_only_the_target(llava):
    import random

    from vtr_bench.tiny.train import make_batch

    model, processor = llava
    tok = processor.tokenizer
    samples = data.split_samples("search")[:4]
    batch = make_batch(processor, samples, caption_share=0.0, rng=random.Random(0))
    for i, s in enumerate(samples):
        labelled = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert labelled == [tok.convert_tokens_to_ids(s["answer"]), tok.eos_token_id]
        assert batch["input_ids"][i, 0] == tok.bos_token_id  # right padding: the prompt starts at position 0
    captions = make_batch(processor, samples, caption_share=1.0, rng=random.Random(0))
    assert tok.decode(captions["labels"][0][captions["labels"][0] != -100][:-1]) == samples[0]["caption"]
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
