"""Hydra app: compose the config, run, and turn user-facing errors into one line and a non-zero exit."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vtr_bench.errors import VtrError


def _quiet_environment(cfg: DictConfig) -> None:
    if cfg.hub.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    _quiet_environment(cfg)
    from vtr_bench.run import run

    try:
        results = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except VtrError as error:
        print(f"vtr_bench: error: {error}", file=sys.stderr)
        sys.exit(2)
    return results.get("flops_ratio")


def main() -> None:
    """Console entry point."""
    _app()
