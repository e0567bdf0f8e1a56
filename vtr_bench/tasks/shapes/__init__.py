"""Local lmms-eval tasks of the synthetic shapes benchmark: ``shapes`` (test split), ``shapes_search`` (search split).

Generated on first use by :func:`materialize` (see :mod:`vtr_bench.tasks.local`).
"""

from __future__ import annotations

from pathlib import Path

from vtr_bench.tasks import local
from vtr_bench.tiny import data as bench

TASKS = {"shapes": "test", "shapes_search": "search"}


def materialize(cache_dir: str | Path) -> Path:
    """Generate the shapes dataset and task files under ``cache_dir`` (idempotent) and return the task folder."""
    return local.materialize(cache_dir, bench, TASKS, __name__)
