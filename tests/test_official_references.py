"""Every baseline against a reference written here from its official code's algorithm, not from
``vtr_bench.reduction``: FastV (pkunlp-icler/FastV), PyramidDrop (Cooperx521/PyramidDrop), SparseVLM v1.5 with and
without token recycling (Gumpest/SparseVLMs, branch v1.5), and the random and downsampling controls (our documented
conventions). Each reference runs the HF decoder layers by hand, batch 1, no cache, with its own attention maths,
selection, clustering, pooling and position policy; the engine runs the method as ``conf/method`` composes it (its
own position policy and rounding), on tiny random LLaVA (Llama) and InternVL (Qwen2) decoders, batch 1 and a
left-padded batch. Asserted: the same vision tokens (kept ones and the members of every merged one) after every
reducing layer, and last-token logits within float32 tolerance. On a tiny random Qwen2-VL (3-D M-RoPE) the
references apply RoPE by its sections themselves and renumber by the compact grid (test_engine.compact_grid)."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import IMAGE_TOKEN, left_pad, make_random_llava
from test_configs import compose_config
from test_engine import compact_grid
from vtr_bench.models.base import VLMAdapter
from vtr_bench.models.qwen2_vl import Qwen2VLAdapter
from vtr_bench.models.tiny import build_tiny_internvl2
from vtr_bench.models.tiny_random import QWEN_TOKENS, build_tiny_qwen2_vl
from vtr_bench.run import instantiate_method, position_policy

LAYERS = 8
GRID = 8
N = GRID * GRID  # vision tokens per image
PRESET_192 = (300, 200, 110)  # SparseVLM v1.5's counts for 576 tokens (score.py)
SPARSEVLM_PRUNING = (1, 2, 4)  # its pruning layers 2 / 6 / 15 of 32, scaled to 8 layers (round half up)


# --- models and prompts ---------------------------------------------------------------------------------------------

def _sharpened(model, scale=6.0):
    """Random-init attention is nearly uniform, so rankings would hinge on float noise: scale every q/k projection
    (attention logits x scale²) so that scores are well separated (``Sequence.top`` checks the margin)."""
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight.mul_(scale)
                if proj.bias is not None:
                    proj.bias.mul_(scale)
    return model


@pytest.fixture(scope="module")
def families():
    llava = VLMAdapter(_sharpened(make_random_llava(layers=LAYERS, image_size=4 * GRID, seed=3)))
    internvl, _ = build_tiny_internvl2({
        "image_size": 2 * 2 * GRID, "patch_size": 2, "vision_hidden_size": 32, "vision_intermediate_size": 64,
        "vision_layers": 2, "vision_heads": 2, "hidden_size": 64, "intermediate_size": 128, "num_layers": LAYERS,
        "num_heads": 4, "num_kv_heads": 2}, seed=4)
    qwen, processor = build_tiny_qwen2_vl({"num_layers": LAYERS}, seed=5)  # a 32 px image: 8x8 merged tokens
    ids = {k: processor.tokenizer.convert_tokens_to_ids(v) for k, v in QWEN_TOKENS.items()}
    return {"llava": (llava, IMAGE_TOKEN, 6, 64, 4 * GRID, None),
            "internvl": (VLMAdapter(_sharpened(internvl)), internvl.config.image_token_id, 8,
                         internvl.config.text_config.vocab_size, 4 * GRID, None),
            "qwen2vl": (Qwen2VLAdapter(_sharpened(qwen), processor), ids["image_token"], 16, len(processor.tokenizer),
                        4 * GRID, (ids["vision_start_token"], ids["vision_end_token"]))}


def _prompt(image_token, low, high, before, after, seed, wrap=None):
    g = torch.Generator().manual_seed(seed)
    image = torch.full((N,), image_token)
    if wrap is not None:  # Qwen2-VL: <|vision_start|> image pads <|vision_end|>
        image = torch.cat([torch.tensor(wrap[:1]), image, torch.tensor(wrap[1:])])
    return torch.cat([torch.randint(low, high, (before,), generator=g), image,
                      torch.randint(low, high, (after,), generator=g)])


def _inputs(family, rows):
    adapter, image_token, low, high, size, wrap = family
    prompts = [_prompt(image_token, low, high, before, after, seed, wrap) for before, after, seed in rows]
    shape = (size * size // 4, 3 * 2 * 2 * 2) if wrap else (3, size, size)  # Qwen: flattened 2x2x2 patches
    pixels = torch.randn(len(rows), *shape, generator=torch.Generator().manual_seed(7))
    return adapter, prompts, pixels


def _model_inputs(adapter, ids, mask, pixels):
    """Model inputs of a left-padded batch: padding-independent positions (Qwen2-VL: its own 3-D ones)."""
    if not isinstance(adapter, Qwen2VLAdapter):
        return dict(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    side = int(math.isqrt(pixels.shape[1]))
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels.flatten(0, 1),
                  image_grid_thw=torch.tensor([[1, side, side]] * len(ids)))
    return {**inputs, "position_ids": adapter.position_ids(inputs)}


def _start_positions(adapter, ids, pixels):
    """RoPE positions of one unpadded prompt, in the layout the rotary module takes."""
    return _model_inputs(adapter, ids[None], torch.ones_like(ids[None]), pixels[None])["position_ids"]


def _decoder_input(adapter, ids, pixels):
    """The decoder's input embeddings of one unpadded prompt (an unreduced forward, captured at layer 0)."""
    captured = []
    handle = adapter.decoder_layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: captured.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    try:
        with torch.no_grad():
            adapter.model(**_model_inputs(adapter, ids[None], torch.ones_like(ids[None]), pixels[None]))
    finally:
        handle.remove()
    return captured[0]


