"""SparseVLM v1.5 (Zhang et al., ICML 2025, arXiv 2410.04417): text-rater-guided vision-token pruning at three
layers, with token recycling, as its official code (Gumpest/SparseVLMs, branch v1.5) runs it.

Pruning layers ``p = 2, 6, 15`` (of 32) run in full; their attention from the *raters* (the instruction tokens
most relevant to the image, chosen once from the input embeddings) ranks the vision tokens, and their *output* is
pruned, so layers ``p + 1`` = 3, 7, 16 are the first to see each stage (the engine recomputes layer ``p``'s rater
rows from its q/k: ``source_offset = -1``). Other depths scale the layers to ``round(p * L / 32)`` (kept strictly
increasing): 8 layers -> 1/2/4, 40 layers -> 3/8/19.

Each stage keeps the top ``k`` of the current ``n`` vision tokens, ``k`` from SparseVLM v1.5's tables for 576 tokens
(192 -> 300/200/110, 128 -> 303/110/36, 96 -> 238/48/26, 64 -> 66/30/17; used as ratios of the sample's vision
tokens), and **recycles** ``int(0.3 * (n - k)) + 1`` of the dropped ones into ``int(that / 10) + 1`` cluster tokens
added on top of ``k`` (:class:`~vtr_bench.reduction.scoring.TextRaterAttention`): preset 192 on LLaVA-1.5 processes
576 -> 309 -> 204 -> 113 vision tokens. ``recycle=0`` turns recycling off (a deviation from the official code).

Labels: SparseVLM names a preset by its mean over layers of pruned-layer *outputs* (preset 192: (2·576 + 4·309 +
9·204 + 17·113) / 32 = 192.0); our budget counts layer *inputs* (DESIGN §2): (3·576 + 4·309 + 9·204 + 16·113) / 32 /
576 = 0.358. A ``budget`` scales a preset's profile: stage ratios ``min(1, s * preset / 576)``, ``s`` solved by
bisection so that the schedule's planned vision tokens (cluster tokens included) for ``vision_tokens`` reach the
budget (without recycling: the schedule's ratios meet it exactly);
the profile is ``method.preset``'s, else the preset whose label / 576 is nearest to the budget (log scale).
"""
from __future__ import annotations

import math
from typing import Sequence

from vtr_bench.errors import ConfigError
from vtr_bench.methods.base import Method
from vtr_bench.methods.stages import check_starts, scaled_layers, solve_stage_parameter, staged_schedule
from vtr_bench.reduction.merging import RECYCLE_SHARE, recycling_sizes
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import Scorer, TextRaterAttention

PRESETS = {192: (300, 200, 110), 128: (303, 110, 36), 96: (238, 48, 26), 64: (66, 30, 17)}
PRESET_TOKENS = 576
DEFAULT_PRESET = 192
REFERENCE_LAYERS = (2, 6, 15)  # pruning layers of a 32-layer decoder


def recycled_counts(counts: Sequence[int], n_vision: int, share: float) -> list[int]:
    """Vision tokens each layer processes when every reducing layer keeps ``counts[l]`` and adds SparseVLM's
    cluster tokens (:func:`~vtr_bench.reduction.merging.recycling_sizes`) on top."""
    processed, current, previous = [], n_vision, n_vision
    for count in counts:
        if count < previous:
            current = count + recycling_sizes(current - count, share)[1]
        previous = count
        processed.append(current)
    return processed


class SparseVLM(Method):
    """SparseVLM: text raters rank vision tokens at three pruning layers; counts from a preset or a budget.

    Args:
        preset: 192, 128, 96 or 64 (SparseVLM's per-layer counts for 576 tokens); with a budget, the profile
            that is scaled (None: 192 without a budget, else the preset nearest to the budget).
        layers: the pruning layers, whose outputs are pruned (None: 2, 6, 15 scaled to the decoder's depth).
        recycle: share of the dropped tokens recycled into cluster tokens (SparseVLM: 0.3; 0: off).
        vision_tokens: the model's vision tokens per image (budgets are solved for them, cluster tokens included).
    """

    name = "sparsevlm"

    def __init__(self, preset: int | None = None, layers: Sequence[int] | None = None,
                 recycle: float = RECYCLE_SHARE, vision_tokens: int = PRESET_TOKENS) -> None:
        if preset is not None and preset not in PRESETS:
            raise ConfigError(f"method.preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if layers is not None and len(layers) != len(REFERENCE_LAYERS):
            raise ConfigError(f"method.layers must list {len(REFERENCE_LAYERS)} pruning layers, got {list(layers)}")
        if not 0 <= recycle <= 1:
            raise ConfigError(f"method.recycle must be in [0, 1], got {recycle}")
        if int(vision_tokens) < 1:
            raise ConfigError(f"method.vision_tokens must be >= 1, got {vision_tokens}")
        self.preset = preset
        self.layers = None if layers is None else [int(layer) for layer in layers]
        self.recycle = float(recycle)
        self.vision_tokens = int(vision_tokens)

    def stage_starts(self, layers: int) -> list[int]:
        """The first layer that sees each stage's count (pruning layer + 1)."""
        pruning = self.layers if self.layers is not None else scaled_layers(REFERENCE_LAYERS, 32, layers)
        return check_starts([p + 1 for p in pruning], layers, "method.layers (pruning layers + 1)")

    def profile(self, budget: float | None) -> int:
        """The preset whose profile the schedule uses."""
        if self.preset is not None or budget is None:
            return self.preset or DEFAULT_PRESET
        return min(PRESETS, key=lambda p: abs(math.log(budget * PRESET_TOKENS / p)))

    def planned_counts(self, schedule: KeepSchedule, n_vision: int) -> list[int]:
        return recycled_counts(schedule.counts(n_vision), n_vision, self.recycle)

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        starts = self.stage_starts(layers)
        shares = [count / PRESET_TOKENS for count in PRESETS[self.profile(budget)]]
        ratios = lambda s: [min(1.0, s * share) for share in shares]  # noqa: E731
        scale = 1.0
        if budget is not None:
            n = self.vision_tokens
            planned = lambda schedule: sum(self.planned_counts(schedule, n)) / (n * layers)  # noqa: E731
            scale = solve_stage_parameter(layers, starts, ratios, budget, high=1 / min(shares),
                                          **({"measure": planned} if self.recycle else {}))
        return staged_schedule(layers, starts, ratios(scale))

    def label(self, budget: float | None) -> str | None:
        if budget is None:
            return f"SparseVLM {self.profile(None)} tokens" + ("" if self.recycle == RECYCLE_SHARE else
                                                               f" (recycle={self.recycle:g})")
        return None

    def scorer(self, seed: int) -> Scorer:
        return TextRaterAttention(recycle=self.recycle)
