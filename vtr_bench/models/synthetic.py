"""Random-init decoders with the real shapes (from ``conf/model/*.yaml`` dims), for efficiency benchmarks only.

Latency depends on shapes, not weights, so a Llama decoder built from a model config's ``dims`` times a real
7B/8B prefill and decode faithfully (the vision tower is excluded: vision-token reduction acts in the LLM).
"""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vtr_bench.reduction.engine import ReductionEngine
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import Scorer

VOCAB = 1024


class SyntheticDecoder:
    """A random Llama decoder with a model config's dims; prompts are random embeddings.

    Args:
        dims: a ``dims`` config node (layers, hidden, ffn, heads, kv_heads, vision_tokens).
        dtype: parameter dtype.
        device: torch device (the weights are initialised there, in ``dtype``: a 7B decoder builds in seconds on
            a GPU).
        seed: initialisation seed.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2`` (needs the flash-attn package).
    """

    def __init__(self, dims, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0,
                 attn_implementation: str = "sdpa") -> None:
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=int(dims.hidden), intermediate_size=int(dims.ffn),
                             num_hidden_layers=int(dims.layers), num_attention_heads=int(dims.heads),
                             num_key_value_heads=int(dims.kv_heads), max_position_embeddings=16384,
                             tie_word_embeddings=False)
        config._attn_implementation = attn_implementation
        default = torch.get_default_dtype()
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(seed)
            torch.set_default_dtype(dtype)
            try:
                self.model = LlamaForCausalLM(config).eval()
            finally:
                torch.set_default_dtype(default)
        self.n_vision = int(dims.vision_tokens)

    @property
    def layers(self) -> int:
        """Number of decoder layers."""
        return len(self.model.model.layers)

    def engine(self, schedule: KeepSchedule, scorer: Scorer | None, positions: str = "keep") -> ReductionEngine:
        """A reduction engine over the decoder's layers."""
        lm = self.model.model
        return ReductionEngine(lm.layers, lm.rotary_emb, schedule, scorer, positions=positions,
                               attn_implementation=lm.config._attn_implementation)

    def prompt(self, text_before: int, text_after: int, seed: int = 0, batch: int = 1) -> tuple[dict, torch.Tensor]:
        """``batch`` prompts of ``text_before`` text, the vision tokens, ``text_after`` text, as embeddings (each
        sample its own random embeddings, all of one length: no padding).

        Returns:
            (model inputs with ``inputs_embeds`` and ``attention_mask``, the vision mask).
        """
        length = text_before + self.n_vision + text_after
        device, dtype = self.model.device, self.model.dtype
        generator = torch.Generator().manual_seed(seed)
        embeds = torch.randn(batch, length, self.model.config.hidden_size, generator=generator).to(device, dtype)
        vision = torch.zeros(batch, length, dtype=torch.bool, device=device)
        vision[:, text_before:text_before + self.n_vision] = True
        mask = torch.ones(batch, length, dtype=torch.long, device=device)
        return {"inputs_embeds": embeds, "attention_mask": mask}, vision
