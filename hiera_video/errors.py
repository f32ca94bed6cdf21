"""The one exception type for problems a user can cause and fix.

The CLI prints ``HieraVideoError`` as a single line (no traceback unless ``--debug``)
and exits non-zero. Library code raises it with a message that says what is wrong and
what to do about it.
"""


class HieraVideoError(Exception):
    """A user-facing error: bad path, corrupt video, wrong checkpoint, bad config."""


class Interrupted(HieraVideoError):
    """A long command stopped by SIGINT/SIGTERM after saving its state; exit code 130."""

    exit_code = 130


class OutputError(HieraVideoError, OSError):
    """An output file that could not be written (a full disk, a read-only file system, no
    permission): one line naming the file, like every ``HieraVideoError``. It is an
    ``OSError`` as well, with the original ``errno`` and ``strerror``, so code that handles
    failed writes (``except OSError``) keeps working. ``str()`` is the message alone."""

    def __init__(self, message: str, cause: OSError | None = None):
        super().__init__(message)
        self.errno = getattr(cause, "errno", None)
        self.strerror = getattr(cause, "strerror", None)

    def __str__(self) -> str:  # OSError's own would print "[Errno N] strerror" instead
        return str(self.args[0])
