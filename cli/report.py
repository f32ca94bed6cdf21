"""``hiera-video report DIR``: (re)build ``DIR/report.html`` from an ``eval --output`` folder or a training run folder."""

import time
from pathlib import Path

import typer


def report(
    folder: Path = typer.Argument(..., help="An eval --output folder or a finetune/pretrain run folder."),
    frames: bool = typer.Option(True, "--frames/--no-frames", help="Decode the worst mistakes' clips again (from their paths) for the frame strips."),
) -> None:
    """Build FOLDER/report.html: one self-contained page (no network) with the results, the protocol and the mistakes."""
    from hiera_video.html_report import build_report
    from hiera_video.report import check_output, console, safe

    check_output(folder / "report.html", "report", "file")
    t0 = time.perf_counter()
    path = build_report(folder, decode=frames)
    console().print(f"wrote {safe(path)} ({path.stat().st_size / 1024:.0f} KB, {time.perf_counter() - t0:.1f} s)", highlight=False, soft_wrap=True)
