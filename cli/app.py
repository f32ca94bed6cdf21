"""Entry point: builds the Typer app from one small module per command.

Errors a user can cause (``HieraVideoError``) are printed as one line and exit non-zero;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

from hiera_video import __version__
from hiera_video.cli import (
    ava_proposals, benchmark, check_videos, demo, doctor, eval, export, extract, finetune, models, predict, pretrain, reconstruct, score,
    score_ava, synth,
)
from hiera_video.errors import HieraVideoError, Interrupted

try:  # typer >= 0.2x carries its own copy of click and no longer installs click
    from typer import Abort
    from typer._click.exceptions import ClickException
except ImportError:  # older typer runs on click
    from click.exceptions import Abort, ClickException

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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="hiera-video", standalone_mode=False)
    except ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except Interrupted as e:
        err.print(f"interrupted: {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except HieraVideoError as e:
        if "--debug" in args:
            raise
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
