"""The gather-and-merge step shared by every method.

:class:`SequenceState` describes the token sequence a decoder layer sees during prefill: which slots are real
tokens, which are vision tokens, their original indices, RoPE positions and cos/sin. A :class:`Reduction` says
what a layer does to the vision tokens of each sample: keep some as they are and replace groups of others by
their mean (a merged token counts as one vision token). :func:`reduce_sequence` applies it, gathering every
per-token tensor with the same indices; samples of a batch may keep different numbers of tokens, so shorter rows
are left-padded with masked dummy slots (the last slot of every row stays the last prompt token). Later layers'
KV caches are then simply shorter.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class SequenceState:
    """Per-token tensors of the current prefill sequence, all ``(batch, seq, ...)``.

    Attributes:
        valid: real tokens (False for padding and dummy slots).
        is_vision: vision tokens (always a subset of ``valid``).
        vision_ordinal: index of a vision token among its sample's vision tokens (-1 elsewhere).
        orig_index: index of each slot in the original (unreduced) prompt.
        position_ids: RoPE positions in the decoder family's canonical form (``(batch, seq)``; 3-D multimodal
            RoPE: ``(batch, seq, 3)``; :mod:`vtr_bench.reduction.decoder`).
        cos: rotary cosines applied to q / k (batch, seq, head_dim).
        sin: rotary sines applied to q / k (batch, seq, head_dim).
    """

    valid: torch.Tensor
    is_vision: torch.Tensor
    vision_ordinal: torch.Tensor
    orig_index: torch.Tensor
    position_ids: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor

    @classmethod
    def initial(cls, vision_mask: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                cos: torch.Tensor, sin: torch.Tensor) -> "SequenceState":
        """The state of the unreduced prompt."""
        valid = attention_mask.bool()
        is_vision = vision_mask.bool() & valid
        ordinal = torch.where(is_vision, is_vision.long().cumsum(-1) - 1, -1)
        orig = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
        return cls(valid, is_vision, ordinal, orig, position_ids, cos, sin)

    @property
    def all_valid(self) -> bool:
        """True when no slot is padding or a dummy (masks can then be left to the causal kernel)."""
        return bool(self.valid.all())

    def vision_counts(self) -> torch.Tensor:
        """Number of vision tokens per sample, shape ``(batch,)``."""
        return self.is_vision.sum(-1)

    def gather(self, index: torch.Tensor, slot_valid: torch.Tensor) -> "SequenceState":
        """Gather every per-token tensor with ``index`` (batch, new_seq); ``slot_valid`` marks real slots."""
        def take(t: torch.Tensor) -> torch.Tensor:
            return t.gather(1, index.view(*index.shape, *(1,) * (t.dim() - 2)).expand(-1, -1, *t.shape[2:]))

        return replace(
            self,
            valid=slot_valid,
            is_vision=take(self.is_vision) & slot_valid,
            vision_ordinal=torch.where(slot_valid, take(self.vision_ordinal), -1),
            orig_index=take(self.orig_index),
            position_ids=take(self.position_ids),
            cos=take(self.cos),
            sin=take(self.sin),
        )


@dataclass
class Reduction:
    """What a layer does to each sample's vision tokens; vision slots in neither ``kept`` nor a group are dropped.

    Attributes:
        kept: (batch, seq) vision slots kept as they are.
        group: (batch, seq) merge group of each slot (-1: none); a sample's groups are ``0..G_b-1``; None when
            nothing is merged.
        anchor: (batch, groups) a vision slot (usually a member) per group: the merged token goes right after it in
            the sequence and takes its position, original index and ordinal; -1 pads the groups a sample does
            not have. None when nothing is merged.
        weights: (batch, seq) each member's weight in its merged token, which is then the weighted sum (VisionZip:
            the target plus the mean of the tokens assigned to it); None: the members' mean.
    """

    kept: torch.Tensor
    group: torch.Tensor | None = None
    anchor: torch.Tensor | None = None
    weights: torch.Tensor | None = None


def select_vision(scores: torch.Tensor, state: SequenceState, keep: torch.Tensor) -> torch.Tensor:
    """Mark the ``keep[b]`` highest-scoring vision tokens of each sample (ties: earliest token).

    Args:
        scores: (batch, seq) score per slot; only vision slots are considered.
        state: the current sequence.
        keep: (batch,) number of vision tokens to keep per sample.

    Returns:
        (batch, seq) bool mask of the selected vision tokens.
    """
    candidates = state.is_vision
    kmax = int(keep.max())
    selected = torch.zeros_like(candidates)
    if kmax == 0:
        return selected
    masked = torch.where(candidates, scores.float(), torch.finfo(torch.float32).min)
    # Stable descending sort: equal scores keep their original order, so results are deterministic.
    order = torch.sort(masked, dim=-1, descending=True, stable=True).indices[:, :kmax]
    take = torch.arange(kmax, device=keep.device).unsqueeze(0) < keep.unsqueeze(1)
    selected.scatter_(1, order, take)
    return selected & candidates


def merge_groups(hidden: torch.Tensor, group: torch.Tensor, groups: int,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean hidden state (batch, groups, dim) of the slots of each group, or with ``weights`` (batch, seq) their
    weighted sum (float32 sums, cast back)."""
    batch, _, dim = hidden.shape
    index = torch.where(group >= 0, group, groups)  # non-members go to a spare bin
    sums = hidden.new_zeros(batch, groups + 1, dim, dtype=torch.float32)
    terms = hidden.float() if weights is None else hidden.float() * weights.unsqueeze(-1).float()
    sums.scatter_add_(1, index.unsqueeze(-1).expand(-1, -1, dim), terms)
    if weights is not None:
        return sums[:, :groups].to(hidden.dtype)
    sizes = torch.zeros(batch, groups + 1, device=hidden.device)
    sizes.scatter_add_(1, index, torch.ones(index.shape, device=hidden.device))
    return (sums / sizes.clamp(min=1).unsqueeze(-1))[:, :groups].to(hidden.dtype)


