"""Run records: results.json helpers and W&B logging (wandb is imported only when a run starts)."""
from vtr_bench.tracking.results import environment_info, is_complete, load_results, write_json_atomic
from vtr_bench.tracking.wandb_logger import NullLogger, WandbLogger, make_logger

__all__ = ["NullLogger", "WandbLogger", "environment_info", "is_complete", "load_results", "make_logger",
           "write_json_atomic"]
