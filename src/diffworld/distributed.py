"""Multi-process training with PyTorch DDP: who am I, and which part of the batch is mine.

Under `torchrun` every process reads RANK, WORLD_SIZE and LOCAL_RANK from its environment. All
ranks share the training seed, so they draw the same global batch of windows and noise, and
each keeps its own equal slice: the averaged gradient is the one a single process would get on
the whole batch, and the run matches a one-process run with the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place in a (possibly one-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs and checkpoints."""
        return self.rank == 0

    @property
    def part(self) -> tuple[int, int]:
        """(index, count) of this rank's slice of every batch."""
        return self.rank, self.world_size


def part_rows(total: int, part: tuple[int, int]) -> slice:
    """Rows of the `part = (i, n)` slice of a batch of `total`: the i-th of n equal parts."""
    i, n = part
    if not 0 <= i < n or total % n:
        raise ValueError(f"cannot split a batch of {total} into {n} equal parts (part {i})")
    size = total // n
    return slice(i * size, (i + 1) * size)


def setup(device: str) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); one process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Ranks(), torch.device(device)
    ranks = Ranks(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return ranks, dev


def mean_over_ranks(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The mean of a scalar over all ranks (the value itself in a one-process run)."""
    if ranks.world_size == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / ranks.world_size


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (no-op in a one-process run)."""
    if ranks.world_size > 1:
        dist.barrier()
