"""PyramidDrop (Xing et al., CVPR 2025, arXiv 2410.17247): vision tokens dropped in stages, a ratio λ at each, as its
official code (Cooperx521/PyramidDrop) runs it.

The decoder is split into stages at ``layers`` (default ``L/4, L/2, 3L/4``: 8/16/24 for 32 layers, the only setting
of the official scripts); stage ``i`` keeps ``int(n * λ^i)`` of the sample's ``n`` vision tokens (``rounding:
floor``; 576 -> 288 / 144 / 72 at λ = 0.5), ranked at each boundary layer by the attention the last instruction
(prompt) token pays them, recomputed from that layer's own norm and q/k on the undropped sequence. Kept tokens are
renumbered contiguously and decode positions shift by the dropped count (``positions: renumber``). Given a budget
``b`` (mean keep ratio), λ is the root in (0, 1] of ``mean_l λ^stage(l) = b`` (bisection); budgets below
``layers[0] / L`` are unreachable.

Labels (``method.preset``): the official repo publishes no 192 / 128 / 64-token setting; its maintainer's recipe
(issue #29) keeps the λ, λ², λ³ structure and solves λ for the label's mean tokens on earlier layers, e.g. layers
2 / 8 / 16 and λ = 0.19 for 64 tokens. Preset 64 and 128 use layers ``2, 8, 16``, preset 192 the official ``8, 16,
24`` (scaled to the depth), each with λ solved for ``label / 576``.
"""
from __future__ import annotations

from typing import Sequence

from vtr_bench.errors import ConfigError
from vtr_bench.methods.base import Method
from vtr_bench.methods.stages import (
    check_rounding,
    check_starts,
    scaled_layers,
    solve_stage_parameter,
    staged_schedule,
)
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, Scorer

DEFAULT_LAMBDA = 0.5
REFERENCE_LAYERS = (8, 16, 24)  # of a 32-layer decoder: L/4, L/2, 3L/4
PRESET_TOKENS = 576
PRESETS = {192: (8, 16, 24), 128: (2, 8, 16), 64: (2, 8, 16)}  # label: stage layers of a 32-layer decoder


class PyramidDrop(Method):
    """PyramidDrop: stage ``i`` (from ``layers[i-1]`` on) keeps ``lam**i`` of the vision tokens.

    Args:
        layers: first layer of each dropping stage (None: ``L/4, L/2, 3L/4`` rounded half up, or the preset's).
        lam: the per-stage keep ratio λ in (0, 1]; solved from the budget when a budget is given (default 0.5).
        preset: 192, 128 or 64: the label's mean tokens of 576 as the budget, on the preset's layers.
        rounding: ``floor`` (PyramidDrop's ``int()``) or ``half_up``.
    """

    name = "pdrop"

    def __init__(self, layers: Sequence[int] | None = None, lam: float | None = None, preset: int | None = None,
                 rounding: str = "floor") -> None:
        if lam is not None and not 0 < lam <= 1:
            raise ConfigError(f"method.lam must be in (0, 1], got {lam}")
        if preset is not None and preset not in PRESETS:
            raise ConfigError(f"method.preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if preset is not None and lam is not None:
            raise ConfigError("give either method.preset or method.lam, not both")
        self.layers = None if layers is None else [int(layer) for layer in layers]
        self.lam = lam
        self.preset = preset
        self.rounding = check_rounding(rounding)

    def stage_starts(self, layers: int) -> list[int]:
        """The first layer of each dropping stage for a ``layers``-layer decoder."""
        reference = PRESETS[self.preset] if self.preset is not None else REFERENCE_LAYERS
        starts = self.layers if self.layers is not None else scaled_layers(reference, 32, layers)
        return check_starts(starts, layers, "method.layers")

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        if budget is not None and (self.lam is not None or self.preset is not None):
            raise ConfigError("give either budget or method.lam / method.preset, not both")
        if self.preset is not None:
            budget = self.preset / PRESET_TOKENS
        starts = self.stage_starts(layers)
        ratios = lambda lam: [lam ** (stage + 1) for stage in range(len(starts))]  # noqa: E731
        lam = DEFAULT_LAMBDA if self.lam is None else self.lam
        if budget is not None:
            lam = solve_stage_parameter(layers, starts, ratios, budget, high=1.0)
        return staged_schedule(layers, starts, ratios(lam), self.rounding)

    def label(self, budget: float | None) -> str | None:
        if self.preset is not None:
            return f"PyramidDrop {self.preset} tokens"
        return "PyramidDrop official (8/16/24, λ=0.5)" if budget is None and self.layers is None \
            and self.lam is None else None

    def scorer(self, seed: int) -> Scorer:
        return LastTokenAttention(source_offset=0)