def reduce_sequence(state: SequenceState, hidden: torch.Tensor,
                    reduction: Reduction) -> tuple[SequenceState, torch.Tensor]:
    """Apply ``reduction``: keep every non-vision token and the kept vision tokens, in original order, with each
    merged token placed right after its anchor slot; rows are right-aligned, dummies on the left.

    Returns:
        The new state and hidden states (batch, new_seq, dim).
    """
    keep = (~state.is_vision | reduction.kept) & state.valid
    source = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)  # extended slot -> original slot
    if reduction.anchor is not None and reduction.anchor.shape[1]:
        present = reduction.anchor >= 0
        anchor = reduction.anchor.clamp(min=0)
        hidden = torch.cat([hidden, merge_groups(hidden, reduction.group, anchor.shape[1], reduction.weights)], dim=1)
        keep = torch.cat([keep, present], dim=1)
        source = torch.cat([source, anchor], dim=1)
    new_len = int(keep.sum(-1).max())
    # Sort keys: dropped slots -1 (first), slot s 2s, a merged token 2·anchor+1 (right after its anchor); the
    # stable sort keeps merged tokens that share an anchor in group order. Kept slots end up right-aligned.
    order_key = 2 * source + (torch.arange(keep.shape[1], device=keep.device) >= state.valid.shape[1])
    order = torch.sort(torch.where(keep, order_key, -1), dim=-1, stable=True).indices
    index = order[:, order.shape[1] - new_len:]
    return state.gather(source.gather(1, index), keep.gather(1, index)), gather_hidden(hidden, index)


def gather_hidden(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather hidden states (batch, seq, dim) along the sequence with ``index`` (batch, new_seq)."""
    return hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def attention_mask_4d(valid: torch.Tensor, query_len: int, dtype: torch.dtype, boolean: bool) -> torch.Tensor:
    """A (batch, 1, query_len, keys) mask for the last ``query_len`` of ``valid``'s keys, causal among them.

    Invalid keys are masked; every query may attend to itself, so padding rows never become all-masked (their
    outputs are never read). ``boolean`` gives SDPA's True-means-attend form; otherwise an additive float mask
    (eager attention).
    """
    keys = valid.shape[1]
    key_pos = torch.arange(keys, device=valid.device)
    query_pos = key_pos[keys - query_len:]
    causal = key_pos.unsqueeze(0) <= query_pos.unsqueeze(1)  # (q, k)
    allowed = causal.unsqueeze(0) & valid.unsqueeze(1)
    allowed = allowed | (key_pos.unsqueeze(0) == query_pos.unsqueeze(1)).unsqueeze(0)
    allowed = allowed.unsqueeze(1)
    if boolean:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=valid.device).masked_fill(~allowed, torch.finfo(dtype).min)


def layer_mask(valid: torch.Tensor, query_len: int, dtype: torch.dtype, implementation: str) -> torch.Tensor | None:
    """The attention mask a reduced layer gets for the last ``query_len`` of the keys ``valid`` (batch, keys), in
    the form its attention implementation reads.

    ``flash_attention_2``: the 2-D padding mask itself (FA2 unpads by it; causal within a row is its own). It is
    given even when every key is valid: without a mask, transformers' FA2 path reads position ids that are not
    contiguous (kept tokens at their original positions) as packed sequences. ``sdpa``: None when every key is
    valid (the causal kernel), else SDPA's boolean 4-D mask; ``eager``: the additive 4-D mask.
    """
    if implementation == "flash_attention_2":
        return valid
    if implementation == "sdpa" and bool(valid.all()):
        return None
    return attention_mask_4d(valid, query_len, dtype, implementation == "sdpa")

