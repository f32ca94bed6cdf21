"""Entry point: builds the Typer app from one small module per command.

Errors a user can cause (``HieraVideoError``, file-system errors such as a full disk) are
printed as one line and exit 2; any other exception is a bug: one line, exit 3. ``--debug``
adds the traceback. A SIGINT disposition of "ignore" inherited from the caller is reset, so
SIGINT stops every command the same way (:func:`_take_sigint`).
"""

from __future__ import annotations

import errno
import logging
import math
import signal
import sys
import threading
import traceback
import typing
from pathlib import Path
from types import SimpleNamespace

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from hiera_video import __version__
from hiera_video.cli import (
    ava_proposals, benchmark, check_videos, demo, doctor, eval, export, extract, finetune, models, predict, pretrain, reconstruct, score,
    report, score_ava, synth,
)
from hiera_video.errors import HieraVideoError, Interrupted
from hiera_video.report import safe, visible

try:  # typer >= 0.2x carries its own copy of click and no longer installs click
    from typer import Abort, BadParameter
    from typer._click.exceptions import ClickException
except ImportError:  # older typer runs on click
    from click.exceptions import Abort, BadParameter, ClickException

err = Console(stderr=True)

#: Exit codes (README, "Commands"): 0 done; 1 results written, some inputs failed (the batch
#: commands return it); 2 a usage or user-fixable error (HieraVideoError, click usage errors,
#: a file-system error such as a full disk); 3 an internal error (an uncaught exception: a bug);
#: 130 interrupted.
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3
#: OSErrors that are the machine's or the user's to fix (a full disk, a read-only or missing
#: path, no permission), reported in one line as user errors; other OSErrors are internal.
FILE_SYSTEM_ERRNOS = frozenset(getattr(errno, n) for n in (
    "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ENOENT", "ENOTDIR", "EISDIR", "ENAMETOOLONG", "EFBIG", "EIO",
    "EEXIST", "EXDEV", "EMFILE", "ENFILE", "ELOOP", "ENOTEMPTY", "EBUSY", "ETXTBSY",
) if hasattr(errno, n))

app = typer.Typer(
    name="hiera-video",
    help="Run, evaluate, finetune and pretrain Hiera on video.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"hiera-video {__version__}")
        raise typer.Exit()


def _visible_record(record: logging.LogRecord) -> bool:
    """Log messages carry file and class names: their control characters are shown as
    escapes, never sent to the terminal (see :func:`hiera_video.report.visible`)."""
    record.msg, record.args = visible(record.getMessage()), None
    return True


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    log = logging.getLogger("hiera_video")
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    handler = RichHandler(console=err, show_path=False, show_time=False)  # markup off: names are text
    handler.addFilter(_visible_record)
    log.handlers[:] = [handler]
    log.propagate = False


app.command("demo")(demo.demo)
app.command("predict")(predict.predict)
app.command("eval")(eval.eval_command)
app.command("finetune")(finetune.finetune)
app.command("pretrain")(pretrain.pretrain)
app.command("reconstruct")(reconstruct.reconstruct)
app.command("score")(score.score)
app.command("report")(report.report)
app.command("score-ava")(score_ava.score_ava)
app.command("ava-proposals")(ava_proposals.ava_proposals)
app.command("check-videos")(check_videos.check_videos)
app.command("synth")(synth.synth)
app.command("extract")(extract.extract)
app.command("export")(export.export)
app.command("doctor")(doctor.doctor)
app.command("models")(models.models)
app.command("benchmark")(benchmark.benchmark)


# Option metavars by Python type: flags take no value and show none (typer's help showed
# <bool>, <int>, <str> type tags on every option, flags included).
_METAVARS = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}


def _reject_non_finite(inner):
    """A parameter callback (chained before ``inner``) refusing NaN and infinite numbers:
    every float option is a count of seconds, a rate or a threshold; none has a meaning for them."""

    def check(ctx, param, value):
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise BadParameter(f"{v} is not a finite number", ctx=ctx, param=param)
        return inner(ctx, param, value) if inner is not None else value

    return check


def _annotation(param):
    desc = getattr(param, "type_descriptor", None)
    if desc is not None:
        return desc.annotation
    kind = getattr(getattr(param, "type", None), "name", "")  # click-based typer
    return {"text": str, "integer": int, "float": float, "integer range": int, "float range": float, "path": Path}.get(kind)


