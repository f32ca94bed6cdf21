"""The memory a size option implies (inputs only), refused before any allocation when above ``HIERA_VIDEO_MEMORY_LIMIT``
(bytes, or K/M/G/T suffixed: ``8G``) if set, else MemAvailable, else free pages; nothing is refused when unknown."""

import math
import os
from contextlib import suppress

from hiera_video.errors import HieraVideoError

ENV = "HIERA_VIDEO_MEMORY_LIMIT"
MAX_BATCH = 65536  # largest --batch-size (clips per forward pass); a larger one only ever overflowed
DEFAULT_DECODE_TIMEOUT = 300.0  # seconds one item may take to decode before it is stopped (--decode-timeout)
WINDOW_BYTES = 2048  # bookkeeping per timeline window (span, decoding task, result row, scores)
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _parse_bytes(text: str) -> int:
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = s[-1:] if s[-1:] in _UNITS and s[-1:].isalpha() else ""
    value = 0.0
    with suppress(ValueError):
        value = float(s[: len(s) - len(unit)])
    if not math.isfinite(value) or value <= 0:
        raise HieraVideoError(f"{ENV}={text!r} is not a size in bytes (e.g. 8G, 512M or 1000000)")
    return int(value * _UNITS[unit])


def memory_limit() -> tuple[int | None, str]:
    """``(bytes, where it comes from)``; ``(None, ...)`` when it cannot be known."""
    env = os.environ.get(ENV, "").strip()
    if env:
        return _parse_bytes(env), f"set by {ENV}"
    with suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, f"memory available now; {ENV} sets another limit"
    with suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), f"free memory now; {ENV} sets another limit"
    return None, "unknown"


def human(nbytes: float) -> str:
    """``23.6 GB`` (powers of 1000, as most tools show them)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(nbytes) < 1000 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000


def check_memory(option: str, nbytes: float, what: str) -> None:
    """Refuse ``option`` when ``what`` (e.g. "15 views of 16x224x224 clips") needs more than :func:`memory_limit`."""
    limit, source = memory_limit()
    if limit is not None and nbytes > limit:
        raise HieraVideoError(f"{option}: {what} need about {human(nbytes)} of memory, more than the limit of "
                              f"{human(limit)} ({source}); use a smaller value")


def clip_bytes(frames: int, size: int | tuple[int, int]) -> float:
    """Bytes of one decoded float32 clip ``[3, frames, H, W]`` (a float: huge counts never overflow)."""
    h, w = (size, size) if isinstance(size, int) else size
    return 3.0 * frames * h * w * 4


def check_views(views: tuple[int, int], frames: int, size: int) -> None:
    """``--views T x S``: all views of a video are decoded into one tensor (``--batch-size`` only splits it)."""
    t, s = views
    check_memory(f"--views {t}x{s}", float(t) * s * clip_bytes(frames, size),
                 f"{t * s} views of {frames}x{size}x{size} clips (one video, decoded at once)")


def check_windows(count: float, path: str, duration: float) -> None:
    """The windows of one video (``count``: a float, maybe astronomically large) before any list of them is built."""
    what = f"{count:.3g} windows over the {duration:.1f} s of '{path}'"
    check_memory("--window/--stride", count * WINDOW_BYTES, what)
