"""``hiera-video synth``: write the synthetic temporal-order dataset (for demos and tests)."""

from pathlib import Path

import typer


def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write the dataset into."),
    seed: int = typer.Option(0, min=0, help="Random seed; the same seed gives the same videos."),
    train_per_class: int = typer.Option(40, "--train-per-class", min=0, help="Training videos per class."),
    val_per_class: int = typer.Option(10, "--val-per-class", min=0, help="Validation videos per class."),
    frames: int = typer.Option(48, min=4, help="Frames per video."),
    size: int = typer.Option(96, min=32, help="Frame height and width in pixels (even)."),
    fps: int = typer.Option(30, min=1, help="Frame rate."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in OUT_DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Generate a 6-class video dataset that only temporal order can solve: mp4s + train/val/labels.txt."""
    from hiera_video.data.synthetic import CLASSES, make_synthetic_dataset
    from hiera_video.report import check_output, console, json_text, progress_bar, safe

    check_output(out_dir, "OUT_DIR", "dir")
    con = console(stderr=as_json)
    with progress_bar("synth", "{task.fields[rate]}", console=con, elapsed=False) as bar:
        task = bar.add_task("synth", total=None, rate="")

        def progress(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            bar.update(task, completed=done, total=total, rate=f"{done / elapsed:.1f} videos/s" if elapsed > 0 else "")

        summary = make_synthetic_dataset(out_dir, seed=seed, num_train_per_class=train_per_class, num_val_per_class=val_per_class,
                                         frames=frames, size=size, fps=fps, overwrite=overwrite, progress=progress)
    if as_json:
        print(json_text(summary))
        return
    from rich.table import Column, Table

    t = Table(Column("id", justify="right"), Column("class", no_wrap=True), "what happens",
              title=f"synthetic dataset: {safe(summary['root'])}")
    for i, (name, desc) in enumerate(CLASSES):
        t.add_row(str(i), name, desc)
    con.print(t)
    con.print(f"{summary['num_train']} train + {summary['num_val']} val videos, {frames}x{size}x{size} at {fps} fps, seed {seed}, "
              f"{summary['seconds']:.1f} s -> {safe(summary['train'])}, {safe(summary['val'])}, {safe(summary['labels'])}",
              highlight=False, soft_wrap=True)
