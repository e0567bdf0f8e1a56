"""VisionZip (Yang et al., CVPR 2025, arXiv 2412.04467; dvlab-research/VisionZip @ 3151f6d): before the LLM, keep
the *dominant* vision tokens by the encoder's [CLS] attention and merge the rest into *contextual* tokens.

Dominant: top by the [CLS] query row of the feature layer's attention (LLaVA: the penultimate CLIP layer), summed
over heads, kept in spatial order. Contextual: of the ``R`` remaining tokens (original order), ``C`` targets at a
uniform stride ``arange(0, R, max(1, R // C))[:C]``; every other remaining token joins the target whose keys
(that layer's, mean over heads) are most cosine-similar; a contextual token is **its target plus the mean of the
tokens that joined it** (VisionZip's formula, not a mean including the target); contextual tokens follow the
dominant ones, in target order. Positions renumbered (a plain shorter sequence).

Published splits dominant + contextual: 54 + 10 (64 tokens, its README), 108 + 20 (128), 162 + 30 (192): a
contextual share of 10/64 of the kept tokens (``contextual_share``). **Deviation** (recorded as
``cls_token: replaced_by_patch``): VisionZip's dominant count includes the [CLS] token, which it passes through the
projector into the LLM; LLaVA's features (``vision_feature_select_strategy: default``) have no [CLS] token to pass,
so the dominant set holds one more patch (54 patches + 10 contextual = 64). InternVL: a token's attention sums its
2x2 pixel-shuffled patches', its keys are their mean (no official port).
"""
from __future__ import annotations

import torch

from vtr_bench.errors import ConfigError
from vtr_bench.methods.prellm import PreLLMMethod
from vtr_bench.reduction.schedule import round_half_up
from vtr_bench.reduction.scoring import Scorer
from vtr_bench.reduction.selection import cosine_matrix
from vtr_bench.reduction.sequence import Reduction

CONTEXTUAL_SHARE = 10 / 64


class DominantContextual(Scorer):
    """VisionZip's dominant + contextual tokens (module docstring); ``contextual_share`` of the kept count merged."""

    name = "dominant_contextual"
    needs_attention = False
    needs_vision = True

    def __init__(self, contextual_share: float = CONTEXTUAL_SHARE) -> None:
        self.contextual_share = contextual_share

    def reduce(self, inputs, keep):
        state = inputs.state
        kept = torch.zeros_like(state.is_vision)
        group = torch.full_like(state.vision_ordinal, -1)
        weights = torch.zeros(state.is_vision.shape, device=kept.device)
        plans = []
        for b, record in enumerate(inputs.vision):
            slots = state.is_vision[b].nonzero().flatten()
            n, k = len(slots), int(keep[b])
            if k >= n:
                kept[b, slots] = True
                plans.append(0)
                continue
            contextual = round_half_up(k * self.contextual_share)  # < the n - k + contextual tokens left
            ordinal = state.vision_ordinal[b, slots]
            scores = record["attention"].sum(0)[ordinal]
            order = torch.sort(scores.float(), descending=True, stable=True).indices
            dominant = order[:k - contextual]
            kept[b, slots[dominant]] = True
            rest = torch.ones(n, dtype=torch.bool, device=kept.device)
            rest[dominant] = False
            rest = rest.nonzero().flatten()  # original order
            if contextual == 0:
                plans.append(0)
                continue
            targets = torch.arange(0, len(rest), max(1, len(rest) // contextual), device=kept.device)[:contextual]
            others = torch.ones(len(rest), dtype=torch.bool, device=kept.device)
            others[targets] = False
            others = others.nonzero().flatten()
            metric = record["keys"][ordinal[rest]]
            assign = cosine_matrix(metric[others], metric[targets]).argmax(-1)
            sizes = torch.bincount(assign, minlength=len(targets)).clamp(min=1)
            group[b, slots[rest[targets]]] = torch.arange(len(targets), device=kept.device)
            weights[b, slots[rest[targets]]] = 1.0
            group[b, slots[rest[others]]] = assign
            weights[b, slots[rest[others]]] = 1.0 / sizes[assign].float()
            plans.append(len(targets))
        if not any(plans):
            return Reduction(kept)
        anchor = torch.full((len(plans), max(plans)), -1, device=kept.device)
        for b, count in enumerate(plans):
            anchor[b, :count] = state.is_vision[b].nonzero().max()  # after the sample's last vision slot
        return Reduction(kept, group, anchor, weights)


class VisionZip(PreLLMMethod):
    """VisionZip: dominant + contextual tokens, ``tokens`` of 576 in all (module docstring).

    Args:
        contextual_share: the share of the kept tokens that are contextual (10/64 as in 54 + 10).
    """

    name = "visionzip"
    attention = "encoder"
    PRESETS = {"64": 64, "128": 128, "192": 192}
    DEFAULT_TOKENS = 64

    def __init__(self, tokens: int | None = None, preset=None, contextual_share: float = CONTEXTUAL_SHARE,
                 rounding: str = "half_up") -> None:
        super().__init__(tokens, preset, rounding)
        if not 0 <= contextual_share < 1:
            raise ConfigError(f"method.contextual_share must be in [0, 1), got {contextual_share}")
        self.contextual_share = float(contextual_share)
        self.cls_token = "replaced_by_patch"

    def label(self, budget):
        if budget is not None:
            return None
        tokens = self.tokens if self.tokens is not None else self.DEFAULT_TOKENS
        contextual = round_half_up(tokens * self.contextual_share)
        return f"VisionZip {tokens} tokens ({tokens - contextual} dominant + {contextual} contextual)"

    def scorer(self, seed: int) -> Scorer:
        return DominantContextual(self.contextual_share)
