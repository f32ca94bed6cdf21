"""torch.distributed under torchrun (a plain run: a world of one, helpers are no-ops). Every collective follows an
AGREEMENT (:func:`agree`) a failing rank jumps to, so all ranks raise the same :class:`Agreed` error, never hang."""

import datetime
import inspect
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from hiera_video.errors import HieraVideoError, Interrupted
from hiera_video.runtime import pick_device

DEFAULT_TIMEOUT_S = 1800.0  # longer than any wait the tool causes (a hanging decode: 300 s; rank 0 computing a mAP)
TIMEOUT_ENV = "HIERA_VIDEO_DIST_TIMEOUT"
BACKEND_ENV = "HIERA_VIDEO_DIST_BACKEND"


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    is_main = property(lambda self: self.rank == 0)
    distributed = property(lambda self: self.world_size > 1)


class Agreed(HieraVideoError):
    """An error every rank raises together (already agreed: no further agreement needed)."""


class AgreedInterrupt(Agreed, Interrupted):
    """A stop by SIGINT/SIGTERM that every rank agreed on (exit code 130)."""


def timeout_seconds(configured: float | None = None) -> float:
    """``configured`` (``run.dist_timeout``), else ``$HIERA_VIDEO_DIST_TIMEOUT``, else the default."""
    value = configured if configured is not None else os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        raise HieraVideoError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise HieraVideoError(f"the collective timeout must be a finite number of seconds > 0, got {value!r}")
    return seconds


def start(device: str | torch.device = "auto", timeout: float | None = None) -> tuple[World, torch.device]:
    """This process's device (``cuda:LOCAL_RANK`` under torchrun, made current); joins the process group."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0"))) if size > 1 else World()
    except (KeyError, ValueError) as e:
        raise HieraVideoError(f"bad torchrun environment (WORLD_SIZE/RANK/LOCAL_RANK): {e}; launch with torchrun") from None
    dev = pick_device(device)
    backend = os.environ.get(BACKEND_ENV) or ("nccl" if dev.type == "cuda" else "gloo")
    if backend not in ("nccl", "gloo") or (backend == "nccl" and dev.type != "cuda"):
        raise HieraVideoError(f"{BACKEND_ENV}={backend}: use nccl (GPUs) or gloo (CPU, or processes sharing a GPU)")
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        if dev.index is None:
            index = world.local_rank if world.distributed else torch.cuda.current_device()
            dev = torch.device("cuda", index % count if backend == "gloo" else index)
        if dev.index >= count:
            raise HieraVideoError(f"this process needs GPU {dev.index} (LOCAL_RANK {world.local_rank}) but {count} GPU(s) are "
                                  "visible; start at most one process per GPU (torchrun --nproc-per-node) or check CUDA_VISIBLE_DEVICES")
        torch.cuda.set_device(dev)
    if world.distributed and not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_seconds(timeout)),
                                **(dict(device_id=dev) if backend == "nccl" else {}))
    return world, dev


def cleanup(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
        World.left_group = True  # cli.app then ends the process with os._exit (docs/distributed.md, "How a process ends")


def _describe(e: BaseException) -> tuple[str, bool]:
    """One line for an exception, and whether it is an interruption."""
    text = "interrupted (SIGINT)" if isinstance(e, KeyboardInterrupt) else " ".join(
        (str(e) if isinstance(e, HieraVideoError) else f"{type(e).__name__}: {e}").split())
    return (text[:2000] + " ...") if len(text) > 2000 else text, isinstance(e, (Interrupted, KeyboardInterrupt))


def agree(world: World, error: BaseException | None = None, **payload) -> list[dict]:
    """Every rank's ``payload`` (index = rank); if any rank passed an ``error``, all raise the lowest failing one's."""
    if not world.distributed:
        if error is not None:
            raise error
        return [payload]
    mine = dict(payload, _error=_describe(error) if error is not None else None)
    everyone: list = [None] * world.world_size
    try:
        dist.all_gather_object(everyone, mine)
    except Exception as e:  # a rank died or hung
        raise lost_contact(world, e) from error
    for rank, part in enumerate(everyone):
        failure = part.pop("_error")
        if failure is not None:
            text, interrupted = failure
            raise (AgreedInterrupt if interrupted else Agreed)(text if text.startswith("rank ") else f"rank {rank}: {text}") from error
    return everyone


@contextmanager
def together(world: World):
    """A stretch of work without collectives, ending in an agreement (all raise the same error)."""
    try:
        yield
    except Agreed:
        raise
    except BaseException as e:
        if world.distributed:
            agree(world, e)
        raise
    agree(world)


@contextmanager
def session(device: str | torch.device = "auto", timeout: float | None = None):
    """A whole command: :func:`start`, the body inside :func:`together`, :func:`cleanup`."""
    world, dev = start(device, timeout)
    try:
        with together(world):
            yield world, dev
    finally:
        cleanup(world)


def shard(n: int, world: World) -> list[int]:
    """This rank's indices ``rank, rank + world, ...`` of ``0..n-1`` (each item exactly once)."""
    return list(range(world.rank, n, world.world_size))


def gather_to_main(obj, world: World) -> list | None:
    """Every rank's ``obj`` as a list on rank 0 (None elsewhere); an agreement first."""
    if not world.distributed:
        return [obj]
    agree(world)
    out = [None] * world.world_size if world.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def from_main(value, world: World):
    """Rank 0's ``value`` on every rank, through an agreement."""
    return agree(world, value=value if world.is_main else None)[0]["value"]


def agree_rows(world: World, row: list[float]) -> list[list[float]]:
    """The cheap agreement: every rank's ``row`` of numbers via ONE all-reduce of a float64 table (NaN/inf travel)."""
    if not world.distributed:
        return [list(row)]
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    table = torch.zeros(world.world_size, len(row), dtype=torch.float64, device=on)
    table[world.rank] = torch.tensor(row, dtype=torch.float64)
    try:
        dist.all_reduce(table)
    except Exception as e:
        raise lost_contact(world, e) from None
    return table.tolist()


def ddp_buffer_option() -> dict:
    """DDP's "no buffer broadcast before every forward" under this torch's name for it."""
    known = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers": False}


def lost_contact(world: World, e: BaseException) -> Agreed:
    return Agreed(f"rank {world.rank} ({socket.gethostname()}): lost contact with the other processes ({e}); one of them "
                  f"died or hung (see its output above; the wait is bounded by run.dist_timeout / {TIMEOUT_ENV})")
