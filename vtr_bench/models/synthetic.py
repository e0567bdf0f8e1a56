"""Random-init decoders with the real shapes (from ``conf/model/*.yaml`` dims), for efficiency benchmarks only.

Latency depends on shapes, not weights, so a Llama decoder built from a model config's ``dims`` times a real
7B/8B prefill and decode faithfully (the vision tower is excluded: vision-token reduction acts in the LLM).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vtr_bench.reduction.decoder import Decoder
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
        """A reduction engine over the decoder's layers (pre-LLM scorers read a :class:`SyntheticProbe`)."""
        lm = self.model.model
        needs_vision = scorer is not None and scorer.needs_vision
        probe = SyntheticProbe(self.model.config.hidden_size, self.model.device) if needs_vision else None
        return ReductionEngine(lm.layers, Decoder(lm.rotary_emb, lm.norm), schedule, scorer, positions=positions,
                               attn_implementation=lm.config._attn_implementation, probe=probe)

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


class SyntheticProbe:
    """Seeded random stand-ins for what the vision encoder gives pre-LLM scorers ([CLS] attention over 16 heads,
    64-d keys, features of the decoder's width) per vision token: the synthetic decoder has no encoder, and the
    benchmark times the decoder and the selection, not the encoder."""

    def __init__(self, width: int, device, seed: int = 0) -> None:
        self.width, self.device, self.seed = width, device, seed

    @contextmanager
    def attached(self):
        yield self

    def reset(self) -> None:
        pass

    def per_sample(self, counts: list[int]) -> list[dict]:
        generator = torch.Generator().manual_seed(self.seed)
        return [{"attention": torch.rand(16, n, generator=generator).softmax(-1).to(self.device),
                 "keys": torch.randn(n, 64, generator=generator).to(self.device),
                 "features": torch.randn(n, self.width, generator=generator).to(self.device)} for n in counts]
