"""Tiny random-init instances of the 2026 families, built in code (no weights): Qwen2-VL, Qwen2.5-VL and
LLaVA-OneVision, structurally faithful (their HF classes, processors and token layouts) so the engine's checks run
on each. InternVL3 (transformers-native: InternViT + pixel shuffle + Qwen2 decoder) is the bundled InternVL
builder's architecture: :func:`vtr_bench.models.tiny.build_tiny_internvl2`.
"""
from __future__ import annotations

from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    SiglipVisionConfig,
)

from vtr_bench.models.llava_onevision import VisionOnlyOnevisionProcessor
from vtr_bench.models.qwen2_vl import VisionOnlyQwen2VLProcessor
from vtr_bench.models.tiny import _merged, _seeded_init, build_tokenizer

QWEN_TOKENS = {"im_start_token": "<|im_start|>", "im_end_token": "<|im_end|>",
               "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
               "image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}

TEXT_DEFAULTS = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 6, "num_heads": 4, "num_kv_heads": 2}
QWEN_DEFAULTS = {**TEXT_DEFAULTS, "version": "2", "patch_size": 2, "merge_size": 2, "vision_hidden_size": 32,
                 "vision_layers": 2, "vision_heads": 2, "min_pixels": 8 * 8, "max_pixels": 32 * 32,
                 "mrope_section": [2, 3, 3]}
ONEVISION_DEFAULTS = {**TEXT_DEFAULTS, "image_size": 16, "patch_size": 4, "vision_hidden_size": 32,
                      "vision_layers": 2, "vision_heads": 2, "pinpoints": [[16, 16], [16, 32], [32, 16], [32, 32]],
                      "aspect_ratio": "anyres_max_9"}


def _text(c: dict, tok) -> dict:
    return dict(vocab_size=len(tok), hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
                num_key_value_heads=c["num_kv_heads"], max_position_embeddings=512, tie_word_embeddings=False,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def build_tiny_qwen2_vl(cfg: dict | None = None, seed: int = 0):
    """A random Qwen2-VL (``version: "2"``) or Qwen2.5-VL (``"2.5"``: windowed ViT, SwiGLU blocks) with M-RoPE and
    its processor: images resized to multiples of ``patch * merge`` px within the pixel bounds (a 30x20 image:
    5x7 merged tokens)."""
    c = _merged(QWEN_DEFAULTS, cfg)
    tok = build_tokenizer(extra=QWEN_TOKENS)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in QWEN_TOKENS.items()}
    text = {**_text(c, tok), "rope_scaling": {"type": "mrope", "mrope_section": list(c["mrope_section"])}}
    vision = dict(depth=c["vision_layers"], num_heads=c["vision_heads"], patch_size=c["patch_size"],
                  spatial_merge_size=c["merge_size"], temporal_patch_size=2)
    common = dict(image_token_id=ids["image_token"], video_token_id=ids["video_token"],
                  vision_start_token_id=ids["vision_start_token"], vision_end_token_id=ids["vision_end_token"],
                  attn_implementation="sdpa")
    if str(c["version"]) == "2":
        vision.update(embed_dim=c["vision_hidden_size"], hidden_size=c["hidden_size"], mlp_ratio=2)
        model_cls, config = Qwen2VLForConditionalGeneration, Qwen2VLConfig(
            vision_config=vision, text_config=text, **common)
    elif str(c["version"]) == "2.5":
        window = c["patch_size"] * c["merge_size"] * 2  # 2x2 merged cells per attention window
        vision.update(hidden_size=c["vision_hidden_size"], intermediate_size=2 * c["vision_hidden_size"],
                      out_hidden_size=c["hidden_size"], window_size=window,
                      fullatt_block_indexes=[c["vision_layers"] - 1])
        model_cls, config = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig(
            vision_config=vision, text_config=text, **common)
    else:
        raise ValueError(f"version must be '2' or '2.5', got {c['version']!r}")
    model = _seeded_init(model_cls, config, seed)
    model.generation_config.pad_token_id = tok.pad_token_id
    image_processor = Qwen2VLImageProcessor(min_pixels=c["min_pixels"], max_pixels=c["max_pixels"],
                                            patch_size=c["patch_size"], merge_size=c["merge_size"])
    return model, VisionOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tok)


def build_tiny_llava_onevision(cfg: dict | None = None, seed: int = 0):
    """A random LLaVA-OneVision (SigLIP-style ViT, MLP, Qwen2 decoder) with AnyRes-max tiles and image-newline
    tokens, and its processor (16 px base view: 16 tokens, plus the tiles of the best 16 / 32 px grid)."""
    c = _merged(ONEVISION_DEFAULTS, cfg)
    tok = build_tokenizer()
    vision = SiglipVisionConfig(hidden_size=c["vision_hidden_size"], intermediate_size=2 * c["vision_hidden_size"],
                                num_hidden_layers=c["vision_layers"], num_attention_heads=c["vision_heads"],
                                image_size=c["image_size"], patch_size=c["patch_size"])
    n_base = (c["image_size"] // c["patch_size"]) ** 2
    config = LlavaOnevisionConfig(vision_config=vision.to_dict(), text_config={"model_type": "qwen2", **_text(c, tok)},
                                  image_token_index=tok.convert_tokens_to_ids("<image>"),
                                  image_grid_pinpoints=c["pinpoints"], vision_aspect_ratio=c["aspect_ratio"],
                                  vision_feature_layer=-1, vision_feature_select_strategy="full",
                                  attn_implementation="sdpa")
    model = _seeded_init(LlavaOnevisionForConditionalGeneration, config, seed)
    model.generation_config.pad_token_id = tok.pad_token_id
    image_processor = LlavaOnevisionImageProcessor(size={"height": c["image_size"], "width": c["image_size"]},
                                                   image_grid_pinpoints=c["pinpoints"], do_pad=True)
    return model, VisionOnlyOnevisionProcessor(image_processor=image_processor, tokenizer=tok,
                                               num_image_tokens=n_base, vision_feature_select_strategy="full",
                                               vision_aspect_ratio=c["aspect_ratio"])
