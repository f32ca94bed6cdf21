"""Scan the videos of a dataset for files that cannot be used.

Each file is checked in a worker process: it must exist, be non-empty, open as a video
(:func:`~hiera_video.data.decode.open_video`, which demuxes the whole stream) and, unless
``decode=False``, decode its first and last frame. Workers are plain processes fed one
path at a time over a pipe, so the parent knows which file each one is on: a worker that
runs past ``timeout`` seconds on one file (a decoder stuck in native code cannot be
interrupted from Python) is killed, its file reported as ``timeout``, and a fresh worker
takes its place; a worker that dies (segfault in a decoder) is reported as ``crashed``
the same way. Workers are forked from a ``forkserver`` (a clean single-threaded process
that has already imported the decoders), so starting or replacing one is cheap and safe
while the parent runs a progress bar thread.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable, Iterable

from hiera_video.data.decode import open_video
from hiera_video.data.probe import one_line, path_problem
from hiera_video.errors import HieraVideoError

# Reason categories, in the order the summary shows them.
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
        ok = sum(r.ok for r in self.results)
        return {"checked": len(self.results), "ok": ok, "bad": len(self.bad), "by_reason": self.counts(),
                "seconds": round(self.seconds, 2)}


_PATH_PREFIX = re.compile(r"^cannot (?:decode|open) video '.*?': ")


def _reason(error: object) -> str:
    """The error's message without the "cannot decode video 'PATH': " prefix (the path is
    already the first column of every report)."""
    return _PATH_PREFIX.sub("", one_line(error), count=1)


def _category(message: str) -> str:
    m = message.lower()
    if "file not found" in m:
        return "missing"
    if "empty (0 bytes)" in m:
        return "empty"
    if "no video stream" in m:
        return "no video stream"
    if "has no frames" in m or "no decodable frames" in m:
        return "no frames"
    return "unreadable"


def check_file(path: str, backend: str = "auto", decode: bool = True) -> FileResult:
    """Check one file (runs in a worker; never raises)."""
    problem = path_problem(path)  # stat only: a FIFO or device is never opened
    if problem is not None:
        return FileResult(path, *problem)
    try:
        reader = open_video(path, backend)
    except HieraVideoError as e:
        return FileResult(path, _category(str(e)), _reason(e))
    except Exception as e:  # decode.py promises HieraVideoError; be safe anyway
        return FileResult(path, "unreadable", one_line(f"{type(e).__name__}: {e}"))
    try:
        frames = reader.num_frames
        if decode:
            try:
                reader.get_frames([0, frames - 1])
            except Exception as e:
                reason = _reason(e) if isinstance(e, HieraVideoError) else one_line(f"{type(e).__name__}: {e}")
                return FileResult(path, "decode failed", reason, frames)
        return FileResult(path, "ok", "", frames)
    finally:
        try:
            reader.close()
        except Exception:
            pass


def _worker_main(conn, check_fn, backend: str, decode: bool) -> None:
    conn.send(("ready",))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        i, path = task
        try:
            result = check_fn(path, backend, decode)
        except BaseException as e:
            result = FileResult(path, "crashed", one_line(f"{type(e).__name__}: {e}"))
        try:
            conn.send((i, result))
        except (BrokenPipeError, OSError):
            return


def _context():
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # Import the decoders once in the server, not in every worker. (Not "__main__": a script
        # without an `if __name__ == "__main__"` guard would then run inside the server.)
        ctx.set_forkserver_preload(["hiera_video.data.check", "hiera_video.data.decode"])
        return ctx
    return multiprocessing.get_context("spawn")


class _Worker:
    def __init__(self, ctx, check_fn, backend, decode):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, check_fn, backend, decode), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: tuple[int, str] | None = None
        self.started = 0.0

    def assign(self, i: int, path: str) -> None:
        self.task = (i, path)
        self.started = time.monotonic()
        self.conn.send(self.task)

    def stop(self, kill: bool = False) -> None:
        """Kill now, or wait briefly for a worker that was sent ``None`` (then kill)."""
        if kill and self.proc.is_alive():
            self.proc.kill()
        self.proc.join(None if kill else 2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def check_videos(
    paths: Iterable[str | Path],
    workers: int | None = None,
    backend: str = "auto",
    decode: bool = True,
    timeout: float = 60.0,
    progress: Callable[[FileResult], None] | None = None,
    check_fn: Callable[[str, str, bool], FileResult] = check_file,
) -> CheckReport:
    """Check every path in worker processes; results are in input order.

    ``progress`` is called in the parent after each file. ``check_fn(path, backend, decode)``
    must be a picklable module-level function returning a :class:`FileResult`.
    """
    paths = [str(p) for p in paths]
    t0 = time.monotonic()
    results: list[FileResult | None] = [None] * len(paths)
    if not paths:
        return CheckReport([], 0.0)
    n_workers = max(1, min(int(workers or os.cpu_count() or 1), len(paths)))
    ctx = _context()
    pool = [_Worker(ctx, check_fn, backend, decode) for _ in range(n_workers)]
    todo = list(range(len(paths)))[::-1]  # pop() from the end = input order
    done = 0

    def record(i: int, result: FileResult) -> None:
        nonlocal done
        results[i] = result
        done += 1
        if progress is not None:
            progress(result)

    def retire(w: _Worker, status: str, reason: str) -> None:
        """Record the worker's current file as bad and stop the worker."""
        if w.task is not None:
            i, path = w.task
            record(i, FileResult(path, status, reason))
            w.task = None
        w.stop(kill=True)

    startup_failures = 0
    finished = False
    try:
        while done < len(paths):
            for w in pool:
                if w.ready and w.task is None and todo:
                    i = todo.pop()
                    w.assign(i, paths[i])
            now = time.monotonic()
            deadlines = [w.started + timeout - now for w in pool if w.task is not None]
            wait_for = max(0.0, min([0.5, *deadlines]))
            ready = set(wait([w.conn for w in pool], timeout=wait_for))
            survivors: list[_Worker] = []
            for w in pool:
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        w.proc.join(1)
                        if w.task is None:
                            startup_failures += 1
                        retire(w, "crashed", f"the checker process died (exit code {w.proc.exitcode}) on this file")
                        continue
                    if msg == ("ready",):
                        w.ready = True
                    else:
                        i, result = msg
                        w.task = None
                        record(i, result)
                elif w.task is not None and time.monotonic() - w.started > timeout:
                    retire(w, "timeout", f"checking took longer than {timeout:g} s and was stopped (hanging decoder?)")
                    continue
                survivors.append(w)
            busy = sum(w.task is not None for w in survivors)
            while todo and len(survivors) < min(n_workers, len(todo) + busy):
                survivors.append(_Worker(ctx, check_fn, backend, decode))
            pool = survivors
            if startup_failures > 2 * n_workers + 2:
                raise HieraVideoError(
                    "the video checker processes exit right after starting (a script calling check_videos needs an "
                    "`if __name__ == '__main__':` guard); try --workers 1 or --debug"
                )
        finished = True
    finally:
        # Ask idle workers to exit all at once, then wait; kill everything on errors/Ctrl-C.
        for w in pool:
            if finished and w.task is None:
                try:
                    w.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        for w in pool:
            try:
                w.stop(kill=not finished or w.task is not None)
            except Exception:
                pass
    return CheckReport([r for r in results if r is not None], time.monotonic() - t0)


