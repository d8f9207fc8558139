"""Data-parallel runs under torchrun: which rank this process is, and the few collectives training needs.

`torchrun --nproc_per_node=P -m listener_sub train ...` starts P processes with RANK, WORLD_SIZE, LOCAL_RANK and a
rendezvous (MASTER_ADDR / MASTER_PORT, or --rdzv-endpoint across nodes) in their environment; `join` turns that into a
process group (NCCL on CUDA, gloo on the CPU). A plain run is the one-rank case: every collective is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

TIMEOUT = timedelta(hours=2)  # ranks wait this long for each other (rank 0 may pretrain the models first)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the run's processes (rank 0 logs and checkpoints)."""

    rank: int = 0
    world: int = 1  # processes in the run
    local_rank: int = 0  # rank on this node: its GPU

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch in which every rank holds n."""
        return slice(self.rank * n, (self.rank + 1) * n)

    def shard(self, total: int) -> slice:
        """This rank's contiguous share of `total` items (near-equal shares, in rank order)."""
        per = -(-total // self.world)
        return slice(min(total, self.rank * per), min(total, (self.rank + 1) * per))

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (any picklable object), in rank order, on every rank."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a tensor every rank holds in the same shape."""
        if self.world == 1:
            return tensor
        total = tensor.detach().clone()
        dist.all_reduce(total)
        return total / self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (building what is missing in the shared cache), then the others (reading it)."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: torch.device) -> Ranks:
    """This process's ranks from the launcher's environment, the process group joined (one rank: nothing to join).

    On CUDA each rank takes the GPU of its local rank; the backend is NCCL there and gloo on the CPU.
    """
    if not launched():
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return ranks


def leave() -> None:
    """Leave the process group (when one was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()
