"""Hydra app: compose the config, run, and turn user-facing errors into one line and a non-zero exit.

In a multirun (``-m``) a failing job prints its line and the sweep goes on; the process exits non-zero at the end
if any job failed, except for budgets a method cannot reach (recorded as infeasible: grids often include them).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vtr_bench.errors import InfeasibleBudgetError, VtrError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
_SWEEP_FAILURES: list[str] = []


def quiet_environment(cfg: DictConfig) -> None:
    """Offline hub settings (unless hub.offline=false) and quieter tokenizers / W&B, before heavy imports."""
    if cfg.hub.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

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
            _SWEEP_FAILURES.append(f"job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task)}): {error}")
        return None
    return results.get("flops_ratio")


def main() -> None:
    """Console entry point."""
    _app()
    if _SWEEP_FAILURES:
        print(f"vtr_bench: error: {len(_SWEEP_FAILURES)} sweep job(s) failed:", file=sys.stderr)
        for line in _SWEEP_FAILURES:
            print(f"  {line}", file=sys.stderr)
        sys.exit(2)
