"""Output helpers shared by the commands: Rich consoles, tables, JSON/CSV writers."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from rich.console import Console

MIN_PIPE_WIDTH = 160


def console(stderr: bool = False) -> Console:
    """A Rich console; when output is not a terminal (pipes, logs, CI) tables get a wide
    page instead of Rich's 80-column default, so names are not cut."""
    c = Console(stderr=stderr)
    if not c.is_terminal:
        c.width = max(c.width, MIN_PIPE_WIDTH)
    return c


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_csv(path: str | Path, header: list[str], rows: Iterable[Iterable]) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
