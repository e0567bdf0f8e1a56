"""Evaluate an (adapter, engine) pair on lmms-eval tasks: the one function runs and searches both call."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from vtr_bench.errors import ConfigError, EvaluationError
from vtr_bench.eval.distributed import gather_on_rank0, process_rank
from vtr_bench.eval.lmms_model import ReducedLMM, SampleRecord, generation_summary
from vtr_bench.eval.samples import sample_rows
from vtr_bench.eval.task_files import (check_hooks, data_files, judge_metrics, judge_url_problem,
                                      local_task_folder, task_configs)
from vtr_bench.models.base import VLMAdapter
from vtr_bench.reduction.engine import ReductionEngine


MODEL_NAME = "vtr_bench"  # our lmms-eval model name (the plugin's ``--model``)
_managers: dict[tuple, object] = {}


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
    for folder in include:
        if not Path(folder).is_dir():
            raise ConfigError(f"benchmark.include_path: {folder} is not a folder")
    if local:
        include.append(str(local_task_folder(local, cache_dir)))
    key = (tuple(include), bool(local))
    if key not in _managers:  # indexing lmms-eval's ~2,000 task YAMLs takes seconds: once per process
        _managers[key] = TaskManager(include_path=include or None, include_defaults=not local, verbosity="ERROR",
                                     model_name=MODEL_NAME)
    manager = _managers[key]
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"lmms-eval does not know task(s) {unknown}")
    return manager


def _in_datasets_cache(cache_dir: str, path: str, name: str | None) -> bool:
    """Whether ``datasets`` finds hub dataset ``path`` (config ``name``) in ``cache_dir`` with the hub offline."""
    from datasets.naming import camelcase_to_snakecase

    namespace, dataset = path.split("/")
    root = Path(cache_dir) / f"{namespace}___{camelcase_to_snakecase(dataset)}"
    return any(p.is_dir() for p in root.glob(f"{name or '*'}/*/*"))


def _check_hub_dataset(task: str, config: dict, offline: bool) -> None:
    """A hub dataset is in the local cache when the hub is offline, and has a token when it needs one."""
    from lmms_eval.api.task import _resolve_hf_datasets_cache_dir

    path, kwargs = str(config.get("dataset_path", "")), config.get("dataset_kwargs") or {}
    if path.count("/") != 1 or Path(path).exists() or kwargs.get("load_from_disk"):
        return  # a local dataset or a packaged builder (json, parquet, ...)
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


def check_tasks(manager, tasks: Sequence[str], require_judge: bool = True) -> list[str]:
    """Fail fast, with one line, where lmms-eval would fail late or score silently wrong: a ``!function`` hook that
    cannot be imported, a local data file that does not exist, a hub dataset missing from the local datasets cache
    while the hub is offline, a dataset loaded with a hub token when there is none, a task scored by an LLM judge
    (by its metric config: :func:`~vtr_bench.eval.task_files.judge_metrics`) without ``OPENAI_API_KEY``.

    Args:
        require_judge: False lets judged tasks run without a key (lmms-eval then scores them 0 or guesses).

    Returns:
        The judged tasks.

    Raises:
        ConfigError: a hook, a data file or a judge is missing.
        EvaluationError: a hub dataset cannot be loaded.
    """
    offline = "1" in (os.environ.get("HF_DATASETS_OFFLINE"), os.environ.get("HF_HUB_OFFLINE"))
    judged = []
    for task_name in tasks:
        for task, (yaml_path, config) in task_configs(manager, task_name).items():
            if judge_metrics(config):
                judged.append(task)
                if require_judge and not os.environ.get("OPENAI_API_KEY"):
                    raise ConfigError(
                        f"task {task} is scored by an LLM judge (metrics {judge_metrics(config)}): set "
                        f"OPENAI_API_KEY (and OPENAI_API_URL / MODEL_VERSION for another endpoint), drop it from "
                        f"benchmark.tasks, or set benchmark.require_judge=false to run it unjudged")
                problem = judge_url_problem(yaml_path, os.environ.get("OPENAI_API_URL"))
                if require_judge and problem:
                    raise ConfigError(
                        f"task {task}: OPENAI_API_URL={os.environ['OPENAI_API_URL']} will not reach its judge: "
                        f"{problem} (lmms-eval 0.7.3's MMBench and MM-Vet / LLaVA-Bench read it differently: run "
                        f"them in separate runs; benchmark.require_judge=false skips this check)")
            data_files(task, config)
            _check_hub_dataset(task, config, offline)
            check_hooks(task, yaml_path)
    return judged


def metric_table(results: dict) -> dict:
    """``{task: {metric: value}}`` from lmms-eval's results (filter suffixes, aliases and stderr dropped)."""
    table = {}
    for task, metrics in results.get("results", {}).items():
        table[task] = {key.split(",")[0]: value for key, value in metrics.items()
                       if key != "alias" and "_stderr" not in key and isinstance(value, (int, float))}
    return table


