"""Evaluate an (adapter, engine) pair on lmms-eval tasks: the one function runs and searches both call."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

from vtr_bench.errors import ConfigError, EvaluationError
from vtr_bench.eval.lmms_model import ReducedLMM, SampleRecord
from vtr_bench.models.base import VLMAdapter
from vtr_bench.reduction.engine import ReductionEngine


def task_manager(tasks: Sequence[str], local: str | None, cache_dir: str | Path,
                 include_path: Sequence[str] = ()):
    """An lmms-eval TaskManager that knows ``tasks``.

    Args:
        tasks: task names.
        local: name of a bundled task package (``vtr_bench.tasks.<local>``, materialised into ``cache_dir``), or
            None for lmms-eval's own tasks.
        cache_dir: where bundled task data is generated.
        include_path: extra folders of task YAMLs (your own local tasks).

    Raises:
        ConfigError: unknown local package or task name.
    """
    from lmms_eval.tasks import TaskManager

    include = [str(Path(p).resolve()) for p in include_path]
    if local:
        try:
            package = importlib.import_module(f"vtr_bench.tasks.{local}")
        except ModuleNotFoundError:
            raise ConfigError(f"unknown local task package {local!r} (no vtr_bench.tasks.{local})") from None
        include.append(str(package.materialize(Path(cache_dir) / "tasks")))
    manager = TaskManager(include_path=include or None, include_defaults=not local, verbosity="ERROR")
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"lmms-eval does not know task(s) {unknown}")
    return manager


def metric_table(results: dict) -> dict:
    """``{task: {metric: value}}`` from lmms-eval's results (filter suffixes, aliases and stderr dropped)."""
    table = {}
    for task, metrics in results.get("results", {}).items():
        table[task] = {key.split(",")[0]: value for key, value in metrics.items()
                       if key != "alias" and "_stderr" not in key and isinstance(value, (int, float))}
    return table


def evaluate_tasks(adapter: VLMAdapter, engine: ReductionEngine, tasks: Sequence[str], *, local: str | None,
                   cache_dir: str | Path, limit: int | None = None, batch_size: int = 1, seed: int = 0,
                   show_progress: bool = True, include_path: Sequence[str] = ()) -> tuple[dict, list[SampleRecord]]:
    """Run ``tasks`` through lmms-eval with the reduced model.

    Returns:
        The metric table (:func:`metric_table`) and one :class:`SampleRecord` per generated sample.

    Raises:
        EvaluationError: a sample failed or nothing was generated.
    """
    from lmms_eval.evaluator import simple_evaluate

    lm = ReducedLMM(adapter, engine, batch_size=batch_size, show_progress=show_progress)
    manager = task_manager(tasks, local, cache_dir, include_path)
    output = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager,
                             limit=limit, bootstrap_iters=0, log_samples=False, batch_size=batch_size,
                             random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, verbosity="ERROR")
    if output is None or not lm.records:
        raise EvaluationError("lmms-eval returned no results (no samples were generated)")
    return metric_table(output), lm.records
