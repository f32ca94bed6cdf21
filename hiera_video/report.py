"""Output helpers shared by the commands: Rich consoles, tables, JSON/CSV writers."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from rich.console import Console

MIN_PIPE_WIDTH = 160


def console(stderr: bool = False) -> Console:
    """A Rich console; when output is not a terminal (pipes, logs, CI) tables get a wide
    page instead of Rich's 80-column default, so names are not cut."""
    c = Console(stderr=stderr)
    if not c.is_terminal:
        c.width = max(c.width, MIN_PIPE_WIDTH)
    return c


def progress_bar(title: str, *fields: str, console: Console, transient: bool = True, disable: bool = False,
                 elapsed: bool = True):
    """The commands' Rich progress bar: ``title``, bar, done/total, one text column per
    ``fields`` template (``"{task.fields[rate]}"``), elapsed (unless ``elapsed=False``) and
    remaining time. Use it as a context manager."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn(title), BarColumn(), MofNCompleteColumn(), *map(TextColumn, fields),
        *([TimeElapsedColumn()] if elapsed else []), TimeRemainingColumn(),
        console=console, transient=transient, disable=disable,
    )


def check_output(path: str | Path | None, option: str = "--output", kind: str = "file") -> Path | None:
    """Refuse an output path that cannot be written, before any work is done (so a long run
    never ends with a traceback and its results lost). ``kind``: ``"file"`` or ``"dir"``
    (a folder the command creates or fills). Checked: an existing path of the wrong kind (a
    folder where a file is expected or the other way round), a path under a file, a name too
    long for the file system, and write permission in the folder that will hold it (the
    nearest existing one when folders are to be created). Returns the path (None stays None);
    raises :class:`~hiera_video.errors.HieraVideoError` with one line naming ``option``."""
    from hiera_video.errors import HieraVideoError

    if path is None:
        return None
    raw = str(path)
    p = Path(raw).expanduser()

    def fail(problem: str):
        raise HieraVideoError(f"cannot write {option} '{raw}': {problem}; pass a path you can write to")

    if not raw.strip():
        fail("the path is empty")
    if os.path.exists(p):  # (os.path: False, not an exception, for names too long to look up)
        if kind == "dir":
            if not os.path.isdir(p):
                fail("it is an existing file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                fail("no permission to write in this folder")
            return p
        if os.path.isdir(p):
            fail("it is an existing folder, not a file name")
        if not os.access(p, os.W_OK) or not os.access(p.parent, os.W_OK | os.X_OK):
            fail("no permission to replace this file")  # replaced by a rename in its folder
        return p
    anchor = p.parent if p.parent != p else p  # nearest folder that exists
    while not os.path.exists(anchor) and anchor.parent != anchor:
        anchor = anchor.parent
    if not os.path.isdir(anchor):
        fail(f"'{anchor}' is a file, not a folder")
    try:
        name_max = os.pathconf(anchor, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    long = [part for part in p.parts if len(os.fsencode(part)) > name_max]
    if long:
        fail(f"the name '{long[0][:40]}...' is longer than the file system allows ({name_max} bytes)")
    if not os.access(anchor, os.W_OK | os.X_OK):
        fail(f"no permission to create files in '{anchor}'")
    return p


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """The one way files are replaced: yields a temporary ``.NAME.*SUFFIX`` in ``path``'s
    folder to write; when the block ends normally it is (optionally) fsynced, given ordinary
    permissions (0666 minus the umask; mkstemp makes 0600) and renamed over ``path``, so a
    reader sees the old file or the new one, never half of one. On an exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_csv(path: str | Path, header: list[str], rows: Iterable[Iterable]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
