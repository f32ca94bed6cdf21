"""Output helpers shared by the commands: Rich consoles, JSON/CSV writers (rich is imported on first print)."""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from hiera_video.errors import HieraVideoError, OutputError

if TYPE_CHECKING:
    from rich.console import Console

#: Control characters (C0, DEL, C1) and the lone surrogates of undecodable file-name bytes (``os.fsdecode``).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _visible(m: re.Match) -> str:
    c = m.group()
    if 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that was not UTF-8: shown as that byte
        return f"\\x{ord(c) - 0xDC00:02x}"
    return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def visible(value) -> str:
    """``str(value)`` with control characters and undecodable file-name bytes as escapes (``\\n``, ``\\xff``)."""
    return _UNPRINTABLE.sub(_visible, str(value))


def safe(value) -> str:
    """Any user-chosen string (path, class name...) for Rich to print literally: markup escaped and
    :func:`visible`, so no name can raise MarkupError, restyle, move the cursor or forge lines."""
    from rich.markup import escape

    return escape(visible(value))


def jsonable(obj):
    """``obj`` with every non-finite float as None (strict JSON has no NaN/Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    return [jsonable(v) for v in obj] if isinstance(obj, (list, tuple)) else obj


def json_text(obj, **kwargs) -> str:
    return json.dumps(jsonable(obj), allow_nan=False, **kwargs)


def print_json(obj, indent: int | None = 2) -> None:
    print(json_text(obj, indent=indent))


def console(stderr: bool = False) -> Console:
    """A Rich console, at least 160 columns wide when not a terminal (so names are not cut)."""
    from rich.console import Console

    c = Console(stderr=stderr)
    if not c.is_terminal:
        c.width = max(c.width, 160)
    return c


def progress_bar(title: str, *fields: str, console: Console, transient: bool = True, disable: bool = False, elapsed: bool = True):
    """Rich progress: title, bar, done/total, a column per ``fields`` template, elapsed and remaining time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(), *map(TextColumn, fields),
                    *([TimeElapsedColumn()] if elapsed else []), TimeRemainingColumn(),
                    console=console, transient=transient, disable=disable)


def check_output(path: str | Path | None, option: str = "--output", kind: str = "file",
                 inputs: Iterable[tuple[str, str | Path | None]] = (), writes: Iterable[str] = ()) -> Path | None:
    """Refuse, before any work, an output ``kind`` ``"file"`` or ``"dir"`` that cannot be written: wrong kind, under
    a file, a name too long, or no file can really be created in its nearest existing folder (``os.access`` says
    yes to root and knows no read-only mounts); or that is one of ``inputs`` (``(option, path)``; for a folder,
    any of its ``writes``). Returns the path (None stays None)."""
    if path is None:
        return None
    raw, p = str(path), Path(path).expanduser()

    def fail(problem: str):
        raise HieraVideoError(f"cannot write {option} '{raw}': {problem}; pass a path you can write to")

    def writable(folder: Path, denied: str, where: str) -> Path:
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".hiera-video-check-")
        except OSError as e:
            fail(denied if e.errno in (errno.EACCES, errno.EPERM) else f"cannot create files in {where} ({e.strerror or e})")
        os.close(fd)
        with suppress(OSError):  # created but not removable: writing works
            os.unlink(probe)
        return p

    if not raw.strip():
        fail("the path is empty")
    inputs = [(what, i) for what, i in inputs if i is not None and str(i).strip()]
    for target in ([p / name for name in writes] if kind == "dir" else [p]):
        for what, i in inputs:
            if same_file(target, i):
                shown = "it" if target == p else f"its file '{target.name}'"
                raise HieraVideoError(f"cannot write {option} '{raw}': {shown} is the input {what} '{i}' (the same file), "
                                      "which would be destroyed; write to another path")
    if os.path.exists(p):  # False, not an exception, for names too long
        if kind == "dir":
            if not os.path.isdir(p):
                fail("it is an existing file, not a folder")
            return writable(p, "no permission to write in this folder", "it")
        if os.path.isdir(p):
            fail("it is an existing folder, not a file name")
        return writable(p.parent, "no permission to replace this file", f"'{p.parent}'")  # replaced by a rename there
    anchor = p.parent if p.parent != p else p  # nearest folder that exists
    while not os.path.exists(anchor) and anchor.parent != anchor:
        anchor = anchor.parent
    if not os.path.isdir(anchor):
        fail(f"'{anchor}' is a file, not a folder")
    try:
        name_max = os.pathconf(anchor, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    if long := [part for part in p.parts if len(os.fsencode(part)) > name_max]:
        fail(f"the name '{long[0][:40]}...' is longer than the file system allows ({name_max} bytes)")
    return writable(anchor, f"no permission to create files in '{anchor}'", f"'{anchor}'")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Same device and inode (links count), else the same resolved path."""
    try:
        sa, sb = os.stat(Path(a).expanduser()), os.stat(Path(b).expanduser())
    except (OSError, ValueError):
        try:
            return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


#: errnos of a failed write that :func:`atomic_path` turns into ``OutputError`` (other OSErrors are the caller's).
WRITE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG", "EIO", "EACCES", "EPERM") if hasattr(errno, n))


def _output_error(path: Path, e: OSError) -> OutputError:
    return OutputError(f"cannot write '{path}': {e.strerror or ' '.join(str(e).split())}", e)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """The one way files are replaced: yields a temporary ``.NAME.*SUFFIX`` beside ``path``; when the block ends it is
    (optionally) fsynced, given 0666 minus the umask and renamed over ``path``; on an exception it is removed.
    A failed write (:data:`WRITE_ERRNOS`, creating, fsync, rename) raises ``OutputError`` naming ``path``."""
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
            os.umask(umask := os.umask(0))  # reading the umask means setting it
            with suppress(OSError):  # a file system without Unix permissions: keep mkstemp's
                os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except OSError as e:
            raise _output_error(path, e) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """UTF-8 whatever the locale; surrogate escapes of non-UTF-8 file names are written back as the original bytes."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json_text(obj, indent=2) + "\n")


#: First characters that make a spreadsheet read a cell as a formula (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value):
    """A string starting with one of :data:`FORMULA_STARTS` or a quote gets a leading quote (OWASP): a spreadsheet
    shows it as text and :func:`read_csv` undoes it."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS + ("'",)) else value


def read_csv(path: str | Path, delimiter: str = ",") -> list[list[str]]:
    """The rows :func:`write_csv` was given."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return [[v[1:] if v.startswith("'") else v for v in row] for row in csv.reader(f, delimiter=delimiter)]


def write_csv(path: str | Path, header: list[str] | None, rows: Iterable[Iterable], delimiter: str = ",", neutralise: bool = True) -> None:
    """Written atomically, string cells :func:`neutralise_cell`-ed (``neutralise=False``: a machine format kept exact)."""
    fix = neutralise_cell if neutralise else (lambda v: v)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n" if delimiter == "\t" else "\r\n")
    if header is not None:
        w.writerow([fix(v) for v in header])
    w.writerows([fix(v) for v in row] for row in rows)
    atomic_write_text(path, buf.getvalue())
