"""What pre-LLM reducers read from the vision encoder, collected with hooks on the model's own vision-tower instance.

Per image, at the encoder layer whose output the model takes as features (LLaVA's ``vision_feature_layer``: -2,
the penultimate CLIP layer; InternVL's -1): the attention its [CLS] query pays every patch (recomputed from that
layer's own input norm and q / k projections, softmax over all keys with [CLS], not renormalised: VisionZip's and
FasterVLM's ``attentions[-2][:, :, 0, 1:]``) and its keys (mean over heads: VisionZip's merge metric); and the
pre-projector features of every LLM vision token (the projector's input). Patch quantities are mapped to the LLM's
vision tokens: one patch per token for LLaVA-1.5; InternVL's pixel shuffle merges 2x2 patches into a token, whose
[CLS] attention is then the sum over its patches and its keys their mean (the mapping FasterVLM's issue #4
suggests; the official repos support CLIP only). Encoders without a [CLS] token (Qwen2-VL's ViT, OneVision's
SigLIP) give instead the mean attention each patch receives from all queries of its image (the FasterVLM /
VisPruner author's recipe, VisPruner issue #1), mapped through the model's own 2x2 merge or AnyRes packing:
:class:`~vtr_bench.models.qwen2_vl.QwenVisionProbe`, :class:`~vtr_bench.models.llava_onevision.OnevisionProbe`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


class Probe:
    """What every probe records: per forward, ``attention`` (heads, tokens), ``keys`` (tokens, head_dim) and
    ``features`` (tokens, dim) of the LLM vision tokens in the order the model places them (``records``: one dict
    per image or per batch, ``_features``: one tensor per projector call); :meth:`per_sample` splits them."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self._features: list[torch.Tensor] = []

    def reset(self) -> None:
        self.records, self._features = [], []

    @contextmanager
    def attached(self) -> Iterator["Probe"]:  # pragma: no cover - interface
        raise NotImplementedError
        yield self

    def per_sample(self, counts: list[int]) -> list[dict]:
        """The records of the last forward split over its samples, ``counts[b]`` vision tokens each (images in
        order); a mismatch (a layout the probe does not map) is an error, never a silent misalignment."""
        features = torch.cat(self._features) if self._features else None
        records = {key: torch.cat([r[key] for r in self.records], dim=-1 if key == "attention" else 0)
                   for key in ("attention", "keys")} if self.records else None
        total = sum(counts)
        if records is None or features is None or records["keys"].shape[0] != total or features.shape[0] != total \
                or records["attention"].shape[-1] != total:
            raise RuntimeError(f"the vision probe saw {0 if records is None else records['keys'].shape[0]} tokens "
                               f"but the prompts hold {total} vision tokens: this model's token layout is not mapped")
        out, start = [], 0
        for n in counts:
            out.append({"attention": records["attention"][:, start:start + n],
                        "keys": records["keys"][start:start + n], "features": features[start:start + n]})
            start += n
        return out


def received_attention(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean attention each key receives from all queries, (heads, n), of q / k (heads, n, head_dim)."""
    return (q.float() @ k.float().transpose(-1, -2) * scale).softmax(-1).mean(1)


class VisionProbe(Probe):
    """A ViT with a [CLS] token (CLIP, InternViT): per image ``attention`` (heads, tokens) of [CLS], ``keys``
    (tokens, head_dim) and ``features`` (tokens, dim) per LLM vision token.

    Args:
        layer: the encoder layer whose output is the features.
        norm: its pre-attention norm; attention: its self-attention (``q_proj``, ``k_proj``, optional ``q_norm`` /
            ``k_norm`` on the whole projection, ``num_heads``, ``head_dim``, ``scale``).
        projector: the module whose input is the pre-projector features.
        groups: ``groups(patches) -> (tokens, size)`` patch indices (after [CLS]) merged into each LLM token.
    """

    def __init__(self, layer: nn.Module, norm: nn.Module, attention: nn.Module, projector: nn.Module,
                 groups: Callable[[int], torch.Tensor]) -> None:
        super().__init__()
        self.layer, self.norm, self.attention, self.projector, self.groups = layer, norm, attention, projector, groups

    @contextmanager
    def attached(self) -> Iterator["VisionProbe"]:
        handles = [self.layer.register_forward_pre_hook(self._layer_hook, with_kwargs=True),
                   self.projector.register_forward_pre_hook(self._projector_hook)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _layer_hook(self, module, args, kwargs) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        attn = self.attention
        x = self.norm(hidden)
        q, k = attn.q_proj(x[:, :1]), attn.k_proj(x)
        q = getattr(attn, "q_norm", nn.Identity())(q)
        k = getattr(attn, "k_norm", nn.Identity())(k)
        images, n = x.shape[:2]
        q = q.view(images, 1, attn.num_heads, attn.head_dim).transpose(1, 2).float()
        k = k.view(images, n, attn.num_heads, attn.head_dim).transpose(1, 2).float()
        probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)[:, :, 0, 1:]  # (images, heads, patches)
        groups = self.groups(n - 1).to(hidden.device)
        keys = k[:, :, 1:].mean(1)  # (images, patches, head_dim)
        for i in range(images):
            self.records.append({"attention": probs[i][:, groups].sum(-1), "keys": keys[i][groups].mean(1)})

    def _projector_hook(self, module, args) -> None:
        self._features.append(args[0].reshape(-1, args[0].shape[-1]))


def vision_probe(model: nn.Module) -> VisionProbe | None:
    """The [CLS] probe of an LLaVA-1.5-style or InternVL model, or None (LLaVA-NeXT's AnyRes rows with newline
    tokens are not mapped; Qwen2-VL and OneVision adapters bring their own)."""
    import transformers

    config, inner = model.config, model.model
    layer_of = lambda layers: layers[config.vision_feature_layer % len(layers)]  # noqa: E731  (-2: penultimate)
    if isinstance(model, transformers.LlavaForConditionalGeneration) and \
            config.vision_feature_select_strategy == "default" and isinstance(config.vision_feature_layer, int):
        layer = layer_of(inner.vision_tower.vision_model.encoder.layers)
        return VisionProbe(layer, layer.layer_norm1, layer.self_attn, inner.multi_modal_projector,
                           lambda n: torch.arange(n).unsqueeze(1))
    if isinstance(model, transformers.InternVLForConditionalGeneration) and \
            isinstance(config.vision_feature_layer, int):
        layer = layer_of(inner.vision_tower.encoder.layer)

        def groups(n: int) -> torch.Tensor:  # the model's own pixel shuffle applied to patch indices
            side = int(n ** 0.5)
            index = torch.arange(n, dtype=torch.float32).view(1, side, side, 1)
            shuffled = inner.pixel_shuffle(index, scale_factor=config.downsample_ratio)
            return shuffled.reshape(-1, shuffled.shape[-1]).long()

        return VisionProbe(layer, layer.layernorm_before, layer.attention, inner.multi_modal_projector, groups)
    if isinstance(model, transformers.LlavaOnevisionForConditionalGeneration) and \
            isinstance(config.vision_feature_layer, int) and config.vision_feature_select_strategy == "full":
        from vtr_bench.models.llava_onevision import OnevisionProbe

        return OnevisionProbe(model)
    return None
