"""Decoding in worker processes, in order, with a time limit per item: ``--decode-timeout``
of ``eval``, ``predict`` and ``extract`` (and finetuning's validation).

A decoder stuck inside native code (decord is known to hang holding the GIL) cannot be
interrupted from Python. So the items are decoded in DataLoader worker processes
(``workers`` >= 1); an item that does not come back within ``timeout`` seconds is reported
as failed, the workers are shut down (the stuck one is terminated) and fresh ones continue
with the next item. Without workers, decoding runs in this process and cannot be timed out.

:func:`decode_in_order` is the one mechanism; a "task" is anything picklable (a path, an
index, a window of a video) and ``fn(task)`` decodes it, raising
:class:`~hiera_video.errors.HieraVideoError` for a bad input.
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Callable, Hashable, Iterable, Iterator, Sequence

from torch.utils.data import DataLoader, Dataset

from hiera_video.errors import HieraVideoError

#: Seconds one item may take to decode before it is stopped (the CLI's --decode-timeout).
DEFAULT_DECODE_TIMEOUT = 300.0


def stuck_message(path, timeout: float) -> str:
    """The failure reason of an input whose decoding was stopped after ``timeout`` seconds."""
    return (f"cannot decode video '{path}': decoding took longer than {timeout:g} s and was stopped "
            "(a hanging decoder?); check the file with hiera-video check-videos")


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


def decode_in_order(tasks: Iterable, fn: Callable, workers: int = 0, timeout: float | None = None,
                    describe: Callable[[Any], Any] = str,
                    group: Callable[[Any], Hashable] | None = None) -> Iterator[tuple[Any, Any, str | None]]:
    """``(task, fn(task) or None, error or None)`` for every task, in order.

    With ``workers`` >= 1 and a ``timeout`` (seconds; None or 0 = no limit), a task that does
    not come back in time gets the error :func:`stuck_message` (naming ``describe(task)``) and
    decoding continues in fresh workers with the next task; the later tasks of the same
    ``group`` get the same error without being decoded (a video stuck in one window is not
    tried window after window). ``fn`` runs in the worker processes (it must be picklable);
    when it has a ``close()`` method, it is called at the end in this process.
    """
    tasks = list(tasks)
    timeout = timeout if workers > 0 and timeout else 0
    start = 0
    try:
        while start < len(tasks):
            loader = DataLoader(_Tasks(tasks[start:], fn, group), batch_size=None, shuffle=False, num_workers=workers,
                                timeout=timeout, collate_fn=_as_is, prefetch_factor=2 if workers > 0 else None,
                                persistent_workers=False)
            it = iter(loader)
            try:
                for _, value, error in it:
                    start += 1
                    yield tasks[start - 1], value, error
                return
            except RuntimeError as e:
                if not timeout or "DataLoader timed out" not in str(e):
                    raise
            finally:
                del it  # shuts the workers down, terminating one that is stuck
            stuck = tasks[start]
            message = stuck_message(describe(stuck), timeout)
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

    def __init__(self, backend: str = "auto"):
        self.backend = backend
        self._path: str | None = None
        self._reader = None

    def open(self, path: str):
        if self._path != path:
            self.close()
            from hiera_video.data import open_video

            self._reader = open_video(path, self.backend)
            self._path = path
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            finally:
                self._reader, self._path = None, None

    def __getstate__(self):
        return dict(backend=self.backend, _path=None, _reader=None)
