"""torch.distributed under ``torchrun``: one device per process, and ranks that always agree.

A plain ``hiera-video ...`` run is a world of one process and every helper here is then a
no-op (errors propagate unchanged), so commands need no special cases.

The rule that keeps a multi-process run from hanging or silently diverging:

    every collective is preceded by an AGREEMENT, and a rank that fails jumps straight to
    the next agreement.

An agreement (:func:`agree`) is one ``all_gather_object`` of each rank's ``(error, payload)``:
every rank learns every rank's error and payload, so when any rank failed, every rank raises
the same :class:`Agreed` error ("rank R: reason") at the same point. :func:`together` wraps a
stretch of work that has no collective inside it; :func:`session` wraps a whole command.
Collective waits are bounded by the process-group timeout (:func:`timeout_seconds`), so a
rank that hangs or dies ends the others with a clear message instead of a silent stall.
"""

from __future__ import annotations

import datetime
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hiera_video.errors import HieraVideoError, Interrupted
from hiera_video.runtime import pick_device

# Seconds a collective may wait for the other processes. It must exceed the longest wait the
# tool itself can cause: a hanging decode (eval --decode-timeout, 300 s by default) or rank 0
# alone computing an AVA mAP or writing a Hiera-H checkpoint (tens of seconds).
DEFAULT_TIMEOUT_S = 1800.0
TIMEOUT_ENV = "HIERA_VIDEO_DIST_TIMEOUT"
# nccl (GPUs) or gloo (CPU) by default; gloo on GPUs lets several processes share one GPU
# (benchmarks/gpu_check.py on a one-GPU machine), which nccl refuses.
BACKEND_ENV = "HIERA_VIDEO_DIST_BACKEND"


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


class Agreed(HieraVideoError):
    """An error every rank raises together (already agreed: no further agreement needed)."""


class AgreedInterrupt(Agreed, Interrupted):
    """A stop by SIGINT/SIGTERM that every rank agreed on (exit code 130)."""


def timeout_seconds(configured: float | None = None) -> float:
    """The collective timeout: ``configured`` (``run.dist_timeout``) if given, else the
    ``HIERA_VIDEO_DIST_TIMEOUT`` environment variable, else :data:`DEFAULT_TIMEOUT_S`."""
    value = configured if configured is not None else os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        raise HieraVideoError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise HieraVideoError(f"the collective timeout must be a finite number of seconds > 0, got {value!r}")
    return seconds


