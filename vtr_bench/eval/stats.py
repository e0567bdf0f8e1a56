"""Paired statistics of two runs on the same samples: bootstrap intervals of an accuracy difference (stratified by
task, so a benchmark's average of task means is resampled as it is computed), the exact McNemar test of two binary
score vectors, and one-sided lower bounds for the noise-aware G-Search criterion."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000


def _strata(scores: Mapping[str, Sequence[float]] | Sequence[float]) -> list[np.ndarray]:
    """Per-task score vectors (a bare sequence is one task)."""
    values = scores.values() if isinstance(scores, Mapping) else [scores]
    strata = [np.asarray(v, dtype=float) for v in values]
    if not strata or any(s.ndim != 1 or s.size == 0 for s in strata):
        raise ValueError("each task needs at least one paired sample")
    return strata


def bootstrap_distribution(diffs: Mapping[str, Sequence[float]] | Sequence[float], resamples: int = DEFAULT_RESAMPLES,
                           seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the mean over tasks of each task's mean of ``diffs`` (per-sample differences, or
    scores), resampling samples with replacement within each task."""
    rng = np.random.default_rng(seed)
    strata = _strata(diffs)
    replicates = np.zeros(int(resamples))
    for stratum in strata:
        for start in range(0, int(resamples), 128):  # 128 replicates at a time: bounded memory on 9,000-row tasks
            stop = min(start + 128, int(resamples))
            picks = rng.integers(0, stratum.size, size=(stop - start, stratum.size))
            replicates[start:stop] += stratum[picks].mean(axis=1)
    return replicates / len(strata)


def bootstrap_ci(diffs: Mapping[str, Sequence[float]] | Sequence[float], resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0, confidence: float = 0.95) -> dict:
    """Percentile bootstrap interval of the mean (over tasks) of the per-task mean of ``diffs``.

    Returns:
        ``{"estimate", "low", "high", "confidence", "resamples", "seed", "contains_zero"}``.
    """
    replicates = bootstrap_distribution(diffs, resamples, seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    estimate = float(np.mean([s.mean() for s in _strata(diffs)]))
    return {"estimate": estimate, "low": float(low), "high": float(high), "confidence": confidence,
            "resamples": int(resamples), "seed": int(seed), "contains_zero": bool(low <= 0 <= high)}


def lower_bound(diffs: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                confidence: float = 0.95) -> float:
    """One-sided percentile-bootstrap lower bound of ``mean(diffs)`` at ``confidence``."""
    return float(np.quantile(bootstrap_distribution(diffs, resamples, seed), 1 - confidence))


def is_binary(*vectors: Sequence[float]) -> bool:
    """Whether every value is 0 or 1 (McNemar applies)."""
    return all(set(np.unique(np.asarray(v, dtype=float))) <= {0.0, 1.0} for v in vectors)


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> dict:
    """The exact (binomial) McNemar test of paired binary scores: two-sided p of the discordant pairs' split.

    Returns:
        ``{"a_only": a right and b wrong, "b_only": the reverse, "p_value"}`` (p = 1 without discordant pairs).
    """
    from scipy.stats import binomtest

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or not is_binary(a, b):
        raise ValueError("McNemar needs two binary score vectors of one length")
    a_only, b_only = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    p = 1.0 if a_only + b_only == 0 else float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def bootstrap_mean_interval(values: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                            confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise percentile-bootstrap interval of the NaN-ignoring mean over axis 0 of ``values`` (one row per
    sample, e.g. a Kendall-τ matrix per sample), resampling whole rows."""
    import warnings

    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.shape[0], size=(int(resamples), values.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN entry stays NaN
        replicates = np.stack([np.nanmean(values[p], axis=0) for p in picks])
        alpha = (1 - confidence) / 2
        low, high = np.nanquantile(replicates, [alpha, 1 - alpha], axis=0)
    return low, high
