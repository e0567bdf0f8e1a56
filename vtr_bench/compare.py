"""Paired comparison of two runs on the same samples: one line per task, then the average over tasks.

    python -m vtr_bench.compare RUN_A RUN_B [--resamples 2000] [--seed 0] [--confidence 0.95]

Each run dir needs its ``samples.jsonl``; samples pair by task and doc id (and must have had the same prompt). The
difference is B − A of the tasks' headline per-sample score, with a percentile paired-bootstrap interval (samples
resampled within each task), an exact McNemar p-value where both score vectors are binary, and the share of
identical answers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vtr_bench.errors import ConfigError
from vtr_bench.eval.samples import loyalty, paired_scores, read_samples
from vtr_bench.eval.stats import DEFAULT_RESAMPLES, bootstrap_ci, is_binary, mcnemar_exact


def compare(a: dict, b: dict, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, confidence: float = 0.95) -> dict:
    """The paired comparison of two runs' samples (:func:`~vtr_bench.eval.samples.read_samples`).

    Returns:
        ``{"tasks": {task: {"samples", "metric", "a", "b", "diff": bootstrap_ci(...), "mcnemar" | None,
        "answer_match"}}, "average": {"diff": ..., "mcnemar": ... (pooled, binary only), "samples"}}``.

    Raises:
        ConfigError: the runs share no scored sample.
    """
    pairs = paired_scores(a, b)
    if not pairs:
        raise ConfigError("the two runs share no scored sample (not runs of the same model, tasks and limit?)")
    agreement = loyalty(b, a)
    diffs = {task: [y - x for x, y in zip(p["a"], p["b"])] for task, p in pairs.items()}
    tasks = {}
    for task, pair in pairs.items():
        first, second = pair["a"], pair["b"]
        tasks[task] = {"samples": len(first), "metric": pair["metric"],
                       "a": sum(first) / len(first), "b": sum(second) / len(second),
                       "diff": bootstrap_ci(diffs[task], resamples, seed, confidence),
                       "mcnemar": mcnemar_exact(first, second) if is_binary(first, second) else None,
                       "answer_match": agreement.get(task, {}).get("answer_match")}
    all_first = [x for p in pairs.values() for x in p["a"]]
    all_second = [y for p in pairs.values() for y in p["b"]]
    average = {"samples": len(all_first), "diff": bootstrap_ci(diffs, resamples, seed, confidence),
               "mcnemar": mcnemar_exact(all_first, all_second) if is_binary(all_first, all_second) else None}
    return {"tasks": tasks, "average": average}


def format_line(name: str, entry: dict, a: float | None = None, b: float | None = None) -> str:
    """One printed line of a comparison entry."""
    diff = entry["diff"]
    parts = [f"{name}: n={entry['samples']}"]
    if a is not None:
        parts.append(f"A {a:.3f}  B {b:.3f}")
    mark = " (interval contains 0)" if diff["contains_zero"] else ""
    parts.append(f"B−A {diff['estimate']:+.4f} [{diff['confidence']:.0%} CI {diff['low']:+.4f}, "
                 f"{diff['high']:+.4f}]{mark}")
    if entry.get("mcnemar"):
        m = entry["mcnemar"]
        parts.append(f"McNemar p={m['p_value']:.3g} (A only {m['a_only']}, B only {m['b_only']})")
    if entry.get("answer_match") is not None:
        parts.append(f"same answer {entry['answer_match']:.3f}")
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description="Paired comparison of two run dirs (B - A).")
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args(argv)
    try:
        if args.resamples < 100 or not 0 < args.confidence < 1:
            raise ConfigError("--resamples must be >= 100 and --confidence in (0, 1)")
        result = compare(read_samples(args.run_a), read_samples(args.run_b), args.resamples, args.seed,
                         args.confidence)
    except ConfigError as error:
        print(f"vtr_bench.compare: error: {error}", file=sys.stderr)
        return 2
    print(f"A = {args.run_a}\nB = {args.run_b}")
    for task, entry in result["tasks"].items():
        print(format_line(f"{task} ({entry['metric']})", entry, entry["a"], entry["b"]))
    if len(result["tasks"]) > 1:
        print(format_line("average over tasks", result["average"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
