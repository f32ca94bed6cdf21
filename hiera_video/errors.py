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
