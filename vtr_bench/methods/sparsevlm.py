"""SparseVLM v1.5 (Zhang et al., ICML 2025, arXiv 2410.04417): text-rater-guided vision-token pruning at three
layers, with optional token recycling (SparseVLM v1).

Pruning layers ``p = 2, 6, 15`` (of 32) run in full; their attention from the *raters* (the instruction tokens
most relevant to the image, chosen once from the input embeddings) ranks the vision tokens, and their *output* is
pruned, so layers ``p + 1`` = 3, 7, 16 are the first to see the published counts, as in SparseVLM's code (the
engine recomputes layer ``p``'s rater rows from its q/k: ``source_offset = -1``). Other depths scale the layers
to ``round(p * L / 32)`` (kept strictly increasing): 8 layers -> 1/2/4, 40 layers -> 3/8/19.

Keep counts per stage are SparseVLM v1.5's presets for 576 tokens, used as ratios of the sample's vision tokens:
192 -> 300/200/110, 128 -> 303/110/36, 96 -> 238/48/26, 64 -> 66/30/17. The preset labels are SparseVLM's
nominal budgets; counted over layer inputs (DESIGN §2) preset 192 on a 32-layer decoder has budget
(3*576 + 4*300 + 9*200 + 16*110) / 32 / 576 = 0.352 (the paper counts 191 tokens). A ``budget`` scales a preset's
profile: stage ratios ``min(1, s * preset / 576)`` with ``s`` solved by bisection so that the mean keep ratio is
the budget (lowest budget ``(p_1 + 1) / L``); the profile is ``method.preset``'s, else the preset whose label / 576
is nearest to the budget (log scale). Scale 1 reproduces the preset exactly.
"""
from __future__ import annotations

import math
from typing import Sequence

from vtr_bench.errors import ConfigError
from vtr_bench.methods.base import Method
from vtr_bench.methods.stages import check_starts, scaled_layers, solve_stage_parameter, staged_schedule
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import Scorer, TextRaterAttention

PRESETS = {192: (300, 200, 110), 128: (303, 110, 36), 96: (238, 48, 26), 64: (66, 30, 17)}
PRESET_TOKENS = 576
DEFAULT_PRESET = 192
REFERENCE_LAYERS = (2, 6, 15)  # pruning layers of a 32-layer decoder


class SparseVLM(Method):
    """SparseVLM: text raters rank vision tokens at three pruning layers; counts from a preset or a budget.

    Args:
        preset: 192, 128, 96 or 64 (SparseVLM's per-layer counts for 576 tokens); with a budget, the profile
            that is scaled (None: 192 without a budget, else the preset nearest to the budget).
        layers: the pruning layers, whose outputs are pruned (None: 2, 6, 15 scaled to the decoder's depth).
        recycle: share of the dropped tokens recycled into cluster tokens (SparseVLM v1: 0.3; 0: off).
    """

    name = "sparsevlm"

    def __init__(self, preset: int | None = None, layers: Sequence[int] | None = None, recycle: float = 0.0) -> None:
        if preset is not None and preset not in PRESETS:
            raise ConfigError(f"method.preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if layers is not None and len(layers) != len(REFERENCE_LAYERS):
            raise ConfigError(f"method.layers must list {len(REFERENCE_LAYERS)} pruning layers, got {list(layers)}")
        if not 0 <= recycle <= 1:
            raise ConfigError(f"method.recycle must be in [0, 1], got {recycle}")
        self.preset = preset
        self.layers = None if layers is None else [int(layer) for layer in layers]
        self.recycle = float(recycle)

    def stage_starts(self, layers: int) -> list[int]:
        """The first layer that sees each stage's count (pruning layer + 1)."""
        pruning = self.layers if self.layers is not None else scaled_layers(REFERENCE_LAYERS, 32, layers)
        return check_starts([p + 1 for p in pruning], layers, "method.layers (pruning layers + 1)")

    def profile(self, budget: float | None) -> int:
        """The preset whose profile the schedule uses."""
        if self.preset is not None or budget is None:
            return self.preset or DEFAULT_PRESET
        return min(PRESETS, key=lambda p: abs(math.log(budget * PRESET_TOKENS / p)))

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        starts = self.stage_starts(layers)
        shares = [count / PRESET_TOKENS for count in PRESETS[self.profile(budget)]]
        ratios = lambda s: [min(1.0, s * share) for share in shares]  # noqa: E731
        scale = 1.0
        if budget is not None:
            scale = solve_stage_parameter(layers, starts, ratios, budget, high=1 / min(shares))
        return staged_schedule(layers, starts, ratios(scale))

    def scorer(self, seed: int) -> Scorer:
        return TextRaterAttention(recycle=self.recycle)
