"""Builders for the bundled tiny checkpoints: a word-level tokenizer and random-init tiny LLaVA / InternVL2 models.

The models are small but structurally faithful to the paper's families (CLIP ViT + 2-layer GELU MLP + Llama
decoder; InternViT + pixel-shuffle MLP + Qwen2 decoder), so the reduction engine exercises the same code paths
as on the real checkpoints. Trained weights ship in ``vtr_bench/assets/``; see ``vtr_bench.tiny.train``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    GotOcr2ImageProcessor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2Config,
)

from vtr_bench.tiny.data import IMAGE_SIZE, vocabulary
from vtr_bench.tiny.sparse import IMAGE_SIZE as SPARSE_IMAGE_SIZE
from vtr_bench.tiny.sparse import vocabulary as sparse_vocabulary

PROMPT_TEMPLATE = "USER: <image>\n{question}\nASSISTANT:"
"""Prompt of every tiny model; ``<image>`` is the model's image placeholder. The target is ``" {answer}</s>"``."""

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
INTERNVL_TOKENS = ("<img>", "</img>", "<video>")
ASSETS = Path(__file__).resolve().parent.parent / "assets"

TINY_LLAVA_DEFAULTS = {
    "image_size": IMAGE_SIZE, "patch_size": 4,
    "vision_hidden_size": 96, "vision_intermediate_size": 256, "vision_layers": 4, "vision_heads": 4,
    "hidden_size": 96, "intermediate_size": 288, "num_layers": 12, "num_heads": 4, "num_kv_heads": 4,
    "max_position_embeddings": 512,
}
TINY_INTERNVL2_DEFAULTS = {
    "image_size": IMAGE_SIZE, "patch_size": 2, "downsample_ratio": 0.5,
    "vision_hidden_size": 96, "vision_intermediate_size": 256, "vision_layers": 4, "vision_heads": 4,
    "hidden_size": 96, "intermediate_size": 288, "num_layers": 12, "num_heads": 4, "num_kv_heads": 4,
    "max_position_embeddings": 512,
}


