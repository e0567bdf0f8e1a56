"""DART (Wen et al., EMNLP 2025, arXiv 2502.11494; ZichenWen1/DART @ 5a19452, read from the fork
xqy1111111/DART): inside the LLM at layer ``k = 2``, keep the vision tokens least duplicated with a few pivots.

At layer ``k``'s input (layer ``k-1``'s output): pivots are the 4 vision tokens and the 4 text tokens after the
image with the largest L1 norm of layer ``k-1``'s RoPE'd keys; vision pivots are kept; then each pivot in turn
takes, from the vision tokens not yet taken, those with the lowest cosine similarity to it in the decoder's final-
norm space (layer ``k-1``'s output through the model's final RMSNorm). No attention weights (FlashAttention-
friendly); kept tokens keep their positions (``positions: keep``). Count: ``4 + 8·(M // 8)`` kept, ``M`` its
``max_num_trunction`` (presets ``64`` / ``128`` / ``192``: 68 / 132 / 196 of 576, as its LLaVA-1.5 code keeps;
``reduction_ratio`` is unused there). A ``budget`` (or a count not of that form) spreads ``kept - 4`` over the 8
pivots, the first ones one more (a named deviation: ``quota: spread``). **Deviation**: pivots take their turns in
sequence order, DART's in Python ``set`` order (which only decides which pivot claims a token first).
"""
from __future__ import annotations

import torch

from vtr_bench.errors import ConfigError
from vtr_bench.methods.base import Method
from vtr_bench.methods.fastv import solve_drop_fraction
from vtr_bench.methods.stages import check_rounding
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import Scorer
from vtr_bench.reduction.selection import cosine_matrix, text_after_image
from vtr_bench.reduction.sequence import Reduction

PIVOTS = (4, 4)  # vision, text
PRESETS = {"64": 64, "128": 128, "192": 192}  # max_num_trunction
REFERENCE_TOKENS = 576


def official_kept(max_tokens: int) -> int:
    """Vision tokens DART's LLaVA-1.5 code keeps for ``max_num_trunction``: the vision pivots + 8 picks each."""
    return PIVOTS[0] + sum(PIVOTS) * (max_tokens // sum(PIVOTS))


class PivotDuplication(Scorer):
    """DART's selection (module docstring); scores layer ``l-1``'s keys (``source_offset = -1``)."""

    name = "pivot_duplication"
    source_offset = -1  # reads the previous layer's keys (needs_attention: the engine keeps its input)

    def reduce(self, inputs, keep):
        state, decoder = inputs.state, inputs.decoder
        keys = inputs.keys
        if keys is None:
            layer = inputs.source_layer
            keys = decoder.keys(layer, layer.input_layernorm(inputs.hidden), state.cos, state.sin)
        norm = keys.float().abs().sum(dim=(1, 3))  # (batch, seq): L1 over heads x head dims
        space = decoder.norm(inputs.current) if decoder.norm is not None else inputs.current
        kept = torch.zeros_like(state.is_vision)
        for b in range(len(keep)):
            vision = state.is_vision[b].nonzero().flatten()
            k = int(keep[b])
            if k >= len(vision):
                kept[b, vision] = True
                continue
            text = text_after_image(state, b)
            top = lambda slots, n: slots[torch.sort(norm[b, slots], descending=True, stable=True).indices[:n]]  # noqa: E731
            image_pivots = top(vision, min(PIVOTS[0], k))
            pivots = torch.cat([image_pivots, top(text, PIVOTS[1])]).sort().values
            kept[b, image_pivots] = True
            candidates = vision[~torch.isin(vision, image_pivots)]
            picks = k - len(image_pivots)
            quotas = [picks // len(pivots) + (i < picks % len(pivots)) for i in range(len(pivots))]
            for pivot, quota in zip(pivots.tolist(), quotas):
                if quota == 0 or len(candidates) == 0:
                    continue
                similarity = cosine_matrix(space[b, pivot:pivot + 1], space[b, candidates])[0]
                take = torch.sort(similarity, stable=True).indices[:quota]
                kept[b, candidates[take]] = True
                candidates = candidates[~torch.isin(torch.arange(len(candidates), device=vision.device), take)]
        return Reduction(kept)


class DART(Method):
    """DART at layer ``k``: ``official_kept(max_tokens)`` of 576 vision tokens (or a ``budget``) from layer ``k`` on.

    Args:
        k: the first layer that sees the reduced sequence (DART's ``pruned_layer``, 2).
        max_tokens: its ``max_num_trunction`` (128: 132 kept); preset: the same by label.
        rounding: how a sample's count ``ratio · n`` rounds.
    """

    name = "dart"
    stage = "in-LLM"
    attention = "none"

    def __init__(self, k: int = 2, max_tokens: int | None = None, preset=None, rounding: str = "half_up") -> None:
        if preset is not None:
            if str(preset) not in PRESETS:
                raise ConfigError(f"method.preset must be one of {sorted(PRESETS)}, got {preset!r}")
            if max_tokens is not None:
                raise ConfigError("give either method.preset or method.max_tokens, not both")
            max_tokens = PRESETS[str(preset)]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"method.k must be an integer >= 1, got {k!r}")
        if max_tokens is not None and not 0 < official_kept(max_tokens) <= REFERENCE_TOKENS:
            raise ConfigError(f"method.max_tokens={max_tokens} keeps {official_kept(max_tokens)} of 576 tokens")
        self.k, self.max_tokens = int(k), max_tokens
        self.preset = None if preset is None else str(preset)
        self.rounding = check_rounding(rounding)
        self.quota = "spread"
        self.pivot_order = "sequence"

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        if budget is not None and self.max_tokens is not None:
            raise ConfigError("give either budget or method.max_tokens / method.preset, not both")
        if self.k >= layers:
            raise ConfigError(f"method.k={self.k} must be smaller than the number of decoder layers ({layers})")
        if budget is None:
            ratio = official_kept(128 if self.max_tokens is None else self.max_tokens) / REFERENCE_TOKENS
        else:
            ratio = 1 - solve_drop_fraction(budget, layers, self.k)
        return KeepSchedule((1.0,) * self.k + (ratio,) * (layers - self.k), self.rounding)

    def label(self, budget):
        if budget is not None:
            return None
        m = 128 if self.max_tokens is None else self.max_tokens
        return f"DART {m} tokens ({official_kept(m)} kept)"

    def scorer(self, seed: int) -> Scorer:
        return PivotDuplication()
