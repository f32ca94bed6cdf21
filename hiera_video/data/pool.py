"""Decoding in worker processes, in order, with a time limit per item (``--decode-timeout`` of
``eval``, ``predict``, ``extract``, finetuning's validation and ``check-videos``).

A decoder stuck inside native code (decord is known to hang holding the GIL) cannot be
interrupted from Python, so items are decoded in DataLoader worker processes (``workers`` >= 1):
an item that does not come back within the timeout, or whose worker dies (a decoder segfault),
is reported as failed, the stuck worker is terminated and fresh ones continue with the next.
Without workers, decoding runs in this process and cannot be timed out. A task is anything
picklable (a path, an index, a window); ``fn(task)`` decodes it, raising ``HieraVideoError``.
"""

from __future__ import annotations

from collections import Counter
from itertools import islice
from typing import Any, Callable, Hashable, Iterable, Iterator, Sequence

from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils import signal_handling

from hiera_video.errors import HieraVideoError


HINT = "; check the file with hiera-video check-videos"


def failed_message(path, why: str) -> str:
    """The failure reason of an input whose decoding was stopped or crashed."""
    return f"cannot decode video '{path}': {why}{HINT}"


def _dead_worker_task(it, error: RuntimeError) -> tuple[int, int] | None:
    """``(index, exit code)`` of the task whose DataLoader worker died, from the iterator's
    bookkeeping (a worker takes its tasks in order: its oldest outstanding one), or None."""
    if "exited unexpectedly" not in str(error) and "killed by signal" not in str(error):
        return None
    for k, w in enumerate(it._workers):
        mine = [i for i, info in it._task_info.items() if len(info) == 1 and info[0] == k]
        if w.exitcode and mine:
            return min(mine), w.exitcode
    return None


class _Tasks(Dataset):
    """Item ``j`` = ``(j, fn(tasks[j]) or None, error or None)``. After a failure of a task
    with a ``group`` key, later tasks of that group fail at once with the same reason (in
    this process: each worker learns it for itself)."""

    def __init__(self, tasks: Sequence, fn: Callable, group: Callable[[Any], Hashable] | None):
        self.tasks, self.fn, self.group = tasks, fn, group
        self._failed: dict = {}

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, j: int):
        task = self.tasks[j]
        key = self.group(task) if self.group is not None else None
        if key is not None and key in self._failed:
            return j, None, self._failed[key]
        try:
            return j, self.fn(task), None
        except HieraVideoError as e:
            if key is not None:
                self._failed[key] = str(e)
            return j, None, str(e)


def _as_is(item):
    return item


def _kill_stuck_worker(it, j: int) -> None:
    """Kill the worker of task ``j`` now (shutting down would wait 5 s for it), unregistered
    first so that DataLoader's SIGCHLD handler does not raise for it."""
    if it._worker_pids_set:
        signal_handling._remove_worker_pids(id(it))
        it._worker_pids_set = False
    it._workers[it._task_info[j][0]].kill()


def decode_in_order(tasks: Iterable, fn: Callable, workers: int = 0, timeout: float | None = None,
                    describe: Callable[[Any], Any] = str,
                    group: Callable[[Any], Hashable] | None = None) -> Iterator[tuple[Any, Any, str | None]]:
    """``(task, fn(task) or None, error or None)`` for every task, in order.

    With ``workers`` >= 1 and a ``timeout`` (seconds; None or 0 = no limit), a task that does
    not come back in time, or whose worker dies, gets the error :func:`failed_message` (naming
    ``describe(task)``) and decoding continues in fresh workers; the later tasks of the same
    ``group`` get the same error without being decoded (a video stuck in one window is not
    tried window after window). ``fn`` runs in the worker processes (it must be picklable);
    when it has a ``close()`` method, it is called at the end in this process.
    """
    tasks = list(tasks)
    timeout = timeout if workers > 0 and timeout else 0
    start, known = 0, {}  # known: index -> error of a task whose worker died, yielded in its turn
    try:
        while start < len(tasks):
            message = known.pop(start, None)
            if message is None:
                base, stop = start, min([i for i in known if i > start], default=len(tasks))
                it = iter(DataLoader(_Tasks(tasks[start:stop], fn, group), batch_size=None, shuffle=False,
                                     num_workers=workers, timeout=timeout, collate_fn=_as_is,
                                     prefetch_factor=2 if workers > 0 else None, persistent_workers=False))
                try:
                    for _, value, error in it:
                        start += 1
                        yield tasks[start - 1], value, error
                    continue
                except RuntimeError as e:
                    dead = _dead_worker_task(it, e) if workers > 0 else None
                    if dead is not None:
                        known[base + dead[0]] = failed_message(describe(tasks[base + dead[0]]),
                                                               f"the decoder crashed (exit code {dead[1]})")
                        continue
                    if not timeout or "DataLoader timed out" not in str(e):
                        raise
                    _kill_stuck_worker(it, start - base)
                    message = failed_message(describe(tasks[start]), f"decoding took longer than {timeout:g} s "
                                             "and was stopped (a hanging decoder?)")
                finally:
                    del it  # shuts the workers down, terminating one that is stuck
            stuck = tasks[start]
            start += 1
            yield stuck, None, message
            key = group(stuck) if group is not None else None
            while key is not None and start < len(tasks) and group(tasks[start]) == key:
                start += 1
                yield tasks[start - 1], None, message
    finally:
        close = getattr(fn, "close", None)
        if close is not None:
            close()


def by_group(stream: Iterator[tuple[Any, Any, str | None]], sizes: Iterable[tuple[Any, int]]):
    """Split the ordered ``stream`` of :func:`decode_in_order` into consecutive groups:
    for each ``(key, n)`` of ``sizes``, yields ``(key, values)`` where ``values`` iterates the
    next ``n`` values of the stream and raises :class:`HieraVideoError` at the first failed
    one. What a group's consumer leaves (after an error) is skipped before the next group."""
    stream = iter(stream)
    for key, n in sizes:
        part = islice(stream, n)

        def values(part=part):
            for _, value, error in part:
                if error is not None:
                    raise HieraVideoError(error)
                yield value

        yield key, values()
        for _ in part:  # skip what the consumer left
            pass


class ReaderCache:
    """The last opened video of this process (a worker decoding the windows of one video
    opens it once). Picklable while closed; :meth:`close` closes it."""

    def __init__(self, backend: str = "auto", device: str = "cpu"):
        self.backend, self.device = backend, device
        self._path: str | None = None
        self._reader = None

    def open(self, path: str):
        if self._path != path:
            self.close()
            from hiera_video.data import open_video

            self._reader = open_video(path, self.backend, self.device)
            self._path = path
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            finally:
                self._reader, self._path = None, None

    def __getstate__(self):
        return dict(backend=self.backend, device=self.device, _path=None, _reader=None)


def count_decoders(names) -> dict[str, int]:
    """``{decoder: videos}`` (most first) of the decoders that read the videos (unknown: left out)."""
    return dict(Counter(n for n in names if n).most_common())
