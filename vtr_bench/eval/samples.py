"""Per-sample records (``samples.jsonl`` in each eval run dir) and the pairing of two runs by task and doc id."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from vtr_bench.errors import ConfigError

SAMPLES_FILE = "samples.jsonl"
PRIMARY_METRICS = ("exact_match", "accuracy", "acc", "mme_perception_score", "pope_accuracy", "gpt_eval_score")
"""A task's headline metric: the first of these it reports (else its first metric)."""


def headline(names) -> str | None:
    """The headline metric among ``names`` (:data:`PRIMARY_METRICS` first, else the first name)."""
    names = list(names)
    return next((m for m in PRIMARY_METRICS if m in names), names[0] if names else None)


def _score(value) -> float | None:
    """A per-sample metric value as a number: a number, or the ``score`` of a dict (POPE, MME); else None."""
    if isinstance(value, dict):
        value = value.get("score")
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _text(value):
    """An answer or target as JSON-friendly text (lists of one element unwrapped)."""
    while isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def sample_rows(logged: dict, records: list) -> list[dict]:
    """One row per generated sample: lmms-eval's logged samples (answer, target, per-metric scores) joined by
    (task, doc id) with our measurements (:class:`~vtr_bench.eval.lmms_model.SampleRecord`)."""
    measured = {(r.task, r.doc_id): r for r in records}
    rows = []
    for task, samples in sorted(logged.items()):
        for sample in samples:
            doc_id = int(sample["doc_id"])
            record = measured.get((task, doc_id))
            arguments = sample.get("arguments") or [""]
            prompt = arguments[0] if isinstance(arguments[0], str) else json.dumps(arguments[0], default=str)
            scores = {k: _score(v) for k, v in sample.items()
                      if k not in ("doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "token_counts",
                                   "doc_hash", "input_media")}
            rows.append({
                "task": task, "doc_id": doc_id,
                "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()[:16],
                "answer": _text(sample.get("filtered_resps")), "target": _text(sample.get("target")),
                "scores": {k: v for k, v in scores.items() if v is not None},
                "n_vision": record.n_vision if record else None,
                "kept_per_layer": record.processed if record else None,
                "prefill_ms": 1000 * record.prefill_seconds if record else None,
                "generated_tokens": record.generated_tokens if record else None,
                "ended": record.ended if record else None,
            })
    return rows


def write_samples(run_dir: str | Path, rows: list[dict]) -> dict:
    """Write ``samples.jsonl`` atomically; returns what results.json records of it (``samples_file``: name, rows,
    SHA-256), so that a samples file never passes for another run's."""
    from vtr_bench.tracking.results import write_text_atomic

    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    write_text_atomic(Path(run_dir) / SAMPLES_FILE, text)
    return {"name": SAMPLES_FILE, "rows": len(rows), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def read_samples(run_dir: str | Path) -> dict[tuple[str, int], dict]:
    """``{(task, doc id): row}`` of a run's ``samples.jsonl``.

    Raises:
        ConfigError: the file is missing or unreadable (one line naming it).
    """
    path = Path(run_dir) / SAMPLES_FILE
    try:
        text = path.read_text(encoding="utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        pairs = {(row["task"], int(row["doc_id"])): row for row in rows}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: cannot read per-sample records ({type(error).__name__}): runs made before "
                          f"samples.jsonl existed cannot be paired; re-run with run.force=true") from None
    try:
        recorded = json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8")).get("samples_file")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded and recorded.get("sha256") != hashlib.sha256(text.encode()).hexdigest():
        raise ConfigError(f"{path} is not the samples file its results.json was computed from (a re-run that "
                          f"did not finish?): re-run with run.force=true")
    return pairs


def paired_scores(a: dict, b: dict) -> dict[str, dict]:
    """Per task, ``{"metric", "a", "b"}``: the two runs' headline per-sample scores (:func:`headline`) of the
    samples both ran (same task and doc id and the same prompt), in doc order.

    Args:
        a, b: :func:`read_samples` of two runs.

    Raises:
        ConfigError: a shared doc id was asked with different prompts (the runs are not of the same samples).
    """
    pairs: dict[str, dict] = {}
    for key in sorted(a.keys() & b.keys()):
        row_a, row_b = a[key], b[key]
        if row_a["prompt_sha256"] != row_b["prompt_sha256"]:
            raise ConfigError(f"{key[0]} doc {key[1]} was asked with different prompts in the two runs: they are "
                              f"not runs of the same samples")
        metric = headline(sorted(row_a["scores"]))
        if metric is None or metric not in row_b["scores"]:
            continue
        pair = pairs.setdefault(key[0], {"metric": metric, "a": [], "b": []})
        if pair["metric"] == metric:
            pair["a"].append(row_a["scores"][metric])
            pair["b"].append(row_b["scores"][metric])
    return pairs


def loyalty(reduced: dict, full: dict) -> dict[str, dict]:
    """Per task, how often a reduced run answers as the full model did on the same samples (EffiVLM-Bench's
    loyalty): ``answer_match`` (identical answer text) and ``score_match`` (every shared per-sample score equal)."""
    out: dict[str, dict] = {}
    for key in sorted(reduced.keys() & full.keys()):
        row, ref = reduced[key], full[key]
        if row["prompt_sha256"] != ref["prompt_sha256"]:
            continue
        shared = row["scores"].keys() & ref["scores"].keys()
        entry = out.setdefault(key[0], {"samples": 0, "answer_match": 0, "score_match": 0})
        entry["samples"] += 1
        entry["answer_match"] += row["answer"] == ref["answer"]
        entry["score_match"] += all(row["scores"][m] == ref["scores"][m] for m in shared)
    return {task: {"samples": e["samples"], "answer_match": e["answer_match"] / e["samples"],
                   "score_match": e["score_match"] / e["samples"]} for task, e in out.items()}