# --- the references -------------------------------------------------------------------------------------------------

def _rotate(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def attention(adapter, index, hidden, pos):
    """Layer ``index``'s causal softmax attention on ``hidden`` (1, n, d) at RoPE positions ``pos``, mean over heads:
    (n, n). Written out: input norm, q/k projections, RoPE, GQA repeat, scaled logits, causal mask, softmax."""
    layer = adapter.decoder_layers[index]
    attn, x = layer.self_attn, layer.input_layernorm(hidden)[0]
    n, head_dim = x.shape[0], attn.head_dim
    q = attn.q_proj(x).view(n, -1, head_dim).transpose(0, 1)
    k = attn.k_proj(x).view(n, -1, head_dim).transpose(0, 1)
    cos, sin = adapter.language_model.rotary_emb(hidden, pos)
    if cos.dim() == 4:  # M-RoPE: head-dim sections t / h / w / t / h / w take their axis' rotation
        sections = adapter.text_config.rope_scaling["mrope_section"] * 2
        axis = torch.cat([torch.full((size,), i % 3) for i, size in enumerate(sections)])
        cos, sin = (t[axis, 0, :, torch.arange(head_dim)].T for t in (cos, sin))  # (n, head_dim)
    q, k = q * cos + _rotate(q) * sin, k * cos + _rotate(k) * sin
    k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
    logits = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
    logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return logits.softmax(-1).mean(0)


def run_layer(adapter, index, hidden, pos):
    """One HF decoder layer, batch 1, causal, no cache."""
    cos, sin = adapter.language_model.rotary_emb(hidden, pos)
    out = adapter.decoder_layers[index](hidden, attention_mask=None, position_ids=pos, position_embeddings=(cos, sin))
    return out[0] if isinstance(out, tuple) else out


def sparsevlm_clusters(x, clusters):
    """SparseVLM's ``cluster_and_merge`` (DPC-kNN): kNN with k = clusters (self included), density
    exp(-mean d²), delta = distance to the nearest strictly denser token (else the largest distance), centres the
    top density·delta in that order, every token to its nearest centre (ties: the earlier centre); returns each
    token's cluster."""
    dist = torch.cdist(x, x) / math.sqrt(x.shape[1])
    density = torch.exp(-(dist.topk(clusters, dim=-1, largest=False).values ** 2).mean(-1))
    denser = density[None, :] > density[:, None]
    delta = (dist * denser + dist.max() * ~denser).min(-1).values
    # Mutual nearest neighbours have equal densities, so two centres can tie on density·delta: SparseVLM's topk
    # leaves their order to the kernel; the documented rule is the earlier token first.
    centres = (density * delta).argsort(descending=True, stable=True)[:clusters]
    assign = dist[centres].argmin(0)
    assign[centres] = torch.arange(clusters)
    return assign


class Sequence:
    """One sample's tokens during the reference prefill: hidden states, RoPE positions, original index (-1: merged)
    and, for vision tokens, the prompt indices each holds."""

    def __init__(self, embeds, vision, pos=None):
        self.hidden, self.pos = embeds, torch.arange(embeds.shape[1])[None] if pos is None else pos
        self.orig = list(range(embeds.shape[1]))
        self.members = [(i,) if v else None for i, v in enumerate(vision.tolist())]

    @property
    def vision(self):
        return [s for s, m in enumerate(self.members) if m is not None]

    def rebuild(self, kept, merged, renumber, anchors=None):
        """Non-vision tokens and the ``kept`` vision slots in order, then the ``merged`` (hidden, members) tokens
        right after the image, at the last vision token's position (or at the ``anchors`` slots' positions);
        positions renumbered (0..n-1; M-RoPE: the compact grid) or kept."""
        vision = self.vision
        after = [s for s in range(vision[-1] + 1) if s not in vision or s in kept]
        rest = list(range(vision[-1] + 1, len(self.orig)))
        hidden = [self.hidden[0, s] for s in after] + [h for h, _ in merged] + [self.hidden[0, s] for s in rest]
        pos = self.pos[..., after + (anchors or [vision[-1]] * len(merged)) + rest]
        self.members = [self.members[s] for s in after] + [m for _, m in merged] + [self.members[s] for s in rest]
        self.orig = [self.orig[s] for s in after] + [-1] * len(merged) + [self.orig[s] for s in rest]
        self.hidden = torch.stack(hidden)[None]
        if renumber and pos.dim() == 3:  # M-RoPE
            pos = compact_grid(pos, torch.tensor([m is not None for m in self.members]))
        self.pos = torch.arange(len(hidden))[None] if renumber and pos.dim() == 2 else pos

    def top(self, scores, k):
        """The ``k`` best-scoring vision slots, in sequence order; the k-th and the next score must differ by more
        than float noise (else the case would test rounding, not the algorithm)."""
        vision = torch.tensor(self.vision)
        ranked = scores[vision].sort(descending=True, stable=True)
        if 0 < k < len(vision):
            assert ranked.values[k - 1] - ranked.values[k] > 1e-5 * ranked.values[0], "near-tie at the cut"
        return set(vision[ranked.indices[:k]].tolist())

    def token_sets(self):
        return {tuple(sorted(self.members[s], key=int)) for s in self.vision}


def _flatten(members):
    return tuple(sorted(i for m in members for i in m))


def reference(adapter, embeds, kind, params):
    """The method's official prefill on one prompt: last-token logits and the token sets after each reduction,
    keyed by the first layer that sees them."""
    seq = Sequence(embeds, params["vision"], params.get("pos"))
    trace, n = {}, N
    previous_hidden = previous_pos = None  # the last layer's input (FastV ranks with layer K-1's attention)
    raters = None
    if kind == "sparsevlm":  # text after the image whose mean relevance softmax_t(v . t) beats the mean
        vision = seq.vision
        text = list(range(vision[-1] + 1, embeds.shape[1]))
        relevance = (embeds[0, vision] @ embeds[0, text].T).softmax(-1).mean(0)
        raters = {t for t, m in zip(text, relevance) if m > relevance.mean()}
    with torch.no_grad():
        for index in range(LAYERS):
            if kind in ("fastv", "random") and index == params["k"]:
                if kind == "fastv":  # layer K-1's attention from the last token
                    scores = attention(adapter, index - 1, previous_hidden, previous_pos)[-1]
                else:  # one seeded uniform draw per layer, by vision ordinal
                    table = torch.rand(n, generator=torch.Generator().manual_seed(params["seed"] + index))
                    scores = torch.zeros(len(seq.orig))
                    scores[seq.vision] = table
                seq.rebuild(seq.top(scores, int(n * (1 - params["r"]))), [], renumber=False)  # int(): floor
                trace[index] = seq.token_sets()
            if kind == "pdrop" and index in params["layers"]:  # this layer's q/k on the undropped sequence
                stage = params["layers"].index(index) + 1
                scores = attention(adapter, index, seq.hidden, seq.pos)[-1]
                seq.rebuild(seq.top(scores, int(n * params["lam"] ** stage)), [], renumber=True)
                trace[index] = seq.token_sets()
            if kind == "downsample" and index == 0:  # 2x2 average pooling of the grid, cells in raster order
                vision = seq.vision
                grid = seq.hidden[0, vision].T.reshape(1, -1, GRID, GRID)
                pooled = F.avg_pool2d(grid, 2)[0].flatten(1).T
                cells = torch.tensor(vision).view(GRID // 2, 2, GRID // 2, 2).permute(0, 2, 1, 3).reshape(-1, 4)
                seq.rebuild(set(), [(h, tuple(c.tolist())) for h, c in zip(pooled, cells)], renumber=True,
                            anchors=cells[:, 0].tolist())  # a cell at its top-left token's position
                trace[index] = seq.token_sets()
            previous_hidden, previous_pos = seq.hidden, seq.pos
            seq.hidden = run_layer(adapter, index, seq.hidden, seq.pos)
            if kind == "sparsevlm" and index in SPARSEVLM_PRUNING:  # prune this layer's output
                stage = SPARSEVLM_PRUNING.index(index)
                probs = attention(adapter, index, previous_hidden, previous_pos)
                rows = [s for s, o in enumerate(seq.orig) if o in raters]
                scores = probs[rows].mean(0)
                vision = seq.vision
                keep = math.floor(PRESET_192[stage] * n / 576 + 0.5)
                kept = seq.top(scores, keep)
                merged = []
                dropped = [s for s in vision if s not in kept]
                if params["recycle"] and dropped:
                    pool_size = int(params["recycle"] * len(dropped)) + 1
                    pool = sorted(seq.top(scores, keep + pool_size) - kept)
                    clusters = int(pool_size / 10) + 1
                    assign = sparsevlm_clusters(seq.hidden[0, pool], clusters)
                    merged = [(seq.hidden[0, pool][assign == g].mean(0),
                               _flatten([seq.members[pool[i]] for i in (assign == g).nonzero().flatten()]))
                              for g in range(clusters)]
                seq.rebuild(kept, merged, renumber=True)
                trace[index + 1] = seq.token_sets()
        lm = adapter.language_model
        return adapter.model.lm_head(lm.norm(seq.hidden))[0, -1], trace


# --- engine vs reference --------------------------------------------------------------------------------------------

CASES = {  # name: (config overrides, reference kind, reference parameters)
    "fastv": (["method=fastv", "method.r=0.3"], "fastv", {"k": 2, "r": 0.3}),  # int(64 * 0.7) = 44 (round: 45)
    "random": (["method=random", "method.r=0.3", "seed=5"], "random", {"k": 2, "r": 0.3, "seed": 5}),
    "pdrop": (["method=pdrop", "method.lam=0.6"], "pdrop", {"layers": [2, 4, 6], "lam": 0.6}),  # 38 / 23 / 13
    "sparsevlm": (["method=sparsevlm"], "sparsevlm", {"recycle": 0.3}),
    "sparsevlm_no_recycling": (["method=sparsevlm", "method.recycle=0"], "sparsevlm", {"recycle": 0.0}),
    "downsample": (["method=downsample", "budget=0.25"], "downsample", {}),
}


def _engine_run(adapter, cfg, prompts, pixels):
    method = instantiate_method(cfg.method)
    schedule, scorer = method.build(LAYERS, cfg.budget, cfg.seed)
    engine = adapter.engine(schedule, scorer, positions=position_policy(cfg))
    ids, mask = left_pad(prompts)
    with engine.attached(), torch.no_grad():
        with engine.request(adapter.vision_mask(ids), mask, trace=True) as ctx:
            logits = adapter.model(**_model_inputs(adapter, ids, mask, pixels)).logits
    return logits[:, -1], ctx


@pytest.mark.parametrize("batch", ["single", "padded"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("family", ["llava", "internvl", "qwen2vl"])
def test_engine_equals_the_official_algorithm(families, family, case, batch):
    overrides, kind, params = CASES[case]
    rows = [(4, 6, 1)] if batch == "single" else [(2, 3, 1), (5, 9, 2)]
    adapter, prompts, pixels = _inputs(families[family], rows)
    cfg = compose_config(*overrides)
    logits, ctx = _engine_run(adapter, cfg, prompts, pixels)
    engine_sets = ctx.token_sets()
    for b, prompt in enumerate(prompts):
        embeds = _decoder_input(adapter, prompt, pixels[b])
        params = {**params, "vision": prompt == adapter.image_token_id, "seed": params.get("seed", 0),
                  "pos": _start_positions(adapter, prompt, pixels[b])}
        expected, sets = reference(adapter, embeds, kind, params)
        pad = ctx.vision_mask.shape[1] - len(prompt)  # left padding of this row
        assert sorted(sets) == sorted(engine_sets), "reducing layers differ"
        for layer, tokens in sets.items():
            got = {tuple(i - pad for i in t) for t in engine_sets[layer][b]}
            assert got == tokens, f"layer {layer}: different vision tokens"
        torch.testing.assert_close(logits[b], expected, atol=2e-5, rtol=0)


def test_the_cases_exercise_what_they_claim(families):
    """Floor counts, re-merged cluster tokens and a multi-cluster stage are really exercised."""
    adapter, prompts, pixels = _inputs(families["llava"], [(4, 6, 1)])
    sizes = {}
    for case in ("fastv", "pdrop", "sparsevlm"):
        _, ctx = _engine_run(adapter, compose_config(*CASES[case][0]), prompts, pixels)
        sizes[case] = {layer: sorted(len(t) for t in sets[0]) for layer, sets in ctx.token_sets().items()}
    assert {layer: len(s) for layer, s in sizes["fastv"].items()} == {2: 44}
    assert {layer: len(s) for layer, s in sizes["pdrop"].items()} == {2: 38, 4: 23, 6: 13}
    # SparseVLM: 64 -> 33 kept + 2 clusters (pool 10) -> 22 + 1 (pool 4) -> 12 + 1 (pool 4)
    assert {layer: len(s) for layer, s in sizes["sparsevlm"].items()} == {2: 35, 3: 23, 5: 13}
    assert sum(sizes["sparsevlm"][2][-2:]) == 10 and max(sizes["sparsevlm"][5]) > 1
