"""InternVL2 checkpoints in transformers' native format, converted from OpenGVLab's remote-code ones.

OpenGVLab's InternVL2-2B / -8B repos (``model_type: internvl_chat``) ship their own modeling code (InternViT +
an InternLM2 decoder), which needs ``trust_remote_code`` and has no ``generate()`` on recent transformers.
InternLM2 is a Llama decoder with fused ``wqkv`` weights, so :func:`convert_checkpoint` rewrites such a checkpoint
(config, safetensors shards one at a time, sentencepiece tokenizer) into a directory that
``InternVLForConditionalGeneration`` (InternViT + pixel-shuffle MLP + ``LlamaModel``) and
:class:`~vtr_bench.models.tiny.TinyInternVLProcessor` load without remote code. No code of the checkpoint is run.

Command line (a local directory, or a hub id downloaded when the hub is reachable)::

    python -m vtr_bench.models.internvl2 OpenGVLab/InternVL2-8B checkpoints/InternVL2-8B-native
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import torch

from vtr_bench.errors import ModelLoadError

REMOTE_MODEL_TYPE = "internvl_chat"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
IMAGE_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>"}
"""The processor's special tokens; InternVL2 has no ``<video>``: it is added after the model's vocabulary only
because the processor needs the attribute (no prompt of ours contains it)."""
SOURCE_FILES = ["*.json", "*.safetensors", "tokenizer.model"]
"""What a conversion reads from a remote-code checkpoint (hub downloads fetch only these)."""
END_OF_TURN = "<|im_end|>"
"""InternLM2-chat's end of turn; the converted tokenizer's eos, so greedy decoding stops there as ``chat()`` does."""

_VISION = "model.vision_tower."
_TEXT = "model.language_model."
_VISION_LAYER = {"attn.proj": "attention.projection_layer", "attn.q_norm": "attention.q_norm",
                 "attn.k_norm": "attention.k_norm", "ls1": "lambda_1", "ls2": "lambda_2", "norm1": "layernorm_before",
                 "norm2": "layernorm_after", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_TEXT_LAYER = {"attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
               "feed_forward.w2": "mlp.down_proj", "attention_norm": "input_layernorm",
               "ffn_norm": "post_attention_layernorm"}
_TOP = {"vision_model.embeddings.class_embedding": _VISION + "embeddings.cls_token",
        "vision_model.embeddings.position_embedding": _VISION + "embeddings.position_embeddings",
        "vision_model.embeddings.patch_embedding": _VISION + "embeddings.patch_embeddings.projection",
        "mlp1.0": "model.multi_modal_projector.layer_norm", "mlp1.1": "model.multi_modal_projector.linear_1",
        "mlp1.3": "model.multi_modal_projector.linear_2", "language_model.model.tok_embeddings": _TEXT + "embed_tokens",
        "language_model.model.norm": _TEXT + "norm", "language_model.output": "lm_head"}
_LAYER = re.compile(r"(vision_model\.encoder\.layers|language_model\.model\.layers)\.(\d+)\.(.+)")
_FUSED = {"vision_model.encoder.layers": "attn.qkv", "language_model.model.layers": "attention.wqkv"}


def read_config(path: str | Path) -> dict:
    """The ``config.json`` of a checkpoint directory."""
    return json.loads((Path(path) / "config.json").read_text())


def is_remote_code(path: str | Path) -> bool:
    """True for an OpenGVLab remote-code InternVL checkpoint directory (``model_type: internvl_chat``)."""
    return (Path(path) / "config.json").is_file() and read_config(path).get("model_type") == REMOTE_MODEL_TYPE


def _check_supported(remote: dict) -> None:
    architecture = (remote.get("llm_config", {}).get("architectures") or ["?"])[0]
    problems = []
    if architecture != "InternLM2ForCausalLM":
        problems.append(f"its decoder is {architecture} (only InternLM2ForCausalLM is converted: InternVL2-2B/8B/26B)")
    if remote.get("ps_version", "v2") != "v2":
        problems.append(f"pixel shuffle {remote['ps_version']} (only v2)")
    if remote.get("select_layer", -1) != -1:
        problems.append(f"select_layer {remote['select_layer']} (only -1)")
    if problems:
        raise ModelLoadError("cannot convert this InternVL checkpoint: " + "; ".join(problems))


def _rename(name: str) -> str:
    """The native name of a remote-code tensor that is not a fused q/k/v projection."""
    module, _, param = name.rpartition(".")
    if param not in ("weight", "bias"):
        module, param = name, ""
    layer = _LAYER.fullmatch(module)
    if layer:
        vision = layer[1].startswith("vision")
        prefix = f"{_VISION}encoder.layer.{layer[2]}." if vision else f"{_TEXT}layers.{layer[2]}."
        target = (_VISION_LAYER if vision else _TEXT_LAYER).get(layer[3])
        target = target and prefix + target
    else:
        target = _TOP.get(module)
    if target is None:
        raise ModelLoadError(f"cannot convert InternVL2 tensor {name!r} (unknown weight)")
    return f"{target}.{param}" if param else target


def convert_tensor(name: str, tensor: torch.Tensor, remote: dict) -> dict[str, torch.Tensor]:
    """Native name(s) and tensor(s) of one remote-code tensor; fused q/k/v projections are split.

    InternViT's ``qkv`` stacks q, k, v; InternLM2's ``wqkv`` groups rows per kv head as
    ``[q_0 .. q_{g-1}, k, v]`` (``g`` query heads per kv head, ``head_dim`` rows each).
    """
    layer = _LAYER.fullmatch(name)
    module, _, param = layer[3].rpartition(".") if layer else ("", "", "")
    if not layer or module != _FUSED[layer[1]]:
        return {_rename(name): tensor}
    if layer[1].startswith("vision"):
        prefix = f"{_VISION}encoder.layer.{layer[2]}.attention."
        return {f"{prefix}{p}_proj.{param}": part for p, part in zip("qkv", tensor.chunk(3, dim=0))}
    llm = remote["llm_config"]
    heads, kv_heads = llm["num_attention_heads"], llm["num_key_value_heads"]
    head_dim, groups = llm["hidden_size"] // heads, heads // kv_heads
    grouped = tensor.reshape(kv_heads, groups + 2, head_dim, *tensor.shape[1:])
    parts = {"q": grouped[:, :groups], "k": grouped[:, groups], "v": grouped[:, groups + 1]}
    return {f"{_TEXT}layers.{layer[2]}.self_attn.{p}_proj.{param}": part.reshape(-1, *tensor.shape[1:]).contiguous()
            for p, part in parts.items()}


def convert_tokenizer(src: str | Path):
    """A fast tokenizer equal to InternLM2's sentencepiece tokenizer, with InternVL2's added tokens at their ids.

    Added tokens within the sentencepiece vocabulary replace the pieces at their ids (as InternLM2's own fast
    tokenizer does); the others follow it. The eos becomes ``<|im_end|>`` (see :data:`END_OF_TURN`).
    """
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SentencePieceExtractor
    from transformers.utils import (
        sentencepiece_model_pb2_new,  # sentencepiece's own needs a matching protobuf
    )

    src = Path(src)
    settings = json.loads((src / "tokenizer_config.json").read_text())
    added = {int(i): t["content"] for i, t in settings.get("added_tokens_decoder", {}).items()}
    proto = sentencepiece_model_pb2_new.ModelProto()
    proto.ParseFromString((src / "tokenizer.model").read_bytes())
    if proto.trainer_spec.model_type != 2:
        raise ModelLoadError(f"{src}/tokenizer.model is not a BPE sentencepiece model")
    pieces = ["<unk>", "<s>", "</s>"] + [p.piece for p in proto.pieces[3:]]
    pieces = [added.get(i, piece) for i, piece in enumerate(pieces)]
    missing = [t for key, t in IMAGE_TOKENS.items() if key != "video_token" and t not in added.values()]
    if missing or END_OF_TURN not in added.values():
        raise ModelLoadError(f"{src} is not an InternVL2 tokenizer: no {missing or [END_OF_TURN]} tokens")
    vocab = {piece: i for i, piece in enumerate(pieces)}
    _, merges = SentencePieceExtractor(str(src / "tokenizer.model")).extract()
    merges = [(a, b) for a, b in merges if a in vocab and b in vocab and a + b in vocab]
    backend = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    spec = proto.normalizer_spec
    if spec.remove_extra_whitespaces:
        raise ModelLoadError(f"{src}/tokenizer.model collapses whitespace, which this conversion does not reproduce")
    steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
    steps += [normalizers.Prepend("▁")] if spec.add_dummy_prefix else []
    backend.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    backend.add_special_tokens([AddedToken(added[i], special=True, normalized=False) for i in sorted(added)])
    if settings.get("add_bos_token", True):
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    moved = {t: backend.token_to_id(t) for i, t in added.items() if backend.token_to_id(t) != i}
    if moved:
        raise ModelLoadError(f"added tokens did not keep their ids: {moved}")
    pad = settings.get("pad_token") or "</s>"
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token=END_OF_TURN,
                                   unk_token="<unk>", pad_token=pad["content"] if isinstance(pad, dict) else pad,
                                   extra_special_tokens=dict(IMAGE_TOKENS), padding_side="left",
                                   model_input_names=["input_ids", "attention_mask"])


def native_config(remote: dict, tokenizer):
    """The ``InternVLConfig`` (Llama decoder) of a remote-code config dict."""
    from transformers import InternVLConfig, InternVLVisionConfig, LlamaConfig

    _check_supported(remote)
    llm, vit = remote["llm_config"], remote["vision_config"]
    rope = llm.get("rope_scaling")
    text = LlamaConfig(
        vocab_size=llm["vocab_size"], hidden_size=llm["hidden_size"], intermediate_size=llm["intermediate_size"],
        num_hidden_layers=llm["num_hidden_layers"], num_attention_heads=llm["num_attention_heads"],
        num_key_value_heads=llm["num_key_value_heads"], hidden_act=llm.get("hidden_act", "silu"),
        max_position_embeddings=llm["max_position_embeddings"], rms_norm_eps=llm["rms_norm_eps"],
        rope_theta=llm.get("rope_theta", 10000.0), attention_bias=llm.get("bias", False),
        rope_scaling={"rope_type": rope["type"], "factor": rope["factor"]} if rope else None,
        tie_word_embeddings=llm.get("tie_word_embeddings", False), bos_token_id=llm.get("bos_token_id", 1),
        eos_token_id=llm.get("eos_token_id", 2), pad_token_id=llm.get("pad_token_id", 2))
    size, patch = remote.get("force_image_size") or vit["image_size"], vit["patch_size"]
    vision = InternVLVisionConfig(
        hidden_size=vit["hidden_size"], intermediate_size=vit["intermediate_size"],
        num_hidden_layers=vit["num_hidden_layers"], num_attention_heads=vit["num_attention_heads"],
        image_size=[size, size], patch_size=[patch, patch], hidden_act=vit.get("hidden_act", "gelu"),
        layer_norm_eps=vit.get("layer_norm_eps", 1e-6), norm_type=vit.get("norm_type", "rms_norm"),
        attention_bias=vit.get("qkv_bias", True), use_qk_norm=vit.get("qk_normalization", False),
        use_mean_pooling=True)  # InternViT has no final norm: True makes it the identity
    ratio = remote["downsample_ratio"]
    return InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.context_image_token_id,
        image_seq_length=int((size // patch) ** 2 * ratio ** 2), downsample_ratio=ratio,
        projector_hidden_act="gelu", vision_feature_layer=-1, vision_feature_select_strategy="default",
        dtype=remote.get("torch_dtype", "bfloat16"))


def _convert_weights(src: Path, out: Path, remote: dict) -> None:
    """Convert the safetensors shards one by one (peak memory: one shard), with a matching index."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise ModelLoadError(f"{src} has no *.safetensors weights")
    weight_map = {}
    for index, shard in enumerate(shards, start=1):
        name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        with safe_open(str(shard), framework="pt") as handle:
            for key in handle.keys():
                tensors.update(convert_tensor(key, handle.get_tensor(key), remote))
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def convert_checkpoint(src: str | Path, out: str | Path) -> Path:
    """Write the native-format checkpoint of the remote-code one in ``src`` to ``out`` (replaced atomically).

    ``out`` then holds ``config.json``, ``model-*.safetensors`` + index, the tokenizer, the image processor
    (448 px tiles, ImageNet normalisation, the checkpoint's min/max dynamic tiles, thumbnail) and
    ``conversion.json`` (the source it came from).
    """
    from transformers import GotOcr2ImageProcessor

    from vtr_bench.models.tiny import TinyInternVLProcessor

    src, out = Path(src), Path(out)
    remote = read_config(src)
    if remote.get("model_type") != REMOTE_MODEL_TYPE:
        raise ModelLoadError(f"{src} is not an OpenGVLab remote-code InternVL checkpoint (model_type "
                             f"{remote.get('model_type')!r}, expected {REMOTE_MODEL_TYPE!r})")
    tokenizer = convert_tokenizer(src)
    config = native_config(remote, tokenizer)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config.save_pretrained(tmp)
    _convert_weights(src, tmp, remote)
    size = config.vision_config.image_size[0]
    image_processor = GotOcr2ImageProcessor(
        size={"height": size, "width": size}, crop_to_patches=bool(remote.get("dynamic_image_size", True)),
        min_patches=remote.get("min_dynamic_patch", 1), max_patches=remote.get("max_dynamic_patch", 12),
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    processor = TinyInternVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                      image_seq_length=config.image_seq_length)
    processor.save_pretrained(tmp)
    (tmp / "conversion.json").write_text(json.dumps({"source": str(src.resolve()), "converter": __name__}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def conversion_source(out: str | Path) -> str | None:
    """The source directory a converted checkpoint came from (None if ``out`` holds none)."""
    record = Path(out) / "conversion.json"
    return json.loads(record.read_text())["source"] if record.is_file() else None


def main(argv: list[str] | None = None) -> None:
    """``python -m vtr_bench.models.internvl2 SRC OUT``: convert a local directory or a hub id."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="remote-code checkpoint: a local directory or a hub id (e.g. OpenGVLab/InternVL2-8B)")
    parser.add_argument("out", help="output directory (then: model.path=OUT)")
    parser.add_argument("--revision", default="main", help="hub revision when src is a hub id")
    args = parser.parse_args(argv)
    src = Path(args.src)
    if not src.is_dir():
        from huggingface_hub import snapshot_download

        src = Path(snapshot_download(args.src, revision=args.revision, allow_patterns=SOURCE_FILES))
    try:
        print(convert_checkpoint(src, args.out))
    except ModelLoadError as error:
        sys.exit(f"vtr_bench: error: {error}")


if __name__ == "__main__":
    main()
