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
        device: torch device.
        seed: initialisation seed.
    """

    def __init__(self, dims, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0) -> None:
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=int(dims.hidden), intermediate_size=int(dims.ffn),
                             num_hidden_layers=int(dims.layers), num_attention_heads=int(dims.heads),
                             num_key_value_heads=int(dims.kv_heads), max_position_embeddings=8192,
                             attn_implementation="sdpa", tie_word_embeddings=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
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

    def prompt(self, text_before: int, text_after: int, seed: int = 0) -> tuple[dict, torch.Tensor]:
        """A batch-1 prompt: ``text_before`` text, the vision tokens, ``text_after`` text, as embeddings.

        Returns:
            (model inputs with ``inputs_embeds`` and ``attention_mask``, the vision mask).
        """
        length = text_before + self.n_vision + text_after
        device, dtype = self.model.device, self.model.dtype
        generator = torch.Generator().manual_seed(seed)
        embeds = torch.randn(1, length, self.model.config.hidden_size, generator=generator).to(device, dtype)
        vision = torch.zeros(1, length, dtype=torch.bool, device=device)
        vision[0, text_before:text_before + self.n_vision] = True
        mask = torch.ones(1, length, dtype=torch.long, device=device)
        return {"inputs_embeds": embeds, "attention_mask": mask}, vision
