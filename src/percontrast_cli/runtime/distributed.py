"""Process-group helpers for multi-process runs (started by `accelerate launch`, see worker.py).

With one process every helper is a no-op, so the stages read the same with and without scale-out: rank 0
writes artifacts, prints and logs; all ranks train together (the HF Trainer's DDP / FSDP / DeepSpeed), and
scoring and generation split their batches across ranks and gather the results in order.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable

from percontrast_cli.runtime.errors import PercontrastError

# Set by the worker when it runs FSDP on CPU processes (see worker.init_process_group).
CPU_FSDP_ENV = "PERCONTRAST_CPU_FSDP"
POLL_SECONDS = 0.2  # how often the ranks that wait for rank 0's decision look for it
_decisions = itertools.count()


def _dist():
    """torch.distributed, imported on first use: commands that never compute (`ls`, `env`, `--help`) must not
    pay for importing torch (seconds)."""
    import torch.distributed

    return torch.distributed


def rank_and_world() -> tuple[int, int]:
    # A process group needs torch.distributed imported first: without it there is one process.
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_world()[0] == 0


def barrier() -> None:
    if rank_and_world()[1] > 1:
        _dist().barrier()


def main_decides(decide: Callable[[], str]) -> str:
    """Rank 0's ``decide()`` (a string), or its PercontrastError, on every rank, passed through the process
    group's key-value store instead of a collective: the other ranks poll the store, so rank 0 may take as
    long as it needs (waiting for another job's lock) and no collective times out meanwhile. A rank 0 that
    dies instead ends the job through the launcher, which stops every rank."""
    rank, world = rank_and_world()
    if world == 1:
        return decide()
    key = f"percontrast/decision/{next(_decisions)}"  # every rank asks in the same order
    store = _dist().distributed_c10d._get_default_store()
    if rank == 0:
        try:
            value = decide()
        except PercontrastError as exc:
            store.set(key, json.dumps({"error": str(exc)}))
            raise
        store.set(key, json.dumps({"value": value}))
        return value
    while not store.check([key]):
        time.sleep(POLL_SECONDS)
    shared = json.loads(store.get(key))
    if "error" in shared:
        raise PercontrastError(shared["error"])
    return shared["value"]


def broadcast(value):
    """Rank 0's value, on every rank."""
    if rank_and_world()[1] == 1:
        return value
    box = [value]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def my_batches(n_batches: int, lockstep: bool = False) -> list[int]:
    """The batch numbers this rank computes: whole batches round-robin, so every batch is the one a single
    process would form (same padding, same numbers).

    ``lockstep``: every rank runs the same number of batches (the last one of its own, or batch 0, again),
    as a sharded model needs: each of its forward passes gathers weights from all ranks, so a rank with one
    batch fewer would leave the others waiting. gather_by_position keeps the first result per position."""
    rank, world = rank_and_world()
    mine = list(range(rank, n_batches, world))
    if lockstep and n_batches:
        rounds = math.ceil(n_batches / world)
        mine += [mine[-1] if mine else 0] * (rounds - len(mine))
    return mine


def gather_by_position(local: dict[int, object], n: int) -> list:
    """Per-position results computed on each rank, merged into one list in position order, on every rank
    (where two ranks computed a position, see my_batches' lockstep, the lower rank's result)."""
    if rank_and_world()[1] > 1:
        parts: list = [None] * rank_and_world()[1]
        _dist().all_gather_object(parts, local)
        local = {}
        for part in parts:
            for position, value in part.items():
                local.setdefault(position, value)
    return [local[i] for i in range(n)]


def is_sharded_module(model) -> bool:
    """Whether ``model``'s weights are split over the ranks (FSDP 2's fully_shard, FSDP 1, DeepSpeed ZeRO-3):
    then every forward pass is a collective."""
    if rank_and_world()[1] == 1:
        return False
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    fsdp = any(isinstance(m, FSDPModule | FullyShardedDataParallel) for m in model.modules())
    return fsdp or any(hasattr(p, "ds_id") for p in model.parameters())  # ZeRO-3 tags its partitions


def cpu_fsdp() -> bool:
    """Whether this worker runs FSDP on CPU (gloo): the Trainer must then keep the worker's process state."""
    return os.environ.get(CPU_FSDP_ENV) == "1"


def per_machine(processes: int, machines: int) -> int:
    """Processes (GPUs) on each machine of a multi-machine run; the `percontrast.per_machine` resolver, so
    Slurm asks each node for its share of the GPUs, not for all of them."""
    processes, machines = int(processes), int(machines)
    if machines < 1 or processes % machines:
        raise PercontrastError(
            f"distributed.num_processes={processes} must be a multiple of distributed.num_machines={machines}"
        )
    return processes // machines


def backend(cfg) -> str:
    """The process-group backend: distributed.backend, or for `auto` NCCL on GPUs and gloo on CPUs."""
    if cfg.distributed.backend != "auto":
        return cfg.distributed.backend
    import torch

    return "nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo"
