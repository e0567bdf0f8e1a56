"""SparseVLM, PyramidDrop and downsampling: published counts, budgets, merge plans, and the engine against slow
references that build every reduced sequence token by token (HF eager attention as the ranking oracle)."""
import pytest
import torch

from conftest import left_pad, make_prompt, make_random_llava
from test_configs import compose_config
from test_engine import (
    _eager_attention,
    _prefill_logits,
    _prompt_embeddings,
    _run_layer,
    assert_batch_equals_single_runs,
)
from test_generate import ReplayScorer, assert_cached_decode_equals_rerun
from vtr_bench.errors import ConfigError
from vtr_bench.methods import Downsample, PyramidDrop, SparseVLM
from vtr_bench.models.base import VLMAdapter
from vtr_bench.reduction.merging import density_peak_clusters, grid_cells, pooled_grid
from vtr_bench.reduction.scoring import GridPooling, TextRaterAttention
from vtr_bench.run import plan_flops

GRID = 8  # the test model sees an 8x8 grid of vision tokens
N_VISION = GRID * GRID


# --- schedules: published counts, budgets, depths -------------------------------------------------------------

def _flops(*overrides):
    return plan_flops(compose_config("model=llava15_7b", "run.mode=flops", *overrides))


@pytest.mark.parametrize("preset, counts", [(192, (300, 200, 110)), (128, (303, 110, 36)), (64, (66, 30, 17))])
def test_flops_mode_shows_sparsevlm_presets(preset, counts):
    report = _flops("method=sparsevlm", f"method.preset={preset}")
    # pruning layers 2/6/15 prune their outputs: layers 3, 7 and 16 are the first to see each count
    assert report["keep"] == [576] * 3 + [counts[0]] * 4 + [counts[1]] * 9 + [counts[2]] * 16


def test_flops_mode_shows_pdrop_default_and_downsample_grid():
    assert _flops("method=pdrop")["keep"] == [576] * 8 + [288] * 8 + [144] * 8 + [72] * 8
    report = _flops("method=downsample", "budget=0.125")
    assert report["keep"] == [72] * 32 and report["budget"] == 0.125  # 24x24 pooled to 8x9


@pytest.mark.parametrize("layers, n_vision", [(32, 576), (40, 576), (8, 144)])
@pytest.mark.parametrize("budget", [0.9, 0.5, 1 / 3, 0.3, 0.26])
@pytest.mark.parametrize("method", [SparseVLM(), SparseVLM(preset=128), PyramidDrop()],
                         ids=["sparsevlm", "sparsevlm128", "pdrop"])
def test_budgets_are_met(method, budget, layers, n_vision):
    schedule, _ = method.build(layers, budget)
    assert schedule.budget == pytest.approx(budget, abs=1e-9)
    assert abs(schedule.achieved_budget(n_vision) - budget) <= 0.5 / n_vision


def test_sparsevlm_low_budgets_use_the_nearest_preset_profile():
    schedule, _ = SparseVLM().build(32, 0.125)
    counts = schedule.counts(576)
    assert schedule.budget == pytest.approx(0.125) and counts[:3] == [576] * 3
    assert SparseVLM().profile(0.125) == 64 and SparseVLM().profile(0.3) == 192
    scale = counts[3] / 66
    assert [counts[6], counts[15]] == [round(scale * 66), round(scale * 30)] and counts[16] == round(scale * 17)


@pytest.mark.parametrize("method, budget, lowest", [(PyramidDrop(), 0.125, "0.25"), (SparseVLM(), 0.05, "0.09375")])
def test_unreachable_budgets_say_why(method, budget, lowest):
    with pytest.raises(ConfigError, match=f"lowest budget of this 32-layer schedule is {lowest}"):
        method.build(32, budget)


def test_layers_scale_with_depth_and_are_configurable():
    assert [SparseVLM().stage_starts(n) for n in (32, 40, 8, 6)] == [[3, 7, 16], [4, 9, 20], [2, 3, 5], [1, 2, 4]]
    assert [PyramidDrop().stage_starts(n) for n in (32, 40, 8, 6)] == [[8, 16, 24], [10, 20, 30], [2, 4, 6], [2, 3, 5]]
    assert PyramidDrop(layers=[1, 2, 3], lam=0.5).build(4, None)[0].counts(8) == [8, 4, 2, 1]
    with pytest.raises(ConfigError, match="strictly increasing"):
        PyramidDrop(layers=[4, 2, 3]).build(8, None)
    with pytest.raises(ConfigError, match="either budget or method.lam"):
        PyramidDrop(lam=0.5).build(8, 0.5)
    with pytest.raises(ConfigError, match="preset"):
        SparseVLM(preset=100)


