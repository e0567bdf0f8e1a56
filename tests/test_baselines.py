"""SparseVLM, PyramidDrop, FastV and downsampling: published counts and labels, budgets, merge plans, and merged
tokens in padded batches and cached decoding (the engine against each official algorithm: test_official_references)."""
import pytest
import torch

from conftest import left_pad, make_prompt, make_random_llava
from test_configs import compose_config
from test_engine import assert_batch_equals_single_runs
from test_generate import ReplayScorer, assert_cached_decode_equals_rerun
from vtr_bench.errors import ConfigError
from vtr_bench.methods import Downsample, PyramidDrop, SparseVLM
from vtr_bench.methods.sparsevlm import PRESETS
from vtr_bench.models.base import VLMAdapter
from vtr_bench.reduction.merging import density_peak_clusters, grid_cells, pooled_grid
from vtr_bench.reduction.scoring import GridPooling, TextRaterAttention
from vtr_bench.run import plan_flops

GRID = 8  # the test model sees an 8x8 grid of vision tokens
N_VISION = GRID * GRID


# --- schedules: published counts, budgets, depths -------------------------------------------------------------

def _flops(*overrides):
    return plan_flops(compose_config("model=llava15_7b", "run.mode=flops", *overrides))


def _official_sparsevlm_counts(table, n=576, share=0.3):
    """SparseVLM v1.5's vision tokens after each pruning stage: the table's k, plus int(int(share * dropped) + 1)
    / 10) + 1 cluster tokens of the dropped ones (Gumpest/SparseVLMs modelling_sparse_llama.py)."""
    counts = []
    for k in table:
        pool = int(share * (n - k)) + 1
        n = k + int(pool / 10) + 1
        counts.append(n)
    return counts


@pytest.mark.parametrize("preset, official", [(192, (309, 204, 113)), (128, (312, 117, 39)), (64, (82, 32, 18))])
def test_flops_mode_shows_sparsevlm_presets_with_their_cluster_tokens(preset, official):
    assert _official_sparsevlm_counts(PRESETS[preset]) == list(official)
    report = _flops("method=sparsevlm", f"method.preset={preset}")
    # pruning layers 2/6/15 prune their outputs: layers 3, 7 and 16 are the first to see each stage
    assert report["keep"] == [576] * 3 + [official[0]] * 4 + [official[1]] * 9 + [official[2]] * 16
    assert report["label"] == f"SparseVLM {preset} tokens" and report["positions"] == "renumber"
    # SparseVLM's label: the mean over layers of the pruning layers' *outputs*
    assert (2 * 576 + 4 * official[0] + 9 * official[1] + 17 * official[2]) / 32 == pytest.approx(preset, abs=1)
    counts = [576] * 3 + [PRESETS[preset][0]] * 4 + [PRESETS[preset][1]] * 9 + [PRESETS[preset][2]] * 16
    assert _flops("method=sparsevlm", f"method.preset={preset}", "method.recycle=0")["keep"] == counts


def test_flops_mode_shows_pdrop_default_and_downsample_grid():
    assert _flops("method=pdrop")["keep"] == [576] * 8 + [288] * 8 + [144] * 8 + [72] * 8
    report = _flops("method=downsample", "budget=0.125")
    assert report["keep"] == [72] * 32 and report["budget"] == 0.125  # 24x24 pooled to 8x9


@pytest.mark.parametrize("layers, n_vision", [(32, 576), (40, 576), (8, 144)])
@pytest.mark.parametrize("budget", [0.9, 0.5, 1 / 3, 0.3, 0.26])
@pytest.mark.parametrize("method", [SparseVLM(recycle=0), SparseVLM(preset=128, recycle=0), PyramidDrop()],
                         ids=["sparsevlm", "sparsevlm128", "pdrop"])
def test_budgets_are_met(method, budget, layers, n_vision):
    schedule, _ = method.build(layers, budget)
    assert schedule.budget == pytest.approx(budget, abs=1e-9)
    # PyramidDrop floors its counts (int()), so it may fall short by up to a token per layer
    assert -1 / n_vision <= schedule.achieved_budget(n_vision) - budget <= 0.5 / n_vision


@pytest.mark.parametrize("layers, n_vision", [(32, 576), (12, 144)])
@pytest.mark.parametrize("budget", [0.9, 0.5, 1 / 3, 0.3])
def test_sparsevlm_budgets_count_the_cluster_tokens(budget, layers, n_vision):
    method = SparseVLM(vision_tokens=n_vision)
    schedule, _ = method.build(layers, budget)
    planned = sum(method.planned_counts(schedule, n_vision)) / (layers * n_vision)
    assert budget <= planned <= budget + 1.5 / n_vision and schedule.budget < planned


def test_sparsevlm_low_budgets_use_the_nearest_preset_profile():
    schedule, _ = SparseVLM(recycle=0).build(32, 0.125)
    counts = schedule.counts(576)
    assert schedule.budget == pytest.approx(0.125) and counts[:3] == [576] * 3
    assert SparseVLM().profile(0.125) == 64 and SparseVLM().profile(0.3) == 192
    scale = counts[3] / 66
    assert [counts[6], counts[15]] == [round(scale * 66), round(scale * 30)] and counts[16] == round(scale * 17)


@pytest.mark.parametrize("method, budget, lowest", [(PyramidDrop(), 0.125, "0.25"),
                                                   (SparseVLM(recycle=0), 0.05, "0.09375"),
                                                   (SparseVLM(), 0.12, "0.1221")])  # (3·576 + 29·18) / 32 / 576
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


# --- merging: batches and cached decoding (the engine against the official algorithms: test_official_references) --

@pytest.fixture(scope="module")
def llava64():
    return make_random_llava(image_size=4 * GRID, seed=1)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 4 * GRID, 4 * GRID, generator=torch.Generator().manual_seed(2))


CASES = {  # name: (method, recycle share)
    "sparsevlm": (SparseVLM(preset=192), 0.3),
    "sparsevlm_recycle1": (SparseVLM(preset=192, recycle=1.0), 1.0),
    "downsample": (Downsample(N_VISION), 0.0),
}
BUDGETS = {"downsample": 0.3}


@pytest.mark.parametrize("positions", ["keep", "renumber"])
@pytest.mark.parametrize("case", ["sparsevlm", "sparsevlm_recycle1", "downsample"])
def test_merging_batch_with_padding_equals_single_runs(llava64, images, case, positions):
    method, _ = CASES[case]
    adapter = VLMAdapter(llava64)
    schedule, scorer = method.build(len(adapter.decoder_layers), BUDGETS.get(case))
    rows = [make_prompt(2, 3, n_image=N_VISION, seed=1), make_prompt(5, 9, n_image=N_VISION, seed=2)]
    engine = adapter.engine(schedule, scorer, positions=positions)
    counts = assert_batch_equals_single_runs(adapter, engine, rows, images)
    assert counts == [method.planned_counts(schedule, N_VISION)] * 2  # cluster tokens on top of the counts


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
    method, recycle = CASES[case]
    schedule, _ = method.build(len(adapter.decoder_layers), BUDGETS.get(case))
    scorer = ReplayRaters(recycle) if case.startswith("sparsevlm") else GridPooling()
    engine = adapter.engine(schedule, scorer, positions=positions)
    ids, _ = left_pad([make_prompt(3, 4, n_image=N_VISION, seed=5)])
    assert_cached_decode_equals_rerun(llava64, adapter, engine, scorer, ids, images[:1])
