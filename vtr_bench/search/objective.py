"""The search objective: the accuracy of a keep schedule on a search split, cached on disk.

Searches only see a callable ``schedule -> accuracy`` (:data:`~vtr_bench.search.result.Objective`), so tests can
inject a synthetic objective with a known optimum. :class:`CachedObjective` stores every evaluation as one JSON
file named by the SHA-256 of its key (written atomically), so a killed search resumes where it stopped and a
repeated one evaluates nothing; it also appends every call to a JSON-lines trace. :class:`ModelObjective` is the
real one: the model with the reduction engine, evaluated through lmms-eval on ``search.task`` (never a test task).

Its cache key holds everything that changes the answer: the model fingerprint (hash of the weights, config,
prompt template and processor), task, split, sample count, seed, metric, batch size, device, positions policy,
the scorer, and the schedule's *resolved keep counts* for every vision-token count the search samples have (so
two ratio vectors that round to the same counts share one evaluation; a schedule that drops nothing is keyed
without a scorer). Task data are assumed immutable under a task name: delete ``search.cache_dir`` after changing
a task's data.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import uuid
from pathlib import Path

from vtr_bench.errors import ConfigError, EvaluationError
from vtr_bench.reduction.prefix import PrefixStore
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.tracking.results import write_json_atomic

TRACE_FILE = "search_trace.jsonl"
CACHE_FORMAT = 1


def digest(obj) -> str:
    """SHA-256 (hex) of a JSON-friendly object, keys sorted: cache keys and saved-schedule names."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class CachedObjective:
    """An objective whose evaluations are cached on disk, one JSON file per key, with a trace of every call.

    Subclasses implement :meth:`key` and :meth:`evaluate`.

    Args:
        cache_dir: folder of the cache files.
        trace_path: JSON-lines file that receives one line per call (None: the trace is kept in memory only).
    """

    def __init__(self, cache_dir: str | Path, trace_path: str | Path | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.trace_path = Path(trace_path) if trace_path is not None else None
        self.trace: list[dict] = []
        self.new_evaluations = 0
        self.attempt = uuid.uuid4().hex[:12]  # marks this search's lines in a trace that earlier attempts share

    def key(self, schedule: KeepSchedule) -> dict:  # pragma: no cover - interface
        """A JSON-friendly dict that identifies the evaluation of ``schedule``."""
        raise NotImplementedError

    stops_early = False  # evaluate(schedule, threshold) may stop early (see below)

    def evaluate(self, schedule: KeepSchedule) -> dict:  # pragma: no cover - interface
        """Evaluate ``schedule``; returns a JSON-friendly dict with at least ``accuracy``. An objective whose
        ``stops_early`` is True is also called as ``evaluate(schedule, threshold)``: it may then stop once the
        comparison with ``threshold`` is decided, returning ``accuracy: None`` and bounds ``low <= accuracy <=
        high`` instead."""
        raise NotImplementedError

    def entry(self, schedule: KeepSchedule) -> dict:
        """The cached evaluation of ``schedule`` (evaluated and stored first if missing).

        Returns:
            ``{"key": ..., "accuracy": ..., ...}`` as stored.
        """
        return self._entry(schedule, None)

    def decide(self, schedule: KeepSchedule, threshold: float) -> tuple[bool, float | None]:
        """Whether the accuracy of ``schedule`` is at least ``threshold``, and the accuracy when it was computed
        (None: an objective that stops early decided without it, see :class:`ModelObjective`)."""
        entry = self._entry(schedule, threshold)
        if entry.get("accuracy") is None:
            return bool(entry["low"] >= threshold), None
        return float(entry["accuracy"]) >= threshold, float(entry["accuracy"])

    def _entry(self, schedule: KeepSchedule, threshold: float | None) -> dict:
        start = time.perf_counter()
        path, key, entry = self._lookup(schedule)
        cached = entry is not None
        if not cached and threshold is not None:  # a stored early decision may answer this threshold
            bounds = self._read_bounds(key)
            if bounds is not None and (bounds["low"] >= threshold or bounds["high"] < threshold):
                entry, cached = bounds, True
        if not cached:
            early = threshold is not None and self.stops_early
            entry = {"key": key, **(self.evaluate(schedule, threshold) if early else self.evaluate(schedule))}
            if entry.get("accuracy") is None:  # stopped early: its bounds, not an accuracy
                write_json_atomic(self._bounds_path(key), entry)
            else:
                write_json_atomic(path, entry)
            self.new_evaluations += 1
        accuracy = entry.get("accuracy")
        line = {"eval": len(self.trace), "ratios": list(schedule.ratios), "budget": schedule.budget,
                "accuracy": None if accuracy is None else float(accuracy), "cached": cached,
                "seconds": time.perf_counter() - start}
        if threshold is not None:
            line.update(threshold=threshold, passed=bool((entry["low"] if accuracy is None else accuracy) >= threshold),
                        early=accuracy is None, samples_seen=entry.get("seen", entry.get("samples")))
        if not cached and "layer_forwards" in entry:
            line["layer_forwards"] = entry["layer_forwards"]
        self._record(line)
        return entry

    def __call__(self, schedule: KeepSchedule) -> float:
        return float(self.entry(schedule)["accuracy"])

    def _bounds_path(self, key: dict) -> Path:
        return self.cache_dir / f"{digest({'bounds': key})}.json"

    def _read_bounds(self, key: dict) -> dict | None:
        """A stored early decision of ``key``: the accuracy's bounds ``low <= accuracy <= high`` (None: none)."""
        try:
            entry = json.loads(self._bounds_path(key).read_text())
        except (OSError, ValueError):
            return None
        ok = isinstance(entry, dict) and entry.get("key") == key and all(
            isinstance(entry.get(k), (int, float)) and math.isfinite(entry[k]) for k in ("low", "high"))
        return entry if ok and entry["low"] <= entry["high"] else None

    def _lookup(self, schedule: KeepSchedule) -> tuple[Path, dict, dict | None]:
        """The cache file, key and stored entry (None: not stored, or not valid) of ``schedule``."""
        key = {"format": CACHE_FORMAT, **self.key(schedule)}
        path = self.cache_dir / f"{digest(key)}.json"
        return path, key, self._read(path, key)

    def scores(self, schedule: KeepSchedule) -> list[float] | None:
        """Per-sample scores of the evaluation of ``schedule``, in sample order (None: not per-sample); read from
        the cache without a trace line when stored (a search asks right after the evaluation)."""
        entry = self._lookup(schedule)[2] or self.entry(schedule)
        return entry.get("scores")

    @staticmethod
    def _read(path: Path, key: dict) -> dict | None:
        """The stored entry, or None (then it is recomputed) when it is missing, unreadable, for another key, or its
        accuracy is not a finite number."""
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        accuracy, scores = entry.get("accuracy"), entry.get("scores")
        valid = isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool) and math.isfinite(accuracy)
        valid &= scores is None or (isinstance(scores, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scores))
        return entry if valid else None

    def _record(self, line: dict) -> None:
        line = {"attempt": self.attempt, **line}
        self.trace.append(line)
        if self.trace_path is not None:
            self.trace_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.trace_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")


