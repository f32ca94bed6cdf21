"""Output helpers shared by the commands: Rich consoles, tables, JSON/CSV writers."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from rich.console import Console

from hiera_video.errors import HieraVideoError, OutputError

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
    long for the file system, and that a file can really be created (and is removed again)
    in the folder that will hold it (the nearest existing one when folders are to be
    created): ``os.access`` answers yes to root everywhere, ``/proc`` and ``/sys`` included,
    and knows nothing of read-only mounts or quotas. Returns the path (None stays None);
    raises :class:`~hiera_video.errors.HieraVideoError` with one line naming ``option``."""
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
            problem = _cannot_create_in(p)
            if problem:
                fail("no permission to write in this folder" if problem == PERMISSION else f"cannot create files in it ({problem})")
            return p
        if os.path.isdir(p):
            fail("it is an existing folder, not a file name")
        problem = _cannot_create_in(p.parent)  # the file is replaced by a rename in its folder
        if problem:
            fail("no permission to replace this file" if problem == PERMISSION else f"cannot create files in '{p.parent}' ({problem})")
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
    problem = _cannot_create_in(anchor)
    if problem:
        fail(f"no permission to create files in '{anchor}'" if problem == PERMISSION else f"cannot create files in '{anchor}' ({problem})")
    return p


PERMISSION = "permission denied"


def _cannot_create_in(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (:data:`PERMISSION`, or the system's reason,
    e.g. "Read-only file system"), or None when it can: found by creating an empty, uniquely
    named file there and removing it again."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".hiera-video-check-")
    except OSError as e:
        return PERMISSION if e.errno in (errno.EACCES, errno.EPERM) else (e.strerror or str(e))
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:  # pragma: no cover - created but not removable (e.g. a sticky folder): writing works
        pass
    return None


#: errnos of a failed write, turned into :class:`~hiera_video.errors.OutputError` when the
#: block of :func:`atomic_path` raises them (other OSErrors there, e.g. a lost connection while
#: downloading into the file, are the caller's to report).
WRITE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG", "EIO", "EACCES", "EPERM")
                         if hasattr(errno, n))


def _output_error(path: Path, e: OSError) -> OutputError:
    return OutputError(f"cannot write '{path}': {e.strerror or ' '.join(str(e).split())}", e)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """The one way files are replaced: yields a temporary ``.NAME.*SUFFIX`` in ``path``'s
    folder to write; when the block ends normally it is (optionally) fsynced, given ordinary
    permissions (0666 minus the umask; mkstemp makes 0600) and renamed over ``path``, so a
    reader sees the old file or the new one, never half of one. On an exception it is removed.

    A write that fails (disk full, read-only file system, no permission: creating the folder or
    the temporary file, the block's writes with an errno of :data:`WRITE_ERRNOS`, the fsync, the
    rename) raises :class:`~hiera_video.errors.OutputError`: one line naming ``path``, which
    the CLI prints without a traceback (exit 2)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as e:
        raise _output_error(path, e) from e
    os.close(fd)
    try:
        try:
            yield Path(tmp)
        except OSError as e:
            if e.errno in WRITE_ERRNOS and not isinstance(e, HieraVideoError):
                raise _output_error(path, e) from e
            raise
        try:
            if fsync:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            try:
                os.chmod(tmp, 0o666 & ~umask)
            except OSError:  # a file system without Unix permissions (some network mounts): keep mkstemp's
                pass
            os.replace(tmp, path)
        except OSError as e:
            raise _output_error(path, e) from e
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
