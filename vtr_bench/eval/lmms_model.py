"""The lmms-eval bridge: an ``lmms`` model class wrapping a model adapter and the reduction engine."""
from __future__ import annotations

import hashlib
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field

from lmms_eval.api.model import lmms
from tqdm import tqdm

from vtr_bench.errors import ConfigError, EvaluationError
from vtr_bench.eval.distributed import process_rank
from vtr_bench.eval.generate import greedy_generate
from vtr_bench.models.base import VLMAdapter
from vtr_bench.reduction.engine import ReductionEngine

DEFAULT_MAX_NEW_TOKENS = 1024  # a task without max_new_tokens: lmms-eval's own llava / qwen models use 1024
MULTI_IMAGE_POLICIES = ("error", "middle")


@contextmanager
def strict_image_decoding():
    """Decode images fully inside the block: lmms-eval sets PIL's ``LOAD_TRUNCATED_IMAGES``, under which damaged
    pixel data decodes silently into a partial image (a silent wrong answer); here it raises instead."""
    from PIL import ImageFile

    previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


@dataclass
class SampleRecord:
    """Measurements of one generated sample."""

    task: str
    doc_id: int
    prompt_tokens: int
    n_vision: int
    processed: list[int]
    prefill_seconds: float
    decode_seconds: list[float] = field(default_factory=list)
    generated_tokens: int = 0
    ended: str = ""  # eos, stop (a stop string) or max_new_tokens
    empty: bool = False  # the answer lmms-eval scored is empty (after stop strings and stripping)


def generation_settings(gen_kwargs: dict) -> dict:
    """The settings our greedy decoding takes from a task's ``generation_kwargs``: ``max_new_tokens`` (else
    :data:`DEFAULT_MAX_NEW_TOKENS`) and the stop strings (one string is one stop, as lmms-eval's models read it)."""
    until = gen_kwargs.get("until") or []
    stops = [s for s in ([until] if isinstance(until, str) else until) if s]
    given = gen_kwargs.get("max_new_tokens")
    return {"max_new_tokens": int(given or DEFAULT_MAX_NEW_TOKENS),
            "max_new_tokens_source": "task" if given else "default", "until": stops}


