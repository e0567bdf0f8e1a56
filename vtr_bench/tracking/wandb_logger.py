"""Weights & Biases logging that can never break a run.

Offline by default: wandb writes ``<save_dir>/wandb/offline-run-*/run-*.wandb`` (upload later with
``wandb sync``). Any error raised by wandb (missing package, unreachable server, bad key, ...) prints one
``vtr_bench: W&B logging disabled: <reason>`` line to stderr and turns the logger into a no-op; results.json
is the record of truth either way.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MODES = ("offline", "online", "disabled")

# Online init must fail through wandb's request retries, well before ``init_timeout``: a run that times out
# in init leaves wandb's service busy, which stalls later runs and the interpreter's exit. Connection refused
# or an unknown host fail in about 5 s; a server that accepts but never answers in about 35 s. These bounds
# apply to every GraphQL request of an online run; history and files go through wandb's own retried streams.
_ONLINE_SETTINGS = {"init_timeout": 90.0, "x_graphql_retry_max": 2, "x_graphql_timeout_seconds": 5.0,
                    "x_graphql_retry_wait_min_seconds": 0.25, "x_graphql_retry_wait_max_seconds": 1.0}


class NullLogger:
    """A logger that records nothing (``logger=none``)."""

    run_dir: Path | None = None

    def start(self, config: dict) -> None:
        """Do nothing.

        Args:
            config: Ignored.
        """

    def log_metrics(self, metrics: dict) -> None:
        """Do nothing.

        Args:
            metrics: Ignored.
        """

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        """Do nothing.

        Args:
            key: Ignored.
            columns: Ignored.
            rows: Ignored.
        """

    def log_image(self, key: str, png_path: str | Path) -> None:
        """Do nothing.

        Args:
            key: Ignored.
            png_path: Ignored.
        """

    def finish(self) -> None:
        """Do nothing."""


class WandbLogger:
    """One W&B run per benchmark run; every wandb failure degrades to a single warning."""

    def __init__(self, mode: str = "offline", project: str = "vtr_bench", save_dir: str | Path = "runs",
                 group: str | None = None, tags: Sequence[str] = (), name: str | None = None):
        """Configure the run; nothing is imported or created before ``start``.

        Args:
            mode: ``"offline"`` (local files), ``"online"`` (upload) or ``"disabled"`` (no-op).
            project: W&B project.
            save_dir: Directory under which wandb writes its ``wandb/`` folder.
            group: W&B group (e.g. a sweep).
            tags: W&B tags.
            name: Display name of the run.

        Raises:
            ValueError: If ``mode`` is not one of ``MODES``.
        """
        if mode not in MODES:
            raise ValueError(f"W&B mode must be one of {MODES}, got {mode!r}")
        self.mode, self.project, self.save_dir = mode, project, Path(save_dir)
        self.group, self.tags, self.name = group, list(tags), name
        self._run: Any = None
        self._run_dir: Path | None = None
        self._disabled = mode == "disabled"

    @property
    def run_dir(self) -> Path | None:
        """The local wandb run folder (``.../wandb/offline-run-*``), or None if no run was created."""
        return self._run_dir

    def _disable(self, error: BaseException) -> None:
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        print(f"vtr_bench: W&B logging disabled: {reason}", file=sys.stderr, flush=True)
        self._disabled = True
        run, self._run = self._run, None
        if run is not None:
            with contextlib.suppress(Exception):  # already warned; the run is abandoned either way
                run.finish(exit_code=1)

    def start(self, config: dict) -> None:
        """Create the W&B run.

        Args:
            config: Plain (JSON-like) run configuration, stored as the run's config.
        """
        if self._disabled:
            return
        try:
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            extra = _ONLINE_SETTINGS if self.mode == "online" else {}
            # No stdout capture and no system-metrics sampling: both would perturb latency measurements.
            settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_save_requirements=False,
                                      **extra)
            self.save_dir.mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(mode=self.mode, project=self.project, dir=str(self.save_dir), group=self.group,
                                   tags=self.tags, name=self.name, config=config, reinit="create_new",
                                   settings=settings)
            self._run_dir = Path(self._run.dir).parent
        except Exception as error:  # noqa: BLE001 - any wandb failure disables logging, never the run
            self._disable(error)

    def log_metrics(self, metrics: dict) -> None:
        """Log metrics to the history and the run summary.

        Args:
            metrics: Flat or nested ``{name: value}``. The history stores nested values under ``a/b`` keys;
                the summary also keeps each top-level key whole (``summary["metrics"] == {...}``).
        """
        if self._run is None:
            return
        try:
            self._run.log(metrics)
            self._run.summary.update(metrics)
        except Exception as error:  # noqa: BLE001
            self._disable(error)

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        """Log a table (stored as ``media/table/<key>_*.table.json`` in the run folder).

        Args:
            key: Table name.
            columns: Column names.
            rows: Rows, one value per column.
        """
        if self._run is None:
            return
        try:
            import wandb

            self._run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])})
        except Exception as error:  # noqa: BLE001
            self._disable(error)

    def log_image(self, key: str, png_path: str | Path) -> None:
        """Log an image file (e.g. a plot).

        Args:
            key: Image name.
            png_path: Path of the PNG file.
        """
        if self._run is None:
            return
        try:
            import wandb

            self._run.log({key: wandb.Image(str(png_path))})
        except Exception as error:  # noqa: BLE001
            self._disable(error)

    def finish(self) -> None:
        """Flush and close the run; later calls are no-ops."""
        run, self._run = self._run, None
        if run is not None:
            try:
                run.finish()
            except Exception as error:  # noqa: BLE001
                self._disable(error)
        if "wandb" in sys.modules:  # stop the W&B service now: its atexit hook prints a traceback if it has died
            try:
                sys.modules["wandb"].teardown()
            except Exception as error:  # noqa: BLE001
                if not self._disabled:
                    self._disable(error)


def make_logger(mode: str | None, **kwargs: Any) -> NullLogger | WandbLogger:
    """Build the logger a config asks for.

    Args:
        mode: ``"none"``/None (no logger) or a W&B mode (``"offline"``, ``"online"``, ``"disabled"``).
        **kwargs: Passed to ``WandbLogger``.

    Returns:
        A ``NullLogger`` or a ``WandbLogger``.
    """
    if mode in (None, "none"):
        return NullLogger()
    return WandbLogger(mode=mode, **kwargs)
