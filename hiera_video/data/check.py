"""Scan a dataset's videos for unusable files: each must exist, be non-empty, open (demuxing the whole
stream) and, unless ``decode=False``, decode its first and last frame. Checks run in worker processes;
one past ``timeout`` seconds is reported as ``timeout``, a dead worker (decoder segfault) as ``crashed``.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

from hiera_video.data.decode import open_video
from hiera_video.data.probe import path_problem
from hiera_video.errors import HieraVideoError, short

CATEGORIES = ("missing", "empty", "not a file", "unreadable", "no video stream", "no frames", "decode failed",
              "timeout", "crashed")


@dataclass
class FileResult:
    path: str
    status: str  # "ok" or one of CATEGORIES
    reason: str = ""  # one line, empty when ok
    frames: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class CheckReport:
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bad(self) -> list[FileResult]:
        return [r for r in self.results if not r.ok]

    def counts(self) -> dict[str, int]:
        c = Counter(r.status for r in self.results)
        return {k: c[k] for k in ("ok", *CATEGORIES) if c[k]}

    def summary(self) -> dict:
        return {"checked": len(self.results), "ok": sum(r.ok for r in self.results), "bad": len(self.bad),
                "by_reason": self.counts(), "seconds": round(self.seconds, 2)}


_PATH_PREFIX = re.compile(r"^cannot (?:decode|open) video '.*?': ")


def _reason(error: object) -> str:
    """The message without its "cannot decode video 'PATH': " prefix (reports show the path)."""
    return _PATH_PREFIX.sub("", short(error, 1000), count=1)


_CATEGORY_OF = (("file not found", "missing"), ("empty (0 bytes)", "empty"), ("no video stream", "no video stream"),
                ("has no frames", "no frames"), ("no decodable frames", "no frames"))


def _category(message: str) -> str:
    m = message.lower()
    return next((category for key, category in _CATEGORY_OF if key in m), "unreadable")


def check_file(path: str, backend: str = "auto", decode: bool = True) -> FileResult:
    """Check one file (runs in a worker; never raises)."""
    problem = path_problem(path)  # stat only: a FIFO or device is never opened
    if problem is not None:
        return FileResult(path, *problem)
    try:
        reader = open_video(path, backend)
    except HieraVideoError as e:
        return FileResult(path, _category(str(e)), _reason(e))
    except Exception as e:
        return FileResult(path, "unreadable", short(f"{type(e).__name__}: {e}", 1000))
    try:
        frames = reader.num_frames
        if decode:
            try:
                reader.get_frames([0, frames - 1])
            except Exception as e:
                reason = _reason(e) if isinstance(e, HieraVideoError) else short(f"{type(e).__name__}: {e}", 1000)
                return FileResult(path, "decode failed", reason, frames)
        return FileResult(path, "ok", "", frames)
    finally:
        try:
            reader.close()
        except Exception:
            pass


def check_videos(paths: Iterable[str | Path], workers: int | None = None, backend: str = "auto", decode: bool = True,
                 timeout: float = 60.0, progress: Callable[[FileResult], None] | None = None,
                 check_fn: Callable[[str, str, bool], FileResult] = check_file) -> CheckReport:
    """Check every path in worker processes, results in input order (``check_fn``: picklable)."""
    from hiera_video.data.pool import HINT, decode_in_order

    paths = [str(p) for p in paths]
    t0 = time.monotonic()
    n_workers = max(1, min(int(workers or os.cpu_count() or 1), len(paths)))
    results = []
    for path, result, error in decode_in_order(paths, partial(check_fn, backend=backend, decode=decode),
                                               workers=n_workers, timeout=timeout):
        if error is not None:
            status = "timeout" if "longer than" in error else "crashed"
            result = FileResult(path, status, _reason(error.removesuffix(HINT)))
        results.append(result)
        if progress is not None:
            progress(result)
    return CheckReport(results, time.monotonic() - t0)


def write_bad_list(path: str | Path, bad: Iterable[FileResult | tuple[str, str]]) -> Path:
    """``path<TAB>reason`` rows, no header, atomic; csv-quoted TSV (formula-like cells get a leading ``'``)."""
    from hiera_video.report import write_csv

    pairs = ((e.path, e.reason) if isinstance(e, FileResult) else e for e in bad)
    rows = [(str(p), short(reason, 1000)) for p, reason in pairs]
    write_csv(path, None, rows, delimiter="\t")
    return Path(path)


def check_dataset(dataset, workers: int | None = None, backend: str = "auto", decode: bool = True,
                  timeout: float = 60.0, progress: Callable[[FileResult], None] | None = None) -> CheckReport:
    """Check a dataset's videos; its missing entries come first, as ``missing``."""
    report = check_videos([item.path for item in dataset.items], workers=workers, backend=backend, decode=decode,
                          timeout=timeout, progress=progress)
    missing = [FileResult(p, "missing", short(reason, 1000)) for p, reason in dataset.missing]
    report.results = missing + report.results
    return report
