"""Plans for merging vision tokens: density-peak clusters and their sizes (SparseVLM's recycling) and spatial
pooling cells (downsampling). Pure functions; :func:`vtr_bench.reduction.sequence.reduce_sequence` does the merging
itself.
"""
from __future__ import annotations

import math

import torch

RECYCLE_SHARE = 0.3  # SparseVLM's share of the dropped tokens that is recycled
CLUSTER_SIZE = 10    # SparseVLM's recycled tokens per cluster token


def recycling_sizes(dropped: int, share: float = RECYCLE_SHARE) -> tuple[int, int]:
    """SparseVLM's token-recycling sizes for a layer that drops ``dropped`` vision tokens: ``(pool, clusters)``
    with ``pool = int(share * dropped) + 1`` dropped tokens (the best by score) merged into ``clusters =
    int(pool / 10) + 1`` cluster tokens; ``(0, 0)`` when nothing is dropped or ``share`` is 0 (no recycling)."""
    if dropped <= 0 or share <= 0:
        return 0, 0
    pool = min(dropped, int(share * dropped) + 1)
    return pool, int(pool / CLUSTER_SIZE) + 1


def density_peak_clusters(x: torch.Tensor, clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster tokens with DPC-kNN as SparseVLM's ``cluster_and_merge`` does (density peaks, Rodriguez & Laio 2014,
    kNN densities as in TCFormer).

    Distances are Euclidean over ``sqrt(dim)``. Density ``rho_i = exp(-mean d(i, j)^2)`` over the ``clusters``
    nearest tokens, the token itself included (SparseVLM's k is the number of clusters); ``delta_i`` is the distance
    to the nearest strictly denser token, the largest distance of all for a token without one. The ``clusters``
    tokens with the largest ``rho * delta`` are the centres, in that order (ties: earlier token); every token joins
    its nearest centre (ties: the earlier centre in that order), each centre its own cluster. Deterministic.

    Args:
        x: (tokens, dim) features.
        clusters: number of clusters, >= 1.

    Returns:
        ``centres`` (clusters,) token indices by decreasing ``rho * delta``, and ``assign`` (tokens,) the cluster
        (index into ``centres``) of each token. With ``clusters >= tokens`` every token is its own cluster.
    """
    n = x.shape[0]
    if clusters >= n:
        every = torch.arange(n, device=x.device)
        return every, every
    x = x.float()
    dist = torch.cdist(x, x) / math.sqrt(x.shape[1])
    nearest = dist.topk(clusters, dim=-1, largest=False).values
    density = torch.exp(-(nearest ** 2).mean(-1))
    denser = density.unsqueeze(0) > density.unsqueeze(1)  # [i, j]: j strictly denser than i
    delta = torch.where(denser, dist, dist.max()).min(-1).values
    centres = torch.sort(density * delta, descending=True, stable=True).indices[:clusters]
    assign = dist[:, centres].argmin(-1)
    assign[centres] = torch.arange(clusters, device=x.device)
    return centres, assign


def pooled_grid(height: int, width: int, target: float) -> tuple[int, int]:
    """The pooled grid ``(h, w)`` for a ``height x width`` token grid and a target number of pooled tokens.

    Candidates keep the grid's aspect to within one cell (``|w - h * width / height| <= 1``, ``1 <= h <= height``,
    ``1 <= w <= width``); the one whose size ``h * w`` is closest to ``target`` wins (ties: the smaller size, then
    the closer aspect, then the smaller ``h``). E.g. 24x24 at 192 tokens -> 14x14, at 72 -> 8x9; 12x12 at 43.2
    -> 6x7. A ``target`` that is a winning size maps back to the same grid.
    """
    best = None
    for h in range(1, height + 1):
        ideal = h * width / height
        for w in range(max(1, math.ceil(ideal - 1)), min(width, math.floor(ideal + 1)) + 1):
            key = (abs(h * w - target), h * w, abs(w - ideal), h)
            best = min(best, (key, (h, w))) if best else (key, (h, w))
    return best[1]


def grid_cells(height: int, width: int, h: int, w: int, device=None) -> torch.Tensor:
    """Pooling cell (raster index in the ``h x w`` grid) of each token of a ``height x width`` grid (raster order).

    Cells partition the grid: row ``r`` belongs to cell row ``i`` when ``floor(i * height / h) <= r <
    floor((i + 1) * height / h)`` (likewise for columns), so cell sides differ by at most one token.
    """
    rows = torch.searchsorted(torch.arange(h, device=device) * height // h, torch.arange(height, device=device),
                              right=True) - 1
    cols = torch.searchsorted(torch.arange(w, device=device) * width // w, torch.arange(width, device=device),
                              right=True) - 1
    return (rows.unsqueeze(1) * w + cols.unsqueeze(0)).flatten()