# --- merge plans ------------------------------------------------------------------------------------------------

def test_pooled_grid_maps_budgets_to_near_square_grids():
    assert pooled_grid(24, 24, 192) == (14, 14) and pooled_grid(24, 24, 72) == (8, 9)
    assert pooled_grid(12, 12, 0.3 * 144) == (6, 7) and pooled_grid(12, 12, 42) == (6, 7)
    assert pooled_grid(16, 24, 96) == (8, 12)
    assert Downsample(576).schedule(32, 1 / 3).counts(576) == [196] * 32
    assert Downsample(144).schedule(8, None).counts(144) == [36] * 8  # 2x2 pooling
    with pytest.raises(ConfigError, match="square grid"):
        Downsample(150)


def test_grid_cells_partition_the_grid_into_near_equal_cells():
    cells = grid_cells(8, 8, 4, 5).view(8, 8)
    assert cells[0].tolist() == [0, 1, 1, 2, 3, 3, 4, 4] and cells[:, 0].tolist() == [0, 0, 5, 5, 10, 10, 15, 15]
    sizes = torch.bincount(cells.flatten())
    assert len(sizes) == 20 and set(sizes.tolist()) == {2, 4}


def test_density_peak_clusters_find_separated_blobs_deterministically():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centres.repeat_interleave(5, 0) + 0.3 * torch.randn(15, 2, generator=g))[torch.randperm(15, generator=g)]
    found, assign = density_peak_clusters(x, 3)
    blob = torch.cdist(x, centres).argmin(-1)
    assert len(set(blob[found].tolist())) == 3 and torch.equal(blob, blob[found][assign])
    assert torch.equal(assign[found], torch.arange(3))
    again = density_peak_clusters(x, 3)
    assert torch.equal(again[0], found) and torch.equal(again[1], assign)
    assert [t.tolist() for t in density_peak_clusters(x[:2], 3)] == [[0, 1], [0, 1]]


# --- engine against slow references -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llava64():
    return make_random_llava(image_size=4 * GRID, seed=1)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 4 * GRID, 4 * GRID, generator=torch.Generator().manual_seed(2))


def _reference_raters(embeds, vision):
    """Original indices of SparseVLM's raters: instruction tokens with above-mean relevance to the image."""
    text = [i for i in range(len(vision)) if i > int(vision.nonzero()[0]) and not vision[i]]
    relevance = torch.softmax(embeds[vision] @ embeds[text].T, dim=-1).mean(0)
    return {t for t, m in zip(text, relevance) if m > relevance.mean()}


