"""Scorers: decide what happens to the vision tokens of the current sequence when a layer reduces them.

A scorer's :meth:`Scorer.reduce` returns a :class:`~vtr_bench.reduction.sequence.Reduction` (which vision tokens
to keep, which to merge); by default it keeps the top-scoring ones. Attention-based scorers recompute only the
attention rows they need from a decoder layer's own input norm, q/k projections and RoPE (O(rows x seq) work), so
the model itself keeps running SDPA / FlashAttention (DESIGN §3); how a decoder family does that is its
:class:`~vtr_bench.reduction.decoder.Decoder`'s business.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from vtr_bench.reduction.decoder import Decoder
from vtr_bench.reduction.merging import density_peak_clusters, grid_cells, pooled_grid, recycling_sizes
from vtr_bench.reduction.sequence import Reduction, SequenceState, select_vision


@dataclass
class ScoringInputs:
    """What a scorer sees at a dropping layer.

    Attributes:
        layer_index: the decoder layer about to process the reduced sequence.
        source_layer: the decoder layer whose attention is recomputed (``layer_index + scorer.source_offset``).
        hidden: input hidden states of ``source_layer`` (batch, seq, dim), before its input norm.
        state: the current sequence (positions, cos/sin, masks).
        current: the hidden states being reduced (input of ``layer_index``); merged tokens average these.
        prompt: the unreduced prompt's state (slots = original indices, as ``state.orig_index`` counts them).
        prompt_hidden: the prefill's input to layer 0 (the input embeddings), in original slot order.
        keys: ``source_layer``'s RoPE'd keys of the current sequence (batch, kv_heads, seq, head_dim) when its KV
            cache already holds them (None: recomputed from ``hidden``).
        decoder: the decoder family's attention and RoPE (:mod:`vtr_bench.reduction.decoder`).
        vision: per sample, what the vision encoder gave each of its vision tokens, in vision-ordinal order
            (``attention`` (heads, n), ``keys`` (n, head_dim), ``features`` (n, dim): pre-projector), for scorers
            with ``needs_vision`` (:mod:`vtr_bench.models.vision_probe`).
    """

    layer_index: int
    source_layer: nn.Module
    hidden: torch.Tensor
    state: SequenceState
    current: torch.Tensor | None = None
    prompt: SequenceState | None = None
    prompt_hidden: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    decoder: Decoder = field(default_factory=Decoder)
    vision: list[dict] | None = None


def attention_rows(inputs: ScoringInputs, query_index: torch.Tensor) -> torch.Tensor:
    """Attention probabilities of some query rows of ``inputs.source_layer``, averaged over heads, as the
    decoder family computes them (:meth:`~vtr_bench.reduction.decoder.Decoder.attention_rows`).

    Args:
        inputs: the scoring inputs.
        query_index: (batch, queries) slot indices of the query rows.

    Returns:
        (batch, queries, seq) float32 attention probabilities (causal; invalid keys get 0).
    """
    state = inputs.state
    return inputs.decoder.attention_rows(inputs.source_layer, inputs.hidden, state.cos, state.sin, state.valid,
                                         query_index, inputs.keys)


def mean_attention_rows(inputs: ScoringInputs, rows: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention probabilities averaged over the query rows marked in ``rows`` (batch, seq) bool
    (a ragged number per sample; a sample without rows scores 0). Returns (batch, seq) float32."""
    counts = rows.sum(-1)
    width = max(int(counts.max()), 1)
    query_index = torch.sort(rows.to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :width]
    real = torch.arange(width, device=rows.device).unsqueeze(0) < counts.unsqueeze(1)
    probs = torch.where(real.unsqueeze(-1), attention_rows(inputs, query_index), 0.0)  # filler rows may be NaN
    return probs.sum(1) / counts.clamp(min=1).unsqueeze(-1)


