"""Model adapters: one object that knows how to prompt an HF vision-language model and where its decoder is."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from vtr_bench.reduction.decoder import Decoder
from vtr_bench.reduction.engine import ReductionEngine
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import Scorer


class VLMAdapter:
    """Wraps an HF ``*ForConditionalGeneration`` model whose decoder is ``model.model.language_model``
    (LLaVA-1.5, LLaVA-NeXT, InternVL: a Llama / Qwen2 decoder).

    Args:
        model: the HF model (eval mode).
        processor: its processor (tokenizer + image processor); may be None for id-level use in tests.
        prompt_template: format string with ``{question}``; the image placeholder is part of it.
        name: display name (config name).
        processor_kwargs: extra arguments of every processor call (InternVL: ``crop_to_patches``, ``max_patches``).
    """

    def __init__(self, model: nn.Module, processor=None, prompt_template: str = "USER: <image>\n{question}\nASSISTANT:",
                 name: str = "model", processor_kwargs: dict | None = None) -> None:
        self.model = model
        self.processor = processor
        self.prompt_template = prompt_template
        self.name = name
        self.processor_kwargs = dict(processor_kwargs or {})

    @property
    def language_model(self) -> nn.Module:
        """The decoder stack (a LlamaModel / Qwen2Model)."""
        return self.model.model.language_model

    @property
    def decoder_layers(self) -> Sequence[nn.Module]:
        """The decoder layers the engine hooks."""
        return self.language_model.layers

    @property
    def text_config(self):
        """The decoder's HF config."""
        return self.language_model.config

    @property
    def image_token_id(self) -> int:
        """Token id of the vision placeholder tokens in the LLM input."""
        return int(self.model.config.image_token_id)

    @property
    def device(self) -> torch.device:
        """Device of the model parameters."""
        return next(self.model.parameters()).device

    def vision_tower_macs(self) -> float:
        """MACs of one image tile through the vision tower (ViT formula, DESIGN §4), all its layers.

        LLaVA-1.5 encodes one tile per image; LLaVA-NeXT (AnyRes) and InternVL (dynamic tiles) encode several.
        """
        from vtr_bench.reduction.flops import vision_tower_macs

        vision = self.model.config.vision_config
        size, patch = (v if isinstance(v, (list, tuple)) else (v, v) for v in (vision.image_size, vision.patch_size))
        patches = (size[0] // patch[0]) * (size[1] // patch[1]) + 1  # + class token
        return vision_tower_macs(patches, vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers)

    def vision_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """True at the vision-token positions of ``input_ids``."""
        return input_ids == self.image_token_id

    @property
    def decoder(self) -> Decoder:
        """The decoder family's positions, RoPE, attention rows and final norm (1-D RoPE here)."""
        return Decoder(self.language_model.rotary_emb, self.language_model.norm)

    def engine(self, schedule: KeepSchedule, scorer: Scorer | None, positions: str = "keep") -> ReductionEngine:
        """A reduction engine over this model's decoder layers."""
        needs_vision = scorer is not None and scorer.needs_vision
        return ReductionEngine(self.decoder_layers, self.decoder, schedule, scorer,
                               positions=positions, attn_implementation=self.text_config._attn_implementation,
                               probe=self.vision_probe() if needs_vision else None)

    def vision_probe(self):
        """Hooks on the vision tower for pre-LLM scorers (:mod:`vtr_bench.models.vision_probe`); None where the
        family's vision tokens are not mapped to its encoder patches."""
        from vtr_bench.models.vision_probe import vision_probe

        return vision_probe(self.model)

    def prepare(self, images: list, questions: list[str]) -> dict:
        """Processor outputs (left-padded batch) for one image + question per sample, on the model's device."""
        prompts = [self.prompt_template.format(question=q) for q in questions]
        batch = self.processor(images=images, text=prompts, return_tensors="pt", padding=True, **self.processor_kwargs)
        return {k: v.to(self.device) for k, v in batch.items()}
