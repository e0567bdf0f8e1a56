"""Real-model configs and adapters on tiny random instances of each architecture: LLaVA-NeXT (AnyRes tiles),
InternVL (dynamic tiles, Qwen2 decoder), InternVL2 converted from OpenGVLab's remote-code layout (Llama decoder),
and the 2026 families (Qwen2-VL / Qwen2.5-VL with M-RoPE, LLaVA-OneVision, InternVL3: more in test_families).

Engine equivalences (keep-all identity, slow reference, per-layer counts, padded batches with per-sample vision
counts), prompt/processor placement of the image tokens, the InternVL2 conversion, one-line offline failures.
"""
import json

import numpy as np
import pytest
import test_engine
import torch
from PIL import Image
from safetensors.torch import save_file
from test_cli import assert_one_clear_error, run_cli
from test_configs import compose_config

from vtr_bench.errors import ModelLoadError
from vtr_bench.eval.generate import prefill_positions
from vtr_bench.models import internvl2
from vtr_bench.models.base import VLMAdapter
from vtr_bench.models.loader import load_adapter
from vtr_bench.models.tiny import build_tiny_internvl2, build_tokenizer
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, RandomScorer

LAYERS = 6
REAL_MODELS = {"llava15_7b": "tiny_llava", "llava15_13b": "tiny_llava", "llava_next_7b": "tiny_llava",
               "internvl2": "tiny_internvl2", "internvl2_2b": "tiny_internvl2", "internvl3_8b": "tiny_internvl2",
               "internvl25_8b": "tiny_internvl2", "qwen2vl_7b": "tiny_random_qwen2vl",
               "qwen25vl_7b": "tiny_random_qwen25vl", "llava_ov_7b": "tiny_random_llava_ov"}


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def build_llava_next() -> VLMAdapter:
    """A tiny LLaVA-NeXT: 16 px base view (16 tokens), AnyRes tiles from 16x32 / 32x16 / 32x32 pinpoints."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = build_tokenizer()
    pinpoints = [[16, 32], [32, 16], [32, 32]]
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=16, patch_size=4, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_grid_pinpoints=pinpoints,
                             image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                             vision_feature_select_strategy="default", image_seq_length=16)
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config).eval()
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                              image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=4,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return VLMAdapter(model, processor, compose_config("model=llava_next_7b").model.prompt_template, "llava_next")


def build_internvl_tiles() -> VLMAdapter:
    """The bundled tiny InternVL builder (Qwen2 decoder), 16 px tiles of 16 tokens, up to 4 tiles + thumbnail."""
    model, processor = build_tiny_internvl2({
        "image_size": 16, "patch_size": 2, "vision_hidden_size": 32, "vision_intermediate_size": 64,
        "vision_layers": 2, "vision_heads": 2, "hidden_size": 64, "intermediate_size": 128, "num_layers": LAYERS,
        "num_heads": 4, "num_kv_heads": 2})
    return VLMAdapter(model, processor, "USER: <image>\n{question}\nASSISTANT:", "internvl_tiles",
                      processor_kwargs={"crop_to_patches": True, "max_patches": 4})


# --- a tiny InternVL2 checkpoint in OpenGVLab's remote-code layout -------------------------------------------------

REMOTE_VISION = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2, image_size=16,
                     patch_size=2, qkv_bias=True, qk_normalization=False, norm_type="layer_norm", layer_norm_eps=1e-6,
                     hidden_act="gelu", architectures=["InternVisionModel"])
REMOTE_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=8,
                  num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=1000000, max_position_embeddings=4096,
                  rope_scaling={"type": "dynamic", "factor": 2.0}, bias=False, architectures=["InternLM2ForCausalLM"],
                  bos_token_id=1, eos_token_id=2, pad_token_id=2)
CHAT_TOKENS = ["<|im_end|>", "<|im_start|>"]
IMAGE_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>"]


def _sentencepiece(folder):
    """A tiny BPE sentencepiece model like InternLM2's: byte fallback, two unused pieces that become chat tokens."""
    import sentencepiece as spm

    words = "what color is the cat dog red blue green shape how many left right answer 你好 图片".split()
    rng = np.random.default_rng(0)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(500)))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=330,
                                   model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   user_defined_symbols=["[UNUSED_TOKEN_145]", "[UNUSED_TOKEN_146]"],
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   character_coverage=1.0, minloglevel=2)
    corpus.unlink()
    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))


