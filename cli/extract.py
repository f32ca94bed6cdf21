"""``hiera-video extract PATH... --output DIR``: embeddings or stage feature maps of videos."""

from pathlib import Path
from typing import List, Optional

import typer

from hiera_video.cli import options
from hiera_video.errors import HieraVideoError


def extract(
    paths: Optional[List[str]] = typer.Argument(None, help="Video files, directories or glob patterns (or use --dataset)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the feature files, index.jsonl and extract.json."),
    model: Optional[str] = options.model(help="Model name (hiera_* or mae_hiera_*) [default: hiera_base_16x224, or the one a checkpoint names]."),
    weights: Optional[str] = options.weights(help="Zoo tag (incl. MAE tags such as mae_k400), URL, hf-hub:ORG/NAME[@REVISION] or checkpoint path (MAE checkpoints give the encoder) [default: the model's official weights]."),
    level: str = typer.Option("pooled", help="pooled ([C] pre-logits embedding) | stage1..stage4 ([T', H', W', C] map; strides (frames, pixels): 2,4 | 2,8 | 2,16 | 2,32)."),
    window: Optional[float] = typer.Option(None, help="Long videos: one clip per window of this many seconds (instead of --views)."),
    stride: Optional[float] = typer.Option(None, help="Seconds between window starts [default: --window]."),
    views: Optional[str] = typer.Option(None, help="Temporal x spatial views of the whole video, e.g. 5x3 [default: 1x1]; one item per view."),
    fmt: str = typer.Option("npy", "--format", help="npy (array [N, ...]) | safetensors ('features' [N, ...] + metadata)."),
    store_dtype: str = typer.Option("float32", "--store-dtype", help="Storage dtype of the features: float32 | float16."),
    dtype: str = options.dtype(), device: str = options.device(), batch_size: int = options.batch_size(),
    backend: str = options.backend(), decode_device: str = options.decode_device(), workers: int = options.workers(),
    decode_timeout: float = options.decode_timeout(),
    dataset: Optional[str] = options.dataset(help=": extract a dataset split instead of PATHs."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder (with --dataset); output names are relative to it."),
    annotations: Optional[Path] = typer.Option(None, help="Dataset annotation file [default: looked up under --root]."),
    split: str = typer.Option("val", help="Dataset split."),
    limit: Optional[int] = typer.Option(None, min=0, help="Dataset: only the first N videos."),
    overwrite: bool = typer.Option(False, help="Redo every video (default: skip videos whose complete file exists)."),
    allow_random_weights: bool = options.allow_random_weights(),
    as_json: bool = options.as_json("Print a JSON array of per-video results to stdout."),
) -> int:
    """Extract pooled embeddings or stage feature maps, one file per video (resumable; works under torchrun)."""
    from hiera_video.data.clip_spec import check_choices

    check_choices(backend=backend, decode_device=decode_device)  # before any work
    from hiera_video.data.feature_store import INDEX
    from hiera_video.engine import distributed
    from hiera_video.engine.inference import parse_views
    from hiera_video.engine.shard_files import finish_on_main, wait_on_others
    from hiera_video.jobs.extract import LEVELS, Extracted, Extractor, jobs_for_dataset, jobs_for_paths, level_stride, load_feature_model
    from hiera_video.jobs.predict import check_window, expand_inputs
    from hiera_video.report import check_output, console, json_text, progress_bar, safe

    if level not in LEVELS:
        raise HieraVideoError(f"unknown --level '{level}'; use one of {', '.join(LEVELS)}")
    if window is not None and views is not None:
        raise HieraVideoError("use either --window (clips over time) or --views (views of the whole video), not both")
    check_window(window, stride)
    if dataset is not None and paths:
        raise HieraVideoError("give either PATHs or --dataset/--root, not both")
    if dataset is None and not paths:
        raise HieraVideoError("nothing to extract: give video PATHs, or --dataset KIND --root DIR")
    if dataset is not None and root is None:
        raise HieraVideoError("--dataset needs --root (the dataset folder)")
    view_counts = parse_views(views) if views else (1, 1)

    out, err = console(stderr=as_json), console(stderr=True)
    failures: list[Extracted] = []
    if dataset is not None:
        from hiera_video.data.datasets import build_dataset

        ds = build_dataset(dataset, root, annotations, split, None, limit)
        if ds.missing:
            err.print(f"[yellow]warning:[/] {len(ds.missing)} annotated videos are not under {safe(root)} and are skipped "
                      f"(first: {safe(ds.missing[0][0])})", highlight=False, soft_wrap=True)
        jobs = jobs_for_dataset(ds, fmt)
    else:
        video_paths, bad = expand_inputs(paths)
        failures = [Extracted(b.path, error=b.error) for b in bad]
        jobs = jobs_for_paths(video_paths, fmt)

    with distributed.session(device) as (world, dev):
        check_output(output, "--output", "dir", inputs=[("--weights", weights), ("--annotations", annotations)],
                     writes=("index.jsonl", "extract.json"))  # every process writes there; checked before any work
        clf = load_feature_model(model, weights, dev, dtype, allow_random_weights) if jobs else None
        if world.is_main:
            for f in failures:
                err.print(f"[red]error:[/] {safe(f.error)}", highlight=False, soft_wrap=True)
        results: list[Extracted] = []
        ex = None
        try:
            if jobs:
                ex = Extractor(clf=clf, out_dir=output, level=level, fmt=fmt, views=view_counts, window=window, stride=stride,
                               batch_size=batch_size, store_dtype=store_dtype, backend=backend, overwrite=overwrite, world=world,
                               workers=workers, decode_timeout=decode_timeout, decode_device=decode_device)
                if world.is_main:
                    what = f"windows of {window:g} s every {ex.stride:g} s" if window else f"{view_counts[0]}x{view_counts[1]} views"
                    st = level_stride(clf.model, level)
                    err.print(f"extract {level}{'' if st is None else f' (stride {st[0]} frames, {st[1]} px)'} of {len(jobs)} videos, "
                              f"{safe(what)}, model {safe(clf.name)}, {world.world_size} process(es) -> {safe(output)}",
                              highlight=False, soft_wrap=True)
                progress = progress_bar("[bold]extract", "{task.fields[rate]}", "skipped {task.fields[skipped]} failed {task.fields[failed]}",
                                        "{task.fields[name]}", console=err if as_json else out, disable=not world.is_main)
                counts = dict(skipped=0, failed=0)
                with progress:
                    task = progress.add_task("extract", total=len(distributed.shard(len(jobs), world)), rate="", name="", **counts)

                    def tick(r: Extracted) -> None:
                        counts["skipped"] += r.skipped
                        counts["failed"] += not r.ok
                        if not r.ok:
                            err.print(f"[red]error:[/] {safe(r.error)}", highlight=False, soft_wrap=True)
                        elapsed = progress.tasks[0].elapsed or 1e-9
                        done = progress.tasks[0].completed + 1
                        progress.update(task, advance=1, name=safe(Path(r.path).name), rate=f"{done / elapsed:.2f} videos/s", **counts)

                    results = ex.run(jobs, tick)
                if not world.is_main:  # rank 0 reports; every process exits with its code
                    return wait_on_others(ex.results, world)

            def report() -> int:
                everything = failures + results
                if as_json:
                    print(json_text([r.to_json() for r in everything], indent=2))
                else:
                    out.print(_table(everything, output))
                n_bad = sum(not r.ok for r in everything)
                n_skip = sum(r.skipped for r in everything)
                err.print(f"{len(everything) - n_bad} of {len(everything)} videos ok ({n_skip} already done), {n_bad} failed"
                          + (f"; index: {safe(output / INDEX)}" if jobs else ""), highlight=False, soft_wrap=True)
                return 1 if n_bad else 0

            return finish_on_main(ex.results if ex is not None else None, world, report)
        finally:
            if ex is not None and ex.results is not None:
                ex.results.close()


def _table(results, output: Path):
    from rich.table import Column, Table

    from hiera_video.report import safe

    t = Table("video", "file", Column("shape", justify="right"), "status", title=f"features in {safe(output)}", title_justify="left")
    for r in results:
        status = "[red]failed[/]" if not r.ok else ("skipped (done)" if r.skipped else "written")
        t.add_row(safe(r.path), safe(r.output or ""), "x".join(str(d) for d in r.shape) if r.shape else "", status)
    return t
