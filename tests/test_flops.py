"""The analytic cost model against torch's FLOP counter, hand-computed LLaVA-1.5 numbers, and validation."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vtr_bench.reduction.flops import (
    DecoderDims,
    decode_macs_per_token,
    flops_report,
    kv_cache_bytes,
    layer_macs,
    prefill_macs,
    vision_tower_macs,
)

aten = torch.ops.aten


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU SDPA (torch registers no formula for it): QKᵀ and AV over all query heads, 2 per MAC."""
    batch, heads, queries, head_dim = query_shape
    return 2 * 2 * batch * heads * queries * key_shape[2] * head_dim


def counter() -> FlopCounterMode:
    return FlopCounterMode(display=False,
                           custom_mapping={aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops})


def tiny_llama(kv_heads: int, attn: str, head_dim: int | None = None, layers: int = 3):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=16, hidden_size=64, intermediate_size=172, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=head_dim,
                         attn_implementation=attn)
    return LlamaModel(config).eval(), config


def layer_flops(fc: FlopCounterMode, layers: int) -> int:
    counts = fc.get_flop_counts()
    return sum(sum(counts[f"LlamaModel.layers.{i}"].values()) for i in range(layers))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize(("kv_heads", "head_dim", "gqa_options"),
                         [(4, None, (False, True)), (2, None, (True,)), (2, 32, (True,))])
def test_prefill_matches_flop_counter(attn, kv_heads, head_dim, gqa_options):
    model, config = tiny_llama(kv_heads, attn, head_dim)
    dims = DecoderDims.from_hf_config(config)
    assert dims == DecoderDims(layers=3, hidden=64, ffn=172, heads=4, kv_heads=kv_heads, head_dim=head_dim or 16)
    n, text = 23, 7
    fc = counter()
    with torch.no_grad(), fc:
        model(inputs_embeds=torch.randn(1, n, 64), use_cache=False)
    for gqa in gqa_options:
        assert layer_flops(fc, dims.layers) / 2 == prefill_macs([n - text] * dims.layers, text, dims, gqa=gqa)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_pruned_prefill_and_decode_match_flop_counter(attn):
    """Layers run by hand: n tokens in layers < k, the first n' < n after; then one cached decode step."""
    from transformers import DynamicCache

    model, config = tiny_llama(2, attn, layers=4)
    dims = DecoderDims.from_hf_config(config)
    n, n_pruned, k, text = 20, 12, 2, 5
    h = torch.randn(1, n, 64)
    position_ids = torch.arange(n).unsqueeze(0)
    position_embeddings = model.rotary_emb(h, position_ids)
    cache = DynamicCache()
    fc = counter()
    with torch.no_grad(), fc:
        for i, layer in enumerate(model.layers):
            if i == k:
                h = h[:, :n_pruned]
                position_embeddings = tuple(t[:, :n_pruned] for t in position_embeddings)
            h = layer(h, position_embeddings=position_embeddings, past_key_values=cache, use_cache=True)
    keep = [n - text] * k + [n_pruned - text] * (dims.layers - k)
    assert fc.get_total_flops() / 2 == prefill_macs(keep, text, dims, gqa=True)
    assert [cache.get_seq_length(i) for i in range(dims.layers)] == [text + c for c in keep]
    assert kv_cache_bytes(keep, text, dims, bytes_per_value=4) == sum(
        layer.keys.numel() * 4 + layer.values.numel() * 4 for layer in cache.layers)

    step = torch.randn(1, 1, 64)
    step_position_embeddings = model.rotary_emb(step, torch.tensor([[n]]))
    fc = counter()
    with torch.no_grad(), fc:
        for layer in model.layers:
            step = layer(step, position_embeddings=step_position_embeddings, past_key_values=cache, use_cache=True)
    assert fc.get_total_flops() / 2 == decode_macs_per_token(keep, text, 1, dims, gqa=True)


def test_llava15_7b_fastv_by_hand():
    dims = DecoderDims(layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32)
    keep = [576] * 2 + [288] * 30  # FastV K=2, R=0.5
    report = flops_report(keep, n_vision=576, text_tokens=36, dims=dims, ffn="fastv")
    # FastV formula, C(n) = 4nd² + 2n²d + 2ndm = n·157,286,400 + 8,192·n²  (d=4096, m=11008):
    #   C(612) = 96,259,276,800 + 3,068,264,448 = 99,327,541,248     (36 text + 576 vision)
    #   C(324) = 50,960,793,600 +   859,963,392 = 51,820,756,992     (36 text + 288 vision)
    #   full      = 32·C(612)             = 3,178,481,319,936
    #   schedule  = 2·C(612) + 30·C(324)  = 1,753,277,792,256
    #   ratio     = 0.551608650...
    assert report["tflops_full"] == pytest.approx(3.178481319936, rel=1e-12)
    assert report["tflops"] == pytest.approx(1.753277792256, rel=1e-12)
    assert report["flops_ratio"] == pytest.approx(1_753_277_792_256 / 3_178_481_319_936, rel=1e-12)
    assert round(report["flops_ratio"], 6) == 0.551609
    assert report["budget"] == (2 * 576 + 30 * 288) / (32 * 576) == 0.53125
    assert report["equal_tokens"] == 306.0
    assert report["keep"] == keep
    # fp16 K and V: 2 · 4096 · (2·612 + 30·324) · 2 bytes
    assert report["kv_cache_bytes"] == 2 * 4096 * (2 * 612 + 30 * 324) * 2
    assert report["kv_cache_bytes_full"] == 2 * 4096 * 32 * 612 * 2
    # SwiGLU counts one more d×m projection: C(612) grows by 612·4096·11008.
    assert layer_macs(612, dims) - layer_macs(612, dims, ffn="fastv") == 612 * 4096 * 11008
    # gqa=True equals the plain formula when kv_heads == heads and heads·head_dim == d.
    assert prefill_macs(keep, 36, dims, gqa=True) == prefill_macs(keep, 36, dims)
    # CLIP ViT-L/14-336 up to LLaVA's feature layer (-2): 23 layers, 577 tokens, d=1024, MLP 4096.
    vit_layer = 4 * 577 * 1024**2 + 2 * 577**2 * 1024 + 2 * 577 * 1024 * 4096
    assert vision_tower_macs(577, 1024, 4096, 23) == 23 * vit_layer


def test_report_without_vision_tokens():
    dims = DecoderDims(layers=2, hidden=8, ffn=16, heads=2, kv_heads=1)
    report = flops_report([0, 0], n_vision=0, text_tokens=3, dims=dims)
    assert report["budget"] == 1.0 and report["flops_ratio"] == 1.0


@pytest.mark.parametrize(("keep", "match"), [
    ([4, 4], "3 layers"),
    ([4, 4, 9], "<= n_vision=8"),
    ([4, -1, 0], ">= 0"),
    ([4, 2, 3], "non-increasing"),
    ([4.5, 2, 1], "integer"),
])
def test_invalid_schedules(keep, match):
    dims = DecoderDims(layers=3, hidden=8, ffn=16, heads=2, kv_heads=2)
    with pytest.raises(ValueError, match=match):
        flops_report(keep, n_vision=8, text_tokens=2, dims=dims)


def test_invalid_ffn():
    with pytest.raises(ValueError, match="ffn must be one of"):
        layer_macs(4, DecoderDims(layers=1, hidden=8, ffn=16, heads=2, kv_heads=2), ffn="gelu")