def write_bad_list(path: str | Path, bad: Iterable[FileResult | tuple[str, str]]) -> Path:
    """``path<TAB>reason`` per line, no header (atomic write), written by the ``csv`` module
    as TSV: a path with a TAB, newline or double quote is quoted (``"a<TAB>b.mp4"``), so
    every line is one video and ``csv.reader(f, delimiter="\\t")`` reads the pairs back;
    cells a spreadsheet would run as a formula get a leading ``'``
    (:func:`~hiera_video.report.neutralise_cell`)."""
    from hiera_video.report import write_csv

    pairs = ((e.path, e.reason) if isinstance(e, FileResult) else e for e in bad)
    rows = [(str(p), one_line(reason)) for p, reason in pairs]
    write_csv(path, None, rows, delimiter="\t")
    return Path(path)


def check_dataset(dataset, workers: int | None = None, backend: str = "auto", decode: bool = True,
                  timeout: float = 60.0, progress: Callable[[FileResult], None] | None = None) -> CheckReport:
    """Check every video of a :class:`~hiera_video.data.datasets.VideoDataset`; its missing
    entries come first in the report as ``missing``."""
    report = check_videos([item.path for item in dataset.items], workers=workers, backend=backend, decode=decode,
                          timeout=timeout, progress=progress)
    missing = [FileResult(p, "missing", one_line(reason)) for p, reason in dataset.missing]
    report.results = missing + report.results
    return report


__all__ = ["CATEGORIES", "CheckReport", "FileResult", "check_dataset", "check_file", "check_videos", "write_bad_list"]
