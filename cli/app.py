"""Entry point: the Typer app, one lazily imported module per command. A user's error (``HieraVideoError``, a full
disk ...) is one line and exit 2; any other exception is a bug: one line, exit 3 (``--debug``: the traceback)."""

import errno
import importlib
import logging
import math
import os
import signal
import sys
import threading
import traceback
import typing
from pathlib import Path

import typer

from hiera_video import __version__
from hiera_video.errors import HieraVideoError, Interrupted, short

try:  # typer >= 0.2x carries its own copy of click and no longer installs click
    from typer import Abort, BadParameter
    from typer._click.exceptions import ClickException
except ImportError:  # older typer runs on click
    from click.exceptions import Abort, BadParameter, ClickException

#: Exit codes (README, "Commands"): 0 done; 1 some inputs failed; 2 user error; 3 a bug; 130 interrupted.
EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 2, 3
#: OSErrors that are the machine's or the user's to fix, reported in one line as user errors; others are internal.
FILE_SYSTEM_ERRNOS = frozenset(getattr(errno, n) for n in (
    "ENOSPC EDQUOT EROFS EACCES EPERM ENOENT ENOTDIR EISDIR ENAMETOOLONG EFBIG EIO EEXIST EXDEV EMFILE ENFILE ELOOP ENOTEMPTY EBUSY ETXTBSY"
).split() if hasattr(errno, n))

#: The commands, in --help order: each is the function of its name in the module hiera_video.cli.<name with _ for ->.
COMMANDS = ("demo", "predict", "eval", "finetune", "pretrain", "reconstruct", "score", "report", "score-ava", "ava-proposals",
            "check-videos", "synth", "extract", "export", "doctor", "models", "benchmark")
_FUNCTIONS = {"eval": "eval_command"}


def _err(text: str, args=()) -> None:
    """One line on stderr (after the traceback if ``args`` has --debug); ``text`` is Rich markup (user strings ``safe``)."""
    from rich.console import Console

    if "--debug" in args:
        traceback.print_exc()
    Console(stderr=True).print(text, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        print(f"hiera-video {__version__}")
        raise typer.Exit()


def _help(ctx: typer.Context, value: bool) -> None:
    """The root's own --help: typer's is None when absent, and coercing it imported pydantic for every `CMD --help`."""
    if value:
        print(ctx.get_help())
        raise typer.Exit()


class _LogHandler(logging.Handler):
    """Rich's log handler, made on the first record (`CMD --help` imports no rich); control characters escaped."""

    rich = None

    def emit(self, record: logging.LogRecord) -> None:
        from hiera_video.report import visible

        if self.rich is None:
            from rich.console import Console
            from rich.logging import RichHandler

            self.rich = RichHandler(console=Console(stderr=True), show_path=False, show_time=False)  # markup off
        record.msg, record.args = visible(record.getMessage()), None
        self.rich.emit(record)


def root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    help_: bool = typer.Option(False, "--help", callback=_help, is_eager=True, help="Show this message and exit."),
) -> None:
    log = logging.getLogger("hiera_video")
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.handlers[:] = [_LogHandler()]
    log.propagate = False


def make_app(names=COMMANDS) -> typer.Typer:
    """The app with the commands ``names``; click's plain help (typer's rich help doubles the start-up time)."""
    app = typer.Typer(name="hiera-video", help="Run, evaluate, finetune and pretrain Hiera on video.", no_args_is_help=True,
                      add_completion=False, rich_markup_mode=None, context_settings={"max_content_width": 120}, pretty_exceptions_enable=False)
    app.callback()(root)
    for name in names:
        module = importlib.import_module(f"hiera_video.cli.{name.replace('-', '_')}")
        app.command(name)(getattr(module, _FUNCTIONS.get(name, name.replace("-", "_"))))
    return app


def __getattr__(name):
    """``app``, the Typer app with every command, made on first use (``main`` makes only what ``argv`` needs)."""
    if name == "app":
        globals()["app"] = make_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _reject_non_finite(inner):
    """A parameter callback (chained before ``inner``) refusing NaN and infinite numbers."""

    def check(ctx, param, value):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise BadParameter(f"{v} is not a finite number", ctx=ctx, param=param)
        return inner(ctx, param, value) if inner is not None else value

    return check