class SyntheticObjective(CachedObjective):
    """A model-free objective with a known optimum, for tests and dry runs of a search.

    Accuracy is ``1 - mean_l max(0, essential[l] - ratio[l])``: 1 exactly when every layer keeps at least its
    essential ratio, lower the more is missing (monotone in every layer's ratio).

    Args:
        essential: the essential keep ratio of each layer.
        cache_dir: folder of the cache files.
        trace_path: JSON-lines trace of every call.
    """

    def __init__(self, essential, cache_dir: str | Path, trace_path: str | Path | None = None) -> None:
        super().__init__(cache_dir, trace_path)
        self.essential = [float(e) for e in essential]

    def key(self, schedule: KeepSchedule) -> dict:
        return {"synthetic": self.essential, "ratios": list(schedule.ratios)}

    def evaluate(self, schedule: KeepSchedule) -> dict:
        missing = [max(0.0, e - r) for e, r in zip(self.essential, schedule.ratios)]
        return {"accuracy": 1.0 - sum(missing) / len(missing)}


def _without_paths(value):
    """A config dict without the entries that name where it was loaded from."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k not in ("_name_or_path", "name_or_path")}
    return value


def model_fingerprint(adapter) -> str:
    """SHA-256 of what decides a model's answers: every state-dict tensor (name, dtype, shape, bytes), the model
    config (load paths dropped), the prompt template and the processor (image settings, vocabulary).

    Args:
        adapter: a :class:`~vtr_bench.models.base.VLMAdapter`.

    Returns:
        The hex digest (computed on the CPU; reads every weight once).
    """
    import torch

    h = hashlib.sha256()
    for name, tensor in adapter.model.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(flat.view(torch.uint8).numpy())
    processor = adapter.processor
    image_processor = getattr(processor, "image_processor", None)
    tokenizer = getattr(processor, "tokenizer", None)
    extra = {
        "config": _without_paths(adapter.model.config.to_dict()),
        "prompt_template": adapter.prompt_template,
        "image_processor": _without_paths(image_processor.to_dict()) if image_processor is not None else None,
        "vocab": sorted(tokenizer.get_vocab().items()) if tokenizer is not None else None,
    }
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def scorer_key(scorer) -> dict | None:
    """A JSON-friendly description of a scorer: its class and parameters."""
    if scorer is None:
        return None
    return {"class": type(scorer).__name__, **{k: v for k, v in sorted(vars(scorer).items())
                                               if not k.startswith("_")}}


class ModelObjective(CachedObjective):
    """The search-split accuracy of a schedule: the model with the reduction engine, through lmms-eval.

    Args:
        adapter: the loaded model.
        scorer: the method's scorer (ranks tokens at dropping layers).
        task: lmms-eval task of the search split (one task).
        local: bundled task package (``vtr_bench.tasks.<local>``) or None for lmms-eval's own tasks.
        task_cache_dir: where bundled task data are generated (``run.cache_dir``).
        cache_dir: folder of the evaluation cache.
        limit: number of search samples (the task's first ones; None: all).
        metric: the task metric to maximise.
        positions: position policy of the engine (``keep`` / ``renumber``).
        batch_size: requests per forward.
        seed: lmms-eval's seeds.
        trace_path: JSON-lines trace of every call.
        show_progress: a progress bar per evaluation, labelled with its number and mean keep ratio.
        early_stop: a question "is the accuracy at least t?" (:meth:`decide`) stops evaluating once the answers so
            far decide it (needs a mean-aggregated metric with per-sample values in [0, 1] and no answer filter).
        prefix_cache_mib: memory bound of the prefix snapshots shared across evaluations
            (:mod:`vtr_bench.reduction.prefix`; 0: off).
    """

    def __init__(self, adapter, scorer, task: str, *, local: str | None, task_cache_dir: str | Path,
                 cache_dir: str | Path, limit: int | None, metric: str, positions: str = "keep",
                 batch_size: int = 1, seed: int = 0, trace_path: str | Path | None = None,
                 show_progress: bool = False, early_stop: bool = False, prefix_cache_mib: float = 0) -> None:
        from vtr_bench.eval.task_files import tasks_digest
        from vtr_bench.search.data import load_search_samples, search_task

        super().__init__(cache_dir, trace_path)
        self.adapter, self.scorer, self.task, self.local = adapter, scorer, task, local
        self.task_cache_dir, self.limit, self.metric = task_cache_dir, limit, metric
        self.positions, self.batch_size, self.seed = positions, int(batch_size), int(seed)
        self.show_progress, self.evaluations = show_progress, 0
        self.stops_early = bool(early_stop)
        self.store = PrefixStore(prefix_cache_mib) if prefix_cache_mib and float(prefix_cache_mib) > 0 else None
        self._scoring = None  # the lmms-eval Task that scores single answers (early stop)
        if self.stops_early:
            self._scoring = search_task(task, local, task_cache_dir)
            problem = self._early_stop_problem()
            if problem:
                print(f"vtr_bench: warning: search.early_stop is off: {problem}", file=sys.stderr)
                self.stops_early = False
        split, samples = load_search_samples(task, local, task_cache_dir, limit, self._scoring)
        self.vision_token_counts = sorted({int(adapter.vision_mask(adapter.prepare([image], [question])["input_ids"])
                                               .sum()) for image, question in samples})
        self.layers = len(adapter.decoder_layers)
        self.provenance = {"model": adapter.name, "model_hash": model_fingerprint(adapter), "task": task,
                           "split": split, "samples": len(samples), "limit": limit, "metric": metric,
                           "seed": self.seed, "positions": positions, "batch_size": self.batch_size,
                           "device": adapter.device.type, "scorer": scorer_key(scorer),
                           "vision_tokens": self.vision_token_counts,
                           "task_files": tasks_digest([task], local, task_cache_dir)}

    def key(self, schedule: KeepSchedule) -> dict:
        if schedule.layers != self.layers:
            raise ConfigError(f"keep schedule has {schedule.layers} layers but the model has {self.layers}")
        counts = {str(n): schedule.counts(n) for n in self.vision_token_counts}
        drops = any(c != [int(n)] * self.layers for n, c in counts.items())
        base = {k: v for k, v in self.provenance.items() if k not in ("model", "limit", "scorer", "vision_tokens")}
        return {**base, "scorer": self.provenance["scorer"] if drops else None, "keep": counts}

    def _label(self, schedule: KeepSchedule) -> str:
        """What the progress bar of one search evaluation says: its number and the schedule's mean keep ratio."""
        self.evaluations += 1
        return f"search eval {self.evaluations} (mean keep {sum(schedule.ratios) / schedule.layers:.3f})"

    def evaluate(self, schedule: KeepSchedule, threshold: float | None = None) -> dict:
        from vtr_bench.eval.evaluate import evaluate_tasks

        engine = self.adapter.engine(schedule, self.scorer, positions=self.positions)
        monitor = _EarlyStop(self._scoring, self.metric, threshold, self.provenance["samples"]) \
            if threshold is not None else None
        if self.store is not None:
            self.store.next_evaluation()
        forwards = {}
        try:
            evaluation = evaluate_tasks(self.adapter, engine, [self.task], local=self.local,
                                        cache_dir=self.task_cache_dir, limit=self.limit, batch_size=self.batch_size,
                                        seed=self.seed, show_progress=self.show_progress,
                                        label=self._label(schedule), store=self.store, monitor=monitor,
                                        layer_forwards=forwards)
        except _Decided as decided:
            return {"accuracy": None, **decided.bounds, "layer_forwards": forwards}
        task_metrics = evaluation.metrics.get(self.task, {})
        if self.metric not in task_metrics:
            raise EvaluationError(f"search task {self.task!r} reports no metric {self.metric!r} "
                                  f"(it reports {sorted(task_metrics)}); set search.metric")
        rows = [row for row in evaluation.samples if row["task"] == self.task]
        scores = [row["scores"].get(self.metric) for row in rows]
        if monitor is not None and monitor.scores != {row["doc_id"]: row["scores"].get(self.metric) for row in rows}:
            raise EvaluationError(f"search.early_stop: scoring single answers of {self.task} disagrees with "
                                  f"lmms-eval's scores of the same answers; set search.early_stop=false")
        return {"accuracy": float(task_metrics[self.metric]), "metrics": task_metrics,
                "samples": len(evaluation.records),
                "scores": scores if scores and all(isinstance(v, float) for v in scores) else None,
                "layer_forwards": forwards}

    def _early_stop_problem(self) -> str | None:
        """Why single answers of the search task cannot decide early (None: they can): the metric must be the
        mean of per-sample values and the task must not filter answers."""
        from lmms_eval.api.registry import get_aggregation

        task = self._scoring
        if task.aggregation().get(self.metric) is not get_aggregation("mean"):
            return f"{self.task}'s {self.metric} is not aggregated by the mean over samples"
        if task.config.filter_list is not None:
            return f"{self.task} filters its answers before scoring them"
        return None


class _Decided(Exception):
    """Raised from inside an evaluation once its comparison with the threshold is decided."""

    def __init__(self, bounds: dict) -> None:
        super().__init__("decided")
        self.bounds = bounds


class _EarlyStop:
    """Scores each answered batch with the task's own ``process_results`` and stops the evaluation (raises
    :class:`_Decided`) once the mean over all ``samples`` is sure to be below ``threshold`` (every sample left
    scoring 1 would not reach it) or sure to reach it (every sample left scoring 0 would not drop it below)."""

    def __init__(self, task, metric: str, threshold: float, samples: int) -> None:
        self.task, self.metric, self.threshold, self.samples = task, metric, float(threshold), int(samples)
        self.scores: dict[int, float] = {}

    def __call__(self, lm, batch, answers) -> None:
        for request, answer in zip(batch, answers):
            _, _, _, doc_id, task, split = request.args
            value = self.task.process_results(lm.task_dict[task][split][doc_id], [answer]).get(self.metric)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise EvaluationError(f"search.early_stop needs per-sample {self.metric} values in [0, 1], {task} "
                                      f"doc {doc_id} scored {value!r}; set search.early_stop=false")
            self.scores[int(doc_id)] = float(value)
        seen, total = len(self.scores), sum(self.scores.values())
        low, high = total / self.samples, (total + self.samples - seen) / self.samples
        if seen < self.samples and (low >= self.threshold or high < self.threshold):
            raise _Decided({"low": low, "high": high, "seen": seen, "samples": self.samples})


def objective_from_config(cfg, adapter, scorer, run_dir: str | Path, positions: str = "keep") -> ModelObjective:
    """The search objective a run's config describes (``search:`` block), tracing into ``run_dir``; ``positions``
    is the run's position policy.

    Raises:
        ConfigError: ``search.task`` is one of the benchmark's test tasks.
    """
    search = cfg.search
    if search.task in list(cfg.benchmark.tasks):
        raise ConfigError(f"search.task={search.task} is a task of benchmark {cfg.benchmark.name}: searches must "
                          f"never score schedules on test data (use its search split, e.g. shapes_search)")
    return ModelObjective(adapter, scorer, str(search.task), local=search.local, task_cache_dir=cfg.run.cache_dir,
                          cache_dir=search.cache_dir, limit=search.limit, metric=str(search.metric),
                          positions=positions, batch_size=search.batch_size, seed=cfg.seed,
                          trace_path=Path(run_dir) / TRACE_FILE, show_progress=bool(cfg.run.show_progress),
                          early_stop=bool(search.get("early_stop", False)),
                          prefix_cache_mib=float(search.get("prefix_cache_mib") or 0))
