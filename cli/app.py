"""Entry point: builds the Typer app from one small module per command.

Errors a user can cause (``HieraVideoError``) are printed as one line and exit non-zero;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import math
import sys
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
    score_ava, synth,
)
from hiera_video.errors import HieraVideoError, Interrupted

try:  # typer >= 0.2x carries its own copy of click and no longer installs click
    from typer import Abort, BadParameter
    from typer._click.exceptions import ClickException
except ImportError:  # older typer runs on click
    from click.exceptions import Abort, BadParameter, ClickException

err = Console(stderr=True)

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


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    log = logging.getLogger("hiera_video")
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.handlers[:] = [RichHandler(console=err, show_path=False, show_time=False)]
    log.propagate = False


app.command("demo")(demo.demo)
app.command("predict")(predict.predict)
app.command("eval")(eval.eval_command)
app.command("finetune")(finetune.finetune)
app.command("pretrain")(pretrain.pretrain)
app.command("reconstruct")(reconstruct.reconstruct)
app.command("score")(score.score)
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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    harden(command)
    try:
        code = command.main(args=args, prog_name="hiera-video", standalone_mode=False)
    except ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except Interrupted as e:
        err.print(f"interrupted: {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except HieraVideoError as e:
        if "--debug" in args:
            raise
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # text, not markup
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