def _annotation(param):
    if (desc := getattr(param, "type_descriptor", None)) is not None:
        return desc.annotation
    kind = getattr(getattr(param, "type", None), "name", "")  # click-based typer
    return {"text": str, "integer": int, "float": float, "integer range": int, "float range": float, "path": Path}.get(kind)


#: Metavars by Python type, in place of typer's "<str>", "<int range>" type tags.
_METAVARS = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}


def harden(command) -> None:
    """Float options refuse NaN/inf; help gets plain metavars (no typer "<str>" tags) and no flag "[default: no-...]"."""
    for sub in getattr(command, "commands", {}).values():
        harden(sub)
    for param in getattr(command, "params", []):
        annotation = _annotation(param)
        inner_type = (typing.get_args(annotation) or [None])[0] if typing.get_origin(annotation) in (list, tuple) else annotation
        if inner_type is float:
            param.callback = _reject_non_finite(param.callback)
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx=None: None  # typer has no option for it; the name and help say it
        elif getattr(param, "is_flag", False):
            param.metavar = ""
            param.show_default = param.default not in (False, None)  # off is what a flag means when absent
        elif param.metavar is None and inner_type in _METAVARS:
            param.metavar = _METAVARS[inner_type]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    # Only the commands argv needs: the one it names; none for `--version` or a root usage error; else all.
    name = next((a for a in args if not a.startswith("-")), None)
    names = [name] if name in COMMANDS else [] if args and name is None and "--help" not in args else COMMANDS
    command = typer.main.get_command(make_app(names))
    harden(command)
    # SIGINT raises KeyboardInterrupt even where it was inherited as ignored (`cmd &` in a non-interactive shell)
    previous_sigint = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _run(command, args)
    except SystemExit as e:  # after DDP, PyTorch's gloo threads outlive the group: the interpreter's teardown can abort
        if getattr(getattr(sys.modules.get("hiera_video.engine.distributed"), "World", None), "left_group", False):
            sys.stdout.flush(), sys.stderr.flush(), os._exit(e.code or 0)  # a torchrun rank's code, without that teardown
        raise
    finally:  # main() called in a process that goes on (tests, scripts): its handler back
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)


def _run(command, args: list[str]) -> typing.NoReturn:
    """Run ``command`` with ``args`` and exit with the README's exit code."""
    from hiera_video.report import safe  # (imports no rich)
    try:
        code = command.main(args=args, prog_name="hiera-video", standalone_mode=False)
    except ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (Abort, KeyboardInterrupt):
        _err("interrupted")
        sys.exit(130)
    except Interrupted as e:
        _err(f"interrupted: {safe(str(e))}")
        sys.exit(e.exit_code)
    except HieraVideoError as e:
        _err(f"[bold red]error:[/] {safe(str(e))}", args)
        sys.exit(EXIT_USER_ERROR)
    except OSError as e:
        if e.errno not in FILE_SYSTEM_ERRNOS:
            _internal_error(e, args)
        where = "".join(f"{name}: " for name in (e.filename, e.filename2) if name)
        _err(f"[bold red]error:[/] {safe(where)}{safe(e.strerror or str(e))}", args)
        sys.exit(EXIT_USER_ERROR)
    except Exception as e:  # a bug, not something the user did: its own exit code
        _internal_error(e, args)
    sys.exit(code if isinstance(code, int) else 0)


def _internal_error(e: BaseException, args: list[str]) -> typing.NoReturn:
    """An uncaught exception: one line saying it is a bug (the traceback with ``--debug``), exit 3."""
    from hiera_video.report import safe

    text = short(e, 300)
    _err(f"[bold red]internal error:[/] {type(e).__name__}{': ' if text else ''}{safe(text)} "
         "(a bug in hiera-video; rerun with --debug for the traceback and report it)", args)
    sys.exit(EXIT_INTERNAL_ERROR)


if __name__ == "__main__":
    main()
