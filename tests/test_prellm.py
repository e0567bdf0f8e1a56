"""The 2026 baselines against references written here from their official code (not from ``vtr_bench.reduction``):
FasterVLM, VisionZip, VisPruner (the vision encoder's [CLS] attention: HF's own eager attention probabilities of the
feature layer, its keys and features recomputed here), DivPrune and CDPruner (projected tokens), DART (layer k-1's
keys and output, in the LLM). Each reference selects on one unpadded prompt and runs the HF decoder layers by hand
(test_official_references' Sequence); the engine runs the method as ``conf/method`` composes it, batch 1 and a
left-padded batch, on tiny random LLaVA (feature layer -2 of a 2-layer CLIP) and InternVL (2x2 pixel shuffle)
models. Asserted: the same vision tokens (kept ones and each merged one's members) and last-token logits."""
import math

import pytest
import torch
from test_configs import compose_config
from test_official_references import (
    LAYERS,
    Sequence,
    _decoder_input,
    _engine_run,
    _inputs,
    _sharpened,
    run_layer,
)

from conftest import IMAGE_TOKEN, make_random_llava
from vtr_bench.models.base import VLMAdapter
from vtr_bench.models.tiny import build_tiny_internvl2
from vtr_bench.run import plan_flops

GRID = 8


def _sharpen_vision(model, scale=3.0):
    """Random-init encoder attention is nearly uniform: sharpen its q/k so [CLS] rankings are well separated."""
    with torch.no_grad():
        for name, module in model.model.vision_tower.named_modules():
            if name.endswith(("q_proj", "k_proj")):
                module.weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def families():
    llava = make_random_llava(layers=LAYERS, image_size=4 * GRID, seed=3)
    llava.config.vision_feature_layer = -2  # LLaVA-1.5's penultimate layer (of 2 here)
    internvl, _ = build_tiny_internvl2({
        "image_size": 2 * 2 * GRID, "patch_size": 2, "vision_hidden_size": 32, "vision_intermediate_size": 64,
        "vision_layers": 2, "vision_heads": 2, "hidden_size": 64, "intermediate_size": 128, "num_layers": LAYERS,
        "num_heads": 4, "num_kv_heads": 2}, seed=4)
    return {"llava": (VLMAdapter(_sharpen_vision(_sharpened(llava))), IMAGE_TOKEN, 6, 64, 4 * GRID, None),
            "internvl": (VLMAdapter(_sharpen_vision(_sharpened(internvl))), internvl.config.image_token_id, 8,
                         internvl.config.text_config.vocab_size, 4 * GRID, None)}


# --- the vision encoder, read here -----------------------------------------------------------------------------------

def encoder_view(adapter, pixels):
    """Per LLM vision token of one image: the feature layer's [CLS] attention (heads, N) from HF's eager attention
    probabilities, its keys (mean over heads), and the projector's input features."""
    model = adapter.model
    tower, layer_index = model.model.vision_tower, model.config.vision_feature_layer
    if hasattr(tower, "vision_model"):  # CLIP (LLaVA): HF's eager attention probabilities; one patch per token
        previous = tower.config._attn_implementation
        tower.config._attn_implementation = "eager"
        try:
            with torch.no_grad():
                out = tower(pixels[None], output_hidden_states=True, output_attentions=True)
        finally:
            tower.config._attn_implementation = previous
        cls = out.attentions[layer_index][0, :, 0, 1:]  # softmax over all keys, [CLS] included
        layer_input = out.hidden_states[layer_index - 1][0]
        layer = tower.vision_model.encoder.layers[layer_index]
        keys = layer.self_attn.k_proj(layer.layer_norm1(layer_input))
        heads, groups = layer.self_attn.num_heads, torch.arange(cls.shape[1])[:, None]
        features = out.hidden_states[layer_index][0, 1:]
    else:  # InternViT (no attention output in HF): written out; 2x2 patches per token by the model's pixel shuffle
        layer, captured = tower.encoder.layer[layer_index], []
        handle = layer.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
        try:
            with torch.no_grad():
                out = tower(pixel_values=pixels[None])
        finally:
            handle.remove()
        attn, x = layer.attention, layer.layernorm_before(captured[0][0])
        q, keys = attn.q_norm(attn.q_proj(x)), attn.k_norm(attn.k_proj(x))
        heads = attn.num_heads
        q, k = (t.view(t.shape[0], heads, -1).transpose(0, 1) for t in (q, keys))
        cls = (q[:, :1] @ k.transpose(-1, -2) * attn.scale).softmax(-1)[:, 0, 1:]
        side = int(math.isqrt(cls.shape[1]))
        shuffle = model.model.pixel_shuffle
        groups = shuffle(torch.arange(side * side, dtype=torch.float).view(1, side, side, 1)).reshape(-1, 4).long()
        last = out.last_hidden_state[0, 1:].reshape(1, side, side, -1)
        features = shuffle(last).reshape(groups.shape[0], -1)
    keys = keys.view(keys.shape[0], heads, -1).mean(1)[1:]
    with torch.no_grad():
        return cls[:, groups].sum(-1), keys[groups].mean(1), features


