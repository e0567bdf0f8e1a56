"""Our own greedy decode loop with a KV cache, prefill timed apart from decode.

Owning the loop (instead of ``model.generate``) keeps positions explicit (padding-independent RoPE positions, so a
padded batch equals single runs), works for remote-code models without ``GenerationMixin`` (InternVL2), and
gives clean prefill / per-token decode timings (DESIGN §4).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import DynamicCache

from vtr_bench.reduction.engine import ReductionEngine
from vtr_bench.reduction.prefix import PrefixStore


@dataclass
class GenerationOutput:
    """Generated token ids (eos excluded) and measurements of one batch; ``ended`` says per sample why its
    generation ended (``eos``, ``stop``: a stop string appeared, ``max_new_tokens``)."""

    tokens: list[list[int]]
    prefill_seconds: float
    decode_seconds: list[float] = field(default_factory=list)
    processed_counts: list[list[int]] = field(default_factory=list)
    n_vision: list[int] = field(default_factory=list)
    kv_cache_bytes: int = 0
    step_logits: list[torch.Tensor] = field(default_factory=list)  # (batch, vocab) per step, with keep_logits
    ended: list[str] = field(default_factory=list)
    layer_forwards: dict = field(default_factory=dict)  # decoder-layer forwards computed (x samples), with engine
    resumed_from: int | None = None  # the depth of the prefix snapshot the prefill resumed from (prefix reuse)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Stopwatch:
    """Seconds of GPU work between ``start()`` and ``stop()``: CUDA events on a CUDA device (what the stream
    executed, without host overhead after the last launch), ``time.perf_counter`` elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            self._begin = torch.cuda.Event(enable_timing=True)
            self._begin.record()
        else:
            self._begin = time.perf_counter()

    def stop(self) -> float:
        if not self.cuda:
            return time.perf_counter() - self._begin
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return self._begin.elapsed_time(end) / 1000


def prefill_positions(inputs: dict) -> tuple[dict, torch.Tensor]:
    """``(model inputs without position ids, the prefill's position ids)``: those the adapter prepared (Qwen2-VL's
    3-D M-RoPE ids), else padding-independent 1-D ids from the attention mask."""
    inputs = dict(inputs)
    position_ids = inputs.pop("position_ids", None)
    if position_ids is None:
        position_ids = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return inputs, position_ids


@torch.no_grad()
def greedy_generate(model: torch.nn.Module, engine: ReductionEngine | None, inputs: dict, vision_mask: torch.Tensor,
                    max_new_tokens: int, eos_token_ids: set[int], keep_logits: bool = False,
                    stop: Callable[[int, list[int]], bool] | None = None, store: PrefixStore | None = None,
                    batch_key=None) -> GenerationOutput:
    """Greedy-decode a left-padded batch through ``model`` with ``engine`` attached.

    Args:
        model: an HF vision-language model (forward takes input_ids, pixel_values, attention_mask,
            position_ids, past_key_values, cache_position, logits_to_keep).
        engine: the reduction engine, already attached to ``model``'s decoder layers (None: the unmodified model).
        inputs: processor outputs (``input_ids``, ``attention_mask``, ``pixel_values``, ...; ``position_ids`` when
            the adapter prepares them: :func:`prefill_positions`).
        vision_mask: (batch, seq) True at vision-token positions.
        max_new_tokens: maximum number of generated tokens.
        eos_token_ids: ids that end a sample's generation.
        keep_logits: also return each step's last-position logits (tests compare them with re-run prefills).
        stop: ``stop(sample, its tokens so far)`` is True when that sample's generation is complete (a stop
            string appeared): it then ends at once, as at an eos.
        store, batch_key: prefix reuse (:meth:`ReductionEngine.request`): the prefill may resume from a stored
            snapshot of the batch ``batch_key`` names (then the prompt's stored embeddings replace ``inputs``' ids
            and pixels).

    Returns:
        The generated ids per sample, the timings and the KV-cache size right after the prefill.
    """
    inputs, position_ids = prefill_positions(inputs)
    attention_mask = inputs["attention_mask"]
    device = attention_mask.device
    batch, prompt_len = attention_mask.shape
    # the first generated token's position: one after the prompt's last (text) position, on every axis
    lengths = position_ids.reshape(-1, batch, prompt_len)[..., -1].amax(0) + 1
    cache = DynamicCache()
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    ended = ["max_new_tokens"] * batch
    decode_seconds: list[float] = []
    step_logits: list[torch.Tensor] = []
    request = engine.request(vision_mask, attention_mask, store=store, batch=batch_key) if engine is not None \
        else nullcontext()
    with request as ctx:
        resume = getattr(ctx, "resume", None)
        if resume is not None:
            inputs = {"inputs_embeds": resume.embeddings, "attention_mask": attention_mask}
        clock = _Stopwatch(device)
        _sync(device)
        clock.start()
        out = model(**inputs, position_ids=position_ids, past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
        next_token = out.logits[:, -1].argmax(-1)
        if keep_logits:
            step_logits.append(out.logits[:, -1].float().clone())
        prefill_seconds = clock.stop()
        kv_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
        eos = torch.tensor(sorted(eos_token_ids), device=device)
        for step in range(max_new_tokens):
            done_now = torch.isin(next_token, eos)
            for b in (~finished & done_now).nonzero().flatten().tolist():
                ended[b] = "eos"
            for b in (~finished & ~done_now).nonzero().flatten().tolist():
                tokens[b].append(int(next_token[b]))
                if stop is not None and stop(b, tokens[b]):
                    ended[b], done_now[b] = "stop", True
            finished |= done_now
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
            clock.start()
            out = model(input_ids=next_token.unsqueeze(-1), attention_mask=attention_mask,
                        position_ids=(lengths + step).unsqueeze(-1), past_key_values=cache, use_cache=True,
                        cache_position=torch.tensor([prompt_len + step], device=device), logits_to_keep=1)
            next_token = out.logits[:, -1].argmax(-1)
            if keep_logits:
                step_logits.append(out.logits[:, -1].float().clone())
            decode_seconds.append(clock.stop())
    if ctx is None:
        return GenerationOutput(tokens, prefill_seconds, decode_seconds, kv_cache_bytes=kv_bytes,
                                step_logits=step_logits, ended=ended)
    return GenerationOutput(tokens, prefill_seconds, decode_seconds, ctx.processed_counts(), ctx.n_vision, kv_bytes,
                            step_logits, ended, dict(ctx.layer_forwards), resume.depth if resume is not None else None)
