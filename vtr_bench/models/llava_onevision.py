"""LLaVA-OneVision (llava-hf): SigLIP + 2-layer MLP + Qwen2 decoder, AnyRes-max images.

An image is its 384 px base view (27 x 27 = 729 tokens) plus the tiles of its best-fitting grid of 384 px crops,
unpadded to the image's aspect ratio, with an image-newline token after every feature row; when those exceed
``anyres_max_9``'s 9 x 729 tokens the tile features are bilinearly shrunk first. Every one of these tokens (the
newlines too) sits at an ``<image>`` position, so the engine sees them all as vision tokens, as the official
reducers' ports do. The decoder is 1-D RoPE (the base adapter's); the token layout is no single grid, so the
downsampling control does not apply.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import LlavaOnevisionProcessor, ProcessorMixin

from vtr_bench.models.vision_probe import Probe, received_attention


class OnevisionProbe(Probe):
    """The vision probe of LLaVA-OneVision (SigLIP: no [CLS] token): at the feature layer, each patch's mean
    attention received from the queries of its crop and its keys (mean over heads), and the projector's input;
    mapped to the LLM's vision tokens by the model's own ``pack_image_features`` run on these per-patch values
    (unpadding, the anyres-max bilinear shrink). An image-newline token gets attention 0 and the mean keys /
    features of its image's other tokens (it has no patch; a documented choice)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.inner = model.model
        layers = self.inner.vision_tower.vision_model.encoder.layers
        self.layer = layers[model.config.vision_feature_layer % len(layers)]
        self._crops: list[dict] = []

    @contextmanager
    def attached(self):
        handles = [self.layer.register_forward_pre_hook(self._layer_hook, with_kwargs=True),
                   self.inner.multi_modal_projector.register_forward_pre_hook(self._projector_hook)]
        pack = self.inner.pack_image_features
        self.inner.pack_image_features = self._packing(pack)  # on this instance only, removed below
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self.inner.__dict__.pop("pack_image_features", None)

    def reset(self) -> None:
        super().reset()
        self._crops = []

    def _layer_hook(self, module, args, kwargs) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        attn, x = module.self_attn, module.layer_norm1(hidden)
        crops, n = x.shape[:2]
        q, k = (p(x).view(crops, n, attn.num_heads, attn.head_dim).transpose(1, 2) for p in (attn.q_proj, attn.k_proj))
        for i in range(crops):
            self._crops.append({"attention": received_attention(q[i], k[i], attn.scale),
                                "keys": k[i].float().mean(0)})

    def _projector_hook(self, module, args) -> None:
        self._features.append(args[0])  # (crops, patches, dim)

    def _packing(self, pack):
        def packed(image_features, image_sizes, image_newline=None, vision_aspect_ratio="anyres_max_9"):
            result = pack(image_features, image_sizes, image_newline=image_newline,
                          vision_aspect_ratio=vision_aspect_ratio)
            features = torch.cat(self._features)
            heads = self._crops[0]["attention"].shape[0]
            values = torch.cat([torch.stack([c["attention"].T for c in self._crops]),
                                torch.stack([c["keys"] for c in self._crops]), features.float(),
                                torch.ones(*features.shape[:2], 1, device=features.device)], dim=-1)
            split = torch.split(values, [f.shape[0] for f in image_features])
            marker = torch.zeros(values.shape[-1], device=values.device)
            tokens, _ = pack(list(split), image_sizes, image_newline=marker if image_newline is not None else None,
                             vision_aspect_ratio=vision_aspect_ratio)
            tokens = torch.cat(tokens)
            newline = tokens[:, -1] < 0.5
            dims = [heads, self._crops[0]["keys"].shape[-1], features.shape[-1]]
            attention, keys, feats = tokens[:, :-1].split(dims, dim=-1)
            attention = attention.masked_fill(newline[:, None], 0.0)
            start = 0
            for length in result[1]:  # per image: newline rows take the image's other tokens' mean
                rows = slice(start, start + int(length))
                for t in (keys, feats):
                    t[rows][newline[rows]] = t[rows][~newline[rows]].mean(0)
                start += int(length)
            self.records, self._features = [{"attention": attention.T, "keys": keys}], [feats]
            return result

        return packed


class VisionOnlyOnevisionProcessor(LlavaOnevisionProcessor):
    """LlavaOnevisionProcessor without its video processor (which needs torchvision, left out here)."""

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                 video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
        self.num_image_tokens = num_image_tokens
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.image_token = getattr(tokenizer, "image_token", None) or image_token
        self.video_token = getattr(tokenizer, "video_token", None) or video_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        self.vision_aspect_ratio = vision_aspect_ratio
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
