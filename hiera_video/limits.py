"""Upper limits: the memory an option implies, checked before anything is allocated.

A size option (``--views``, ``--batch-size``, ``--window``/``--stride``, ``reconstruct
--scale``, ``export --size``) is turned into an estimate of the bytes it asks for (clips x
frames x pixels x channels x 4 bytes, windows x their bookkeeping, figure pixels) and refused
with a one-line :class:`~hiera_video.errors.HieraVideoError` naming the option and the limit
when the estimate is larger than the memory the machine can give:

* the limit is ``MemAvailable`` of ``/proc/meminfo`` (Linux), else free physical pages
  (``os.sysconf``); where neither can be read nothing is refused;
* ``HIERA_VIDEO_MEMORY_LIMIT`` (bytes, or with a K/M/G/T suffix, e.g. ``8G``) sets the limit
  instead (a smaller cap on a shared machine, or a larger one to go ahead anyway).

The estimates count the inputs an option fixes, not the model's activations, so an option
that passes may still run out of memory for a very large model; one that fails would have.
"""

from __future__ import annotations

import math
import os

from hiera_video.errors import HieraVideoError

#: Environment variable that sets the memory limit (see the module docstring).
ENV = "HIERA_VIDEO_MEMORY_LIMIT"
#: Largest ``--batch-size`` (clips per forward pass); a larger one only ever overflowed.
MAX_BATCH = 65536
#: Bytes of bookkeeping per timeline window (its span, decoding task, result row and scores).
WINDOW_BYTES = 2048
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _parse_bytes(text: str) -> int:
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = s[-1:] if s[-1:] in _UNITS and s[-1:].isalpha() else ""
    try:
        value = float(s[: len(s) - len(unit)])
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise HieraVideoError(f"{ENV}={text!r} is not a size in bytes (e.g. 8G, 512M or 1000000)")
    return int(value * _UNITS[unit])


def memory_limit() -> tuple[int | None, str]:
    """``(bytes, where it comes from)``; ``(None, ...)`` when it cannot be known."""
    env = os.environ.get(ENV, "").strip()
    if env:
        return _parse_bytes(env), f"set by {ENV}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, f"memory available now; {ENV} sets another limit"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), f"free memory now; {ENV} sets another limit"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def human(nbytes: float) -> str:
    """``23.6 GB`` (powers of 1000, as the issue tracker and most tools show them)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(nbytes) < 1000 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.3g} EB"  # pragma: no cover


def check_memory(option: str, nbytes: float, what: str) -> None:
    """Refuse ``option`` when ``what`` (e.g. "15 views of 16x224x224 clips") needs more than
    :func:`memory_limit`. ``nbytes`` may be a float (huge counts never overflow)."""
    limit, source = memory_limit()
    if limit is not None and nbytes > limit:
        raise HieraVideoError(f"{option}: {what} need about {human(nbytes)} of memory, more than the limit of "
                              f"{human(limit)} ({source}); use a smaller value")


def clip_bytes(frames: int, size: int | tuple[int, int], channels: int = 3, itemsize: int = 4) -> float:
    """Bytes of one decoded clip ``[channels, frames, H, W]`` of float32 (as a float)."""
    h, w = (size, size) if isinstance(size, int) else size
    return float(channels) * frames * h * w * itemsize


def check_views(views: tuple[int, int], frames: int, size: int) -> None:
    """``--views T x S`` of ``frames x size x size`` clips: every view of a video is decoded
    into one tensor before the model sees it (``--batch-size`` only splits that tensor)."""
    t, s = views
    check_memory(f"--views {t}x{s}", float(t) * s * clip_bytes(frames, size),
                 f"{t * s} views of {frames}x{size}x{size} clips (one video, decoded at once)")


def check_windows(count: float, path: str, duration: float) -> None:
    """The windows of one video (``count`` may be astronomically large: a float) before any list of them is built."""
    check_memory("--window/--stride", count * WINDOW_BYTES,
                 f"{count:.3g} windows over the {duration:.1f} s of '{path}'")
