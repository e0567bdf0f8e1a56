"""DivPrune (Alvar et al., CVPR 2025, arXiv 2503.02175; vbdi/divprune @ 799e2d9): before the LLM, keep a max–min
diverse subset of the projected vision tokens.

Distance ``1 - cosine`` between the projected tokens (the decoder's input embeddings at the vision positions);
greedy max–min selection (:func:`~vtr_bench.reduction.selection.max_min_diversity`), kept tokens back in their
original order, positions renumbered. Its scripts set the kept share ``ratio = 0.098`` (56 of 576,
``int(round(r·N))``): the default; ``method.tokens`` / ``preset`` (64 / 128 / 192) or ``budget`` instead. Needs
no attention, applies to every family (LLaVA-NeXT / OneVision: all of an image's tokens as one pool, newline
tokens included, as its LLaVA-1.6 code does).
"""
from __future__ import annotations

from vtr_bench.errors import ConfigError
from vtr_bench.methods.prellm import PreLLMMethod
from vtr_bench.reduction.scoring import Scorer
from vtr_bench.reduction.selection import max_min_diversity, per_sample
from vtr_bench.reduction.sequence import Reduction

OFFICIAL_RATIO = 0.098


class MaxMinDiversity(Scorer):
    """Keeps each sample's max–min diverse subset of its vision tokens (their hidden states at this layer)."""

    name = "max_min_diversity"
    needs_attention = False

    def reduce(self, inputs, keep):
        return Reduction(per_sample(inputs.state, keep,
                                    lambda b, slots, k: max_min_diversity(inputs.current[b, slots], k)))


class DivPrune(PreLLMMethod):
    """DivPrune: a max–min diverse ``ratio`` (or ``tokens`` / ``budget``) of the projected vision tokens.

    Args:
        ratio: kept share of each image's tokens (official 0.098); None with ``tokens`` / ``preset`` / ``budget``.
    """

    name = "divprune"
    PRESETS = {"64": 64, "128": 128, "192": 192}

    def __init__(self, ratio: float | None = None, tokens: int | None = None, preset=None,
                 rounding: str = "half_up") -> None:
        super().__init__(tokens, preset, rounding)
        if ratio is not None and (tokens is not None or preset is not None):
            raise ConfigError("give one of method.ratio, method.tokens, method.preset")
        if ratio is not None and not 0 < ratio <= 1:
            raise ConfigError(f"method.ratio must be in (0, 1], got {ratio}")
        self.ratio = ratio

    def keep_ratio(self, budget):
        if budget is None and self.tokens is None:
            return OFFICIAL_RATIO if self.ratio is None else float(self.ratio)
        if budget is not None and self.ratio is not None:
            raise ConfigError("give either budget or method.ratio, not both")
        return super().keep_ratio(budget)

    def label(self, budget):
        if budget is None and self.tokens is None:
            return f"DivPrune ratio {OFFICIAL_RATIO if self.ratio is None else self.ratio:g}"
        return super().label(budget)

    def scorer(self, seed: int) -> Scorer:
        return MaxMinDiversity()
