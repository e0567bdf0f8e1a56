"""Subset selection shared by the pre-LLM methods: cosine similarities, max–min diversity, greedy DPP MAP, and the
per-sample plumbing from a selection over one sample's vision tokens to the engine's slot masks."""
from __future__ import annotations

from typing import Callable

import torch

from vtr_bench.reduction.sequence import SequenceState


def cosine_matrix(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarities (n, m) of the rows of ``x`` (n, d) and ``y`` (m, d; default ``x``), in float32."""
    xn = x.float() / x.float().norm(dim=-1, keepdim=True)
    yn = xn if y is None else y.float() / y.float().norm(dim=-1, keepdim=True)
    return xn @ yn.T


def max_min_diversity(features: torch.Tensor, k: int) -> torch.Tensor:
    """DivPrune's greedy max–min subset (vbdi/divprune): distance ``1 - cosine``; the first token is the one whose
    nearest other token is farthest, each next the one farthest from its nearest selected token (first index on
    ties). Selected tokens are excluded explicitly (the official code relies on their ~0 self-distance).
    Returns the ``k`` indices in selection order."""
    n = features.shape[0]
    k = min(k, n)
    if k <= 0:
        return torch.zeros(0, dtype=torch.long, device=features.device)
    distance = 1 - cosine_matrix(features)
    nearest = distance.masked_fill(torch.eye(n, dtype=torch.bool, device=features.device), float("inf")).amin(0)
    chosen = [int(nearest.argmax())] if n > 1 else [0]
    closest = distance[chosen[0]].clone()
    for _ in range(k - 1):
        closest[chosen] = float("-inf")
        j = int(closest.argmax())
        chosen.append(j)
        closest = torch.minimum(closest, distance[j])
    return torch.tensor(chosen, device=features.device)


def dpp_greedy_map(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy MAP of a DPP with kernel ``L`` (n, n), the fast incremental-Cholesky form (Chen et al. 2018, as
    CDPruner): marginal gains start at ``diag(L)``; each step takes the largest (first on ties), adds its
    Cholesky row and lowers every gain by its square; exactly ``k`` steps. Returns indices in selection order."""
    n = kernel.shape[0]
    k = min(k, n)
    gains = kernel.diagonal().float().clone()
    rows = torch.zeros(k, n, device=kernel.device)
    chosen: list[int] = []
    for t in range(k):
        j = int(gains.argmax())
        e = (kernel[j].float() - rows[:t, j] @ rows[:t]) / gains[j].clamp(min=1e-12).sqrt()
        rows[t] = e
        gains = gains - e ** 2
        chosen.append(j)
        gains[chosen] = float("-inf")
    return torch.tensor(chosen, dtype=torch.long, device=kernel.device)


def text_after_image(state: SequenceState, b: int) -> torch.Tensor:
    """The real text slots after sample ``b``'s last vision slot (the instruction and the template's tail)."""
    vision = state.is_vision[b].nonzero().flatten()
    after = torch.arange(state.valid.shape[1], device=vision.device) > (vision.max() if len(vision) else -1)
    return (state.valid[b] & ~state.is_vision[b] & after).nonzero().flatten()


def per_sample(state: SequenceState, keep: torch.Tensor,
               select: Callable[[int, torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """(batch, seq) mask of the vision slots ``select(b, slots, k)`` picks for each sample: it gets the sample's
    vision slots (in sequence order) and its keep count, and returns positions into ``slots``."""
    kept = torch.zeros_like(state.is_vision)
    for b in range(keep.shape[0]):
        slots = state.is_vision[b].nonzero().flatten()
        k = int(keep[b])
        if k >= len(slots):
            kept[b, slots] = True
        elif k > 0:
            kept[b, slots[select(b, slots, k)]] = True
    return kept
