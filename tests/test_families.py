"""The 2026 families on tiny random instances of their architectures: Qwen2-VL and Qwen2.5-VL (3-D M-RoPE,
dynamic resolution), LLaVA-OneVision (AnyRes-max tiles with image-newline tokens, Qwen2 decoder) and InternVL3
(transformers-native InternVL, dynamic tiles).

For each: padded batches with two vision-token counts = single runs and processed counts = the plan, for every
method; cached decoding = re-run prefills; both position policies; plus the M-RoPE policies themselves, and the
real checkpoints' configs (weights-free flops mode). Keep-all = the unmodified model and the engine = a slow
reference (with an M-RoPE compact-grid renumbering written in test_engine) run on these families in test_models;
every baseline against its official-algorithm reference on Qwen2-VL in test_official_references.
"""
import numpy as np
import pytest
import torch
from PIL import Image
from test_configs import compose_config
from test_generate import ReplayScorer
from test_models import _prefill

from vtr_bench.eval.generate import greedy_generate
from vtr_bench.models.loader import load_adapter
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import GridPooling, LastTokenAttention, TextRaterAttention
from vtr_bench.run import instantiate_method, plan_flops

FAMILIES = {"qwen2vl": "tiny_random_qwen2vl", "qwen25vl": "tiny_random_qwen25vl",
            "llava_ov": "tiny_random_llava_ov", "internvl3": "tiny_random_internvl3"}
MROPE = ("qwen2vl", "qwen25vl")
LAYERS = 6
QUESTIONS = ["what color is the shape?", "how many circles are there?"]
SIZES = {"qwen2vl": [(30, 20), (12, 28)], "qwen25vl": [(30, 20), (12, 28)], "llava_ov": [(30, 20), (16, 40)],
         "internvl3": [(30, 20), (16, 40)]}  # (width, height): two vision-token counts per family


def _image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def adapters():
    return {family: load_adapter(compose_config(f"model={name}").model) for family, name in FAMILIES.items()}


def _inputs(adapter, family, which=(0,)):
    images = [_image(*SIZES[family][i], seed=i) for i in which]
    return adapter.prepare(images, [QUESTIONS[i] for i in which])


METHODS = {"fastv": ["method=fastv", "budget=0.5"], "pdrop": ["method=pdrop", "budget=0.5"],
           "sparsevlm": ["method=sparsevlm", "budget=0.5"], "random": ["method=random", "budget=0.5"],
           "downsample": ["method=downsample", "budget=0.25"],
           "schedule": ["method=schedule", "method.ratios=[1,0.75,0.5,0.5,0.25,0.25]"],
           **{m: [f"method={m}", "budget=0.5"] for m in ("fastervlm", "visionzip", "vispruner", "divprune",
                                                          "cdpruner", "dart")}}


def _method(family, name):
    cfg = compose_config(f"model={FAMILIES[family]}", *METHODS[name])
    method = instantiate_method(cfg.method)
    return method, method.build(LAYERS, cfg.get("budget"))


BOTH_POLICIES = ("fastv", "sparsevlm", "downsample")  # the others run with their own policy (conf/method)


@pytest.mark.parametrize("method_name, positions", [(m, p) for m in METHODS for p in ("keep", "renumber")
                                                    if m in BOTH_POLICIES or p == "own"] +
                         [(m, "own") for m in METHODS if m not in BOTH_POLICIES])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_in_a_padded_batch_equals_single_runs(adapters, family, method_name, positions):
    """Two images with different vision-token counts in one left-padded batch: each row's logits and processed
    counts are its single run's, and the counts are the method's plan for that row."""
    if family == "llava_ov" and method_name == "downsample":
        pytest.skip("OneVision's tokens (base view + unpadded tiles + newlines) form no grid")
    adapter = adapters[family]
    method, (schedule, scorer) = _method(family, method_name)
    if positions == "own":
        positions = compose_config(*METHODS[method_name]).method.positions
    engine = adapter.engine(schedule, scorer, positions=positions)
    with engine.attached():
        batched, ctx = _prefill(adapter, _inputs(adapter, family, (0, 1)), engine)
        for i in range(2):
            single_inputs = _inputs(adapter, family, (i,))
            single, single_ctx = _prefill(adapter, single_inputs, engine)
            torch.testing.assert_close(batched[i, -1], single[0, -1], atol=1e-5, rtol=0)
            n_vision = int(adapter.vision_mask(single_inputs["input_ids"]).sum())
            assert ctx.processed_counts()[i] == single_ctx.processed_counts()[0]
            if method_name != "downsample":  # downsampling plans for the config's grid; a row pools its own
                assert single_ctx.processed_counts()[0] == method.planned_counts(schedule, n_vision)
    assert ctx.n_vision[0] != ctx.n_vision[1]