def world_from_env() -> World:
    """Rank, world size and local rank as ``torchrun`` sets them (one process without)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return World()
        return World(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError) as e:
        raise HieraVideoError(f"bad torchrun environment (WORLD_SIZE/RANK/LOCAL_RANK): {e}; launch with torchrun") from None


def start(device: str | torch.device = "auto", timeout: float | None = None) -> tuple[World, torch.device]:
    """The one place that decides this process's device and joins the process group.

    Under ``torchrun`` with CUDA, the device is ``cuda:LOCAL_RANK`` (``cuda`` / ``auto``) and
    is made current before anything touches CUDA; then the process group is initialised (nccl
    bound to that device, gloo on CPU) with the collective timeout. Call it before any model
    or tensor is placed. Returns ``(world, device)``.
    """
    world = world_from_env()
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
            raise HieraVideoError(
                f"this process needs GPU {dev.index} (LOCAL_RANK {world.local_rank}) but {count} GPU(s) are visible; "
                "start at most one process per GPU (torchrun --nproc-per-node) or check CUDA_VISIBLE_DEVICES"
            )
        torch.cuda.set_device(dev)
    if world.distributed and not dist.is_initialized():
        kwargs = dict(backend=backend, timeout=datetime.timedelta(seconds=timeout_seconds(timeout)))
        if backend == "nccl":
            kwargs["device_id"] = dev  # binds the communicator to this process's GPU
        dist.init_process_group(**kwargs)
    return world, dev


def cleanup(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- agreement


def _describe(e: BaseException) -> tuple[str, bool]:
    """One line for an exception, and whether it is an interruption."""
    interrupted = isinstance(e, (Interrupted, KeyboardInterrupt))
    if isinstance(e, KeyboardInterrupt):
        text = "interrupted (SIGINT)"
    else:
        text = str(e) if isinstance(e, HieraVideoError) else f"{type(e).__name__}: {e}"
    text = " ".join(text.split())  # one line, whatever the exception says
    return (text[:2000] + " ...") if len(text) > 2000 else text, interrupted


def agree(world: World, error: BaseException | None = None, **payload) -> list[dict]:
    """Every rank calls this at the same point with its own ``error`` (or None) and
    ``payload``; returns every rank's payload (index = rank). When any rank passed an error,
    every rank raises the same :class:`Agreed` naming the lowest failing rank instead."""
    if not world.distributed:
        if error is not None:
            raise error
        return [payload]
    mine = dict(payload, _error=_describe(error) if error is not None else None)
    everyone: list = [None] * world.world_size
    try:
        dist.all_gather_object(everyone, mine)
    except Exception as e:  # a rank died or hung: the collective failed or timed out
        raise lost_contact(world, e) from error
    for rank, part in enumerate(everyone):
        failure = part.pop("_error")
        if failure is not None:
            text, interrupted = failure
            cls = AgreedInterrupt if interrupted else Agreed
            raise cls(f"rank {rank}: {text}" if not text.startswith("rank ") else text) from error
    return everyone


@contextmanager
def together(world: World):
    """Run a stretch of work that contains no collective; at its end every rank learns
    whether any rank failed, and then all raise the same error (see :func:`agree`)."""
    try:
        yield
    except Agreed:
        raise
    except BaseException as e:
        if not world.distributed:
            raise
        agree(world, e)
        raise
    agree(world)


@contextmanager
def session(device: str | torch.device = "auto", timeout: float | None = None):
    """A whole command: :func:`start`, the body inside :func:`together`, and
    :func:`cleanup`. Yields ``(world, device)``."""
    world, dev = start(device, timeout)
    try:
        with together(world):
            yield world, dev
    finally:
        cleanup(world)


# ---------------------------------------------------------------------------- helpers


def shard(n: int, world: World) -> list[int]:
    """Indices ``0..n-1`` of this rank: ``rank, rank + world, ...`` (no padding, no repeats,
    so every item is evaluated exactly once across ranks)."""
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
    """Rank 0's ``value`` on every rank (what rank 0 decided), through an agreement."""
    return agree(world, value=value if world.is_main else None)[0]["value"]


def agree_rows(world: World, row: list[float]) -> list[list[float]]:
    """The cheap agreement: every rank's ``row`` of numbers (same length on every rank), on
    every rank, through ONE all-reduce of a small ``[world_size, len(row)]`` float64 tensor in
    which each rank fills only its own row (a sum of rows that are zero elsewhere is an
    all-gather). No pickling, one host sync. Unlike :func:`agree` it carries no text: a rank
    that has something to say (an error) sets a flag in its row, and then every rank joins one
    :func:`agree` to hear it. NaN and inf travel unchanged (added to zeros)."""
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
    """DDP's option for "no buffer broadcast before every forward" under the name this torch
    knows: ``forward_sync_buffers`` (newer; ``broadcast_buffers`` is deprecated there) or
    ``broadcast_buffers``. Our models' buffers never change during training."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    known = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers": False}


def lost_contact(world: World, e: BaseException) -> Agreed:
    """The error of a rank whose collective failed or timed out."""
    return Agreed(
        f"rank {world.rank} ({socket.gethostname()}): lost contact with the other processes ({e}); one of them "
        f"died or hung (see its output above; the wait is bounded by run.dist_timeout / {TIMEOUT_ENV})"
    )
