"""FlashAttention-2 on the CPU, for tests: transformers' own FA2 code path (masks, unpadding, packed-sequence
detection, padding back) with its two kernels replaced by exact SDPA equivalents.

FA2 itself needs the ``flash-attn`` package and a CUDA GPU; what the engine must get right is what it hands that
code (2-D padding masks over reduced rows, position ids), so these tests run everything but the kernel.
"""
from contextlib import contextmanager

import torch
import torch.nn.functional as F


def _attend(q, k, v, causal: bool, scale):
    """One sequence, (len, heads, dim) each; FA2's causal mask is aligned to the bottom right; GQA by repeat."""
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (heads, len, dim)
    k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
    v = v.repeat_interleave(q.shape[0] // v.shape[0], dim=0)
    mask = None
    if causal:
        lq, lk = q.shape[1], k.shape[1]
        mask = torch.arange(lk).unsqueeze(0) <= torch.arange(lq).unsqueeze(1) + (lk - lq)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).transpose(0, 1)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False):
    out = torch.empty_like(q)
    for i in range(len(cu_seqlens_q) - 1):
        sq, eq, sk, ek = (int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1]), int(cu_seqlens_k[i]),
                          int(cu_seqlens_k[i + 1]))
        out[sq:eq] = _attend(q[sq:eq], k[sk:ek], v[sk:ek], causal, softmax_scale)
    return out


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
    return torch.stack([_attend(q[b], k[b], v[b], causal, softmax_scale) for b in range(q.shape[0])])


@contextmanager
def emulated_flash_attention(*models):
    """Run ``models`` with ``attn_implementation="flash_attention_2"`` on these kernels inside the block."""
    import transformers.modeling_flash_attention_utils as fa

    names = ("_flash_fn", "_flash_varlen_fn", "_pad_fn", "_unpad_fn", "_process_flash_kwargs_fn")
    saved = {name: getattr(fa, name) for name in names}
    implementations = [m.config._attn_implementation for m in models]
    fa._flash_fn, fa._flash_varlen_fn = flash_attn_func, flash_attn_varlen_func
    fa._pad_fn, fa._unpad_fn = fa._pad_input, fa._unpad_input
    fa._process_flash_kwargs_fn = fa._lazy_define_process_function(flash_attn_varlen_func)
    for model in models:
        model.config._attn_implementation = "flash_attention_2"
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(fa, name, value)
        for model, implementation in zip(models, implementations):
            model.config._attn_implementation = implementation
