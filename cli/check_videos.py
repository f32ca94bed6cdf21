"""``hiera-video check-videos``: find missing, empty, corrupt and hanging videos of a dataset."""

import os
import time
from pathlib import Path

import typer

from hiera_video.cli import options
from hiera_video.errors import HieraVideoError


def build_dataset(*args, **kwargs):
    from hiera_video.data import datasets  # when it runs, not for --help

    return datasets.build_dataset(*args, **kwargs)


def check_videos(
    dataset: str = options.dataset(default=...),
    root: Path = typer.Option(..., "--root", help="Dataset folder (annotation paths are relative to it)."),
    annotations: Path = typer.Option(None, "--annotations", help="Annotation file (default: looked for under --root)."),
    split: str = typer.Option("val", "--split", help="Split to check: train, val or test."),
    labels: str = typer.Option(None, "--labels", help="Class names file or built-in set (list/folder datasets)."),
    workers: int = typer.Option(0, "--workers", min=0, help="Parallel checker processes (0 = one per CPU core)."),
    backend: str = options.backend(),
    output: Path = typer.Option(None, "--output", help="Write the bad files here: path<TAB>reason per line."),
    decode: bool = typer.Option(True, "--decode/--no-decode", help="Decode the first and last frame (else only open)."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.001, help="Seconds one file may take before it counts as hanging."),
    limit: int = typer.Option(None, "--limit", min=0, help="Check only the first N videos."),
    as_json: bool = options.as_json("Print a JSON summary instead of tables."),
) -> None:
    """Open every video of a dataset (in parallel) and list the ones that cannot be used. Exits 1 if any is bad."""
    from hiera_video.data.check import CATEGORIES, FileResult, check_dataset, write_bad_list
    from hiera_video.report import check_output, console, json_text, progress_bar, safe

    if backend not in ("auto", "decord", "pyav"):
        raise HieraVideoError(f"unknown --backend '{backend}'; use auto, decord or pyav")
    check_output(output, "--output", inputs=[("--annotations", annotations), ("--labels", labels)])
    ds = build_dataset(dataset, root, annotations=annotations, split=split, labels=labels, limit=limit)
    out, err = console(), console(stderr=True)
    n_workers = workers if workers > 0 else (os.cpu_count() or 1)
    total = len(ds.items)
    with progress_bar("[bold]checking videos", "{task.fields[rate]}", "bad: {task.fields[bad]}", console=err, transient=False,
                      disable=as_json or total == 0) as progress:
        task = progress.add_task("check", total=total, bad=0, rate="")
        state = {"bad": 0, "n": 0}
        t0 = time.monotonic()

        def tick(result: FileResult) -> None:
            state["n"] += 1
            state["bad"] += not result.ok
            dt = max(time.monotonic() - t0, 1e-6)
            progress.update(task, advance=1, bad=state["bad"], rate=f"{state['n'] / dt:.1f} videos/s")

        report = check_dataset(ds, workers=n_workers, backend=backend, decode=decode, timeout=timeout, progress=tick)
    bad = report.bad
    if output is not None:
        write_bad_list(output, bad)
    summary = {**report.summary(), "dataset": ds.summary(), "bad_list": str(output) if output else None}
    if as_json:
        summary["bad_files"] = [{"path": r.path, "status": r.status, "reason": r.reason} for r in bad]
        print(json_text(summary, indent=2))
    else:
        from rich.table import Column, Table

        counts = report.counts()
        table = Table("result", Column("videos", justify="right"),
                      title=f"check-videos: {safe(ds.name)}" + (f" ({safe(ds.split)})" if ds.split else ""))
        table.add_row("[green]ok[/]", str(counts.get("ok", 0)))
        for cat in CATEGORIES:
            if counts.get(cat):
                table.add_row(f"[red]{cat}[/]", str(counts[cat]))
        table.add_row("[bold]total[/]", str(len(report.results)))
        out.print(table)
        if bad:
            examples = Table(Column("file", overflow="fold"), Column("reason", overflow="fold"),
                             title=f"Bad files (first {min(10, len(bad))} of {len(bad)})")
            for r in bad[:10]:
                examples.add_row(safe(r.path), safe(r.reason))
            out.print(examples)
        for note in ds.warnings:
            err.print(f"[yellow]note:[/] {safe(note)}", highlight=False)
        if output is not None:
            out.print(f"bad files written to {safe(output)}" if bad else f"no bad files; wrote an empty list to {safe(output)}", highlight=False)
        out.print(f"checked {len(report.results)} videos under {safe(ds.root)} in {report.seconds:.1f} s "
                  f"with {min(n_workers, max(total, 1))} worker(s)", highlight=False)
    if bad:
        raise typer.Exit(1)