def build_tokenizer(save_dir: str | Path | None = None, internvl: bool = False,
                    extra: dict[str, str] | None = None, words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Build the deterministic word-level tokenizer of the shapes benchmark.

    Ids 0-4 are ``<pad> <s> </s> <unk> <image>``; with ``internvl`` the tokens ``<img> </img> <video>`` follow and
    ``<image>`` is registered as InternVL's context (placeholder) token, so both families share ``PROMPT_TEMPLATE``.
    Text is lower-cased and split on whitespace and punctuation; a ``<s>`` is prepended. Left padding.

    Args:
        save_dir: if given, the tokenizer is also saved there.
        internvl: add InternVL's image delimiter tokens and special-token attributes.
        extra: more special tokens, by attribute name (``{"image_token": "<|image_pad|>", ...}``), appended after
            the others (the tiny random Qwen2-VL / OneVision builders; ``<image>`` then stays an ordinary token).
        words: the word list (default: the shapes benchmark's :func:`~vtr_bench.tiny.data.vocabulary`).
    """
    specials = list(SPECIAL_TOKENS) + (list(INTERNVL_TOKENS) if internvl else []) + list((extra or {}).values())
    vocab = {t: i for i, t in enumerate(specials + (vocabulary() if words is None else list(words)))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    named = {"image_token": "<image>"}
    if internvl:
        named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<image>",
                 "video_token": "<video>"}
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", extra_special_tokens={**named, **(extra or {})},
                                  padding_side="left",
                                  model_input_names=["input_ids", "attention_mask"])  # saved: no token_type_ids
    if save_dir is not None:
        tok.save_pretrained(save_dir)
    return tok


def _merged(defaults: dict, cfg: dict | None) -> dict:
    unknown = set(cfg or {}) - set(defaults)
    if unknown:
        raise KeyError(f"unknown tiny-model config keys {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **(cfg or {})}


def _seeded_init(model_cls, config, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_cls(config).eval()


def build_tiny_llava(cfg: dict | None = None, seed: int = 0,
                     words: list[str] | None = None) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Build a random-init LLaVA-1.5-style model (CLIP ViT, GELU MLP projector, Llama decoder) and its processor.

    With the defaults a 48 px image gives (48/4)^2 = 144 image tokens (CLS dropped, features of layer -2).

    Args:
        cfg: overrides of ``TINY_LLAVA_DEFAULTS``.
        seed: seed of the weight initialisation (the global RNG state is left untouched).
        words: the tokenizer's word list (default: the shapes benchmark's).
    """
    c = _merged(TINY_LLAVA_DEFAULTS, cfg)
    tok = build_tokenizer(words=words)
    vision = CLIPVisionConfig(hidden_size=c["vision_hidden_size"], intermediate_size=c["vision_intermediate_size"],
                              num_hidden_layers=c["vision_layers"], num_attention_heads=c["vision_heads"],
                              image_size=c["image_size"], patch_size=c["patch_size"], projection_dim=c["hidden_size"])
    text = LlamaConfig(vocab_size=len(tok), hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                       num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
                       num_key_value_heads=c["num_kv_heads"], max_position_embeddings=c["max_position_embeddings"],
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       tie_word_embeddings=False)
    n_image = (c["image_size"] // c["patch_size"]) ** 2
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", image_seq_length=n_image, attn_implementation="sdpa",
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = _seeded_init(LlavaForConditionalGeneration, config, seed)
    model.generation_config.pad_token_id = tok.pad_token_id
    image_processor = CLIPImageProcessor(size={"shortest_edge": c["image_size"]},
                                         crop_size={"height": c["image_size"], "width": c["image_size"]})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=c["patch_size"],
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return model, processor


TINY_SPARSE_LLAVA = {"image_size": SPARSE_IMAGE_SIZE, "num_layers": 16}
"""``tiny_sparse_llava``: the tiny LLaVA with 64 px images (16 x 16 = 256 vision tokens) and 16 decoder layers."""


def build_tiny_sparse_llava(cfg: dict | None = None, seed: int = 0) -> tuple[LlavaForConditionalGeneration,
                                                                           LlavaProcessor]:
    """Build the random-init tiny LLaVA of the ``sparse`` benchmark (its vocabulary, :data:`TINY_SPARSE_LLAVA`)."""
    return build_tiny_llava({**TINY_SPARSE_LLAVA, **(cfg or {})}, seed=seed, words=sparse_vocabulary())


class TinyInternVLProcessor(InternVLProcessor):
    """InternVLProcessor without a video processor (which needs torchvision); one 448-style tile per image.

    ``crop_to_patches`` defaults to False, so every image gives exactly ``image_seq_length`` context tokens
    between ``<img>`` and ``</img>``. Load a saved one with ``TinyInternVLProcessor.from_pretrained(path)``.
    """

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None, **kwargs):
        self.image_seq_length = image_seq_length
        self.start_image_token, self.end_image_token = tokenizer.start_image_token, tokenizer.end_image_token
        self.start_image_token_id = tokenizer.start_image_token_id
        self.end_image_token_id = tokenizer.end_image_token_id
        self.image_token, self.video_token = tokenizer.context_image_token, tokenizer.video_token
        self.image_token_id = tokenizer.context_image_token_id
        self.image_ids = [self.image_token_id, self.start_image_token_id, self.end_image_token_id]
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def __call__(self, images=None, text=None, audio=None, videos=None, **kwargs):
        """Same as ``InternVLProcessor.__call__`` with ``crop_to_patches=False`` unless given."""
        kwargs.setdefault("crop_to_patches", False)
        return super().__call__(images=images, text=text, audio=audio, videos=videos, **kwargs)


def build_tiny_internvl2(cfg: dict | None = None, seed: int = 0) -> tuple[InternVLForConditionalGeneration,
                                                                       TinyInternVLProcessor]:
    """Build a random-init InternVL2-style model (InternViT, pixel-shuffle MLP, Qwen2 decoder) and its processor.

    With the defaults a 48 px image gives (48/2)^2 = 576 patches, pixel-shuffled (ratio 0.5) to 144 image tokens.

    Args:
        cfg: overrides of ``TINY_INTERNVL2_DEFAULTS``.
        seed: seed of the weight initialisation (the global RNG state is left untouched).
    """
    c = _merged(TINY_INTERNVL2_DEFAULTS, cfg)
    tok = build_tokenizer(internvl=True)
    size, patch = c["image_size"], c["patch_size"]
    vision = InternVLVisionConfig(hidden_size=c["vision_hidden_size"], intermediate_size=c["vision_intermediate_size"],
                                  num_hidden_layers=c["vision_layers"], num_attention_heads=c["vision_heads"],
                                  image_size=[size, size], patch_size=[patch, patch], use_mean_pooling=False)
    text = Qwen2Config(vocab_size=len(tok), hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                       num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
                       num_key_value_heads=c["num_kv_heads"], max_position_embeddings=c["max_position_embeddings"],
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       tie_word_embeddings=False)
    n_image = round((size // patch) ** 2 * c["downsample_ratio"] ** 2)
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=tok.context_image_token_id,
                            image_seq_length=n_image, downsample_ratio=c["downsample_ratio"], vision_feature_layer=-1,
                            attn_implementation="sdpa", pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id)
    model = _seeded_init(InternVLForConditionalGeneration, config, seed)
    model.generation_config.pad_token_id = tok.pad_token_id
    image_processor = GotOcr2ImageProcessor(size={"height": size, "width": size}, crop_to_patches=False)
    return model, TinyInternVLProcessor(image_processor=image_processor, tokenizer=tok, image_seq_length=n_image)


def load_tiny(path: str | Path) -> tuple[torch.nn.Module, ProcessorMixin]:
    """Load a saved tiny checkpoint (LLaVA or InternVL2 family) and its processor from ``path``, offline."""
    from transformers import AutoConfig, AutoProcessor

    model_type = AutoConfig.from_pretrained(path).model_type
    if model_type == "llava":
        return (LlavaForConditionalGeneration.from_pretrained(path).eval(),
                AutoProcessor.from_pretrained(path, use_fast=False))
    if model_type == "internvl":
        return (InternVLForConditionalGeneration.from_pretrained(path).eval(),
                TinyInternVLProcessor.from_pretrained(path))
    raise ValueError(f"{path}: model_type {model_type!r} is not a tiny vtr_bench family (llava, internvl)")
