"""Methods run as their authors ran them by default: position policies, counts and rounding, published settings by
label, FLOPs conventions and the official evaluation prompts; every deviation is a named option."""
import json

import pytest
from omegaconf import OmegaConf

from test_cli import assert_one_clear_error, run_cli
from test_configs import compose_config
from vtr_bench.errors import ConfigError
from vtr_bench.methods import FastV, PyramidDrop, RandomDrop
from vtr_bench.models.tiny import build_tokenizer
from vtr_bench.run import instantiate_method, plan_flops, position_policy

OFFICIAL_POLICY = {"fastv": "keep", "random": "keep", "pdrop": "renumber", "sparsevlm": "renumber",
                   "downsample": "renumber", "full": "keep", "gsearch": "keep", "psigmoid": "keep", "schedule": "keep"}
VICUNA_V1 = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
             "detailed, and polite answers to the user's questions. USER: <image>\n{question} ASSISTANT:")


@pytest.mark.parametrize("method", sorted(OFFICIAL_POLICY))
def test_each_method_owns_its_position_policy_and_positions_overrides_it(method):
    cfg = compose_config(f"method={method}")
    assert cfg.positions is None and cfg.method.positions == OFFICIAL_POLICY[method]
    assert position_policy(cfg) == OFFICIAL_POLICY[method]
    for policy in ("keep", "renumber"):
        assert position_policy(compose_config(f"method={method}", f"positions={policy}")) == policy
    with pytest.raises(ConfigError, match="positions must be one of"):
        position_policy(compose_config(f"method={method}", "positions=sideways"))


def test_cfg_job_shows_the_official_policies(tmp_path):
    for method in ("pdrop", "sparsevlm"):
        result = run_cli(f"method={method}", out_dir=tmp_path, flags=("--cfg", "job"))
        assert result.returncode == 0, result.stderr
        assert OmegaConf.create(result.stdout).method.positions == "renumber"


