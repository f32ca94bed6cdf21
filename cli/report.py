"""``hiera-video report DIR``: (re)build ``DIR/report.html`` from the files of an ``eval
--output`` folder (also ``--dataset ava``) or a ``finetune``/``pretrain`` run folder."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from hiera_video.report import check_output, console, safe


def report(
    folder: Path = typer.Argument(..., help="An eval --output folder or a finetune/pretrain run folder."),
    frames: bool = typer.Option(True, "--frames/--no-frames",
                                help="Decode the worst mistakes' clips again (from their paths) for the frame strips."),
) -> None:
    """Build FOLDER/report.html: one self-contained page (no network) with the results, the protocol and the mistakes."""
    from hiera_video.html_report import build_report

    check_output(folder / "report.html", "report", "file")
    t0 = time.perf_counter()
    path = build_report(folder, decode=frames)
    size = path.stat().st_size
    console().print(f"wrote {safe(path)} ({size / 1024:.0f} KB, {time.perf_counter() - t0:.1f} s)", highlight=False,
                    soft_wrap=True)
