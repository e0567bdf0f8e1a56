"""Analytic cost model of a keep schedule: prefill MACs, decode MACs, KV-cache bytes, vision-tower MACs.

Conventions (DESIGN.md §4):

* Costs are counted in **multiply-accumulates (MACs)**. Following the token-reduction literature (FastV and
  its successors), reported "TFLOPs" are MACs / 1e12; ``torch.utils.flop_counter`` counts 2 FLOPs per MAC.
* One decoder layer processing ``n`` tokens (hidden ``d``, FFN width ``m``) costs
  ``C(n) = 4·n·d² + 2·n²·d + f·n·d·m``: q/k/v/o projections, the full (non-causal) ``QKᵀ`` and ``AV``
  products, and the FFN. ``f = 3`` for SwiGLU FFNs (``ffn="swiglu"``, default); ``f = 2`` reproduces FastV's
  published formula (``ffn="fastv"``). With ``gqa=True`` projections and attention use the real head
  layout, ``2·n·d·d_q + 2·n·d·d_kv + 2·n²·d_q`` with ``d_q = heads·head_dim``, ``d_kv = kv_heads·head_dim``.
* Norms, rotary embeddings, softmax, the embedding table and the LM head are not counted.
* Layer ``l`` of a schedule processes ``text_tokens + keep[l]`` tokens; everything is per sample (batch 1).
"""
from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FFN_FACTORS = {"swiglu": 3, "fastv": 2}


@dataclass(frozen=True)
class DecoderDims:
    """Shape of an LLM decoder, as far as the cost model needs it.

    Attributes:
        layers: Number of decoder layers ``L``.
        hidden: Hidden size ``d``.
        ffn: FFN intermediate size ``m``.
        heads: Query heads.
        kv_heads: Key/value heads (``== heads`` without GQA).
        head_dim: Per-head width; defaults to ``hidden // heads``.
    """

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int | None = None

    def __post_init__(self) -> None:
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden // self.heads)

    @classmethod
    def from_hf_config(cls, text_config: Any) -> DecoderDims:
        """Read the dims from a transformers decoder text config.

        Args:
            text_config: Config with ``num_hidden_layers``, ``hidden_size``, ``intermediate_size``,
                ``num_attention_heads`` and optionally ``num_key_value_heads`` and ``head_dim``.

        Returns:
            The decoder dims.
        """
        heads = text_config.num_attention_heads
        return cls(layers=text_config.num_hidden_layers, hidden=text_config.hidden_size,
                   ffn=text_config.intermediate_size, heads=heads,
                   kv_heads=getattr(text_config, "num_key_value_heads", None) or heads,
                   head_dim=getattr(text_config, "head_dim", None))


def _ffn_factor(ffn: str) -> int:
    try:
        return FFN_FACTORS[ffn]
    except KeyError:
        raise ValueError(f"ffn must be one of {sorted(FFN_FACTORS)}, got {ffn!r}") from None


def _counts(keep: Sequence[int], layers: int) -> list[int]:
    """Keep counts as ints, checked for length and sign."""
    try:
        counts = [operator.index(k) for k in keep]
    except TypeError:
        raise ValueError(f"keep must hold integer token counts, got {list(keep)!r}") from None
    if len(counts) != layers:
        raise ValueError(f"keep has {len(counts)} entries but the decoder has {layers} layers")
    if any(k < 0 for k in counts):
        raise ValueError(f"keep counts must be >= 0, got {counts}")
    return counts


def _macs(queries: int, ctx: int, dims: DecoderDims, ffn: str, gqa: bool) -> int:
    """One layer: ``queries`` new tokens attending over ``ctx`` positions."""
    d, f = dims.hidden, _ffn_factor(ffn)
    d_q, d_kv = (dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim) if gqa else (d, d)
    return queries * (2 * d * d_q + 2 * d * d_kv + 2 * ctx * d_q + f * d * dims.ffn)


def layer_macs(n: int, dims: DecoderDims, ffn: str = "swiglu", gqa: bool = False) -> float:
    """MACs of one decoder layer's prefill over ``n`` tokens.

    Args:
        n: Tokens the layer processes.
        dims: Decoder dims.
        ffn: ``"swiglu"`` (f=3) or ``"fastv"`` (f=2).
        gqa: Count projections and attention with the real head layout instead of ``d``.

    Returns:
        Multiply-accumulates.
    """
    return float(_macs(n, n, dims, ffn, gqa))


def prefill_macs(keep: Sequence[int], text_tokens: int, dims: DecoderDims, ffn: str = "swiglu",
                 gqa: bool = False) -> float:
    """MACs of the LLM prefill under a keep schedule.

    Args:
        keep: Vision tokens processed by each decoder layer (length ``dims.layers``).
        text_tokens: Non-vision tokens of the prompt.
        dims: Decoder dims.
        ffn: ``"swiglu"`` or ``"fastv"``.
        gqa: Head-layout-aware projections and attention.

    Returns:
        Multiply-accumulates summed over layers.
    """
    return float(sum(_macs(text_tokens + k, text_tokens + k, dims, ffn, gqa) for k in _counts(keep, dims.layers)))


