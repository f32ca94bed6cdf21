"""``hiera-video predict PATH...``: top-k classes of video files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from hiera_video.engine.inference import load_classifier, parse_views
from hiera_video.engine.predict import Result, expand_inputs, plot_timeline, predict_paths
from hiera_video.errors import HieraVideoError
from hiera_video.report import console, write_csv, write_json


def predict(
    paths: List[str] = typer.Argument(..., help="Video files, directories or glob patterns."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name [default: hiera_base_16x224, or the one a checkpoint names]."),
    weights: Optional[str] = typer.Option(None, "--weights", "-w", help="Zoo tag, URL or checkpoint path [default: the model's official Kinetics-400 weights]."),
    labels: Optional[str] = typer.Option(None, help="Class-name file (.txt one per line, or .json) or a built-in set (kinetics400, ...)."),
    views: str = typer.Option("1x1", help="Temporal x spatial views, e.g. 5x3 (the Kinetics protocol)."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    dtype: str = typer.Option("auto", help="auto (bf16 where the hardware has it) | fp32 | bf16 | fp16"),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Views per forward pass."),
    backend: str = typer.Option("auto", help="Video decoder: auto | decord | pyav"),
    window: Optional[float] = typer.Option(None, help="Timeline: window length in seconds (whole video when omitted)."),
    stride: Optional[float] = typer.Option(None, help="Timeline: seconds between window starts [default: --window]."),
    plot: Optional[Path] = typer.Option(None, help="Timeline: PNG plot (one file per video: NAME gets the video's stem appended when several videos)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array to stdout (no tables)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write results to a .json or .csv file."),
    allow_random_weights: bool = typer.Option(False, help="Allow --weights none (random init; for testing pipelines)."),
) -> int:
    """Classify videos: multi-view testing decodes each video once; bad files are reported and skipped."""
    if stride is not None and window is None:
        raise HieraVideoError("--stride needs --window (the timeline window length in seconds)")
    if output is not None and output.suffix.lower() not in (".json", ".csv"):
        raise HieraVideoError(f"--output must end in .json or .csv, got '{output}'")
    t_views, s_views = parse_views(views)
    video_paths, failures = expand_inputs(paths)
    out = console(stderr=as_json)
    err = console(stderr=True)
    for bad in failures:
        err.print(f"[red]error:[/] {bad.error}", highlight=False, soft_wrap=True)
    results: list[Result] = list(failures)
    if video_paths:
        clf = load_classifier(model, weights, labels, device, dtype, allow_random_weights)
        protocol = clf.protocol((t_views, s_views), backend=backend)
        progress = Progress(
            TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[name]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=out, transient=True,
        )
        with progress:
            task = progress.add_task("predict", total=len(video_paths), name="")
            for r in predict_paths(clf, protocol, video_paths, batch_size, top_k, window, stride):
                progress.update(task, advance=1, name=Path(r.path).name)
                results.append(r)
                if not r.ok:
                    err.print(f"[red]error:[/] {r.error}", highlight=False, soft_wrap=True)
                elif not as_json:
                    out.print(result_table(r))
                    if r.timeline:
                        out.print(_timeline_table(r))
                if r.ok and plot is not None and r.timeline:
                    png = plot if len(video_paths) == 1 else plot.with_name(f"{plot.stem}_{Path(r.path).stem}{plot.suffix or '.png'}")
                    plot_timeline(r, str(png))
    payload = [r.to_json() for r in results]
    if as_json:
        print(json.dumps(payload, indent=2))
    if output is not None:
        _write(output, results, payload)
    n_bad = sum(not r.ok for r in results)
    if n_bad:
        err.print(f"{n_bad} of {len(results)} inputs failed", highlight=False)
    return 1 if n_bad else 0


def result_table(r: Result) -> Table:
    t = Table(title=r.path, title_justify="left")
    t.add_column("rank", justify="right")
    t.add_column("label")
    t.add_column("probability", justify="right")
    for i, item in enumerate(r.top, 1):
        t.add_row(str(i), item["label"], f"{item['score']:.4f}")
    return t


def _timeline_table(r: Result) -> Table:
    t = Table(title=f"timeline: {r.path}", title_justify="left")
    t.add_column("start (s)", justify="right")
    t.add_column("end (s)", justify="right")
    t.add_column("top labels")
    for row in r.timeline:
        t.add_row(f"{row['start']:.1f}", f"{row['end']:.1f}", ", ".join(f"{x['label']} {x['score']:.2f}" for x in row["top"][:3]))
    return t


def _write(path: Path, results: list[Result], payload: list[dict]) -> None:
    if path.suffix.lower() == ".json":
        write_json(path, payload)
        return
    k = max((len(r.top) for r in results), default=0)
    header = ["path", "ok", "error", "start", "end"] + [f"{c}{i}" for i in range(1, k + 1) for c in ("label", "score")]
    rows = []
    for r in results:
        segments = r.timeline if r.timeline else [dict(start="", end="", top=r.top)]
        for seg in segments:
            cells = [r.path, r.ok, r.error or "", seg["start"], seg["end"]]
            for item in seg["top"]:
                cells += [item["label"], f"{item['score']:.6f}"]
            rows.append(cells)
    write_csv(path, header, rows)