# --- the references ---------------------------------------------------------------------------------------------------

def _cos(x, y=None):
    x = x / x.norm(dim=-1, keepdim=True)
    y = x if y is None else y / y.norm(dim=-1, keepdim=True)
    return x @ y.T


def divprune_pick(x, k):
    """vbdi/divprune: first the token whose nearest other token is farthest (1 - cosine), then the farthest from
    its nearest selected one."""
    d = 1 - _cos(x)
    n = len(x)
    chosen = [int(torch.stack([torch.cat([d[:j, j], d[j + 1:, j]]).min() for j in range(n)]).argmax())]
    while len(chosen) < k:
        score = torch.stack([d[chosen, j].min() if j not in chosen else torch.tensor(-1.0) for j in range(n)])
        chosen.append(int(score.argmax()))
    return chosen


def dpp_pick(kernel, k):
    """Greedy MAP by brute force: each step adds the token that maximises det(L[S])."""
    chosen = []
    for _ in range(k):
        gains = [torch.linalg.det(kernel[chosen + [j]][:, chosen + [j]].double()) if j not in chosen else -1.0
                 for j in range(len(kernel))]
        chosen.append(int(torch.tensor([float(g) for g in gains]).argmax()))
    return chosen


def vispruner_pick(cls, features, k, ratio):
    order = cls.mean(0).sort(descending=True, stable=True).indices.tolist()
    important, target = order[:int(k * ratio)], k - int(k * ratio)
    residual, fn = order[int(k * ratio):], features / features.norm(dim=-1, keepdim=True)
    while target > 0 and (step := min(8, len(residual) - target)) > 0:
        even, odd = residual[0::2], residual[1::2]
        best = [max(float(fn[a] @ fn[b]) for b in odd) for a in even]
        even = [even[i] for i in sorted(range(len(even)), key=lambda i: -best[i])]
        residual = even[step:] + odd
    return important + (residual if target > 0 else [])


