"""Samples of an lmms-eval task read directly (image and question), for the searches' own bookkeeping."""
from __future__ import annotations

from pathlib import Path

from vtr_bench.errors import ConfigError


def search_task(task: str, local: str | None, cache_dir: str | Path):
    """``task`` as an lmms-eval Task object (bundled package ``local`` materialised into ``cache_dir``).

    Raises:
        ConfigError: unknown task, or a task group.
    """
    from lmms_eval.api.task import Task
    from lmms_eval.tasks import get_task_dict

    from vtr_bench.eval.evaluate import task_manager

    loaded = get_task_dict([task], task_manager([task], local, cache_dir)).get(task)
    if not isinstance(loaded, Task):
        raise ConfigError(f"search task {task!r} must be a single lmms-eval task, not a group")
    return loaded


def load_search_samples(task: str, local: str | None, cache_dir: str | Path, limit: int | None,
                        loaded=None) -> tuple[str, list[tuple[object, str]]]:
    """The first ``limit`` samples of ``task``'s evaluation split, as lmms-eval would take them.

    Args:
        task: one lmms-eval task name.
        local: bundled task package (``vtr_bench.tasks.<local>``) or None for lmms-eval's own tasks.
        cache_dir: where bundled task data are generated.
        limit: number of samples (None: all).
        loaded: the task's Task object when the caller has it already (:func:`search_task`).

    Returns:
        The split name and ``(image, question)`` pairs (the question is the task's zero-shot prompt text).

    Raises:
        ConfigError: unknown task, a task group, or a sample without exactly one image.
    """
    loaded = loaded or search_task(task, local, cache_dir)
    split = loaded.config.test_split or loaded.config.validation_split
    docs = loaded.eval_docs
    count = len(docs) if limit is None else min(int(limit), len(docs))
    samples = []
    for index in range(count):
        doc = docs[index]
        visuals = loaded.doc_to_visual(doc)
        if len(visuals) != 1:
            raise ConfigError(f"{task} doc {index}: expected exactly one image, got {len(visuals)}")
        samples.append((visuals[0], loaded.doc_to_text(doc)))
    return str(split), samples