def decode_macs_per_token(keep: Sequence[int], text_tokens: int, generated: int, dims: DecoderDims,
                          ffn: str = "swiglu", gqa: bool = False) -> float:
    """MACs of one decode step: a single new token attending over the KV cache.

    Per layer ``4·d² + 2·ctx·d + f·d·m`` (GQA: ``2·d·d_q + 2·d·d_kv + 2·ctx·d_q + f·d·m``), where the new
    token attends over ``ctx = text_tokens + keep[l] + generated`` positions.

    Args:
        keep: Vision tokens kept in each layer's cache.
        text_tokens: Non-vision prompt tokens.
        generated: Decode positions in the cache including the new token (1 for the first decode step).
        dims: Decoder dims.
        ffn: ``"swiglu"`` or ``"fastv"``.
        gqa: Head-layout-aware projections and attention.

    Returns:
        Multiply-accumulates summed over layers.
    """
    return float(sum(_macs(1, text_tokens + k + generated, dims, ffn, gqa) for k in _counts(keep, dims.layers)))


def kv_cache_bytes(keep: Sequence[int], text_tokens: int, dims: DecoderDims, bytes_per_value: int = 2) -> int:
    """Size of the KV cache the prefill leaves behind.

    Args:
        keep: Vision tokens kept in each layer's cache.
        text_tokens: Non-vision prompt tokens.
        dims: Decoder dims.
        bytes_per_value: 2 for fp16/bf16, 4 for fp32.

    Returns:
        Bytes for keys and values over all layers.
    """
    positions = sum(text_tokens + k for k in _counts(keep, dims.layers))
    return 2 * dims.kv_heads * dims.head_dim * positions * bytes_per_value


def vision_tower_macs(n_patches: int, hidden: int, ffn: int, layers: int) -> float:
    """MACs of a ViT encoder (GELU MLP, so f=2) over ``n_patches`` tokens.

    Args:
        n_patches: Tokens per image, including any class token.
        hidden: ViT hidden size.
        ffn: ViT MLP width.
        layers: ViT layers run (e.g. up to the feature layer the projector reads).

    Returns:
        Multiply-accumulates.
    """
    n = n_patches
    return float(layers * (4 * n * hidden * hidden + 2 * n * n * hidden + 2 * n * hidden * ffn))


def flops_report(keep: Sequence[int], n_vision: int, text_tokens: int, dims: DecoderDims,
                 ffn: str = "swiglu", gqa: bool = False, count_text: bool = True) -> dict:
    """Prefill cost of a keep schedule next to the unreduced model.

    Args:
        keep: Non-increasing vision-token counts per decoder layer, each in ``[0, n_vision]``.
        n_vision: Vision tokens of the sample before reduction.
        text_tokens: Non-vision prompt tokens.
        dims: Decoder dims.
        ffn: ``"swiglu"`` or ``"fastv"``.
        gqa: Head-layout-aware projections and attention.
        count_text: Count the text tokens in the FLOPs (False: vision tokens only, PyramidDrop's convention); the
            KV-cache sizes always include them.

    Returns:
        ``tflops`` (MACs/1e12) and ``tflops_full``, ``flops_ratio``, ``budget`` (achieved mean keep ratio;
        1.0 when there are no vision tokens), ``keep``, ``equal_tokens`` (mean kept vision tokens),
        ``kv_cache_bytes`` and ``kv_cache_bytes_full`` (fp16), plus the inputs ``n_vision``,
        ``text_tokens``, ``ffn`` and ``gqa``.

    Raises:
        ValueError: If the schedule has the wrong length, leaves ``[0, n_vision]`` or increases.
    """
    counts = _counts(keep, dims.layers)
    if n_vision < 0 or text_tokens < 0:
        raise ValueError(f"n_vision and text_tokens must be >= 0, got {n_vision} and {text_tokens}")
    if any(k > n_vision for k in counts):
        raise ValueError(f"keep counts must be <= n_vision={n_vision}, got {counts}")
    if any(b > a for a, b in itertools.pairwise(counts)):
        raise ValueError(f"keep schedule must be non-increasing over layers, got {counts}")
    full = [n_vision] * dims.layers
    counted = text_tokens if count_text else 0
    macs, macs_full = prefill_macs(counts, counted, dims, ffn, gqa), prefill_macs(full, counted, dims, ffn, gqa)
    equal_tokens = sum(counts) / dims.layers
    return {
        "tflops": macs / 1e12,
        "tflops_full": macs_full / 1e12,
        "flops_ratio": macs / macs_full if macs_full else 1.0,
        "budget": equal_tokens / n_vision if n_vision else 1.0,
        "keep": counts,
        "equal_tokens": equal_tokens,
        "kv_cache_bytes": kv_cache_bytes(counts, text_tokens, dims),
        "kv_cache_bytes_full": kv_cache_bytes(full, text_tokens, dims),
        "n_vision": n_vision,
        "text_tokens": text_tokens,
        "ffn": ffn,
        "gqa": gqa,
        "count_text": count_text,
    }
