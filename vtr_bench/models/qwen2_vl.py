"""Qwen2-VL / Qwen2.5-VL: 3-D multimodal RoPE (M-RoPE), dynamic-resolution images, their adapter and processor.

Qwen2-VL's decoder gives every token three position ids (temporal, height, width; text tokens have three equal
ones) and rotates the head dims in three sections by them (``rope_scaling.mrope_section``). An image's merged
patch tokens sit at ``start + (t, h, w)`` of its grid; the text after it continues at ``start + max(T, H, W)``, so
the next position after a prompt is not its length: the model keeps the difference as ``rope_deltas``.

Position policies (``positions=``):

- ``keep``: kept tokens keep their 3-D positions (merged tokens their anchor's); decoding continues at the
  prompt's own next position (its ``rope_deltas``), as if nothing had been dropped.
- ``renumber`` (*compact grid*): the reduced sequence gets the positions Qwen2-VL would give it if the kept vision
  tokens of each image were a smaller image: along each axis the distinct kept coordinates are re-indexed
  ``0, 1, ...`` in order (a dropped row or column closes up), the image starts right after the text before it, and
  the text after it at ``start + max(T', H', W')``. Keeping everything changes nothing; the downsampling control's
  pooled grid gets exactly the positions of an image of that grid. Decoding continues from the reduced prompt's
  next position.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from transformers import ProcessorMixin, Qwen2VLProcessor

from vtr_bench.models.base import VLMAdapter
from vtr_bench.models.vision_probe import Probe, received_attention
from vtr_bench.reduction.decoder import Decoder, rotate_half

NOMINAL_IMAGE = (480, 640)
"""(height, width) of the image whose vision-tower MACs the results report (dynamic resolution: per image)."""


class MultimodalRopeDecoder(Decoder):
    """Qwen2-VL's decoder: canonical positions ``(batch, seq, 3)``; the layers take cos / sin ``(3, batch, seq,
    head_dim)`` whose head dims are combined from the three axes in sections.

    Args:
        rotary_emb: the decoder's rotary module (takes ``(3, batch, seq)`` ids).
        sections: ``rope_scaling.mrope_section`` (head-dim halves per axis, e.g. ``[16, 24, 24]``).
    """

    def __init__(self, rotary_emb, sections, norm=None) -> None:
        super().__init__(rotary_emb, norm)
        self.sections = [int(s) for s in sections]

    def combine(self, table: torch.Tensor) -> torch.Tensor:
        """(3, batch, seq, head_dim) per-axis cos or sin -> (batch, seq, head_dim) as applied to q / k."""
        chunks = table.split(self.sections * 2, dim=-1)
        return torch.cat([chunk[i % 3] for i, chunk in enumerate(chunks)], dim=-1)

    def positions(self, position_ids: torch.Tensor, batch: int) -> torch.Tensor:
        if position_ids.dim() == 2:  # text-only ids: the same on every axis
            position_ids = position_ids.unsqueeze(0).expand(3, -1, -1)
        return position_ids.permute(1, 2, 0).expand(batch, -1, -1)

    def embed(self, hidden, positions):
        cos, sin = self.rotary_emb(hidden, positions.permute(2, 0, 1))
        return self.combine(cos), self.combine(sin)

    def token_embeddings(self, position_embeddings, batch):
        cos, sin = (self.combine(t).expand(batch, -1, -1) for t in position_embeddings)
        return cos, sin

    def layer_embeddings(self, cos, sin):
        # three equal copies: combining sections of them gives the per-token table back
        return cos.unsqueeze(0).expand(3, -1, -1, -1), sin.unsqueeze(0).expand(3, -1, -1, -1)

    def layer_position_ids(self, positions):
        return None  # Qwen2-VL layers take only packed text positions (FA2 without a mask); the engine gives masks

    def vision_grid(self, positions):
        extent = [len(torch.unique(positions[:, axis])) for axis in range(3)]
        return (extent[0] * extent[1], extent[2]) if math.prod(extent) == len(positions) else None

    def renumber(self, valid, is_vision, positions):
        """The compact grid (module docstring)."""
        new = torch.zeros_like(positions)
        for b in range(valid.shape[0]):
            slots = valid[b].nonzero().flatten().tolist()
            start, i = 0, 0
            while i < len(slots):
                slot = slots[i]
                if not bool(is_vision[b, slot]):
                    new[b, slot] = start
                    start, i = start + 1, i + 1
                    continue
                run = [slot]
                while i + len(run) < len(slots) and bool(is_vision[b, slots[i + len(run)]]):
                    run.append(slots[i + len(run)])
                extent = 0
                for axis in range(3):
                    values, rank = torch.unique(positions[b, run, axis], return_inverse=True)
                    new[b, run, axis] = start + rank
                    extent = max(extent, len(values))
                start, i = start + extent, i + len(run)
        return new


class QwenVisionProbe(Probe):
    """The vision probe of Qwen2-VL / Qwen2.5-VL (no [CLS] token): at the ViT's last block (full attention in
    both), each patch's mean attention received from the queries of its image (recomputed from the block's norm,
    qkv and 2-D RoPE), its keys before RoPE (mean over heads) and the merger's input; each LLM token (a merged
    2x2 group of consecutive patches) sums its patches' attention and averages their keys. Qwen2.5-VL runs its
    blocks in window order: tokens are put back in image order as its own ``get_window_index`` says."""

    def __init__(self, visual) -> None:
        super().__init__()
        self.visual, self.block = visual, visual.blocks[-1]
        self.group = visual.spatial_merge_size ** 2
        self._grid = None

    @contextmanager
    def attached(self):
        handles = [self.visual.register_forward_pre_hook(self._visual_hook, with_kwargs=True),
                   self.block.register_forward_pre_hook(self._block_hook, with_kwargs=True),
                   self.visual.merger.register_forward_pre_hook(self._merger_hook)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _order(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens in image order (Qwen2.5-VL's blocks see them in window order)."""
        if not hasattr(self.visual, "get_window_index"):
            return tokens
        window_index, _ = self.visual.get_window_index(self._grid)
        return tokens[torch.argsort(window_index.to(tokens.device))]

    def _visual_hook(self, module, args, kwargs) -> None:
        self._grid = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]

    def _block_hook(self, module, args, kwargs) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        cu_seqlens = kwargs["cu_seqlens"]
        cos, sin = kwargs["position_embeddings"]
        attn = module.attn
        seq = hidden.shape[0]
        q, k, _ = attn.qkv(module.norm1(hidden)).reshape(seq, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        keys = k.float().mean(1)  # (seq, head_dim), before RoPE
        cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
        q, k = (t.float() * cos + rotate_half(t.float()) * sin for t in (q, k))
        received = torch.cat([received_attention(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), attn.scaling)
                              for a, b in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())], dim=-1)
        attention = self._order(received.view(attn.num_heads, -1, self.group).sum(-1).T).T
        self.records.append({"attention": attention, "keys": self._order(keys.view(-1, self.group, keys.shape[-1])
                                                                         .mean(1))})

    def _merger_hook(self, module, args) -> None:
        features = args[0]
        self._features.append(self._order(features.reshape(-1, self.group * features.shape[-1])))


class VisionOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor without its video processor (which needs torchvision, left out here); images only."""

    attributes = ["image_processor", "tokenizer"]
    tokenizer_class = "AutoTokenizer"  # the checkpoints' Qwen2 tokenizer, or the tiny builders' word-level one

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)


class Qwen2VLAdapter(VLMAdapter):
    """Qwen2-VL / Qwen2.5-VL (``Qwen2VLForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration``).

    :meth:`prepare` adds the prompt's 3-D ``position_ids`` (the model's own ``get_rope_index``, left padding
    excluded); each image's merged grid (what the downsampling control pools) is read from its tokens' positions.
    """

    @property
    def decoder(self) -> MultimodalRopeDecoder:
        return MultimodalRopeDecoder(self.language_model.rotary_emb, self.text_config.rope_scaling["mrope_section"],
                                     self.language_model.norm)

    def vision_probe(self) -> QwenVisionProbe:
        return QwenVisionProbe(self.model.model.visual)

    @property
    def merge_size(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

    def vision_tower_macs(self) -> float:
        """MACs of the vision tower on a 640x480 image (its patches at the processor's resize rule), all blocks
        (Qwen2.5-VL's windowed attention counted as full: an upper bound)."""
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        from vtr_bench.reduction.flops import vision_tower_macs

        vision = self.model.config.vision_config
        bounds = {k: getattr(getattr(self.processor, "image_processor", None), k, None)
                  for k in ("min_pixels", "max_pixels")}
        h, w = smart_resize(*NOMINAL_IMAGE, factor=vision.patch_size * vision.spatial_merge_size,
                            **{k: v for k, v in bounds.items() if v})
        hidden = getattr(vision, "embed_dim", vision.hidden_size)
        ffn = getattr(vision, "intermediate_size", None) or int(hidden * vision.mlp_ratio)
        return vision_tower_macs(h * w // vision.patch_size ** 2, hidden, ffn, vision.depth)

    def position_ids(self, inputs: dict) -> torch.Tensor:
        """(3, batch, seq) M-RoPE position ids of a prepared batch, each row's first real token at 0 (Qwen2.5-VL's
        ``get_rope_index`` starts a left-padded row at its padding length: harmless to attention, which RoPE keeps
        relative, but not to what reads absolute RoPE'd keys, such as DART's key norms)."""
        mask = inputs["attention_mask"].bool()
        position_ids, _ = self.model.model.get_rope_index(inputs["input_ids"], inputs.get("image_grid_thw"), None,
                                                          inputs["attention_mask"])
        start = position_ids.masked_fill(~mask, torch.iinfo(position_ids.dtype).max).amin(dim=(0, 2), keepdim=True)
        return torch.where(mask, position_ids - start, position_ids)

    def prepare(self, images: list, questions: list[str]) -> dict:
        batch = super().prepare(images, questions)
        batch["position_ids"] = self.position_ids(batch)
        return batch
