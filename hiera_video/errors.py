"""The one exception type for problems a user can cause and fix: the CLI prints it as one line
(no traceback unless ``--debug``) and exits non-zero."""

import re


class HieraVideoError(Exception):
    """A user-facing error: bad path, corrupt video, wrong checkpoint, bad config."""


class Interrupted(HieraVideoError):
    """A long command stopped by SIGINT/SIGTERM after saving its state; exit code 130."""
    exit_code = 130


class OutputError(HieraVideoError, OSError):
    """An output file that could not be written: one line naming the file; also an ``OSError``
    with the cause's ``errno``/``strerror``, so ``except OSError`` keeps working."""
    def __init__(self, message: str, cause: OSError | None = None):
        super().__init__(message)
        self.errno, self.strerror = getattr(cause, "errno", None), getattr(cause, "strerror", None)

    def __str__(self) -> str:  # not OSError's "[Errno N] strerror"
        return str(self.args[0])


def short(text: object, limit: int = 200) -> str:
    """``str(text)`` as one line: whitespace runs and ANSI colour codes collapsed, cut to ``limit`` ("..." at the end)."""
    line = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(text)[: limit * 4]).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
