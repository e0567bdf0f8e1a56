"""The reduction engine: per-instance hooks on the decoder layers of an unmodified HF model.

Usage::

    engine = ReductionEngine(layers, decoder, schedule, scorer, positions="keep")
    with engine.attached():                      # hooks installed on these layer instances only
        with engine.request(vision_mask, attention_mask) as ctx:
            model(...)                           # prefill: layers drop vision tokens per the schedule
            model(...)                           # decode steps: per-layer masks / positions follow
        ctx.processed_counts()                   # vision tokens each layer actually processed, per sample
    # hooks removed here

During prefill a forward pre-hook on layer ``l`` reduces the vision tokens where the schedule's count falls: the
scorer says which to keep and which groups to merge into their mean (a merged token counts as one vision token),
and one step gathers hidden states / positions / cos-sin / mask with the same indices
(:func:`vtr_bench.reduction.sequence.reduce_sequence`), handing every later layer the reduced sequence; its KV
cache is then shorter. During decoding each layer gets an attention mask sized to its own cache and, with
``positions="renumber"``, its own RoPE positions. Positions and RoPE go through the decoder family's
:class:`~vtr_bench.reduction.decoder.Decoder` (1-D RoPE, or a family's own in ``models/``); the positions each
forward uses are read where the decoder's rotary module receives them (a pre-hook on it).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator, Sequence

import torch
from torch import nn

from vtr_bench.errors import ConfigError
from vtr_bench.reduction.decoder import Decoder
from vtr_bench.reduction.prefix import PrefixSnapshot, PrefixStore, record_depths
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import Scorer, ScoringInputs
from vtr_bench.reduction.sequence import SequenceState, layer_mask, reduce_sequence

POSITION_POLICIES = ("keep", "renumber")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


class ReductionContext:
    """Per-request state: the resolved keep counts, the current prefill sequence and the recorded counts.

    Args:
        schedule: the keep schedule.
        vision_mask: (batch, seq) True at vision-token positions of the prompt.
        attention_mask: (batch, seq) 1 for real tokens, 0 for padding.
        trace: record which prompt tokens every vision token holds after each reducing layer
            (:meth:`token_sets`; costs a (batch, seq, seq) tensor, meant for tests and audits).
    """

    def __init__(self, schedule: KeepSchedule, vision_mask: torch.Tensor, attention_mask: torch.Tensor,
                 trace: bool = False) -> None:
        self.vision_mask = vision_mask.bool()
        self.attention_mask = attention_mask.bool()
        n_vision = (self.vision_mask & self.attention_mask).sum(-1).tolist()
        self.n_vision = n_vision
        counts = [schedule.counts(n) for n in n_vision]
        self.keep = torch.tensor(counts, dtype=torch.long, device=vision_mask.device)  # (batch, layers)
        self.drop_layers = {
            layer for layer in range(schedule.layers)
            if any(c[layer] < (c[layer - 1] if layer else n) for c, n in zip(counts, n_vision))
        }
        self.calls = 0
        self.state: SequenceState | None = None
        self.prompt: SequenceState | None = None
        self.prompt_hidden: torch.Tensor | None = None
        self.prefill_overrides: dict | None = None
        self.stash: torch.Tensor | None = None
        self.processed: list[torch.Tensor] = []
        self.layer_valid: list[torch.Tensor] = []
        self.layer_shift: list[torch.Tensor] = []
        self.current_counts: torch.Tensor | None = None
        self.current_shift: torch.Tensor | None = None
        self._step_cache: dict = {}
        self.members: torch.Tensor | None = None  # (batch, seq, prompt seq): prompt tokens in each slot (trace)
        self.trace: dict[int, list[set[tuple[int, ...]]]] | None = {} if trace else None
        self.store: PrefixStore | None = None  # prefix reuse (engine.request(..., store=, batch=))
        self.batch = None
        self.resume: PrefixSnapshot | None = None
        self.record: set[int] = set()
        self.previous: torch.Tensor | None = None  # the hidden states the last prefill layer received
        self.rope_ids: torch.Tensor | None = None  # the position ids the rotary module got before the layers ran
        self.forward_ids: torch.Tensor | None = None  # ... frozen for this forward (the engine calls it too)
        # decoder-layer forwards computed (x batch rows), and the prefill's token-layers (x rows x sequence length)
        self.layer_forwards = {"prefill": 0, "decode": 0, "prefill_tokens": 0}

    def token_sets(self) -> dict[int, list[set[tuple[int, ...]]]]:
        """With ``trace``: for each reducing layer, per sample, the vision tokens that layer sees, each as the sorted
        prompt indices it holds (one index: a kept token; several: a merged token)."""
        if self.trace is None:
            raise RuntimeError("token sets need engine.request(..., trace=True)")
        return self.trace

    @property
    def reduces(self) -> bool:
        """True when some layer drops vision tokens for some sample."""
        return bool(self.drop_layers)

    def processed_counts(self) -> list[list[int]]:
        """Vision tokens each layer processed in prefill, per sample: ``[batch][layer]``."""
        if not self.processed:
            return []
        return torch.stack(self.processed, dim=1).tolist()


class ReductionEngine:
    """Drops vision tokens inside the decoder of one model instance, following a keep schedule.

    Args:
        layers: the decoder layers (``input_layernorm``, ``self_attn.{q,k}_proj``).
        decoder: the decoder family (:class:`~vtr_bench.reduction.decoder.Decoder`), or the decoder's rotary
            embedding module (``rotary_emb(x, position_ids) -> (cos, sin)``) for a 1-D RoPE decoder.
        schedule: per-layer keep ratios; its length must equal ``len(layers)``.
        scorer: decides what reducing layers keep and merge (may be None for a schedule that never drops).
        positions: ``"keep"`` (kept tokens keep their RoPE positions) or ``"renumber"`` (contiguous).
        attn_implementation: the model's attention implementation: ``"sdpa"``, ``"eager"`` or ``"flash_attention_2"``.
        probe: what pre-LLM scorers read from the vision encoder (``scorer.needs_vision``): hooks attached with the
            engine's, records split per sample into ``ScoringInputs.vision`` (:mod:`vtr_bench.models.vision_probe`).
    """

    def __init__(self, layers: Sequence[nn.Module], decoder: Decoder | nn.Module, schedule: KeepSchedule,
                 scorer: Scorer | None, positions: str = "keep", attn_implementation: str = "sdpa",
                 probe=None) -> None:
        if positions not in POSITION_POLICIES:
            raise ConfigError(f"positions must be one of {POSITION_POLICIES}, got {positions!r}")
        if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(
                f"attention implementation {attn_implementation!r} is not supported by the engine "
                f"(use one of {ATTENTION_IMPLEMENTATIONS})"
            )
        if schedule.layers != len(layers):
            raise ConfigError(f"keep schedule has {schedule.layers} layers but the model has {len(layers)}")
        if scorer is None and not schedule.is_full:
            raise ConfigError("a schedule that drops tokens needs a scorer")
        if scorer is not None and scorer.needs_vision and probe is None:
            raise ConfigError(f"the {scorer.name} scorer reads the vision encoder's attention per LLM vision token, "
                              f"which this model's token layout does not map (mapped: LLaVA-1.5-style, InternVL, "
                              f"Qwen2-VL / 2.5-VL, LLaVA-OneVision; not LLaVA-NeXT)")
        self.layers = list(layers)
        self.decoder = decoder if isinstance(decoder, Decoder) else Decoder(decoder)
        self.schedule = schedule
        self.scorer = scorer
        self.positions = positions
        self.attn_implementation = attn_implementation
        self.probe = probe if scorer is not None and scorer.needs_vision else None
        self._handles: list = []
        self._ctx: ReductionContext | None = None

    @contextmanager
    def attached(self) -> Iterator["ReductionEngine"]:
        """Install the hooks on the layers for the duration of the block; always removes them."""
        if self._handles:
            raise RuntimeError("engine hooks are already attached")
        try:
            for index, layer in enumerate(self.layers):
                hook = self._make_hook(index)
                self._handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
            rotary = self.decoder.rotary_emb
            if rotary is not None:
                self._handles.append(rotary.register_forward_pre_hook(self._rope_hook))
            with self.probe.attached() if self.probe is not None else nullcontext():
                yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self._ctx = None

    @contextmanager
    def request(self, vision_mask: torch.Tensor, attention_mask: torch.Tensor, trace: bool = False,
                store: PrefixStore | None = None, batch=None) -> Iterator[ReductionContext]:
        """A fresh per-request context (one prefill, then any number of single-token decode steps).

        Args:
            trace: record the token sets of :meth:`ReductionContext.token_sets`.
            store: prefix reuse (:mod:`vtr_bench.reduction.prefix`): when it holds a snapshot of ``batch`` whose
                prefix counts match, the prefill resumes from it (``ctx.resume``: the caller then passes its
                ``embeddings`` as ``inputs_embeds``) and layers before its depth are replayed from the stored KV
                cache, not computed; the request also stores snapshots of its own prefill
                (:func:`~vtr_bench.reduction.prefix.record_depths`).
            batch: what identifies the batch's inputs in ``store`` (same samples, order and padding).
        """
        if not self._handles:
            raise RuntimeError("attach the engine (engine.attached()) before starting a request")
        ctx = ReductionContext(self.schedule, vision_mask, attention_mask, trace)
        if self.probe is not None:
            self.probe.reset()
            store = None  # a resumed prefill skips the vision tower the probe reads
        if store is not None:
            if trace:
                raise ConfigError("token-set tracing and prefix reuse do not combine")
            ctx.store, ctx.batch, ctx.resume = store, batch, store.find(batch, ctx.keep)
            if ctx.resume is not None and tuple(ctx.resume.embeddings.shape[:2]) != tuple(vision_mask.shape):
                raise RuntimeError(f"prefix snapshot of batch {batch!r} is for inputs of shape "
                                   f"{tuple(ctx.resume.embeddings.shape[:2])}, not {tuple(vision_mask.shape)}")
            depth = ctx.resume.depth if ctx.resume is not None else -1  # -1: nothing to resume
            ctx.record = {d for d in record_depths(ctx.keep, ctx.n_vision) if d > depth}
            for index in range(max(depth, 0)):
                self.layers[index].forward = self._replay(index, ctx.resume)
        self._ctx = ctx
        try:
            yield ctx
        finally:
            self._restore_forwards()
            self._ctx = None

    def _replay(self, index: int, snapshot: PrefixSnapshot):
        """A prefill forward of layer ``index`` that writes its stored keys / values into the cache and computes
        nothing (its output is ignored: the resumed layer receives the stored hidden states)."""
        layer_idx = getattr(getattr(self.layers[index], "self_attn", None), "layer_idx", index)

        def forward(hidden_states, *args, past_key_values=None, **kwargs):
            past_key_values.update(snapshot.keys[index], snapshot.values[index], layer_idx)
            return hidden_states

        return forward

    def _restore_forwards(self) -> None:
        for layer in self.layers:
            layer.__dict__.pop("forward", None)

    def _rope_hook(self, module, args) -> None:
        if self._ctx is not None and len(args) > 1:
            self._ctx.rope_ids = args[1]

    def _make_hook(self, index: int):
        def hook(module, args, kwargs):
            ctx = self._ctx
            if ctx is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            if index == 0:
                self._start_call(ctx, hidden, kwargs)
            resumed = False
            if ctx.calls == 1:
                if ctx.resume is not None and index < ctx.resume.depth:
                    return None  # replayed from the snapshot
                ctx.layer_forwards["prefill"] += hidden.shape[0]
                if ctx.resume is not None and index == ctx.resume.depth > 0:
                    hidden, resumed = self._resume(ctx, ctx.resume), True
                if index in ctx.record:
                    self._snapshot(ctx, index, hidden, kwargs.get("past_key_values"))
                hidden, overrides = self._prefill_layer(ctx, index, hidden, kwargs.get("past_key_values"))
                ctx.layer_forwards["prefill_tokens"] += hidden.shape[0] * hidden.shape[1]
            else:
                ctx.layer_forwards["decode"] += hidden.shape[0]
                overrides = self._decode_layer(ctx, index, hidden, kwargs)
            if overrides is None and not resumed:
                return None
            overrides = overrides or {}
            if args:
                args = (hidden,) + tuple(args[1:])
            else:
                kwargs["hidden_states"] = hidden
            kwargs.update(overrides)
            return args, kwargs

        return hook

    def _start_call(self, ctx: ReductionContext, hidden: torch.Tensor, kwargs: dict) -> None:
        ctx.calls += 1
        ctx._step_cache = {}
        ctx.forward_ids, ctx.rope_ids = ctx.rope_ids, None
        if ctx.calls == 1:
            if hidden.shape[1] != ctx.vision_mask.shape[1]:
                raise RuntimeError(
                    f"prefill sees {hidden.shape[1]} tokens but the request's vision mask has "
                    f"{ctx.vision_mask.shape[1]}"
                )
            batch = hidden.shape[0]
            cos, sin = self.decoder.token_embeddings(kwargs["position_embeddings"], batch)
            ctx.state = SequenceState.initial(ctx.vision_mask, ctx.attention_mask,
                                              self._positions(ctx, hidden, kwargs), cos, sin)
            ctx.prompt, ctx.prompt_hidden = ctx.state, hidden
            if ctx.trace is not None:
                ctx.members = torch.eye(hidden.shape[1], device=hidden.device).expand(batch, -1, -1)
            ctx.current_counts = ctx.state.vision_counts()
            ctx.current_shift = torch.zeros(batch, dtype=torch.long, device=hidden.device)
        elif hidden.shape[1] != 1:
            raise RuntimeError("after the prefill the engine supports single-token decode steps only")

    def _positions(self, ctx: ReductionContext, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """Canonical positions of this forward's tokens: what the rotary module received (else the layer's
        ``position_ids``, else ``arange``)."""
        position_ids = ctx.forward_ids if ctx.forward_ids is not None else kwargs.get("position_ids")
        if position_ids is None:
            position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        return self.decoder.positions(position_ids, hidden.shape[0])

    def _resume(self, ctx: ReductionContext, snapshot: PrefixSnapshot) -> torch.Tensor:
        """Put the request where ``snapshot`` was taken (entering its layer); returns the hidden states."""
        ctx.state, ctx.prompt = snapshot.state, snapshot.prompt
        ctx.current_counts, ctx.current_shift = snapshot.counts, snapshot.shift
        ctx.prefill_overrides = snapshot.overrides
        ctx.processed, ctx.layer_valid = list(snapshot.processed), list(snapshot.layer_valid)
        ctx.layer_shift = list(snapshot.layer_shift)
        scorer = self.scorer
        stash = scorer is not None and scorer.needs_attention and scorer.source_offset == -1 \
            and snapshot.depth in ctx.drop_layers
        ctx.stash = snapshot.previous if stash else None
        self._restore_forwards()  # decode steps compute every layer
        return snapshot.hidden

    @staticmethod
    def _snapshot(ctx: ReductionContext, index: int, hidden: torch.Tensor, cache) -> None:
        """Store the prefill state entering layer ``index`` (tensors referenced: later steps never write them)."""
        layers = cache.layers[:index]
        ctx.store.put(ctx.batch, ctx.keep, PrefixSnapshot(
            index, hidden, ctx.previous if index else None, ctx.prompt_hidden, [c.keys for c in layers],
            [c.values for c in layers], ctx.state, ctx.prompt, ctx.current_counts, ctx.current_shift,
            ctx.prefill_overrides, list(ctx.processed), list(ctx.layer_valid), list(ctx.layer_shift)))

    def _prefill_layer(self, ctx: ReductionContext, index: int, hidden: torch.Tensor, cache):
        state = ctx.state
        if index in ctx.drop_layers:
            state, hidden = self._drop(ctx, index, hidden, cache)
            ctx.state = state
            ctx.current_counts = state.vision_counts()
            if self.positions == "renumber":  # how much earlier than the prompt's the next position now is
                ctx.current_shift = ctx.prompt.position_ids[:, -1] - state.position_ids[:, -1]
            ctx.prefill_overrides = self._overrides(state, hidden, query_len=hidden.shape[1])
        scorer = self.scorer
        if scorer is not None and scorer.needs_attention and scorer.source_offset == -1 \
                and index + 1 in ctx.drop_layers:
            ctx.stash = hidden
        ctx.processed.append(ctx.current_counts)
        ctx.layer_valid.append(state.valid)
        ctx.layer_shift.append(ctx.current_shift)
        if ctx.store is not None:
            ctx.previous = hidden
        return hidden, ctx.prefill_overrides

    def _drop(self, ctx: ReductionContext, index: int, hidden: torch.Tensor, cache):
        state = ctx.state
        source = max(index + self.scorer.source_offset, 0)
        source_hidden = hidden if source == index or ctx.stash is None else ctx.stash
        inputs = ScoringInputs(index, self.layers[source], source_hidden, state, current=hidden, prompt=ctx.prompt,
                               prompt_hidden=ctx.prompt_hidden,
                               keys=self._cached_keys(cache, source, hidden.shape[1]) if source < index else None,
                               decoder=self.decoder,
                               vision=self.probe.per_sample(ctx.n_vision) if self.probe is not None else None)
        reduction = self.scorer.reduce(inputs, ctx.keep[:, index])
        reduced, hidden = reduce_sequence(state, hidden, reduction)
        if ctx.trace is not None:
            _, ctx.members = reduce_sequence(state, ctx.members, reduction)
            ctx.trace[index] = [{tuple(row.nonzero().flatten().tolist()) for row in members[vision]}
                                for members, vision in zip(ctx.members, reduced.is_vision)]
        state = reduced
        ctx.stash = None
        if self.positions == "renumber":
            position_ids = self.decoder.renumber(state.valid, state.is_vision, state.position_ids)
            cos, sin = self.decoder.embed(hidden, position_ids)
            state.position_ids, state.cos, state.sin = position_ids, cos, sin
        return state, hidden

    @staticmethod
    def _cached_keys(cache, layer: int, seq: int) -> torch.Tensor | None:
        """Layer ``layer``'s RoPE'd keys of the current prefill sequence from the KV cache (it just ran on this very
        sequence), so scoring needs no k projection; None without a cache."""
        layers = getattr(cache, "layers", None)
        if layers is None or layer >= len(layers) or getattr(layers[layer], "keys", None) is None:
            return None
        keys = layers[layer].keys
        return keys if keys.shape[2] == seq else None

    def _overrides(self, state: SequenceState, hidden: torch.Tensor, query_len: int) -> dict:
        return {
            "attention_mask": layer_mask(state.valid, query_len, hidden.dtype, self.attn_implementation),
            "position_ids": self.decoder.layer_position_ids(state.position_ids),
            "position_embeddings": self.decoder.layer_embeddings(state.cos, state.sin),
            "cache_position": torch.arange(hidden.shape[1], device=hidden.device),
        }

    def _decode_layer(self, ctx: ReductionContext, index: int, hidden: torch.Tensor, kwargs: dict):
        if not ctx.reduces:
            return None
        cache = ctx._step_cache
        prefix = ctx.layer_valid[index]
        key = ("mask", id(prefix))
        if key not in cache:
            decoded = torch.ones(prefix.shape[0], ctx.calls - 1, dtype=torch.bool, device=prefix.device)
            valid = torch.cat([prefix, decoded], dim=1)
            cache[key] = layer_mask(valid, 1, hidden.dtype, self.attn_implementation)
        overrides = {"attention_mask": cache[key]}
        if self.positions == "renumber":
            shift = ctx.layer_shift[index]
            key = ("rope", id(shift))
            if key not in cache:
                position_ids = self._positions(ctx, hidden, kwargs) - shift.unsqueeze(1)
                cache[key] = (self.decoder.layer_position_ids(position_ids),
                              self.decoder.layer_embeddings(*self.decoder.embed(hidden, position_ids)))
            overrides["position_ids"], overrides["position_embeddings"] = cache[key]
        return overrides
