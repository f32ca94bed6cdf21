"""Output helpers shared by the commands: Rich consoles, tables, JSON/CSV writers."""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from rich.console import Console
from rich.markup import escape

from hiera_video.errors import HieraVideoError, OutputError

MIN_PIPE_WIDTH = 160

#: Control characters (C0, DEL, C1) and the lone surrogates of undecodable file-name bytes
#: (``os.fsdecode``): shown as escapes by :func:`safe`, never sent to the terminal raw.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _visible(m: re.Match) -> str:
    c = m.group()
    if 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that was not UTF-8: shown as that byte
        return f"\\x{ord(c) - 0xDC00:02x}"
    return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def visible(value) -> str:
    """``str(value)`` with control characters and undecodable file-name bytes shown as
    escapes (``\\x1b``, ``\\n``, ``\\xff``): for text printed without markup (log records)."""
    return _UNPRINTABLE.sub(_visible, str(value))


def safe(value) -> str:
    """``value`` (a path, class name, reason...: anything a user or a file chose) as text
    for Rich to print literally: markup escaped (``[/b]`` in a name neither raises Rich's
    MarkupError nor styles anything; ``[red]x.mp4`` shows as written) and control
    characters (ESC, newline, TAB...) and undecodable file-name bytes shown as ``\\xNN``
    / ``\\n`` escapes, so no name can move the cursor, recolour or forge output lines.
    Every user string in a ``console.print`` f-string, a Table cell or title, or a progress
    field goes through it."""
    return escape(visible(value))


def jsonable(obj):
    """``obj`` with every non-finite float (NaN, +-Infinity) replaced by None: JSON has no
    such numbers (Python's ``json`` writes ``NaN``/``Infinity``, which strict parsers reject),
    so a value that does not exist (e.g. the mAP of a group without ground truth, the PSNR
    of a reconstruction with nothing masked) is written ``null``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def json_text(obj, **kwargs) -> str:
    """Strict JSON text of ``obj`` (:func:`jsonable`; ``json.dumps`` keyword arguments)."""
    return json.dumps(jsonable(obj), allow_nan=False, **kwargs)


def print_json(obj, indent: int | None = 2) -> None:
    """Print ``obj`` as strict JSON to stdout (the ``--json`` output of every command)."""
    print(json_text(obj, indent=indent))


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


def check_output(path: str | Path | None, option: str = "--output", kind: str = "file",
                 inputs: Iterable[tuple[str, str | Path | None]] = (), writes: Iterable[str] = ()) -> Path | None:
    """Refuse an output path that cannot be written, before any work is done (so a long run
    never ends with a traceback and its results lost). ``kind``: ``"file"`` or ``"dir"``
    (a folder the command creates or fills). Checked: an existing path of the wrong kind (a
    folder where a file is expected or the other way round), a path under a file, a name too
    long for the file system, and that a file can really be created (and is removed again)
    in the folder that will hold it (the nearest existing one when folders are to be
    created): ``os.access`` answers yes to root everywhere, ``/proc`` and ``/sys`` included,
    and knows nothing of read-only mounts or quotas. Returns the path (None stays None);
    raises :class:`~hiera_video.errors.HieraVideoError` with one line naming ``option``.

    ``inputs``: ``(option, path)`` of the files the command reads (None paths are skipped):
    an output that is one of them (:func:`same_file`: also through a symlink or a hard link)
    is refused, so no command ever writes over what it reads (``export --weights m.pt -o
    m.pt``). For a folder, ``writes`` names the files the command writes in it, each
    checked the same way."""
    if path is None:
        return None
    raw = str(path)
    p = Path(raw).expanduser()

    def fail(problem: str):
        raise HieraVideoError(f"cannot write {option} '{raw}': {problem}; pass a path you can write to")

    if not raw.strip():
        fail("the path is empty")
    inputs = [(what, i) for what, i in inputs if i is not None and str(i).strip()]
    for target in ([p / name for name in writes] if kind == "dir" else [p]):
        for what, i in inputs:
            if same_file(target, i):
                shown = "it" if target == p else f"its file '{target.name}'"
                raise HieraVideoError(f"cannot write {option} '{raw}': {shown} is the input {what} '{i}' (the same file), "
                                      "which would be destroyed; write to another path")
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


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same device and inode when both exist (a
    symlink or a hard link to it counts), else the same path once made absolute with links
    resolved."""
    try:
        sa, sb = os.stat(Path(a).expanduser()), os.stat(Path(b).expanduser())
    except (OSError, ValueError):
        try:
            return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


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
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`) as UTF-8, whatever the
    locale. File names that are not valid UTF-8 reach Python as surrogate escapes
    (``os.fsdecode``: byte 0xFF is ``"\\udcff"``); ``errors="surrogateescape"`` writes them
    back as the original bytes, so a name in a text or CSV file is the name on disk, byte for
    byte (JSON files are ASCII: such a name is the escape ``"\\udcff"``, which ``json.loads``
    and ``os.fsencode`` turn back into the same bytes)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` to ``path`` atomically as strict JSON (non-finite floats: null, :func:`jsonable`)."""
    atomic_write_text(path, json_text(obj, indent=2) + "\n")


#: First characters that make a spreadsheet read a cell as a formula (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value):
    """A CSV cell that a spreadsheet shows as text: a string starting with one of
    :data:`FORMULA_STARTS` gets a leading single quote, as OWASP recommends (``=cmd|...``
    becomes ``'=cmd|...``), and so does one that already starts with a quote, so removing one
    leading quote from a cell that has one always gives the original back. Numbers (a negative
    accuracy delta, a -1 label) are not strings and stay as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS + ("'",)):
        return "'" + value
    return value


def restore_cell(value: str) -> str:
    """The cell :func:`neutralise_cell` was given (one leading quote removed)."""
    return value[1:] if value.startswith("'") else value


def read_csv(path: str | Path, delimiter: str = ",") -> list[list[str]]:
    """The rows of a CSV file :func:`write_csv` wrote (header first, if it has one), as they
    were given to it: neutralised cells restored (:func:`restore_cell`) and names that are
    not UTF-8 back as surrogate escapes (``errors="surrogateescape"``)."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return [[restore_cell(v) for v in row] for row in csv.reader(f, delimiter=delimiter)]


def write_csv(path: str | Path, header: list[str] | None, rows: Iterable[Iterable], delimiter: str = ",",
              neutralise: bool = True) -> None:
    """A CSV file (every cell quoted as needed by Python's ``csv`` module, so a TAB, comma,
    quote or newline in a name stays inside its cell) for people to open: string cells that a
    spreadsheet would run as a formula are neutralised (:func:`neutralise_cell`; pass
    ``neutralise=False`` for a machine format that must stay exact). Written with
    :func:`atomic_write_text` (names that are not UTF-8 keep their bytes)."""
    fix = neutralise_cell if neutralise else (lambda v: v)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n" if delimiter == "\t" else "\r\n")
    if header is not None:  # None: no header line
        w.writerow([fix(v) for v in header])
    w.writerows([fix(v) for v in row] for row in rows)
    atomic_write_text(path, buf.getvalue())