def harden(command) -> None:
    """One pass over every command's parameters: finite numbers only; help that reads right
    (flags without a type tag and without a "[default: no-...]", value options with one plain
    metavar, and help texts whose "[...]" is text, not rich markup: "Model name [default: x]."
    was shown as "Model name .")."""
    for sub in getattr(command, "commands", {}).values():
        harden(sub)
    if getattr(command, "help", None):
        command.help = escape(command.help)
    params = list(getattr(command, "params", []))
    try:  # --help itself (created on demand and cached by click >= 8.2 and typer's copy)
        help_option = command.get_help_option(SimpleNamespace(help_option_names=["--help"]))
        if help_option is not None and help_option is command.get_help_option(SimpleNamespace(help_option_names=["--help"])):
            params.append(help_option)
    except Exception:  # pragma: no cover - other click versions
        pass
    for param in params:
        annotation = _annotation(param)
        inner_type = (typing.get_args(annotation) or [None])[0] if typing.get_origin(annotation) in (list, tuple) else annotation
        if inner_type is float:
            param.callback = _reject_non_finite(param.callback)
        if getattr(param, "help", None):
            param.help = escape(param.help)
        if getattr(param, "param_type_name", "") == "argument":
            if hasattr(param, "display_type_rich"):
                param.display_type_rich = lambda ctx=None: None  # the name and the help say it
        elif getattr(param, "is_flag", False):
            param.metavar = ""
            if param.default is False or param.default is None:
                param.show_default = False  # off is what a flag means when absent
        elif param.metavar is None and inner_type in _METAVARS:
            param.metavar = _METAVARS[inner_type]


def _take_sigint():
    """Make SIGINT raise KeyboardInterrupt, as it does when Python starts with SIGINT at its
    default. A process started with SIGINT ignored (a background job ``cmd &`` of a
    non-interactive shell) inherits "ignore", Python then installs no handler, and ``kill -INT`` (or
    Ctrl-C reaching the process group) did nothing: ``predict`` and ``eval`` ran on instead of
    writing their partial results and exiting 130. Every command now stops on SIGINT the same
    way however it was started (training installs its own handler as well). Returns the
    previous handler for :func:`main` to put back (None: nothing changed)."""
    if threading.current_thread() is not threading.main_thread():
        return None  # handlers can only be set in the main thread
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:
        return None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return previous


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    harden(command)
    previous_sigint = _take_sigint()
    try:
        _run(command, args)
    finally:  # main() called in a process that goes on (tests, scripts): its handler back
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)


def _run(command, args: list[str]) -> typing.NoReturn:
    """Run ``command`` with ``args`` and exit with the code of the README's exit-code rule."""
    try:
        code = command.main(args=args, prog_name="hiera-video", standalone_mode=False)
    except ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except Interrupted as e:
        err.print(f"interrupted: {safe(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except HieraVideoError as e:
        if "--debug" in args:
            traceback.print_exc()
        err.print(f"[bold red]error:[/] {safe(str(e))}", highlight=False, soft_wrap=True)  # text, not markup
        sys.exit(EXIT_USER_ERROR)
    except OSError as e:
        if e.errno not in FILE_SYSTEM_ERRNOS:
            _internal_error(e, args)
        if "--debug" in args:
            traceback.print_exc()
        where = "".join(f"{name}: " for name in (e.filename, e.filename2) if name)
        err.print(f"[bold red]error:[/] {safe(where)}{safe(e.strerror or str(e))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except Exception as e:  # a bug, not something the user did: its own exit code
        _internal_error(e, args)
    sys.exit(code if isinstance(code, int) else 0)


def _internal_error(e: BaseException, args: list[str]) -> typing.NoReturn:
    """An uncaught exception: one line saying it is an internal error (the traceback with
    ``--debug``), exit code :data:`EXIT_INTERNAL_ERROR` (never 1, which means "results written,
    some inputs failed")."""
    if "--debug" in args:
        traceback.print_exc()
    text = " ".join(str(e).split())[:300]
    err.print(f"[bold red]internal error:[/] {type(e).__name__}{': ' if text else ''}{safe(text)} "
              "(a bug in hiera-video; rerun with --debug for the traceback and report it)", highlight=False, soft_wrap=True)
    sys.exit(EXIT_INTERNAL_ERROR)


if __name__ == "__main__":
    main()
