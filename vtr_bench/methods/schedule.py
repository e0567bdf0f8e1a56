"""Evaluate a given keep schedule: inline ratios or a saved schedule JSON (e.g. from a search)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from vtr_bench.errors import ConfigError, ScheduleError
from vtr_bench.methods.base import Method
from vtr_bench.reduction.schedule import KeepSchedule
from vtr_bench.reduction.scoring import LastTokenAttention, RandomScorer, Scorer

SCORERS = ("last_token", "random")
MAX_SCHEDULE_BYTES = 16 * 2**20


def load_schedule_file(path: str | Path) -> KeepSchedule:
    """Read ``{"ratios": [...], ...}`` from a regular JSON file of at most 16 MiB (never a FIFO or a device, which
    could hang or exhaust memory); any problem is a one-line ScheduleError."""
    path = Path(path)
    if not path.exists():
        raise ScheduleError(f"schedule file {path} does not exist")
    if not path.is_file():
        raise ScheduleError(f"schedule file {path} is not a regular file")
    if path.stat().st_size > MAX_SCHEDULE_BYTES:
        raise ScheduleError(f"schedule file {path} is larger than {MAX_SCHEDULE_BYTES // 2**20} MiB")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ScheduleError(f"schedule file {path} cannot be read: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ScheduleError(f"schedule file {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("ratios"), list):
        raise ScheduleError(f"schedule file {path} must hold an object with a list 'ratios'")
    if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in data["ratios"]):
        raise ScheduleError(f"schedule file {path}: 'ratios' must be numbers")
    return KeepSchedule(tuple(data["ratios"]))


class GivenSchedule(Method):
    """A fixed per-layer keep schedule.

    Args:
        ratios: per-layer keep ratios (non-increasing), or None to read ``path``.
        path: a saved schedule JSON (``{"ratios": [...]}`` plus provenance).
        scorer: ``last_token`` (attention of the last prompt token) or ``random``.
        source_offset: which layer's attention ranks tokens for layer l (-1: l-1, 0: l).
    """

    name = "schedule"
    takes_budget = False

    def __init__(self, ratios: Sequence[float] | None = None, path: str | None = None, scorer: str = "last_token",
                 source_offset: int = -1) -> None:
        if (ratios is None) == (path is None):
            raise ConfigError("method=schedule needs exactly one of method.ratios or method.path")
        if scorer not in SCORERS:
            raise ConfigError(f"method.scorer must be one of {SCORERS}, got {scorer!r}")
        if source_offset not in (-1, 0):
            raise ConfigError(f"method.source_offset must be -1 or 0, got {source_offset!r}")
        self._schedule = load_schedule_file(path) if path is not None else KeepSchedule(tuple(ratios))
        self.path, self.scorer_name, self.source_offset = path, scorer, source_offset
        self.ratios = list(self._schedule.ratios)

    def schedule(self, layers: int, budget: float | None) -> KeepSchedule:
        if self._schedule.layers != layers:
            raise ScheduleError(f"schedule has {self._schedule.layers} layers but the model has {layers}")
        return self._schedule

    def scorer(self, seed: int) -> Scorer:
        return RandomScorer(seed) if self.scorer_name == "random" else LastTokenAttention(self.source_offset)