def _remote_state(model, llm: dict) -> dict:
    """The state dict of a native InternVL (Llama decoder) in OpenGVLab's names, q/k/v fused as InternViT's ``qkv``
    and InternLM2's ``wqkv`` (rows grouped per kv head: its query heads, then k, then v)."""
    s = {k: v.clone() for k, v in model.state_dict().items()}
    vt, lm = "model.vision_tower.", "model.language_model."
    out = {"vision_model.embeddings.class_embedding": s[vt + "embeddings.cls_token"],
           "vision_model.embeddings.position_embedding": s[vt + "embeddings.position_embeddings"],
           "language_model.model.tok_embeddings.weight": s[lm + "embed_tokens.weight"],
           "language_model.model.norm.weight": s[lm + "norm.weight"], "language_model.output.weight": s["lm_head.weight"]}
    for kind in ("weight", "bias"):
        out[f"vision_model.embeddings.patch_embedding.{kind}"] = s[f"{vt}embeddings.patch_embeddings.projection.{kind}"]
        for i, j in (("0", "layer_norm"), ("1", "linear_1"), ("3", "linear_2")):
            out[f"mlp1.{i}.{kind}"] = s[f"model.multi_modal_projector.{j}.{kind}"]
    for i in range(model.config.vision_config.num_hidden_layers):
        ours, theirs = f"{vt}encoder.layer.{i}.", f"vision_model.encoder.layers.{i}."
        out[theirs + "ls1"], out[theirs + "ls2"] = s[ours + "lambda_1"], s[ours + "lambda_2"]
        for kind in ("weight", "bias"):
            out[f"{theirs}attn.qkv.{kind}"] = torch.cat([s[f"{ours}attention.{p}_proj.{kind}"] for p in "qkv"])
            for a, b in (("attn.proj", "attention.projection_layer"), ("norm1", "layernorm_before"),
                         ("norm2", "layernorm_after"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                out[f"{theirs}{a}.{kind}"] = s[f"{ours}{b}.{kind}"]
    head_dim = llm["hidden_size"] // llm["num_attention_heads"]
    groups = llm["num_attention_heads"] // llm["num_key_value_heads"]
    for i in range(llm["num_hidden_layers"]):
        ours, theirs = f"{lm}layers.{i}.", f"language_model.model.layers.{i}."
        q, k, v = (s[f"{ours}self_attn.{p}_proj.weight"].view(llm["num_key_value_heads"], -1, head_dim, llm["hidden_size"])
                   for p in "qkv")
        assert q.shape[1] == groups
        out[theirs + "attention.wqkv.weight"] = torch.cat([q, k, v], dim=1).reshape(-1, llm["hidden_size"])
        for a, b in (("attention.wo", "self_attn.o_proj"), ("feed_forward.w1", "mlp.gate_proj"),
                     ("feed_forward.w3", "mlp.up_proj"), ("feed_forward.w2", "mlp.down_proj"),
                     ("attention_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm")):
            out[f"{theirs}{a}.weight"] = s[f"{ours}{b}.weight"]
    return out


def write_remote_checkpoint(folder, llm: dict | None = None):
    """A random tiny InternVL2 in OpenGVLab's remote-code format (2 shards); returns (folder, the native model
    it was exported from, the sentencepiece model)."""
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLVisionConfig,
        LlamaConfig,
    )

    folder.mkdir(parents=True)
    sp = _sentencepiece(folder)
    n = sp.get_piece_size()
    added = {0: "<unk>", 1: "<s>", 2: "</s>", **{sp.piece_to_id(f"[UNUSED_TOKEN_{145 + i}]"): t
                                                   for i, t in enumerate(CHAT_TOKENS)},
             **{n + i: t for i, t in enumerate(IMAGE_TOKENS)}}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": {str(i): {"content": t, "special": True} for i, t in added.items()},
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "add_bos_token": True}))
    llm = {**REMOTE_LLM, "vocab_size": n + len(IMAGE_TOKENS), **(llm or {})}
    remote = {"model_type": "internvl_chat", "architectures": ["InternVLChatModel"], "llm_config": llm,
              "vision_config": REMOTE_VISION, "downsample_ratio": 0.5, "ps_version": "v2", "select_layer": -1,
              "force_image_size": 16, "template": "internlm2-chat", "dynamic_image_size": True,
              "use_thumbnail": True, "min_dynamic_patch": 1, "max_dynamic_patch": 12, "torch_dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(remote))
    text = LlamaConfig(**{k: llm[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "rms_norm_eps")})
    vision = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                                  image_size=[16, 16], patch_size=[2, 2], attention_bias=True)
    torch.manual_seed(1)
    model = InternVLForConditionalGeneration(InternVLConfig(vision_config=vision, text_config=text,
                                                            image_token_id=n + 2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    state = _remote_state(model, llm)
    names = sorted(state)
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        save_file({k: state[k] for k in part}, str(folder / f"model-0000{i + 1}-of-00002.safetensors"))
    return folder, model, sp


@pytest.fixture(scope="module")
def remote_checkpoint(tmp_path_factory):
    return write_remote_checkpoint(tmp_path_factory.mktemp("remote") / "InternVL2-tiny")


@pytest.fixture(scope="module")
def converted(remote_checkpoint, tmp_path_factory):
    """The real ``model=internvl2`` config pointed at the tiny remote-code checkpoint (converted on load)."""
    root = tmp_path_factory.mktemp("run")
    cfg = compose_config("model=internvl2", f"model.path={remote_checkpoint[0]}", f"run.cache_dir={root}",
                         "model.dtype=float32")
    return load_adapter(cfg.model), cfg


# tests/test_families.py has more on these (tiny_random_internvl3 is internvl_tiles' architecture and shapes)
NEW_FAMILIES = {"qwen2vl": "tiny_random_qwen2vl", "qwen25vl": "tiny_random_qwen25vl",
                "llava_ov": "tiny_random_llava_ov"}


@pytest.fixture(scope="module")
def families(converted):
    built = {name: load_adapter(compose_config(f"model={config}").model) for name, config in NEW_FAMILIES.items()}
    return {"llava_next": build_llava_next(), "internvl_tiles": build_internvl_tiles(), "internvl2": converted[0],
            **built}


FAMILIES = ["llava_next", "internvl_tiles", "internvl2", *NEW_FAMILIES]
QUESTION = "what color is the shape?"


def _prefill(adapter, inputs, engine=None):
    mask = inputs["attention_mask"]
    kwargs, position_ids = prefill_positions(inputs)
    kwargs["position_ids"] = position_ids
    with torch.no_grad():
        if engine is None:
            return adapter.model(**kwargs).logits, None
        with engine.request(adapter.vision_mask(inputs["input_ids"]), mask) as ctx:
            return adapter.model(**kwargs).logits, ctx


def _decoder_input(adapter, inputs):
    """The decoder's input embeddings (image features scattered in) of a batch-1 prompt, and its vision mask."""
    captured = []
    handle = adapter.decoder_layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: captured.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    try:
        _prefill(adapter, inputs)
    finally:
        handle.remove()
    return captured[0], adapter.vision_mask(inputs["input_ids"])[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_all_equals_the_unmodified_model(families, family):
    adapter = families[family]
    inputs = adapter.prepare([_image(30, 20)], [QUESTION])
    expected, _ = _prefill(adapter, inputs)
    engine = adapter.engine(KeepSchedule.full(LAYERS), None)
    with engine.attached():
        got, ctx = _prefill(adapter, inputs, engine)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    n_vision = int(adapter.vision_mask(inputs["input_ids"]).sum())
    assert ctx.processed_counts() == [[n_vision] * LAYERS]


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("scorer_kind", ["fastv", "random", "pdrop"])
@pytest.mark.parametrize("family", FAMILIES)
def test_engine_equals_slow_reference(families, family, scorer_kind, positions, monkeypatch):
    adapter = families[family]
    schedule = test_engine.SCHEDULES["pyramid"]
    scorer = {"fastv": LastTokenAttention(-1), "pdrop": LastTokenAttention(0), "random": RandomScorer(0)}[scorer_kind]
    inputs = adapter.prepare([_image(30, 20, seed=2)], [QUESTION])
    engine = adapter.engine(schedule, scorer, positions=positions)
    with engine.attached():
        logits, ctx = _prefill(adapter, inputs, engine)
    monkeypatch.setattr(test_engine, "_prompt_embeddings", lambda adapter, ids, _: _decoder_input(adapter, inputs))
    mrope = "position_ids" in inputs  # Qwen2-VL's 3-D positions, prepared by its adapter
    expected = test_engine._reference_logits(adapter, inputs["input_ids"], None, schedule, scorer_kind, positions,
                                             start=inputs.get("position_ids"),
                                             renumber=test_engine.compact_grid if mrope else None)
    torch.testing.assert_close(logits[:, -1], expected, atol=1e-5, rtol=0)
    assert ctx.processed_counts() == [schedule.counts(int(adapter.vision_mask(inputs["input_ids"]).sum()))]


@pytest.mark.parametrize("family", FAMILIES[:3])  # the new families: every method, in test_families
def test_padded_batch_with_different_vision_counts_equals_single_runs(families, family):
    """Images of other aspect ratios give other tile counts: budgets resolve per sample inside one batch."""
    adapter = families[family]
    images, questions = [_image(30, 20, seed=3), _image(16, 40, seed=4)], [QUESTION, "how many circles are there?"]
    engine = adapter.engine(test_engine.SCHEDULES["pyramid"], LastTokenAttention(-1))
    with engine.attached():
        batched, ctx = _prefill(adapter, adapter.prepare(images, questions), engine)
        counts = []
        for i in range(2):
            single, single_ctx = _prefill(adapter, adapter.prepare(images[i:i + 1], questions[i:i + 1]), engine)
            torch.testing.assert_close(batched[i, -1], single[0, -1], atol=1e-5, rtol=0)
            counts.append(single_ctx.processed_counts()[0])
    assert ctx.processed_counts() == counts and counts[0][0] != counts[1][0]


def test_llava_next_prompt_has_anyres_image_tokens_where_the_checkpoint_expects(families):
    adapter = families["llava_next"]
    image = _image(30, 20)
    inputs = adapter.prepare([image], [QUESTION])
    ids = inputs["input_ids"][0].tolist()
    tok, image_id = adapter.processor.tokenizer, adapter.image_token_id
    positions = [i for i, t in enumerate(ids) if t == image_id]
    assert positions == list(range(positions[0], positions[0] + len(positions)))  # one contiguous span
    assert tok.convert_ids_to_tokens(ids[positions[0] - 2:positions[0]]) == ["user", ":"]
    assert ids[positions[-1] + 1:] == tok(f"\n{QUESTION} ASSISTANT:", add_special_tokens=False).input_ids
    # the base view (16 tokens) + the 32x32 canvas (2x2 tiles: an 8x8 grid) unpadded to the 3:2 image's 6 rows,
    # each row followed by an image-newline token
    assert len(positions) == 16 + 6 * (8 + 1)
    with torch.no_grad():  # the model's own count: its packed features, newline tokens included
        [features] = adapter.model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    assert features.shape[0] == len(positions)


@pytest.mark.parametrize("family", ["internvl_tiles", "internvl2"])
def test_internvl_prompt_has_tiles_of_context_tokens_between_img_tags(families, family):
    adapter = families[family]
    inputs = adapter.prepare([_image(40, 16)], [QUESTION])
    tok, ids = adapter.processor.tokenizer, inputs["input_ids"][0].tolist()
    start, end = ids.index(tok.start_image_token_id), ids.index(tok.end_image_token_id)
    tiles = inputs["pixel_values"].shape[0]
    assert tiles == 3 + 1  # a 3x1 grid for a 40x16 image, plus the thumbnail
    assert ids[start + 1:end] == [adapter.image_token_id] * (16 * tiles)
    assert int(adapter.vision_mask(inputs["input_ids"]).sum()) == 16 * tiles
    before, after = adapter.prompt_template.format(question=QUESTION).split(adapter.processor.image_token)
    assert ids[:start] == tok(before).input_ids and ids[end + 1:] == tok(after, add_special_tokens=False).input_ids
    if family == "internvl2":  # InternVL2's internlm2-chat turn, as its chat() builds it
        assert before.startswith("<|im_start|>system\n") and before.endswith("<|im_end|><|im_start|>user\n")
        assert after == f"\n{QUESTION}<|im_end|><|im_start|>assistant\n"


def test_converted_internvl2_is_the_model_it_was_exported_from(remote_checkpoint, converted):
    _, exported_from, _ = remote_checkpoint
    adapter, _ = converted
    ours, theirs = adapter.model.state_dict(), exported_from.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert type(adapter.language_model).__name__ == "LlamaModel"
    assert adapter.processor.tokenizer.eos_token == internvl2.END_OF_TURN


def test_converted_tokenizer_is_sentencepiece_with_the_added_tokens(remote_checkpoint, converted):
    """InternLM2's tokenizer encodes the text between added tokens with sentencepiece, after a bos."""
    _, _, sp = remote_checkpoint
    tok = converted[0].processor.tokenizer
    parts = ["<|im_start|>", "user\n你好 what color  is\tthe cat?", "<|im_end|>", " left ", "<IMG_CONTEXT>", "ü 3"]
    expected = [1]
    for part in parts:
        expected += [tok.convert_tokens_to_ids(part)] if part in CHAT_TOKENS + IMAGE_TOKENS else sp.encode(part)
    assert tok("".join(parts)).input_ids == expected
    n = sp.get_piece_size()
    assert tok.convert_tokens_to_ids(IMAGE_TOKENS) == [n, n + 1, n + 2]
    assert tok.convert_tokens_to_ids(CHAT_TOKENS) == [sp.piece_to_id("[UNUSED_TOKEN_145]"),
                                                      sp.piece_to_id("[UNUSED_TOKEN_146]")]


def test_conversion_happens_once_and_again_when_the_source_changes(remote_checkpoint, tmp_path):
    target = tmp_path / "converted"
    node = compose_config("model=internvl2", f"model.path={remote_checkpoint[0]}", f"model.converted_dir={target}",
                          "model.dtype=float32").model
    load_adapter(node)
    stamp = (target / "model-00001-of-00002.safetensors").stat().st_mtime_ns
    load_adapter(node)
    assert (target / "model-00001-of-00002.safetensors").stat().st_mtime_ns == stamp
    other, _, _ = write_remote_checkpoint(tmp_path / "other")
    node.path = str(other)
    load_adapter(node)
    assert internvl2.conversion_source(target) == str(other.resolve())
    assert load_adapter(compose_config("model=internvl2", f"model.path={target}", "model.dtype=float32").model)


def test_unconvertible_checkpoints_fail_in_one_line(remote_checkpoint, tmp_path):
    qwen, _, _ = write_remote_checkpoint(tmp_path / "qwen", llm={"architectures": ["Qwen2ForCausalLM"]})
    with pytest.raises(ModelLoadError, match="only InternLM2ForCausalLM is converted"):
        internvl2.convert_checkpoint(qwen, tmp_path / "out")
    with pytest.raises(ModelLoadError, match="unknown weight"):
        internvl2.convert_tensor("vision_model.new_thing.weight", torch.zeros(1), {})
    node = compose_config("model=internvl2", f"model.path={remote_checkpoint[0]}", "model.converted_dir=null").model
    with pytest.raises(ModelLoadError, match="remote-code checkpoint .* python -m vtr_bench.models.internvl2") as error:
        load_adapter(node)
    assert "\n" not in str(error.value)


def test_conversion_command_line(remote_checkpoint, tmp_path, capsys):
    internvl2.main([str(remote_checkpoint[0]), str(tmp_path / "out")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert internvl2.conversion_source(tmp_path / "out") == str(remote_checkpoint[0].resolve())
    with pytest.raises(SystemExit, match="vtr_bench: error: .* is not an OpenGVLab remote-code InternVL checkpoint"):
        internvl2.main([str(tmp_path / "out"), str(tmp_path / "again")])


@pytest.mark.parametrize("model", sorted(REAL_MODELS))
def test_real_model_configs_fail_offline_in_one_line(model, monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache, whatever is here
    cfg = compose_config(f"model={model}")
    official_dtype = "float16" if cfg.model.family.startswith("llava") else "bfloat16"  # LLaVA's evals run fp16
    assert cfg.model.revision and cfg.model.dtype == official_dtype and cfg.model.attn_implementation == "sdpa"
    with pytest.raises(ModelLoadError) as error:
        load_adapter(cfg.model)
    message = str(error.value)
    assert message.startswith(f"{cfg.model.repo_id} is not in the local HF cache and the hub is offline")
    assert message.endswith(f"use model={REAL_MODELS[model]}") and "\n" not in message


def test_internvl2_cli_offline_points_to_the_tiny_model(tmp_path):
    result = run_cli("model=internvl2", "method=psigmoid", "budget=0.3", out_dir=tmp_path)
    assert_one_clear_error(result, "vtr_bench: error: OpenGVLab/InternVL2-8B is not in the local HF cache")
    assert "model=tiny_internvl2" in result.stderr


@pytest.mark.parametrize("family", FAMILIES[:3])
def test_vision_tower_macs_per_tile(families, family):
    vision = families[family].model.config.vision_config
    per_layer = families[family].vision_tower_macs() / vision.num_hidden_layers
    n, d, m = (16 // (4 if family == "llava_next" else 2)) ** 2 + 1, vision.hidden_size, vision.intermediate_size
    assert per_layer == 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def test_internvl2_config_runs_end_to_end_on_a_tiny_remote_code_checkpoint(remote_checkpoint, tmp_path):
    """``model=internvl2`` pointed at OpenGVLab-format weights: converted in the run, evaluated with FastV."""
    result = run_cli("model=internvl2", f"model.path={remote_checkpoint[0]}", "model.dtype=float32", "method=fastv",
                     "budget=0.5", "benchmark.limit=2", "run.show_progress=false", "logger=none", out_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = tmp_path.glob("internvl2/fastv/*/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "complete" and results["samples"] == 2 and results["budget_achieved"] == 0.5
    n_vision = results["keep_mean_per_layer"][0]
    assert n_vision % 16 == 0 and n_vision > 16  # 16 context tokens per 16 px tile, several tiles
    assert internvl2.conversion_source(tmp_path / "cache/converted/internvl2") == str(remote_checkpoint[0].resolve())
