"""Scorers: rank the vision tokens of the current sequence when a layer drops some.

Attention-based scorers recompute only the attention rows they need from a decoder layer's own input norm, q/k
projections and RoPE (O(rows x seq) work), so the model itself keeps running SDPA / FlashAttention (DESIGN §3).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vtr_bench.reduction.sequence import SequenceState


@dataclass
class ScoringInputs:
    """What a scorer sees at a dropping layer.

    Attributes:
        layer_index: the decoder layer about to process the reduced sequence.
        source_layer: the decoder layer whose attention is recomputed (``layer_index + scorer.source_offset``).
        hidden: input hidden states of ``source_layer`` (batch, seq, dim), before its input norm.
        state: the current sequence (positions, cos/sin, masks).
    """

    layer_index: int
    source_layer: nn.Module
    hidden: torch.Tensor
    state: SequenceState


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def attention_rows(inputs: ScoringInputs, query_index: torch.Tensor) -> torch.Tensor:
    """Attention probabilities of some query rows of ``inputs.source_layer``, averaged over heads.

    Args:
        inputs: the scoring inputs (a Llama/Qwen2-style decoder layer: ``input_layernorm``, ``self_attn.q_proj``,
            ``k_proj``, ``head_dim``, ``scaling``).
        query_index: (batch, queries) slot indices of the query rows.

    Returns:
        (batch, queries, seq) float32 attention probabilities (causal; invalid keys get 0).
    """
    layer, state = inputs.source_layer, inputs.state
    attn = layer.self_attn
    head_dim = attn.head_dim
    normed = layer.input_layernorm(inputs.hidden)
    batch, seq, dim = normed.shape
    queries = query_index.shape[1]
    rows = normed.gather(1, query_index.unsqueeze(-1).expand(-1, -1, dim))
    q = attn.q_proj(rows).view(batch, queries, -1, head_dim).transpose(1, 2).float()
    k = attn.k_proj(normed).view(batch, seq, -1, head_dim).transpose(1, 2).float()
    cos, sin = state.cos.float().unsqueeze(1), state.sin.float().unsqueeze(1)
    q_cos = cos.gather(2, query_index[:, None, :, None].expand(-1, 1, -1, head_dim))
    q_sin = sin.gather(2, query_index[:, None, :, None].expand(-1, 1, -1, head_dim))
    q = q * q_cos + _rotate_half(q) * q_sin
    k = k * cos + _rotate_half(k) * sin
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = torch.matmul(q, k.transpose(-1, -2)) * attn.scaling  # (batch, heads, queries, seq)
    key_pos = torch.arange(seq, device=normed.device)
    allowed = (key_pos.view(1, 1, -1) <= query_index.unsqueeze(-1)) & state.valid.unsqueeze(1)
    logits = logits.masked_fill(~allowed.unsqueeze(1), float("-inf"))
    return logits.softmax(-1).mean(1)


class Scorer:
    """Base scorer: ``score`` returns a (batch, seq) tensor, higher = more important; only vision slots matter.

    Attributes:
        name: registry name.
        needs_attention: whether ``score`` reads the source layer's attention (else no hidden states are kept).
        source_offset: which layer's attention ranks tokens for layer ``l``: ``-1`` = layer ``l-1`` (FastV),
            ``0`` = layer ``l`` itself (PyramidDrop). Clamped to layer 0.
    """

    name = "base"
    needs_attention = True
    source_offset = 0

    def score(self, inputs: ScoringInputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class LastTokenAttention(Scorer):
    """Attention that the last prompt token pays to each token, mean over heads (FastV, PyramidDrop).

    Args:
        source_offset: -1 ranks with the previous layer's attention (FastV's layer K-1 map), 0 with the
            dropping layer's own (PyramidDrop's last-instruction-token query).
    """

    name = "last_token"

    def __init__(self, source_offset: int = -1) -> None:
        if source_offset not in (-1, 0):
            raise ValueError(f"source_offset must be -1 or 0, got {source_offset}")
        self.source_offset = source_offset

    def score(self, inputs: ScoringInputs) -> torch.Tensor:
        seq = inputs.hidden.shape[1]
        last = torch.full((inputs.hidden.shape[0], 1), seq - 1, device=inputs.hidden.device, dtype=torch.long)
        return attention_rows(inputs, last)[:, 0]


class RandomScorer(Scorer):
    """Seeded random ranking, reproducible per sample (by vision-token ordinal) whatever the batch.

    Args:
        seed: base seed; layer ``l`` uses ``seed + l``.
    """

    name = "random"
    needs_attention = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, inputs: ScoringInputs) -> torch.Tensor:
        state = inputs.state
        n = int(state.vision_ordinal.max()) + 1
        generator = torch.Generator().manual_seed(self.seed + inputs.layer_index)
        table = torch.rand(max(n, 1), generator=generator).to(state.valid.device)
        return torch.where(state.is_vision, table[state.vision_ordinal.clamp(min=0)], -1.0)
