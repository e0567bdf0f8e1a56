"""Data-parallel evaluation (``accelerate launch`` / ``torchrun``): lmms-eval shards the samples over the ranks
and gathers its own samples and metrics on rank 0; rank 0 alone writes run files."""
from __future__ import annotations

import os


def process_rank() -> tuple[int, int]:
    """``(rank, world size)`` of this process under ``accelerate launch`` / ``torchrun`` (``(0, 1)`` otherwise)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def gather_on_rank0(lm) -> bool:
    """Data-parallel: gather every rank's measurements and generation settings into rank 0's ``lm`` (lmms-eval
    gathers its own samples and metrics there); padded duplicate requests count once. The process group is then
    shut down on every rank (after a barrier): a rank that exits with it still up can abort in gloo's teardown
    ("terminate called without an active exception", seen once in CI). True on rank 0."""
    import torch.distributed as dist

    rank, world = process_rank()
    parts = [None] * world if rank == 0 else None
    dist.gather_object((lm.records, lm.settings), parts, dst=0)
    dist.barrier()
    dist.destroy_process_group()
    if rank != 0:
        return False
    lm.samples_per_rank = [len(part_records) for part_records, _ in parts]
    seen, records = set(), []
    for part_records, part_settings in parts:
        for record in part_records:
            if (record.task, record.doc_id) not in seen:
                seen.add((record.task, record.doc_id))
                records.append(record)
        for task, used in part_settings.items():
            lm.settings.setdefault(task, used)
    lm.records = sorted(records, key=lambda r: (r.task, r.doc_id))
    return True
