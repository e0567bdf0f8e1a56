"""CDPruner (Zhang et al., NeurIPS 2025, arXiv 2506.10967; Theia-4869/CDPruner @ 9541616): before the LLM, the
instruction-conditioned DPP subset of the projected vision tokens.

Kernel ``L = diag(r) · S · diag(r)``: ``S`` the cosine similarities of the projected tokens, ``r`` each token's
relevance to the instruction, min-max scaled per image (``(rel - min + 1e-6) / (max - min)``, as its code); the
subset is the greedy MAP of the DPP (:func:`~vtr_bench.reduction.selection.dpp_greedy_map`), in spatial order,
positions renumbered. Its code's relevance is the **negated** mean similarity (``relevance_sign = -1``: it keeps the
tokens *least* like the text; its maintainer says this is deliberate for CLIP, issues #14 / #19 / #22; ``+1`` is
the paper's wording). **Deviation** (recorded as ``relevance: llm_embeddings``): the official relevance compares CLIP
patch embeddings with the CLIP text encoder's embedding of the raw question; no CLIP text encoder is part of these
models, so relevance compares the projected tokens with the decoder's input embeddings of the prompt text after the
image (the instruction and the chat template's tail), mean over those tokens. Presets 64 / 128 / 192 tokens.
"""
from __future__ import annotations

import torch

from vtr_bench.errors import ConfigError
from vtr_bench.methods.prellm import PreLLMMethod
from vtr_bench.reduction.scoring import Scorer
from vtr_bench.reduction.selection import cosine_matrix, dpp_greedy_map, per_sample, text_after_image
from vtr_bench.reduction.sequence import Reduction


class ConditionalDPP(Scorer):
    """CDPruner's conditional DPP (module docstring), on the hidden states at this layer (layer 0: projected)."""

    name = "conditional_dpp"
    needs_attention = False

    def __init__(self, relevance_sign: int = -1) -> None:
        self.relevance_sign = relevance_sign

    def reduce(self, inputs, keep):
        state = inputs.state

        def select(b, slots, k):
            tokens = inputs.current[b, slots]
            text = inputs.current[b, text_after_image(state, b)]
            relevance = self.relevance_sign * cosine_matrix(tokens, text).mean(-1) if len(text) else \
                torch.ones(len(slots), device=tokens.device)
            low, high = relevance.min(), relevance.max()
            r = (relevance - low + 1e-6) / (high - low) if high > low else torch.ones_like(relevance)
            return dpp_greedy_map(r[:, None] * cosine_matrix(tokens) * r[None, :], k)

        return Reduction(per_sample(state, keep, select))


class CDPruner(PreLLMMethod):
    """CDPruner: the instruction-conditioned DPP's ``tokens`` of 576 (module docstring).

    Args:
        relevance_sign: -1 (its code) or +1 (its paper's wording).
    """

    name = "cdpruner"
    PRESETS = {"64": 64, "128": 128, "192": 192}
    DEFAULT_TOKENS = 128

    def __init__(self, tokens: int | None = None, preset=None, relevance_sign: int = -1,
                 rounding: str = "half_up") -> None:
        super().__init__(tokens, preset, rounding)
        if relevance_sign not in (-1, 1):
            raise ConfigError(f"method.relevance_sign must be -1 or 1, got {relevance_sign!r}")
        self.relevance_sign = int(relevance_sign)
        self.relevance = "llm_embeddings"

    def scorer(self, seed: int) -> Scorer:
        return ConditionalDPP(self.relevance_sign)