def prellm_reference(adapter, embeds, vision_mask, kind, params, pixels):
    """Select on layer 0's input as the official method does, then run every layer by hand (renumbered)."""
    seq = Sequence(embeds, vision_mask)
    slots = seq.vision
    k, n = params["keep"], len(slots)
    x = embeds[0, slots]
    merged = []
    if kind in ("fastervlm", "visionzip", "vispruner"):
        cls, keys, features = encoder_view(adapter, pixels)
    if kind == "fastervlm":
        chosen = cls.mean(0).sort(descending=True, stable=True).indices[:k].tolist()
    elif kind == "divprune":
        chosen = divprune_pick(x, k)
    elif kind == "cdpruner":
        text = embeds[0, slots[-1] + 1:]
        rel = (-_cos(x, text)).mean(-1)
        r = (rel - rel.min() + 1e-6) / (rel.max() - rel.min())
        chosen = dpp_pick(r[:, None] * _cos(x) * r[None, :], k)
    elif kind == "vispruner":
        chosen = vispruner_pick(cls, features, k, params["ratio"])
    else:  # visionzip: dominant by [CLS] attention summed over heads; contextual = target + mean of its tokens
        contextual = math.floor(k * 10 / 64 + 0.5)
        chosen = cls.sum(0).sort(descending=True, stable=True).indices[:k - contextual].tolist()
        rest = [i for i in range(n) if i not in chosen]
        targets = [rest[i] for i in range(0, len(rest), max(1, len(rest) // contextual))][:contextual]
        others = [i for i in rest if i not in targets]
        assign = _cos(keys[others], keys[targets]).argmax(-1).tolist()
        for g, t in enumerate(targets):
            members = [o for o, a in zip(others, assign) if a == g]
            extra = torch.stack([x[m] for m in members]).mean(0) if members else torch.zeros_like(x[t])
            merged.append((x[t] + extra, tuple(sorted(slots[i] for i in [t] + members))))
    seq.rebuild({slots[i] for i in chosen}, merged, renumber=True)
    trace = {0: seq.token_sets()}
    with torch.no_grad():
        for index in range(LAYERS):
            seq.hidden = run_layer(adapter, index, seq.hidden, seq.pos)
        lm = adapter.language_model
        return adapter.model.lm_head(lm.norm(seq.hidden))[0, -1], trace


def dart_reference(adapter, embeds, vision_mask, params):
    """DART at layer k: pivots by the L1 norm of layer k-1's RoPE'd keys (4 vision + 4 text after the image), each
    taking (in sequence order) its quota of the lowest-cosine vision tokens in the final-norm space; original
    positions kept."""
    seq, lm = Sequence(embeds, vision_mask), adapter.language_model
    trace, previous = {}, None
    with torch.no_grad():
        for index in range(LAYERS):
            if index == params["k"]:
                layer = adapter.decoder_layers[index - 1]
                x = layer.input_layernorm(previous)
                cos, sin = lm.rotary_emb(previous, seq.pos)
                keys = layer.self_attn.k_proj(x).view(1, x.shape[1], -1, layer.self_attn.head_dim).transpose(1, 2)
                half = keys.shape[-1] // 2
                keys = keys * cos[:, None] + torch.cat([-keys[..., half:], keys[..., :half]], -1) * sin[:, None]
                l1 = keys.abs().sum((1, 3))[0]
                vision = seq.vision
                text = list(range(vision[-1] + 1, seq.hidden.shape[1]))
                top = lambda cands, m: sorted(cands, key=lambda s: -float(l1[s]))[:m]  # noqa: E731
                image_pivots = top(vision, 4)
                pivots = sorted(image_pivots + top(text, 4))
                space = lm.norm(seq.hidden)[0]
                kept, candidates = set(image_pivots), [s for s in vision if s not in image_pivots]
                picks = params["keep"] - 4
                for i, p in enumerate(pivots):
                    quota = picks // len(pivots) + (i < picks % len(pivots))  # fewer text tokens: fewer pivots
                    sim = _cos(space[p:p + 1], space[candidates])[0]
                    take = [candidates[j] for j in sim.sort(stable=True).indices[:quota].tolist()]
                    kept |= set(take)
                    candidates = [c for c in candidates if c not in take]
                seq.rebuild(kept, [], renumber=False)
                trace[index] = seq.token_sets()
            previous = seq.hidden
            seq.hidden = run_layer(adapter, index, seq.hidden, seq.pos)
        return adapter.model.lm_head(lm.norm(seq.hidden))[0, -1], trace


CASES = {  # name: (config overrides, vision tokens kept of the 64)
    "fastervlm": (["method=fastervlm", "method.tokens=144"], 16),  # 144/576 of 64
    "visionzip": (["method=visionzip", "method.tokens=192"], 21),  # 18 dominant + 3 contextual
    "divprune": (["method=divprune"], 6),  # round(0.098 * 64)
    "vispruner": (["method=vispruner", "method.preset=128"], 14),  # 7 important + 7 diverse
    "cdpruner": (["method=cdpruner", "method.tokens=128"], 14),
    "dart": (["method=dart", "method.preset=192"], 22),  # 196/576 of 64 = 21.8 -> 22: 4 pivots + 18 picks
}


@pytest.mark.parametrize("batch", ["single", "padded"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("family", ["llava", "internvl"])
def test_engine_equals_the_official_algorithm(families, family, case, batch):
    overrides, keep = CASES[case]
    rows = [(4, 6, 1)] if batch == "single" else [(2, 3, 1), (5, 9, 2)]
    adapter, prompts, pixels = _inputs(families[family], rows)
    logits, ctx = _engine_run(adapter, compose_config(*overrides), prompts, pixels)
    engine_sets = ctx.token_sets()
    for b, prompt in enumerate(prompts):
        embeds = _decoder_input(adapter, prompt, pixels[b])
        vision = prompt == adapter.image_token_id
        if case == "dart":
            expected, sets = dart_reference(adapter, embeds, vision, {"k": 2, "keep": keep})
        else:
            params = {"keep": keep, "ratio": 0.5}
            expected, sets = prellm_reference(adapter, embeds, vision, case, params, pixels[b])
        pad = ctx.vision_mask.shape[1] - len(prompt)
        assert sorted(sets) == sorted(engine_sets) and ctx.processed_counts()[b][-1] == keep
        for layer, tokens in sets.items():
            got = {tuple(i - pad for i in t) for t in engine_sets[layer][b]}
            assert got == tokens, f"layer {layer}: different vision tokens"
        torch.testing.assert_close(logits[b], expected, atol=2e-5, rtol=0)


def test_visionzip_merges_contextual_tokens_and_the_engine_tags_stages():
    from vtr_bench.methods import DART, CDPruner, DivPrune, FasterVLM, VisionZip, VisPruner

    assert [m.stage for m in (FasterVLM(), VisionZip(), DivPrune(), VisPruner(), CDPruner())] == ["pre-LLM"] * 5
    assert DART().stage == "in-LLM" and {m.attention for m in (FasterVLM(), VisionZip(), VisPruner())} == {"encoder"}
    assert {m.attention for m in (DivPrune(), CDPruner(), DART())} == {"none"}
    assert VisionZip(preset=64).label(None) == "VisionZip 64 tokens (54 dominant + 10 contextual)"


@pytest.mark.parametrize("method, preset, kept", [
    ("fastervlm", "75", 144), ("fastervlm", "90", 58), ("fastervlm", "95", 29),
    ("visionzip", "64", 64), ("visionzip", "128", 128), ("visionzip", "192", 192),
    ("vispruner", "64", 64), ("cdpruner", "128", 128), ("divprune", "192", 192)])
def test_flops_mode_shows_the_published_presets(method, preset, kept):
    report = plan_flops(compose_config("model=llava15_7b", "run.mode=flops", f"method={method}",
                                       f"method.preset={preset}"))
    assert report["keep"] == [kept] * 32 and report["positions"] == "renumber"


@pytest.mark.parametrize("preset, kept", [("64", 68), ("128", 132), ("192", 196)])
def test_flops_mode_shows_darts_counts(preset, kept):
    report = plan_flops(compose_config("model=llava15_7b", "run.mode=flops", "method=dart", f"method.preset={preset}"))
    assert report["keep"] == [576] * 2 + [kept] * 30 and report["label"] == f"DART {preset} tokens ({kept} kept)"
    assert plan_flops(compose_config("model=llava15_7b", "run.mode=flops", "method=divprune"))["keep"] == [56] * 32


@pytest.mark.parametrize("method", ["fastervlm", "visionzip", "divprune", "vispruner", "cdpruner", "dart"])
@pytest.mark.parametrize("budget", [0.5, 0.3, 0.125])
def test_budgets_are_met(method, budget):
    from vtr_bench.run import instantiate_method

    cfg = compose_config(f"method={method}")
    schedule = instantiate_method(cfg.method).schedule(32, budget)
    for n in (576, 144, 2340):
        assert sum(schedule.counts(n)) / (32 * n) == pytest.approx(budget, abs=1 / n)


