"""Process-group helpers for multi-process runs (started by `accelerate launch`, see worker.py).

With one process every helper is a no-op, so the stages read the same with and without scale-out: rank 0
writes artifacts, prints and logs; all ranks train together (the HF Trainer's DDP / FSDP / DeepSpeed), and
scoring and generation split their batches across ranks and gather the results in order.
"""

from __future__ import annotations

import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_world()[0] == 0


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def broadcast(value):
    """Rank 0's value, on every rank."""
    if rank_and_world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def my_batches(n_batches: int) -> list[int]:
    """The batch numbers this rank computes: whole batches round-robin, so every batch is the one a single
    process would form (same padding, same numbers)."""
    rank, world = rank_and_world()
    return list(range(rank, n_batches, world))


def gather_by_position(local: dict[int, object], n: int) -> list:
    """Per-position results computed on each rank, merged into one list in position order, on every rank."""
    if rank_and_world()[1] > 1:
        parts: list = [None] * rank_and_world()[1]
        dist.all_gather_object(parts, local)
        local = {k: v for part in parts for k, v in part.items()}
    return [local[i] for i in range(n)]


def backend(cfg) -> str:
    """The process-group backend: distributed.backend, or for `auto` NCCL on GPUs and gloo on CPUs."""
    if cfg.distributed.backend != "auto":
        return cfg.distributed.backend
    import torch

    return "nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo"
