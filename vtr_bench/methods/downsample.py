"""Downsampling control (VTC-Bench, arXiv 2510.07143): the vision-token grid average-pooled before the LLM.

At layer 0's input each grid (LLaVA-1.5: 24x24; tiny LLaVA: 12x12) is pooled to an ``h x w`` grid, so every layer
processes ``h * w`` vision tokens. The budget ``b`` maps to the grid of
:func:`~vtr_bench.reduction.merging.pooled_grid` for ``b * n`` tokens: aspect kept to within one cell, size
closest to ``b * n`` (24x24: b=1/3 -> 14x14 = 196, achieved 0.340; b=0.125 -> 8x9 = 72, exact). Each cell is the
mean of its tokens, at the position of its top-left token (``positions=keep``) or renumbered. Without a budget,
2x2 pooling (budget 0.25).
"""
from __future__ import annotations

from typing import Sequence

from vtr_bench.errors import ConfigError
from vtr_bench.methods.base import Method
from vtr_bench.reduction.merging import pooled_grid
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import GridPooling, Scorer

DEFAULT_BUDGET = 0.25


class Downsample(Method):
    """Spatial average pooling of the vision tokens to the budget, before the first decoder layer.

    Args:
        vision_tokens: the model's vision tokens per image (the schedule is planned for them; other samples pool
            to the grid nearest their own count).
        grid: ``[height, width]`` of one tile's token grid (None: a square grid of ``vision_tokens``).
    """

    name = "downsample"
    stage = "pre-LLM"
    attention = "none"

    def __init__(self, vision_tokens: int, grid: Sequence[int] | None = None) -> None:
        self.vision_tokens = int(vision_tokens)
        self.grid = None if grid is None else [int(g) for g in grid]
        try:
            self.tiles, self.height, self.width = GridPooling(self.grid).tiles(self.vision_tokens)
        except ValueError as error:
            raise ConfigError(f"method=downsample: {error}") from None

    def pooled(self, budget: float | None) -> tuple[int, int]:
        """The pooled ``(h, w)`` grid of one tile for ``budget``."""
        target = (DEFAULT_BUDGET if budget is None else budget) * self.height * self.width
        return pooled_grid(self.height, self.width, target)

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        h, w = self.pooled(budget)
        return KeepSchedule((h * w / (self.height * self.width),) * layers)

    def scorer(self, seed: int) -> Scorer:
        return GridPooling(self.grid)