def test_flops_mode_and_results_record_the_policy_used(tmp_path):
    assert plan_flops(compose_config("model=llava15_7b", "method=pdrop", "run.mode=flops"))["positions"] == "renumber"
    result = run_cli("method=pdrop", "budget=0.5", "benchmark.limit=2", "logger=none", out_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    [path] = tmp_path.glob("tiny_llava/pdrop/*/results.json")
    results = json.loads(path.read_text())
    assert results["positions"] == "renumber" and results["positions_source"] == "method"
    assert results["flops_convention"]["name"] == "default" and "multiply-accumulates" in \
        results["flops_convention"]["unit"]
    assert results["method_params"]["rounding"] == "floor"


# --- counts: int() as the official code ---------------------------------------------------------------------------

def test_fastv_and_pdrop_floor_their_counts_and_half_up_is_an_option():
    assert FastV(k=2, r=0.3).build(8, None)[0].counts(64) == [64] * 2 + [44] * 6  # int(64 * 0.7)
    assert FastV(k=2, r=0.3, rounding="half_up").build(8, None)[0].counts(64) == [64] * 2 + [45] * 6
    assert RandomDrop(k=2, r=0.3).build(8, None)[0].counts(64)[-1] == 44
    assert PyramidDrop(lam=0.6).build(8, None)[0].counts(64) == [64] * 2 + [38] * 2 + [23] * 2 + [13] * 2
    assert PyramidDrop(lam=0.6, rounding="half_up").build(8, None)[0].counts(64)[-1] == 14
    assert FastV(k=2, r=0.5).build(32, None)[0].counts(576)[-1] == 288  # exact ratios stay exact
    with pytest.raises(ConfigError, match="rounding"):
        FastV(rounding="up")


# --- published settings by label ---------------------------------------------------------------------------------

def _plan(*overrides):
    return plan_flops(compose_config("model=llava15_7b", "run.mode=flops", *overrides))


@pytest.mark.parametrize("preset, k, kept", [("K2R25", 2, 432), ("K2R50", 2, 288), ("K2R75", 2, 144),
                                             ("K2R87.5", 2, 72), ("K3R50", 3, 288), ("K3R75", 3, 144)])
def test_fastv_published_k_r_pairs_by_label(preset, k, kept):
    report = _plan("method=fastv", f"method.preset={preset}")
    assert report["keep"] == [576] * k + [kept] * (32 - k)
    assert report["label"].startswith(f"FastV {preset}")


def test_pdrop_official_setting_and_labels():
    report = _plan("method=pdrop")
    assert report["keep"] == [576] * 8 + [288] * 8 + [144] * 8 + [72] * 8  # the only setting of its scripts
    assert report["label"].startswith("PyramidDrop official")
    low = _plan("method=pdrop", "method.preset=64")
    assert low["keep"][:2] == [576] * 2 and low["keep"][2] == 110  # λ ≈ 0.19 on layers 2/8/16 (issue #29)
    for preset in (64, 128, 192):
        report = _plan("method=pdrop", f"method.preset={preset}")
        assert report["label"] == f"PyramidDrop {preset} tokens"
        assert preset - 1 <= report["equal_tokens"] <= preset  # int() falls short by under a token per layer
    with pytest.raises(ConfigError, match="preset"):
        PyramidDrop(preset=100)


def test_labels_are_in_results_and_bad_presets_are_one_line(tmp_path):
    assert_one_clear_error(run_cli("method=fastv", "method.preset=K9R1", out_dir=tmp_path),
                           "vtr_bench: error: method.preset must be one of")
    assert instantiate_method(compose_config("method=sparsevlm").method).describe(None)["label"] == \
        "SparseVLM 192 tokens"


# --- FLOPs conventions --------------------------------------------------------------------------------------------

def test_pdrop_published_tflops_are_one_flag_away():
    """PyramidDrop reports 3.82 -> 1.78 TFLOPs on LLaVA-1.5-7B: SwiGLU MACs of the vision tokens only."""
    full, pdrop = _plan("method=full", "flops=pdrop"), _plan("method=pdrop", "flops=pdrop")
    assert round(full["tflops"], 2) == 3.82 and round(pdrop["tflops"], 2) == 1.78
    assert pdrop["flops_convention"] == {**pdrop["flops_convention"], "name": "pdrop", "text": False}
    assert _plan("method=full")["tflops"] > full["tflops"]  # the default counts the text tokens too


def test_fastv_formula_is_one_flag_away():
    d, m, n = 4096, 11008, 576 + 36
    report = _plan("method=full", "flops=fastv")
    assert report["tflops"] == pytest.approx(32 * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m) / 1e12)
    assert report["flops_convention"]["ffn"] == "fastv"


# --- prompts ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["llava15_7b", "llava15_13b", "llava_next_7b"])
def test_llava_models_default_to_the_official_vicuna_v1_prompt(model):
    cfg = compose_config(f"model={model}")
    assert cfg.model.prompt == "official" and cfg.model.prompt_template == VICUNA_V1
    assert cfg.model.dtype == "float16"  # LLaVA's evaluation dtype
    bare = compose_config(f"model={model}", "model.prompt=bare").model.prompt_template
    assert bare == "USER: <image>\n{question} ASSISTANT:"


def test_official_prompt_tokenises_as_system_user_image_question_assistant():
    from PIL import Image
    from transformers import CLIPImageProcessor, LlavaProcessor

    from vtr_bench.models.base import VLMAdapter

    tok = build_tokenizer()
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 8},
                                                                  crop_size={"height": 8, "width": 8}),
                               tokenizer=tok, patch_size=4, vision_feature_select_strategy="default",
                               num_additional_image_tokens=0)
    adapter = VLMAdapter(None, processor, compose_config("model=llava15_7b").model.prompt_template)

    ids = processor(images=[Image.new("RGB", (8, 8))], text=[adapter.prompt_template.format(question="how many")],
                    return_tensors="pt")["input_ids"][0].tolist()
    image = tok.convert_tokens_to_ids("<image>")
    first = ids.index(image)
    assert ids[:first] == tok("A chat between a curious user and an artificial intelligence assistant. The "
                              "assistant gives helpful, detailed, and polite answers to the user's questions. "
                              "USER:").input_ids
    n = ids.count(image)
    assert n > 0 and ids[first:first + n] == [image] * n  # one contiguous span between "USER:" and the question
    assert ids[first + n:] == tok("how many ASSISTANT:", add_special_tokens=False).input_ids