def _reference_reduce(adapter, kind, index, k, hidden, pos, orig, is_vision, previous, raters, recycle):
    """Which vision slots a reducing layer keeps, and the merge groups [(members, anchor)], from explicit tokens."""
    vision = [s for s, v in enumerate(is_vision) if v]
    if kind == "downsample":
        h, w = pooled_grid(GRID, GRID, k)
        cells = [[vision[r * GRID + c] for r in range(i * GRID // h, (i + 1) * GRID // h)
                  for c in range(j * GRID // w, (j + 1) * GRID // w)] for i in range(h) for j in range(w)]
        return [], [(members, members[0]) for members in cells]
    if kind == "pdrop":
        cos, sin = adapter.language_model.rotary_emb(hidden, pos)
        scores = _eager_attention(adapter, index, hidden, cos, sin)[-1]
    else:  # sparsevlm: the raters' rows of the previous (pruning) layer, run on the same sequence
        cos, sin = adapter.language_model.rotary_emb(previous, pos)
        rows = [s for s, o in enumerate(orig) if o in raters]
        scores = _eager_attention(adapter, index - 1, previous, cos, sin)[rows].mean(0)
    ranked = torch.tensor(vision)[scores[vision].argsort(descending=True, stable=True)].tolist()
    recycled = int(recycle * (len(vision) - k) + 0.5)
    clusters = min(k, recycled // 10 + 1) if recycled else 0
    pool = sorted(ranked[k - clusters:k + recycled])
    groups = []
    if clusters:
        centres, assign = density_peak_clusters(hidden[0, pool], clusters)
        groups = [([p for p, a in zip(pool, assign) if a == g], pool[centres[g]]) for g in range(clusters)]
    return ranked[:k - clusters], groups


def _reference_logits(adapter, ids, pixel_values, schedule, kind, positions, recycle=0.0):
    """Slow reference (batch 1, no cache): decoder layers run by hand on sequences rebuilt token by token."""
    model, lm = adapter.model, adapter.language_model
    with torch.no_grad():
        embeds, vision = _prompt_embeddings(adapter, ids, pixel_values)
        raters = _reference_raters(embeds[0], vision)
        counts = schedule.counts(int(vision.sum()))
        hidden, pos = embeds, torch.arange(ids.shape[1])[None]
        orig, is_vision = list(range(ids.shape[1])), vision.tolist()
        previous = None
        for index, layer in enumerate(adapter.decoder_layers):
            if counts[index] < sum(is_vision):
                kept, groups = _reference_reduce(adapter, kind, index, counts[index], hidden, pos, orig, is_vision,
                                                 previous, raters, recycle)
                # (sort key, hidden, position, original index, is vision): merged tokens right after their anchor
                entries = [(2 * s, hidden[0, s], int(pos[0, s]), orig[s], is_vision[s])
                           for s in range(len(orig)) if not is_vision[s] or s in kept]
                entries += [(2 * a + 1, hidden[0, m].mean(0), int(pos[0, a]), orig[a], True) for m, a in groups]
                entries.sort(key=lambda e: e[0])
                hidden = torch.stack([e[1] for e in entries])[None]
                pos = torch.tensor([[e[2] for e in entries]])
                orig, is_vision = [e[3] for e in entries], [e[4] for e in entries]
                if positions == "renumber":
                    pos = torch.arange(hidden.shape[1])[None]
            previous = hidden
            hidden = _run_layer(adapter, layer, hidden, pos)
        return model.lm_head(lm.norm(hidden))[:, -1]


CASES = {  # name: (method, reference kind, recycle)
    "sparsevlm": (SparseVLM(preset=192), "sparsevlm", 0.0),
    "sparsevlm_recycle0.3": (SparseVLM(preset=192, recycle=0.3), "sparsevlm", 0.3),
    "sparsevlm_recycle1": (SparseVLM(preset=192, recycle=1.0), "sparsevlm", 1.0),
    "pdrop": (PyramidDrop(), "pdrop", 0.0),
    "downsample": (Downsample(N_VISION), "downsample", 0.0),
}
BUDGETS = {"downsample": 0.3}


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("case", list(CASES))
def test_engine_equals_slow_reference(llava64, images, case, positions):
    method, kind, recycle = CASES[case]
    adapter = VLMAdapter(llava64)
    schedule, scorer = method.build(len(adapter.decoder_layers), BUDGETS.get(case))
    ids, mask = left_pad([make_prompt(4, 6, n_image=N_VISION, seed=3)])
    engine = adapter.engine(schedule, scorer, positions=positions)
    with engine.attached():
        logits, ctx = _prefill_logits(adapter, ids, mask, images[:1], engine)
    expected = _reference_logits(adapter, ids, images[:1], schedule, kind, positions, recycle)
    torch.testing.assert_close(logits[:, -1], expected, atol=1e-5, rtol=0)
    assert ctx.processed_counts() == [schedule.counts(N_VISION)]  # a merged token counts as one vision token
    if case == "downsample":
        assert schedule.counts(N_VISION) == [20] * 6  # 8x8 pooled to 4x5 at budget 0.3


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("case", ["sparsevlm_recycle1", "downsample"])
def test_merging_batch_with_padding_equals_single_runs(llava64, images, case, positions):
    method, _, _ = CASES[case]
    adapter = VLMAdapter(llava64)
    schedule, scorer = method.build(len(adapter.decoder_layers), BUDGETS.get(case))
    rows = [make_prompt(2, 3, n_image=N_VISION, seed=1), make_prompt(5, 9, n_image=N_VISION, seed=2)]
    engine = adapter.engine(schedule, scorer, positions=positions)
    counts = assert_batch_equals_single_runs(adapter, engine, rows, images)
    assert counts == [schedule.counts(N_VISION)] * 2


class ReplayRaters(ReplayScorer):
    """SparseVLM's recycling on replayed rater scores (a re-run prefill of a longer prompt has other raters)."""

    reduce = TextRaterAttention.reduce

    def __init__(self, recycle):
        super().__init__(TextRaterAttention(recycle))
        self.recycle = recycle


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("case", ["sparsevlm_recycle1", "downsample"])
def test_cached_decode_with_merged_tokens_equals_rerun_prefill(llava64, images, case, positions):
    adapter = VLMAdapter(llava64)
    method, _, recycle = CASES[case]
    schedule, _ = method.build(len(adapter.decoder_layers), BUDGETS.get(case))
    scorer = ReplayRaters(recycle) if case.startswith("sparsevlm") else GridPooling()
    engine = adapter.engine(schedule, scorer, positions=positions)
    ids, _ = left_pad([make_prompt(3, 4, n_image=N_VISION, seed=5)])
    assert_cached_decode_equals_rerun(llava64, adapter, engine, scorer, ids, images[:1])
