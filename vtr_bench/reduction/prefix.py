"""Prefix reuse: the prefill state entering a decoder layer, stored once and resumed by later requests.

Two schedules whose keep counts agree on layers ``0..d-1`` compute the very same prefill in those layers (same
hidden states, same KV cache, same token choices), so a request can start at layer ``d`` from a snapshot taken by
an earlier one: the engine replays the stored keys / values into the cache instead of running layers ``< d`` and
hands layer ``d`` the stored hidden states (:meth:`vtr_bench.reduction.engine.ReductionEngine.request`). A
snapshot at depth 0 is the prompt's input embeddings (the vision encoder is skipped too). Decode steps always run
every layer. Used by search evaluations, where the same samples go through many schedules that share prefixes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PrefixSnapshot:
    """The prefill state of one batch entering decoder layer ``depth`` (tensors are referenced, never copied)."""

    depth: int
    hidden: torch.Tensor                      # entering layer ``depth``
    previous: torch.Tensor | None             # entering layer ``depth - 1`` (a scorer of layer l-1's attention)
    embeddings: torch.Tensor                  # entering layer 0
    keys: list[torch.Tensor]                  # layers < depth, as the KV cache holds them after the prefill
    values: list[torch.Tensor]
    state: object                             # the engine's SequenceState entering ``depth``
    prompt: object
    counts: torch.Tensor
    shift: torch.Tensor
    overrides: dict | None
    processed: list[torch.Tensor] = field(default_factory=list)
    layer_valid: list[torch.Tensor] = field(default_factory=list)
    layer_shift: list[torch.Tensor] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors it holds (shared ones counted in every snapshot that holds them)."""
        tensors = [self.hidden, self.embeddings, *self.keys, *self.values]
        return sum(t.nbytes for t in tensors + ([self.previous] if self.previous is not None else []))


def record_depths(keep: torch.Tensor, n_vision: list[int]) -> set[int]:
    """Where a request snapshots its prefill: depth 0 (the embeddings), its first reducing layer (what every
    schedule that reduces no earlier shares) and its last reducing layer ``d`` and ``d + 1`` (what the candidates
    of the next greedy step share: they differ from layer ``d + 1`` on).

    Args:
        keep: (batch, layers) resolved keep counts.
        n_vision: vision tokens per sample.
    """
    layers = keep.shape[1]
    start = torch.tensor(n_vision, device=keep.device).unsqueeze(1)
    previous = torch.cat([start, keep[:, :-1]], dim=1)
    reducing = (keep < previous).any(0).nonzero().flatten().tolist()
    depths = {0}
    if reducing:
        depths |= {reducing[0], reducing[-1], reducing[-1] + 1}
    return {d for d in depths if d < layers}


class PrefixStore:
    """Snapshots of many batches and schedules within a memory bound; the deepest matching one is resumed.

    A snapshot is found by its batch (any hashable key the caller gives: the same samples, in the same order and
    padding) and the keep counts of the layers before its depth. Past ``limit_mib`` the oldest evaluations'
    snapshots are dropped; those of the running evaluation never are (a snapshot that does not fit is not stored:
    the request then computes its prefix, as without a store).

    Args:
        limit_mib: memory bound in MiB (0: store nothing).
    """

    def __init__(self, limit_mib: float) -> None:
        self.limit = int(float(limit_mib) * 2**20)
        self.bytes = 0
        self.evaluation = 0
        self._items: dict[tuple, tuple[int, PrefixSnapshot]] = {}  # key -> (evaluation, snapshot), oldest first

    @staticmethod
    def _key(batch, depth: int, keep: torch.Tensor) -> tuple:
        return batch, depth, tuple(map(tuple, keep[:, :depth].tolist()))

    def next_evaluation(self) -> None:
        """Mark the start of another evaluation (its snapshots are the newest)."""
        self.evaluation += 1

    def find(self, batch, keep: torch.Tensor) -> PrefixSnapshot | None:
        """The deepest stored snapshot of ``batch`` whose prefix counts equal ``keep``'s (None: none)."""
        for depth in range(keep.shape[1] - 1, -1, -1):
            item = self._items.get(self._key(batch, depth, keep))
            if item is not None:
                return item[1]
        return None

    def put(self, batch, keep: torch.Tensor, snapshot: PrefixSnapshot) -> bool:
        """Store ``snapshot`` (True) unless it is stored already or does not fit (False)."""
        key = self._key(batch, snapshot.depth, keep)
        if key in self._items or self.limit <= 0:
            return False
        size = snapshot.nbytes
        for old in [k for k, (evaluation, _) in self._items.items() if evaluation < self.evaluation]:
            if self.bytes + size <= self.limit:
                break
            self.bytes -= self._items.pop(old)[1].nbytes
        if self.bytes + size > self.limit:
            return False
        self._items[key] = (self.evaluation, snapshot)
        self.bytes += size
        return True

    def __len__(self) -> int:
        return len(self._items)