def cut_at_stops(text: str, stops: list[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


def generation_summary(records: list[SampleRecord], settings: dict[str, dict]) -> dict[str, dict]:
    """Per task: the generation settings used and how the answers ended (counts of empty answers, of answers
    cut by max_new_tokens, mean generated tokens)."""
    summary = {}
    for task, used in sorted(settings.items()):
        own = [r for r in records if r.task == task]
        summary[task] = {**used, "samples": len(own), "empty_answers": sum(r.empty for r in own),
                         "ended": {reason: sum(r.ended == reason for r in own)
                                   for reason in ("eos", "stop", "max_new_tokens")},
                         "generated_tokens_mean": statistics.fmean(r.generated_tokens for r in own) if own else None}
    return summary


class ReducedLMM(lmms):
    """An lmms-eval model: greedy generation through ``adapter.model`` with ``engine`` attached.

    Args:
        adapter: the model adapter (model + processor + prompt format).
        engine: the reduction engine for this run (built from the method's schedule and scorer).
        batch_size: requests per forward (left padding); accuracy runs default to 1.
        show_progress: show a progress bar over requests.
        label: what the progress bar names (the run, or the search evaluation), with the task.
        multi_image: a sample with several images (e.g. SEED-Bench's video frames) is an ``"error"`` or is
            answered from its ``"middle"`` image (as LLaVA-1.5 evaluated SEED-Bench video questions).
        store: prefix reuse across evaluations of the same samples (searches; :mod:`vtr_bench.reduction.prefix`).
        monitor: called as ``monitor(self, batch, answers)`` after each batch (a search's early stop raises from it).
    """

    is_simple = True

    def __init__(self, adapter: VLMAdapter, engine: ReductionEngine, batch_size: int = 1,
                 show_progress: bool = True, multi_image: str = "error", label: str = "", store=None,
                 monitor=None) -> None:
        if multi_image not in MULTI_IMAGE_POLICIES:
            raise ConfigError(f"benchmark.multi_image must be one of {MULTI_IMAGE_POLICIES}, got {multi_image!r}")
        super().__init__()
        self.adapter = adapter
        self.engine = engine
        self.batch_size_per_gpu = int(batch_size)
        self.show_progress = show_progress
        self.multi_image = multi_image
        self.label = label
        self.store, self.monitor = store, monitor
        self.layer_forwards: dict[str, int] = {}
        self.records: list[SampleRecord] = []
        self.settings: dict[str, dict] = {}  # per task: generation_settings(...) as used
        tokenizer = adapter.processor.tokenizer
        self.tokenizer = tokenizer
        generation_eos = getattr(getattr(adapter.model, "generation_config", None), "eos_token_id", None)
        generation_eos = generation_eos if isinstance(generation_eos, (list, tuple)) else [generation_eos]
        self.eos_token_ids = {tokenizer.eos_token_id, *(e for e in generation_eos if e is not None)}
        if process_rank()[1] > 1:  # data-parallel (torchrun): lmms-eval shards over this group
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=adapter.device.type == "cpu")  # gloo on CPU, else the GPU backend

    @property
    def device(self):
        """The model's device (lmms-eval's data-parallel path puts its rank-count tensors there)."""
        return self.adapter.device

    def _generate_batch(self, batch) -> list[str]:
        images, questions, gen_kwargs = [], [], batch[0].args[1]
        for request in batch:
            context, _, doc_to_visual, doc_id, task, split = request.args
            try:
                with strict_image_decoding():  # the dataset decodes the doc's images on access
                    visuals = doc_to_visual(self.task_dict[task][split][doc_id])
                    for visual in visuals or []:
                        getattr(visual, "load", lambda: None)()
            except Exception as error:  # noqa: BLE001 - a corrupt or missing image, named in one line
                raise EvaluationError(f"{task} doc {doc_id}: could not load its image: "
                                      f"{type(error).__name__}: {error}") from error
            if not visuals or (len(visuals) > 1 and self.multi_image == "error"):
                raise EvaluationError(f"{task} doc {doc_id}: expected one image, got {len(visuals)} (a benchmark with "
                                      f"multi-image samples can set benchmark.multi_image=middle)")
            images.append(visuals[len(visuals) // 2])
            questions.append(context)
        inputs = self.adapter.prepare(images, questions)
        vision_mask = self.adapter.vision_mask(inputs["input_ids"])
        settings = generation_settings(gen_kwargs)
        self.settings.setdefault(batch[0].args[4], settings)
        stops = settings["until"]
        window = 4 * max(map(len, stops), default=0) + 4  # tokens enough to spell any stop (>= 1 byte each)

        def stop(_, tokens: list[int]) -> bool:
            tail = self.tokenizer.decode(tokens[-window:], skip_special_tokens=True)
            return any(s in tail for s in stops)

        batch_key = None
        if self.store is not None:  # the same samples, in the same order and padding
            ids = inputs["input_ids"]
            batch_key = (tuple((r.args[4], r.args[5], r.args[3]) for r in batch), tuple(ids.shape),
                         hashlib.sha256(ids.cpu().numpy().tobytes()).hexdigest())
        out = greedy_generate(self.adapter.model, self.engine, inputs, vision_mask, settings["max_new_tokens"],
                              self.eos_token_ids, stop=stop if stops else None, store=self.store, batch_key=batch_key)
        for phase, count in out.layer_forwards.items():
            self.layer_forwards[phase] = self.layer_forwards.get(phase, 0) + count
        texts = []
        lengths = inputs["attention_mask"].sum(-1).tolist()
        for i, request in enumerate(batch):
            _, _, _, doc_id, task, _ = request.args
            text = cut_at_stops(self.tokenizer.decode(out.tokens[i], skip_special_tokens=True), stops).strip()
            texts.append(text)
            self.records.append(SampleRecord(task, int(doc_id), int(lengths[i]), out.n_vision[i],
                                             out.processed_counts[i], out.prefill_seconds / len(batch),
                                             [s / len(batch) for s in out.decode_seconds], len(out.tokens[i]),
                                             out.ended[i], not text))
        return texts

    def _batches(self, requests):
        """Consecutive requests in batches of ``batch_size``, never mixing tasks or generation settings."""
        batch = []
        for request in requests:
            if batch and (len(batch) == self.batch_size_per_gpu or request.args[4] != batch[0].args[4]
                          or request.args[1] != batch[0].args[1]):
                yield batch
                batch = []
            batch.append(request)
        if batch:
            yield batch

    def generate_until(self, requests) -> list[str]:
        """Answer generation requests in order; any failure raises (never a silent empty answer)."""
        answers: list[str] = []
        bar = tqdm(total=len(requests), desc=self.label or "generate", disable=not self.show_progress, leave=False)
        with self.engine.attached(), bar:
            for batch in self._batches(requests):
                task = batch[0].args[4]
                bar.set_description(f"{self.label} {task}".strip())
                try:
                    texts = self._generate_batch(batch)
                except EvaluationError:
                    raise
                except Exception as error:  # noqa: BLE001 - re-raised with the sample named
                    doc_ids = [r.args[3] for r in batch]
                    raise EvaluationError(
                        f"generation failed on {batch[0].args[4]} docs {doc_ids}: {type(error).__name__}: {error}"
                    ) from error
                answers.extend(texts)
                bar.update(len(batch))
                if self.monitor is not None:
                    self.monitor(self, batch, texts)
        return answers

    def clean(self) -> None:
        """What lmms-eval calls after an evaluation: the base class runs ``gc.collect()`` (0.3-0.6 s per call in a
        process that indexed lmms-eval's tasks, measured on 2 CPU cores: a search pays it per evaluation) and an
        Accelerator's cleanup (another ``gc.collect()``); we only release cached device memory."""
        import torch

        if process_rank()[1] > 1:  # the Accelerator we made for data-parallel runs
            self.accelerator.free_memory()
        if self.adapter.device.type == "cuda":
            torch.cuda.empty_cache()

    def loglikelihood(self, requests):
        raise EvaluationError("vtr_bench evaluates generation tasks only (loglikelihood tasks are not supported)")

    def generate_until_multi_round(self, requests):
        raise EvaluationError("vtr_bench does not support multi-round generation tasks")


def latency_summary(values: list[float]) -> dict:
    """Median and p90 (nearest rank) of a list of seconds, in milliseconds; empty → None values."""
    if not values:
        return {"median_ms": None, "p90_ms": None}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, max(0, int(round(0.9 * len(ordered))) - 1))]
    return {"median_ms": 1000 * statistics.median(ordered), "p90_ms": 1000 * p90}
