"""``hiera-video predict PATH...``: top-k classes of video files."""

import os
from pathlib import Path
from typing import List, Optional

import typer

from hiera_video.cli import options
from hiera_video.errors import HieraVideoError, Interrupted

#: The error of the inputs not reached when a run is interrupted (SIGINT).
NOT_PROCESSED = "not processed: the run was interrupted (SIGINT)"


def predict(
    paths: List[str] = typer.Argument(..., help="Video files, directories or glob patterns."),
    model: Optional[str] = options.model(), weights: Optional[str] = options.weights(),
    labels: Optional[str] = typer.Option(None, help=options.labels_help(
        "Class names [default: the weights' own]. Checked against the names the weights carry (the same classes in "
        "another order are matched by name; other names are an error); they name weights that carry none.")),
    views: str = typer.Option("1x1", help="Temporal x spatial views, e.g. 5x3 (the Kinetics protocol)."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1),
    device: str = options.device(), dtype: str = options.dtype(), batch_size: int = options.batch_size(),
    backend: str = options.backend(), decode_device: str = options.decode_device(), workers: int = options.workers(),
    decode_timeout: float = options.decode_timeout(),
    window: Optional[float] = typer.Option(None, help="Timeline: window length in seconds (whole video when omitted)."),
    stride: Optional[float] = typer.Option(None, help="Timeline: seconds between window starts [default: --window]."),
    plot: Optional[Path] = typer.Option(None, help="Timeline (needs --window): plot file, .png, .svg or .pdf (one per video: with several videos NAME_<video path>.EXT, see README)."),
    as_json: bool = options.as_json("Print a JSON array to stdout (no tables)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write results to a .json or .csv file."),
    allow_random_weights: bool = options.allow_random_weights(),
) -> int:
    """Classify videos: multi-view testing decodes each video once; bad files are reported and skipped."""
    from hiera_video import limits
    from hiera_video.engine.inference import load_classifier
    from hiera_video.jobs.predict import PredictOptions, Result, expand_in_order, in_input_order, plot_paths, plot_timeline, predict_paths
    from hiera_video.report import check_output, console, print_json, progress_bar, safe

    o = PredictOptions.of(locals())  # checked before any work
    check_output(output, "--output", inputs=[("--weights", weights), ("--labels", labels)] + [("PATH", p) for p in paths])  # before any work: a run never ends in an unwritable path
    check_output(plot, "--plot")
    entries = expand_in_order(paths)  # video paths, and failed Results for inputs that name no video
    video_paths = [e for e in entries if isinstance(e, str)]
    plot_for = dict(zip(video_paths, plot_paths(plot, video_paths))) if plot is not None and video_paths else {}
    for video, png in plot_for.items():
        if os.path.exists(png) and os.path.samefile(video, png):
            raise HieraVideoError(f"--plot '{png}' is the input video '{video}': pick another --plot name")
    out, err = console(stderr=as_json), console(stderr=True)
    for bad in entries:
        if isinstance(bad, Result):
            err.print(f"[red]error:[/] {safe(bad.error)}", highlight=False, soft_wrap=True)
    done: list[Result] = []
    interrupted, plot_failures = False, 0
    if video_paths:
        clf = load_classifier(model, weights, labels, device, dtype, allow_random_weights)
        protocol = clf.protocol(o.views, backend=backend, decode_device=decode_device)
        limits.check_views(o.views, protocol.num_frames, protocol.crop_size)  # before any video is decoded
        progress = progress_bar("[bold]predict", "{task.fields[name]}", console=out)
        with progress:
            task = progress.add_task("predict", total=len(video_paths), name="")
            stream = predict_paths(clf, protocol, video_paths, o)
            try:
                for r in stream:
                    progress.update(task, advance=1, name=safe(Path(r.path).name))
                    done.append(r)
                    for note in r.warnings:
                        err.print(f"[yellow]warning:[/] {safe(r.path)}: {safe(note)}", highlight=False, soft_wrap=True)
                    if not r.ok:
                        err.print(f"[red]error:[/] {safe(r.error)}", highlight=False, soft_wrap=True)
                    elif not as_json:
                        out.print(result_table(r))
                        if r.timeline:
                            out.print(_timeline_table(r))
                    if r.ok and plot is not None and r.timeline:
                        try:
                            plot_timeline(r, str(plot_for[r.path]))
                        except Exception as e:  # one plot that cannot be written loses nothing else (-o is still written)
                            plot_failures += 1
                            err.print(f"[red]error:[/] --plot for {safe(r.path)} not written: {safe(e)}", highlight=False, soft_wrap=True)
            except KeyboardInterrupt:  # SIGINT: keep what is finished, marked partial
                interrupted = True
            finally:
                stream.close()  # stops the decoding workers
    finished = len(done)
    if interrupted:
        done += [Result(p, error=NOT_PROCESSED) for p in video_paths[finished:]]
    results: list[Result] = in_input_order(entries, done)
    payload = [dict(r.to_json(), partial=True) if interrupted else r.to_json() for r in results]
    if as_json:
        print_json(payload)
    if output is not None:
        _write(output, results, payload)
    if interrupted:
        where = " and ".join(([f"written to {output}"] if output is not None else []) + (["printed as JSON"] if as_json else []))
        raise Interrupted(f"SIGINT after {finished} of {len(video_paths)} videos: "
                          + (f"partial results {where} (marked \"partial\": true; the {len(video_paths) - finished} videos not reached "
                             "are listed as not processed)" if where else "the finished results are shown above (-o FILE keeps them)"))
    n_bad = sum(not r.ok for r in results)
    if n_bad:
        err.print(f"{n_bad} of {len(results)} inputs failed", highlight=False)
    if plot_failures:
        err.print(f"{plot_failures} plot(s) not written", highlight=False)
    return 1 if n_bad or plot_failures else 0


def result_table(r):
    from rich.table import Column, Table

    from hiera_video.report import safe

    t = Table(Column("rank", justify="right"), "label", Column("probability", justify="right"), title=safe(r.path), title_justify="left")
    for i, item in enumerate(r.top, 1):
        t.add_row(str(i), safe(item["label"]), f"{item['score']:.4f}")
    return t


def _timeline_table(r):
    from rich.table import Column, Table

    from hiera_video.report import safe

    t = Table(Column("start (s)", justify="right"), Column("end (s)", justify="right"), "top labels",
              title=f"timeline: {safe(r.path)}", title_justify="left")
    for row in r.timeline:
        t.add_row(f"{row['start']:.1f}", f"{row['end']:.1f}", ", ".join(f"{safe(x['label'])} {x['score']:.2f}" for x in row["top"][:3]))
    return t


def _write(path: Path, results, payload: list[dict]) -> None:
    from hiera_video.report import write_csv, write_json

    if path.suffix.lower() == ".json":
        write_json(path, payload)
        return
    k = max((len(r.top) for r in results), default=0)
    header = ["path", "ok", "error", "warnings", "start", "end"] + [f"{c}{i}" for i in range(1, k + 1) for c in ("label", "score")]
    write_csv(path, header, [[r.path, r.ok, r.error or "", "; ".join(r.warnings), seg["start"], seg["end"]]
                             + [v for item in seg["top"] for v in (item["label"], f"{item['score']:.6f}")]
                             for r in results for seg in (r.timeline or [dict(start="", end="", top=r.top)])])
