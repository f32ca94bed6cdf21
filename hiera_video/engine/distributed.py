"""torch.distributed under ``torchrun``: setup from the environment, sharding, gathering.

A plain ``hiera-video ...`` run is a world of one process and every helper here is then a
no-op, so commands need no special cases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device_type: str = "cpu") -> World:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE``, ``RANK``...).

    Backend: nccl for CUDA, gloo otherwise. Returns the single-process world when not launched
    by torchrun.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return World()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" and torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return World(rank, world_size, local_rank)


def shard(n: int, world: World) -> list[int]:
    """Indices ``0..n-1`` of this rank: ``rank, rank + world, ...`` (no padding, no repeats,
    so every item is evaluated exactly once across ranks)."""
    return list(range(world.rank, n, world.world_size))


def gather_to_main(obj, world: World) -> list | None:
    """Every rank's ``obj`` as a list on rank 0 (None elsewhere)."""
    if not world.distributed:
        return [obj]
    out = [None] * world.world_size if world.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def cleanup(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
