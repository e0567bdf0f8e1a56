"""Hydra app: compose the config, run, and turn user-facing errors into one line and a non-zero exit.

In a multirun (``-m``) a failing job prints its line and the sweep goes on; the process exits non-zero at the end
if any job failed, except for budgets a method cannot reach (recorded as infeasible: grids often include them).
A config Hydra cannot compose (an unknown group option, a typo) starts with one ``vtr_bench: error:`` line before
Hydra's own explanation; Ctrl-C ends with one line (finished runs are kept).
"""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vtr_bench.errors import InfeasibleBudgetError, VtrError

CONF_DIR = Path(__file__).parent / "conf"  # a link to the repo's top-level conf/; a real folder in a built wheel
_SWEEP_FAILURES: list[str] = []


class _ComposeErrors(io.StringIO):
    """Holds what Hydra writes to stderr until the first job starts, so that a composition error can be preceded by
    our one line; released (and stderr restored) as soon as a job runs."""

    def __init__(self, stderr) -> None:
        super().__init__()
        self.stderr = stderr

    def release(self) -> None:
        if sys.stderr is self:
            sys.stderr = self.stderr
            self.stderr.write(self.getvalue())
            self.truncate(0)


def quiet_environment(cfg: DictConfig) -> None:
    """Offline hub settings (unless hub.offline=false) and quieter tokenizers / W&B, before heavy imports."""
    if cfg.hub.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")


FAILURES_DIR = ".vtr_bench_failed"  # in Hydra's sweep dir: one file per failed job, whichever process ran it


def _record_failure(hydra_cfg, line: str) -> None:
    """Note a failed sweep job where the sweep's process finds it (jobs of hydra/launcher=submitit_* run in other
    processes): a file in Hydra's sweep dir, else (unwritable) this process's list."""
    try:
        folder = Path(hydra_cfg.sweep.dir) / FAILURES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{hydra_cfg.job.num}.txt").write_text(line + "\n", encoding="utf-8")
    except OSError:
        _SWEEP_FAILURES.append(line)


class SweepFailures(Callback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): at the end of a multirun, in the launching process,
    collect the failed jobs' lines, so that the sweep exits non-zero whatever launcher ran the jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        folder = Path(config.hydra.sweep.dir) / FAILURES_DIR
        lines = sorted(folder.glob("*.txt"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0) \
            if folder.is_dir() else []
        _SWEEP_FAILURES.extend(path.read_text(encoding="utf-8").strip() for path in lines)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if isinstance(sys.stderr, _ComposeErrors):
        sys.stderr.release()
    quiet_environment(cfg)
    from vtr_bench.run import run

    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    group = Path(hydra_cfg.sweep.dir).name if sweeping else None
    try:
        results = run(cfg, group=group)
    except VtrError as error:
        print(f"vtr_bench: error: {error}", file=sys.stderr)
        if not sweeping:
            sys.exit(2)
        if not isinstance(error, InfeasibleBudgetError):
            _record_failure(hydra_cfg, f"job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task)}): {error}")
        return None
    except Exception as error:  # noqa: BLE001 - an unexpected failure of one sweep job: the sweep goes on
        if not sweeping:
            raise
        first = (str(error).strip().splitlines() or [""])[0]
        print(f"vtr_bench: error: job {hydra_cfg.job.num} failed: {type(error).__name__}: {first}", file=sys.stderr)
        _record_failure(hydra_cfg, f"job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task)}): "
                                   f"{type(error).__name__}: {first}")
        return None
    return results.get("flops_ratio")


def main() -> None:
    """Console entry point."""
    buffered = _ComposeErrors(sys.stderr)
    sys.stderr = buffered
    try:
        _app()
    except KeyboardInterrupt:
        buffered.release()
        print("vtr_bench: error: interrupted (finished runs are kept: the same command resumes)", file=sys.stderr)
        sys.exit(130)
    except SystemExit as stop:
        if sys.stderr is buffered and stop.code not in (0, None):  # Hydra could not compose the config
            held = buffered.getvalue().strip().splitlines()
            sys.stderr = buffered.stderr
            reason = next((line for line in held if line.strip() and not line.startswith(("Traceback", " "))),
                          "invalid configuration")
            print(f"vtr_bench: error: {reason}", file=sys.stderr)
            sys.stderr.write("\n".join(held[1:] if held and held[0] == reason else held) + "\n")
            sys.exit(2)
        raise
    finally:
        buffered.release()
    if _SWEEP_FAILURES:
        print(f"vtr_bench: error: {len(_SWEEP_FAILURES)} sweep job(s) failed:", file=sys.stderr)
        for line in _SWEEP_FAILURES:
            print(f"  {line}", file=sys.stderr)
        sys.exit(2)
