"""What the engine and the scorers need to know about a decoder family: its positions, RoPE and attention rows.

:class:`Decoder` is the 1-D rotate-half RoPE decoder: positions are ``(batch, seq)`` ids, the cos / sin applied to
q and k are ``(batch, seq, head_dim)``. A family whose layers see positions differently (3-D multimodal RoPE, say)
subclasses it in ``vtr_bench/models/``, and the model adapter hands the engine its family's object
(``adapter.decoder``), so nothing in ``reduction/`` knows a model family.

The engine keeps, per token, the *canonical* positions (``positions(...)``: ``(batch, seq, ...)``, gathered along
the sequence like every other per-token tensor) and the cos / sin *as applied to q / k* (``(batch, seq, head_dim)``
for every family); :meth:`Decoder.layer_embeddings` turns those back into what the family's layers take.
"""
from __future__ import annotations

import torch
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Decoder:
    """A 1-D RoPE decoder (``input_layernorm``, ``self_attn.{q,k}_proj``, optional per-head ``q_norm`` / ``k_norm``
    applied per head before RoPE, ``head_dim``, ``scaling``).

    Args:
        rotary_emb: the decoder's rotary module (``rotary_emb(x, position_ids) -> (cos, sin)``); only needed to
            compute RoPE for new positions (``positions=renumber``).
        norm: the decoder's final norm (DART compares tokens in its output space).
    """

    def __init__(self, rotary_emb: nn.Module | None = None, norm: nn.Module | None = None) -> None:
        self.rotary_emb = rotary_emb
        self.norm = norm

    # --- positions --------------------------------------------------------------------------------------------
    def positions(self, position_ids: torch.Tensor, batch: int) -> torch.Tensor:
        """Canonical ``(batch, seq, ...)`` positions from the ids the rotary module receives."""
        return position_ids.expand(batch, -1)

    def embed(self, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token cos / sin ``(batch, seq, head_dim)`` of canonical ``positions``, as applied to q and k."""
        return self.rotary_emb(hidden, positions)

    def token_embeddings(self, position_embeddings, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token cos / sin ``(batch, seq, head_dim)`` from the ``position_embeddings`` a layer received."""
        cos, sin = position_embeddings
        return cos.expand(batch, -1, -1), sin.expand(batch, -1, -1)

    def layer_embeddings(self, cos: torch.Tensor, sin: torch.Tensor):
        """The ``position_embeddings`` a layer takes for per-token cos / sin (the inverse of the above)."""
        return cos, sin

    def layer_position_ids(self, positions: torch.Tensor) -> torch.Tensor | None:
        """The ``position_ids`` a layer takes for canonical positions."""
        return positions

    def renumber(self, valid: torch.Tensor, is_vision: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Positions of a reduced sequence under ``positions=renumber``: contiguous over its real tokens, as if the
        reduced sequence were the prompt (``valid`` / ``is_vision``: (batch, seq); ``positions``: the kept tokens'
        original ones)."""
        return (valid.long().cumsum(-1) - 1).clamp(min=0)

    def vision_grid(self, positions: torch.Tensor) -> tuple[int, int] | None:
        """``(height, width)`` of the token grid one image's vision tokens span, read from their canonical positions
        ``(n, ...)`` where the positions say it (1-D positions do not: None)."""
        return None

    # --- attention ----------------------------------------------------------------------------------------------
    @staticmethod
    def _project(attn: nn.Module, x: torch.Tensor, which: str) -> torch.Tensor:
        """``q`` / ``k`` heads (batch, heads, tokens, head_dim) of normed inputs ``x``, with the head norm if any."""
        batch, tokens, _ = x.shape
        heads = getattr(attn, f"{which}_proj")(x).view(batch, tokens, -1, attn.head_dim)
        norm = getattr(attn, f"{which}_norm", None)
        return (norm(heads) if norm is not None else heads).transpose(1, 2).float()

    def keys(self, layer: nn.Module, normed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``layer``'s RoPE'd keys (batch, kv_heads, seq, head_dim) of its normed input ``normed``."""
        k = self._project(layer.self_attn, normed, "k")
        cos, sin = cos.float().unsqueeze(1), sin.float().unsqueeze(1)
        return k * cos + rotate_half(k) * sin

    def attention_rows(self, layer: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                       valid: torch.Tensor, query_index: torch.Tensor,
                       keys: torch.Tensor | None = None) -> torch.Tensor:
        """Causal attention probabilities of some query rows of ``layer``, averaged over heads.

        Args:
            layer: the decoder layer.
            hidden: its input hidden states (batch, seq, dim), before the input norm.
            cos, sin: per-token RoPE (batch, seq, head_dim).
            valid: (batch, seq) real keys (others get 0).
            query_index: (batch, queries) slot indices of the query rows.
            keys: the layer's RoPE'd keys (batch, kv_heads, seq, head_dim) when already known (None: recomputed).

        Returns:
            (batch, queries, seq) float32.
        """
        attn = layer.self_attn
        normed = layer.input_layernorm(hidden)
        dim = normed.shape[-1]
        head_dim = attn.head_dim
        rows = normed.gather(1, query_index.unsqueeze(-1).expand(-1, -1, dim))
        at = query_index[:, None, :, None].expand(-1, 1, -1, head_dim)
        q = self._project(attn, rows, "q")
        q_cos, q_sin = cos.float().unsqueeze(1).gather(2, at), sin.float().unsqueeze(1).gather(2, at)
        q = q * q_cos + rotate_half(q) * q_sin
        k = keys.float() if keys is not None else self.keys(layer, normed, cos, sin)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        logits = torch.matmul(q, k.transpose(-1, -2)) * attn.scaling  # (batch, heads, queries, seq)
        key_pos = torch.arange(normed.shape[1], device=normed.device)
        allowed = (key_pos.view(1, 1, -1) <= query_index.unsqueeze(-1)) & valid.unsqueeze(1)
        return logits.masked_fill(~allowed.unsqueeze(1), float("-inf")).softmax(-1).mean(1)