class ReplayRaters(ReplayScorer):
    reduce = TextRaterAttention.reduce

    def __init__(self):
        super().__init__(TextRaterAttention(0.3))
        self.recycle = 0.3


def _extended(adapter, inputs, tokens):
    """The prepared prompt with ``tokens`` appended (batch 1), its positions recomputed by the adapter."""
    ids = torch.cat([inputs["input_ids"], torch.tensor([tokens], dtype=torch.long)], dim=1)
    longer = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    longer.pop("position_ids", None)
    if "position_ids" in inputs:
        longer["position_ids"] = adapter.position_ids(longer)
    return longer


@pytest.mark.parametrize("case, positions", [("fastv", "keep"), ("fastv", "renumber"), ("sparsevlm", "keep"),
                                             ("sparsevlm", "renumber"), ("downsample", "renumber"),
                                             ("visionzip", "renumber")])  # the last two: their own policy
@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decode_equals_rerun_prefill(adapters, family, case, positions):
    """Greedy decoding through the reduced KV cache (M-RoPE: the next positions follow the prompt's own, or the
    compact grid's) gives each step's logits that re-running the reduced prefill on the longer prompt gives."""
    if family == "llava_ov" and case == "downsample":
        pytest.skip("OneVision's tokens form no grid")
    adapter = adapters[family]
    _, (schedule, plain) = _method(family, case)
    scorer = {"fastv": ReplayScorer(LastTokenAttention(-1)), "sparsevlm": ReplayRaters(),
              "downsample": GridPooling(compose_config(f"model={FAMILIES[family]}").model.get("grid")),
              "visionzip": plain}[case]  # VisionZip selects on the image alone: the same on a longer prompt
    engine = adapter.engine(schedule, scorer, positions=positions)
    inputs = _inputs(adapter, family)
    with engine.attached():
        out = greedy_generate(adapter.model, engine, inputs, adapter.vision_mask(inputs["input_ids"]),
                              max_new_tokens=4, eos_token_ids={-1}, keep_logits=True)
        scorer.replay = True
        for step in range(4):
            longer = _extended(adapter, inputs, out.tokens[0][:step])
            logits, _ = _prefill(adapter, longer, engine)
            torch.testing.assert_close(out.step_logits[step][0], logits[0, -1].float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", MROPE)
def test_mrope_renumber_gives_a_smaller_images_positions(adapters, family):
    """Downsampling an image's 4x4 merged grid... to 2x2 with ``positions=renumber`` leaves the sequence at the
    3-D positions the model itself gives the prompt with a 2x2-grid image; ``keep`` leaves each cell at its
    top-left token's; and renumbering an unreduced prompt changes nothing."""
    adapter = adapters[family]
    big, small = (adapter.prepare([_image(s, s)], QUESTIONS[:1]) for s in (16, 8))
    assert big["image_grid_thw"].tolist() == [[1, 8, 8]] and small["image_grid_thw"].tolist() == [[1, 4, 4]]
    decoder = adapter.decoder
    vision = adapter.vision_mask(big["input_ids"])
    prompt = decoder.positions(big["position_ids"], 1)
    assert torch.equal(decoder.renumber(torch.ones_like(vision), vision, prompt), prompt)
    for positions in ("keep", "renumber"):
        engine = adapter.engine(KeepSchedule((0.25,) * LAYERS), GridPooling(), positions=positions)
        with engine.attached():
            _, ctx = _prefill(adapter, big, engine)
        if positions == "renumber":
            assert torch.equal(ctx.state.position_ids, decoder.positions(small["position_ids"], 1))
        else:
            kept = prompt[0, vision[0]].view(4, 4, 3)[::2, ::2].reshape(-1, 3)  # cells' top-left tokens
            assert torch.equal(ctx.state.position_ids[ctx.state.is_vision], kept)


REAL = {"qwen25vl_7b": ("Qwen/Qwen2.5-VL-7B-Instruct", 391, "tiny_random_qwen25vl"),
        "qwen2vl_7b": ("Qwen/Qwen2-VL-7B-Instruct", 391, "tiny_random_qwen2vl"),
        "llava_ov_7b": ("llava-hf/llava-onevision-qwen2-7b-ov-hf", 2929, "tiny_random_llava_ov"),
        "internvl3_8b": ("OpenGVLab/InternVL3-8B-hf", 3328, "tiny_internvl2"),
        "internvl25_8b": ("OpenGVLab/InternVL2_5-8B", 1792, "tiny_internvl2")}


@pytest.mark.parametrize("model", REAL)
def test_real_configs_plan_flops_without_weights(model):
    cfg = compose_config(f"model={model}", "run.mode=flops", "method=fastv", "method.r=0.5")
    assert cfg.model.repo_id == REAL[model][0] and cfg.model.dims.vision_tokens == REAL[model][1]
    report = plan_flops(cfg)
    n = REAL[model][1]
    assert report["keep"] == [n, n] + [int(n * 0.5)] * (cfg.model.dims.layers - 2)


def test_downsample_plans_qwens_merged_grid():
    cfg = compose_config("model=qwen25vl_7b", "run.mode=flops", "method=downsample", "budget=0.25")
    assert plan_flops(cfg)["keep"] == [8 * 11] * 28  # 17x23 pooled for 97.75 tokens, its aspect kept within a cell


def test_prepared_positions_are_the_models_own(adapters):
    """Qwen2-VL computes its 3-D positions itself when given none: the prepared ones give the same logits."""
    adapter = adapters["qwen2vl"]
    inputs = _inputs(adapter, "qwen2vl", (0, 1))
    with torch.no_grad():
        own = adapter.model(**{k: v for k, v in inputs.items() if k != "position_ids"}).logits
    prepared, _ = _prefill(adapter, inputs)
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(prepared[mask], own[mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", MROPE)
def test_greedy_decode_equals_hf_generate(adapters, family):
    """Our decode loop's positions (the prepared 3-D prompt positions, then one past the prompt's last) are the
    ones HF's own generate derives from ``rope_deltas``: same tokens for a left-padded batch."""
    adapter = adapters[family]
    inputs = _inputs(adapter, family, (0, 1))
    ours = greedy_generate(adapter.model, None, inputs, adapter.vision_mask(inputs["input_ids"]), max_new_tokens=5,
                           eos_token_ids={-1})
    plain = {k: v for k, v in inputs.items() if k != "position_ids"}
    with torch.no_grad():
        theirs = adapter.model.generate(**plain, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert ours.tokens == theirs[:, inputs["input_ids"].shape[1]:].tolist()


def test_qwen_vision_tower_macs_are_of_a_640x480_image(adapters):
    adapter = adapters["qwen2vl"]
    vision = adapter.model.config.vision_config
    t, h, w = adapter.prepare([_image(640, 480)], QUESTIONS[:1])["image_grid_thw"][0].tolist()
    n, d, m = t * h * w, vision.embed_dim, vision.embed_dim * vision.mlp_ratio
    assert adapter.vision_tower_macs() == vision.depth * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)


def _image_embeddings(adapter, inputs):
    """The decoder's input embeddings at the vision positions of a batch-1 prompt (the model's own)."""
    from test_models import _decoder_input

    embeds, vision = _decoder_input(adapter, inputs)
    return embeds[0, vision]


@pytest.mark.parametrize("family", ["qwen2vl", "qwen25vl", "llava_ov"])
def test_vision_probe_maps_patches_to_the_llm_tokens(adapters, family):
    """The probe's per-token pre-projector features, through the model's own projector, are the image embeddings
    the decoder receives, token by token (Qwen2.5-VL: back from window order; OneVision: through its AnyRes packing,
    newline tokens aside); the received attention of an image's tokens sums to one per head."""
    adapter = adapters[family]
    inputs = _inputs(adapter, family, (1,))
    probe = adapter.vision_probe()
    with probe.attached(), torch.no_grad():
        probe.reset()
        adapter.model(**{k: v for k, v in inputs.items() if k != "position_ids"})
        [record] = probe.per_sample([int(adapter.vision_mask(inputs["input_ids"]).sum())])
    expected = _image_embeddings(adapter, inputs)
    with torch.no_grad():
        if family in MROPE:
            merger = adapter.model.model.visual.merger
            width = record["features"].shape[-1] // 4
            projected = merger.mlp(merger.ln_q(record["features"].view(-1, 4, width)).view(-1, 4 * width))
            torch.testing.assert_close(record["attention"].sum(-1), torch.ones(record["attention"].shape[0]))
        else:
            projected = adapter.model.model.multi_modal_projector(record["features"])
            newline = (record["attention"] == 0).all(0)
            projected, expected = projected[~newline], expected[~newline]
            assert 0 < int(newline.sum()) < len(newline)
    torch.testing.assert_close(projected, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", MROPE)
def test_prepared_positions_do_not_depend_on_padding(adapters, family):
    adapter = adapters[family]
    single, batch = _inputs(adapter, family, (1,)), _inputs(adapter, family, (0, 1))
    n = single["input_ids"].shape[1]
    assert torch.equal(batch["position_ids"][:, 1, -n:], single["position_ids"][:, 0])
