"""FasterVLM (Zhang et al., arXiv 2412.01818 v1; Theia-4869/FasterVLM @ f5d5f12): before the LLM, keep the vision
tokens the vision encoder's [CLS] token attends to most.

Score: the [CLS] query row of the attention at the encoder layer the features come from (LLaVA: the penultimate
CLIP layer), averaged over heads; the top ``tokens`` are kept in their original (spatial) order, nothing merged.
Its CLI takes the kept count: 144 / 58 / 29 of 576 for 75 / 90 / 95 % reduction (presets ``75``, ``90``, ``95``;
default 90 %). InternVL: a token's score sums its 2x2 pixel-shuffled patches' (no official port).
"""
from __future__ import annotations

import torch

from vtr_bench.methods.prellm import PreLLMMethod
from vtr_bench.reduction.scoring import Scorer, ScoringInputs
from vtr_bench.reduction.sequence import Reduction, select_vision


class ClsAttention(Scorer):
    """Vision tokens ranked by the encoder's [CLS] attention, mean over heads (``ScoringInputs.vision``)."""

    name = "attention"
    needs_attention = False
    needs_vision = True

    def score(self, inputs: ScoringInputs):
        state = inputs.state
        scores = torch.zeros(state.is_vision.shape, device=state.is_vision.device)
        for b, record in enumerate(inputs.vision):
            slots = state.is_vision[b].nonzero().flatten()
            scores[b, slots] = record["attention"].mean(0)[state.vision_ordinal[b, slots]]
        return scores

    def reduce(self, inputs, keep):
        return Reduction(select_vision(self.score(inputs), inputs.state, keep))


class FasterVLM(PreLLMMethod):
    """FasterVLM: top ``tokens`` of 576 by the vision encoder's [CLS] attention, before the LLM."""

    name = "fastervlm"
    attention = "encoder"
    PRESETS = {"75": 144, "90": 58, "95": 29}
    DEFAULT_TOKENS = 58

    def scorer(self, seed: int) -> Scorer:
        return ClsAttention()