class Scorer:
    """Base scorer: ``score`` returns a (batch, seq) tensor, higher = more important; only vision slots matter.

    Attributes:
        name: registry name.
        needs_attention: whether ``score`` reads the source layer's attention (else no hidden states are kept).
        needs_vision: whether it reads the vision encoder (``ScoringInputs.vision``; pre-LLM methods).
        source_offset: which layer's attention ranks tokens for layer ``l``: ``-1`` = layer ``l-1`` (FastV),
            ``0`` = layer ``l`` itself (PyramidDrop). Clamped to layer 0.
    """

    name = "base"
    needs_attention = True
    needs_vision = False
    source_offset = 0

    def score(self, inputs: ScoringInputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def reduce(self, inputs: ScoringInputs, keep: torch.Tensor) -> Reduction:
        """What the layer does with the vision tokens, ``keep`` (batch,) of them per sample: the top-scoring."""
        return Reduction(select_vision(self.score(inputs), inputs.state, keep))


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


class TextRaterAttention(Scorer):
    """SparseVLM's text raters (Zhang et al., arXiv 2410.04417): attention from the relevant text tokens.

    Raters come from the prompt's input embeddings (so every pruning layer has the same ones): among the text
    tokens after the first vision token (the instruction), relevance ``m_t = mean_v softmax_t(v . t)`` over the
    sample's vision tokens ``v``; the raters are the text tokens with ``m_t`` above its mean (no such token: the
    last prompt token; SparseVLM's code has no fallback). A vision token's score is the head-averaged attention the
    raters pay it in the source layer, averaged over raters.

    With ``recycle > 0`` (SparseVLM's token recycling, always on in its code with share 0.3) a layer that keeps the
    top ``k`` of ``n`` vision tokens also recycles the next ``pool = int(recycle * (n - k)) + 1`` by score into
    ``int(pool / 10) + 1`` cluster tokens (:func:`~vtr_bench.reduction.merging.recycling_sizes`,
    :func:`~vtr_bench.reduction.merging.density_peak_clusters` on the hidden states being reduced), each the mean of
    its members, **on top of** the ``k``; they follow the kept vision tokens (before the text after the image), in
    the order of their centres' density-peak scores, and are vision tokens for later pruning layers.

    Args:
        recycle: share of the dropped vision tokens that is recycled into cluster tokens (0: off; SparseVLM: 0.3).
    """

    name = "text_raters"
    source_offset = -1

    def __init__(self, recycle: float = 0.0) -> None:
        if not 0 <= recycle <= 1:
            raise ValueError(f"recycle must be in [0, 1], got {recycle}")
        self.recycle = float(recycle)

    @staticmethod
    def raters(prompt: SequenceState, embeddings: torch.Tensor) -> torch.Tensor:
        """(batch, seq) True at the rater slots of the unreduced prompt."""
        slots = torch.arange(prompt.valid.shape[1], device=prompt.valid.device)
        raters = torch.zeros_like(prompt.valid)
        for b in range(prompt.valid.shape[0]):
            vision = prompt.is_vision[b].nonzero().flatten()
            after = slots > (vision[0] if len(vision) else -1)
            text = (prompt.valid[b] & ~prompt.is_vision[b] & after).nonzero().flatten()
            if len(vision) == 0 or len(text) == 0:
                raters[b, int(prompt.valid[b].nonzero().max())] = True
                continue
            relevance = (embeddings[b, vision].float() @ embeddings[b, text].float().T).softmax(-1).mean(0)
            chosen = text[relevance > relevance.mean()]
            raters[b, chosen if len(chosen) else text[-1:]] = True
        return raters

    def score(self, inputs: ScoringInputs) -> torch.Tensor:
        state = inputs.state
        chosen = self.raters(inputs.prompt, inputs.prompt_hidden).gather(1, state.orig_index)
        return mean_attention_rows(inputs, chosen & state.valid & ~state.is_vision)

    def reduce(self, inputs: ScoringInputs, keep: torch.Tensor) -> Reduction:
        scores = self.score(inputs)
        state = inputs.state
        kept = select_vision(scores, state, keep)
        sizes = [recycling_sizes(int(n) - int(k), self.recycle) for n, k in zip(state.vision_counts(), keep)]
        if not any(clusters for _, clusters in sizes):
            return Reduction(kept)
        pool = select_vision(scores, state, keep + torch.tensor([p for p, _ in sizes], device=keep.device)) & ~kept
        group = torch.full_like(state.vision_ordinal, -1)
        anchor = torch.full((len(keep), max(c for _, c in sizes)), -1, device=keep.device)
        for b, (_, clusters) in enumerate(sizes):
            if clusters:
                slots = pool[b].nonzero().flatten()
                _, group[b, slots] = density_peak_clusters(inputs.current[b, slots], clusters)
                anchor[b, :clusters] = state.is_vision[b].nonzero().max()  # after the sample's last vision slot
        return Reduction(kept, group, anchor)


class GridPooling(Scorer):
    """Spatial average pooling of the vision-token grid (the downsampling control; VTC-Bench, arXiv 2510.07143).

    A sample's ``n`` vision tokens form ``tiles`` grids of ``grid = (height, width)`` tokens in raster order
    (``grid`` None: one square grid). Each grid is pooled to the ``h x w`` grid of
    :func:`~vtr_bench.reduction.merging.pooled_grid` for ``keep / tiles`` tokens: cells partition the grid
    (:func:`~vtr_bench.reduction.merging.grid_cells`), each cell becomes the mean of its tokens at the slot (and
    position) of its first, top-left token. Needs the sample's complete vision tokens (use it at layer 0).

    Args:
        grid: ``(height, width)`` of one tile's token grid, or None for a square grid of all vision tokens.
    """

    name = "grid_pool"
    needs_attention = False
    source_offset = 0

    def __init__(self, grid: tuple[int, int] | None = None) -> None:
        self.grid = tuple(grid) if grid is not None else None

    def tiles(self, n: int) -> tuple[int, int, int]:
        """``(tiles, height, width)`` of a sample with ``n`` vision tokens."""
        height, width = self.grid if self.grid is not None else (math.isqrt(n),) * 2
        tiles = n // (height * width) if self.grid is not None else 1
        if tiles * height * width != n:
            shape = f"tiles of {height}x{width}" if self.grid else "a square grid"
            raise ValueError(f"{n} vision tokens do not form {shape}; set method.grid=[height,width]")
        return tiles, height, width

    def reduce(self, inputs: ScoringInputs, keep: torch.Tensor) -> Reduction:
        state = inputs.state
        group = torch.full_like(state.vision_ordinal, -1)
        sizes = []
        for b in range(len(keep)):
            vision = state.is_vision[b]
            ordinal = state.vision_ordinal[b, vision]
            n = int(ordinal.numel())
            if n == 0:
                sizes.append(0)
                continue
            if int(ordinal.max()) != n - 1:
                raise RuntimeError("grid pooling needs every vision token of the sample (pool at layer 0)")
            grid = inputs.decoder.vision_grid(state.position_ids[b, vision])
            tiles, height, width = (1, *grid) if grid is not None else self.tiles(n)
            h, w = pooled_grid(height, width, int(keep[b]) / tiles)
            cells = grid_cells(height, width, h, w, device=keep.device)
            group[b, vision] = ordinal // (height * width) * (h * w) + cells[ordinal % (height * width)]
            sizes.append(tiles * h * w)
        slots = torch.arange(group.shape[1], device=keep.device).expand_as(group)
        anchor = torch.full((len(keep), max(max(sizes), 1)), group.shape[1], device=keep.device)
        anchor.scatter_reduce_(1, group.clamp(min=0), torch.where(group >= 0, slots, group.shape[1]), "amin")
        return Reduction(torch.zeros_like(state.is_vision), group, anchor.masked_fill(anchor == group.shape[1], -1))
