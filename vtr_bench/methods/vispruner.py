"""VisPruner (Zhang et al., ICCV 2025, arXiv 2412.01818; Theia-4869/VisPruner @ aefa01a): before the LLM, keep
*important* vision tokens by the encoder's [CLS] attention and *diverse* ones among the rest by similarity.

Important: the top ``int(T·important_ratio)`` by the [CLS] query row of the feature layer's attention (mean over
heads). Diverse: the rest, in descending score order, is thinned in rounds until ``T - important`` remain: split by
position into even / odd halves, drop up to 8 of the even half whose best cosine match in the odd half (on the
normalised pre-projector features) is highest, and continue with the remaining even ones (most similar first)
followed by the odd ones. Kept tokens in spatial order; positions renumbered. Defaults as its code
(``important_ratio = 0.5``); its README's settings: 128 tokens at 0.5, 64 at 0.75 (presets ``128``, ``64``; ``192``
at 0.5 is our reading, the repo gives none). **Fix**: its loop fails whenever the even half is the larger (an odd
count, e.g. 64 tokens at 0.3); here the halves are indexed by their own sizes (the same tokens otherwise).
"""
from __future__ import annotations

import torch

from vtr_bench.errors import ConfigError
from vtr_bench.methods.prellm import PreLLMMethod
from vtr_bench.reduction.scoring import Scorer
from vtr_bench.reduction.selection import per_sample
from vtr_bench.reduction.sequence import Reduction

ROUND = 8
PRESET_RATIOS = {"64": 0.75, "128": 0.5, "192": 0.5}


def diverse_rounds(features: torch.Tensor, residual: torch.Tensor, target: int) -> torch.Tensor:
    """VisPruner's bipartite thinning of ``residual`` (indices into ``features``) down to ``target`` tokens."""
    normed = features.float() / features.float().norm(dim=-1, keepdim=True)
    while target > 0:
        step = min(ROUND, len(residual) - target)
        if step <= 0:
            break
        even, odd = residual[0::2], residual[1::2]
        best = (normed[even] @ normed[odd].T).amax(-1)
        even = even[torch.sort(best, descending=True, stable=True).indices]
        residual = torch.cat([even[step:], odd])
    return residual[:target] if target > 0 else residual[:0]


class ImportantDiverse(Scorer):
    """VisPruner's important + diverse selection (module docstring)."""

    name = "important_diverse"
    needs_attention = False
    needs_vision = True

    def __init__(self, important_ratio: float = 0.5) -> None:
        self.important_ratio = important_ratio

    def reduce(self, inputs, keep):
        state = inputs.state

        def select(b, slots, k):
            record, ordinal = inputs.vision[b], state.vision_ordinal[b, slots]
            order = torch.sort(record["attention"].mean(0)[ordinal].float(), descending=True, stable=True).indices
            important = int(k * self.important_ratio)
            diverse = diverse_rounds(record["features"][ordinal], order[important:], k - important)
            return torch.cat([order[:important], diverse])

        return Reduction(per_sample(state, keep, select))


class VisPruner(PreLLMMethod):
    """VisPruner: ``int(T·important_ratio)`` important + the rest diverse, ``tokens`` (T) of 576 in all."""

    name = "vispruner"
    attention = "encoder"
    PRESETS = {"64": 64, "128": 128, "192": 192}
    DEFAULT_TOKENS = 128

    def __init__(self, tokens: int | None = None, preset=None, important_ratio: float | None = None,
                 rounding: str = "half_up") -> None:
        super().__init__(tokens, preset, rounding)
        if important_ratio is None:
            important_ratio = PRESET_RATIOS.get(self.preset, 0.5)
        if not 0 <= important_ratio <= 1:
            raise ConfigError(f"method.important_ratio must be in [0, 1], got {important_ratio}")
        self.important_ratio = float(important_ratio)

    def scorer(self, seed: int) -> Scorer:
        return ImportantDiverse(self.important_ratio)
