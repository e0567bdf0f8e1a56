"""Evaluate an (adapter, engine) pair on lmms-eval tasks: the one function runs and searches both call."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Sequence

from vtr_bench.errors import ConfigError, EvaluationError
from vtr_bench.eval.lmms_model import ReducedLMM, SampleRecord
from vtr_bench.models.base import VLMAdapter
from vtr_bench.reduction.engine import ReductionEngine


MODEL_NAME = "vtr_bench"  # our lmms-eval model name (the plugin's ``--model``)


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
    import lmms_eval.models  # noqa: F401 - sets lmms-eval's loguru level to WARNING (else task indexing logs DEBUG)
    from lmms_eval.tasks import TaskManager

    include = [str(Path(p).resolve()) for p in include_path]
    if local:
        try:
            package = importlib.import_module(f"vtr_bench.tasks.{local}")
        except ModuleNotFoundError:
            raise ConfigError(f"unknown local task package {local!r} (no vtr_bench.tasks.{local})") from None
        include.append(str(package.materialize(Path(cache_dir) / "tasks")))
    # model_name: tasks' lmms_eval_specific_kwargs entries for "vtr_bench" apply, as under lmms-eval's own CLI
    manager = TaskManager(include_path=include or None, include_defaults=not local, verbosity="ERROR",
                          model_name=MODEL_NAME)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"lmms-eval does not know task(s) {unknown}")
    return manager


JUDGED_TASKS = frozenset({"mmvet", "llava_in_the_wild", "mmbench_en_dev", "mmbench_cn_dev", "mmbench_cn_cc"})
"""lmms-eval tasks that an OpenAI-compatible judge scores (MM-Vet, LLaVA-Bench) or matches answers for (MMBench,
when an answer names no option); without ``OPENAI_API_KEY`` lmms-eval silently scores 0 or guesses."""


def _task_configs(manager, name: str) -> dict[str, dict]:
    """``{task: its YAML config}`` (``!function`` entries not imported) of a task, or of each task of a group/tag."""
    from lmms_eval import utils

    info = manager.task_index[name]
    if info["type"] == "tag":
        members = info["task"]
    elif info["yaml_path"] == -1 or info["type"] == "python_task":
        return {}
    else:
        config = utils.load_yaml_config(info["yaml_path"], mode="simple")
        if info["type"] != "group":
            return {name: config}
        members = config.get("task", [])
    configs = {}
    for member in members:
        if isinstance(member, str) and member in manager.task_index:
            configs.update(_task_configs(manager, member))
    return configs


def _in_datasets_cache(cache_dir: str, path: str, name: str | None) -> bool:
    """Whether ``datasets`` finds hub dataset ``path`` (config ``name``) in ``cache_dir`` with the hub offline."""
    from datasets.naming import camelcase_to_snakecase

    namespace, dataset = path.split("/")
    root = Path(cache_dir) / f"{namespace}___{camelcase_to_snakecase(dataset)}"
    return any(p.is_dir() for p in root.glob(f"{name or '*'}/*/*"))


def check_tasks(manager, tasks: Sequence[str]) -> None:
    """Fail fast, with one line, where lmms-eval would retry for seconds or score silently wrong: a hub dataset
    missing from the local datasets cache while the hub is offline, a dataset loaded with a hub token when there
    is none, a judged task (:data:`JUDGED_TASKS`) without ``OPENAI_API_KEY``.

    Raises:
        ConfigError: a judged task without a judge.
        EvaluationError: a dataset that cannot be loaded.
    """
    from lmms_eval.api.task import _resolve_hf_datasets_cache_dir

    offline = "1" in (os.environ.get("HF_DATASETS_OFFLINE"), os.environ.get("HF_HUB_OFFLINE"))
    for task_name in tasks:
        for task, config in _task_configs(manager, task_name).items():
            if task in JUDGED_TASKS and not os.environ.get("OPENAI_API_KEY"):
                raise ConfigError(f"task {task} is scored by an OpenAI-compatible judge: set OPENAI_API_KEY (and "
                                  f"OPENAI_API_URL / MODEL_VERSION for another endpoint) or drop it from "
                                  f"benchmark.tasks")
            path, kwargs = str(config.get("dataset_path", "")), config.get("dataset_kwargs") or {}
            if path.count("/") != 1 or Path(path).exists() or kwargs.get("load_from_disk"):
                continue  # a local dataset or a packaged builder (json, parquet, ...)
            name = config.get("dataset_name")
            cache = _resolve_hf_datasets_cache_dir()
            if offline and not _in_datasets_cache(cache, path, name):
                raise EvaluationError(
                    f"dataset {path}{f' ({name})' if name else ''} of task {task} is not in the local datasets cache "
                    f"{cache} and the hub is offline: run once with hub.offline=false where the hub is reachable "
                    f"(lmms-eval then fills that cache), or copy a filled cache there (HF_DATASETS_CACHE)")
            if not offline and kwargs.get("token"):
                from huggingface_hub import get_token

                if get_token() is None:
                    raise EvaluationError(f"dataset {path} of task {task} is loaded with a hub token: run "
                                          f"`huggingface-cli login` or set HF_TOKEN")


def metric_table(results: dict) -> dict:
    """``{task: {metric: value}}`` from lmms-eval's results (filter suffixes, aliases and stderr dropped)."""
    table = {}
    for task, metrics in results.get("results", {}).items():
        table[task] = {key.split(",")[0]: value for key, value in metrics.items()
                       if key != "alias" and "_stderr" not in key and isinstance(value, (int, float))}
    return table


def prepare_tasks(tasks: Sequence[str], local: str | None, cache_dir: str | Path,
                  include_path: Sequence[str] = ()):
    """A checked TaskManager for ``tasks`` (:func:`task_manager` + :func:`check_tasks`): call it before loading a
    model, so that a missing dataset or judge fails in seconds."""
    manager = task_manager(tasks, local, cache_dir, include_path)
    check_tasks(manager, tasks)
    return manager


def evaluate_tasks(adapter: VLMAdapter, engine: ReductionEngine, tasks: Sequence[str], *, local: str | None,
                   cache_dir: str | Path, limit: int | None = None, batch_size: int = 1, seed: int = 0,
                   show_progress: bool = True, include_path: Sequence[str] = (), manager=None,
                   multi_image: str = "error") -> tuple[dict, list[SampleRecord]]:
    """Run ``tasks`` through lmms-eval with the reduced model.

    Args:
        manager: a TaskManager from :func:`prepare_tasks` (built here when None).
        multi_image: what to do with a sample of several images (see :class:`ReducedLMM`).

    Returns:
        The metric table (:func:`metric_table`) and one :class:`SampleRecord` per generated sample.

    Raises:
        ConfigError: unknown task, or a judged task without a judge (:func:`check_tasks`).
        EvaluationError: a dataset cannot be loaded (:func:`check_tasks`), a sample failed or nothing was generated.
    """
    from lmms_eval.evaluator import simple_evaluate

    lm = ReducedLMM(adapter, engine, batch_size=batch_size, show_progress=show_progress, multi_image=multi_image)
    manager = manager or prepare_tasks(tasks, local, cache_dir, include_path)
    output = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager,
                             limit=limit, bootstrap_iters=0, log_samples=False, batch_size=batch_size,
                             random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, verbosity="ERROR")
    if output is None or not lm.records:
        raise EvaluationError("lmms-eval returned no results (no samples were generated)")
    return metric_table(output), lm.records
