"""The gather-and-shrink step shared by every method.

:class:`SequenceState` describes the token sequence a decoder layer sees during prefill: which slots are real
tokens, which are vision tokens, their original indices, RoPE positions and cos/sin. :func:`select_and_shrink`
drops vision tokens and gathers every per-token tensor with the same indices; samples of a batch may keep
different numbers of tokens, so shorter rows are left-padded with masked dummy slots (the last slot of every row
stays the last prompt token). Later layers' KV caches are then simply shorter.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class SequenceState:
    """Per-token tensors of the current prefill sequence, all ``(batch, seq)`` or ``(batch, seq, head_dim)``.

    Attributes:
        valid: real tokens (False for padding and dummy slots).
        is_vision: vision tokens (always a subset of ``valid``).
        vision_ordinal: index of a vision token among its sample's vision tokens (-1 elsewhere).
        orig_index: index of each slot in the original (unreduced) prompt.
        position_ids: RoPE positions.
        cos: rotary cosines for ``position_ids``.
        sin: rotary sines for ``position_ids``.
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
        ordinal = torch.where(is_vision, is_vision.long().cumsum(-1) - 1, torch.full_like(position_ids, -1))
        orig = torch.arange(valid.shape[1], device=valid.device).expand_as(position_ids)
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
        take = lambda t: t.gather(1, index)  # noqa: E731
        take3 = lambda t: t.gather(1, index.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # noqa: E731
        return replace(
            self,
            valid=slot_valid,
            is_vision=take(self.is_vision) & slot_valid,
            vision_ordinal=torch.where(slot_valid, take(self.vision_ordinal), -1),
            orig_index=take(self.orig_index),
            position_ids=take(self.position_ids),
            cos=take3(self.cos),
            sin=take3(self.sin),
        )


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


def shrink(state: SequenceState, keep_mask: torch.Tensor) -> tuple[SequenceState, torch.Tensor]:
    """Keep the slots in ``keep_mask`` (in original order), right-aligned, dummies on the left.

    Returns:
        The new state and the (batch, new_seq) gather index into the old sequence, to apply to hidden states.
    """
    keep_mask = keep_mask & state.valid
    new_len = int(keep_mask.sum(-1).max())
    # A stable sort of the 0/1 mask puts dropped slots first and kept slots last, each in original order.
    order = torch.sort(keep_mask.to(torch.int8), dim=-1, stable=True).indices
    index = order[:, order.shape[1] - new_len:]
    return state.gather(index, keep_mask.gather(1, index)), index


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