def prepare_tasks(tasks: Sequence[str], local: str | None, cache_dir: str | Path,
                  include_path: Sequence[str] = (), require_judge: bool = True):
    """A checked TaskManager for ``tasks`` (:func:`task_manager` + :func:`check_tasks`): call it before loading a
    model, so that a missing dataset, hook or judge fails in seconds."""
    manager = task_manager(tasks, local, cache_dir, include_path)
    check_tasks(manager, tasks, require_judge)
    return manager


@dataclass
class Evaluation:
    """What :func:`evaluate_tasks` returns.

    Attributes:
        metrics: ``{task: {metric: value}}`` (:func:`metric_table`).
        records: one :class:`SampleRecord` per generated sample (our measurements).
        generation: per task, the generation settings used and how answers ended (:func:`generation_summary`).
        samples: per-sample rows for ``samples.jsonl`` (:func:`~vtr_bench.eval.samples.sample_rows`).
        samples_per_rank: generated samples per data-parallel rank (padding included; one entry in one process).
    """

    metrics: dict
    records: list[SampleRecord]
    generation: dict
    samples: list[dict] = field(default_factory=list)
    samples_per_rank: list[int] = field(default_factory=list)


@contextmanager
def _lmms_eval_bars_off():
    """Silence lmms-eval's own progress bars (an unlabelled one per task while it builds requests, one while it
    post-processes) and the datasets library's (one per split it prepares): our labelled generation bar says what
    is running."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from lmms_eval import evaluator
    from lmms_eval.api import task
    from tqdm import tqdm

    saved, datasets_bars_off = (task.tqdm, evaluator.tqdm), are_progress_bars_disabled()
    task.tqdm = evaluator.tqdm = lambda *args, **kwargs: tqdm(*args, **{**kwargs, "disable": True})
    disable_progress_bars()
    try:
        yield
    finally:
        task.tqdm, evaluator.tqdm = saved
        if not datasets_bars_off:
            enable_progress_bars()


def evaluate_tasks(adapter: VLMAdapter, engine: ReductionEngine, tasks: Sequence[str], *, local: str | None,
                   cache_dir: str | Path, limit: int | None = None, batch_size: int = 1, seed: int = 0,
                   show_progress: bool = True, include_path: Sequence[str] = (), manager=None,
                   multi_image: str = "error", output_dir: str | Path | None = None,
                   label: str = "", store=None, monitor=None, layer_forwards: dict | None = None) -> Evaluation | None:
    """Run ``tasks`` through lmms-eval with the reduced model.

    Args:
        manager: a TaskManager from :func:`prepare_tasks` (built here when None).
        multi_image: what to do with a sample of several images (see :class:`ReducedLMM`).
        output_dir: where tasks write their submission files (``<output_dir>/submissions``; None: a temporary
            folder, removed afterwards).
        label: what the progress bar says is running (with the task's name).
        store, monitor: prefix reuse and a per-batch callback (:class:`ReducedLMM`; searches).
        layer_forwards: receives the decoder-layer forwards computed (``prefill`` / ``decode``, x samples), also
            when the evaluation raises.

    Returns:
        The metric table, our measurements, the generation settings and the per-sample rows (:class:`Evaluation`);
        None on a data-parallel rank other than 0 (under ``accelerate launch``: lmms-eval shards the samples).

    Raises:
        ConfigError: unknown task, or a judged task without a judge (:func:`check_tasks`).
        EvaluationError: a dataset cannot be loaded (:func:`check_tasks`), a sample failed or nothing was generated.
    """
    import tempfile
    from types import SimpleNamespace

    from lmms_eval.evaluator import simple_evaluate

    lm = ReducedLMM(adapter, engine, batch_size=batch_size, show_progress=show_progress, multi_image=multi_image,
                    label=label, store=store, monitor=monitor)
    if layer_forwards is not None:
        layer_forwards.update(lm.layer_forwards)
        lm.layer_forwards = layer_forwards  # the caller's dict is the one counted into
    manager = manager or prepare_tasks(tasks, local, cache_dir, include_path)
    with tempfile.TemporaryDirectory(prefix="vtr_bench_submissions_") as scratch, _lmms_eval_bars_off():
        # the task code's view of lmms-eval's CLI arguments: submission files under output_path (not ./submissions),
        # documents without media in process_results, as lmms-eval's CLI defaults
        cli_args = SimpleNamespace(output_path=str(output_dir or scratch), process_with_media=False)
        output = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager,
                                 limit=limit, bootstrap_iters=0, log_samples=True, batch_size=batch_size,
                                 random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                 verbosity="ERROR", cli_args=cli_args)
    if process_rank()[1] > 1 and not gather_on_rank0(lm):
        return None  # another rank: rank 0 has the results
    if output is None or not lm.records:
        raise EvaluationError("lmms-eval returned no results (no samples were generated)")
    return Evaluation(metric_table(output), lm.records, generation_summary(lm.records, lm.settings),
                      sample_rows(output.get("samples") or {}, lm.records),
                      getattr(lm, "samples_per_rank", [len(lm.records)]))
