"""``hiera-video demo``: synth -> finetune (configs/demo.yaml) -> multi-view eval -> predict, offline on a CPU."""

import shutil
import time
from pathlib import Path
from typing import List

import typer


def demo(
    output: Path = typer.Option(Path("hiera-video-demo"), "--output", "-o", help="Folder for the data, the run and the results."),
    seed: int = typer.Option(0, min=0, help="Seed of the synthetic data and of training."),
    views: str = typer.Option("2x3", help="Views of the final evaluation."),
    train_per_class: int = typer.Option(40, "--train-per-class", min=1, help="Generated training videos per class."),
    val_per_class: int = typer.Option(10, "--val-per-class", min=1, help="Generated validation videos per class."),
    set_: List[str] = typer.Option([], "--set", help="Override a key of configs/demo.yaml: section.key=value (repeatable)."),
) -> int:
    """Generate a dataset, finetune a small Hiera on it, evaluate it and predict a clip (offline)."""
    from hiera_video.cli.predict import result_table
    from hiera_video.config import load_config
    from hiera_video.data.datasets import build_dataset
    from hiera_video.data.synthetic import make_synthetic_dataset
    from hiera_video.engine.inference import load_classifier, parse_views
    from hiera_video.jobs.evaluate import evaluate, write_outputs
    from hiera_video.jobs.finetune import finetune
    from hiera_video.jobs.predict import classify_video
    from hiera_video.metrics.classification import render_metrics
    from hiera_video.report import check_output, console, safe

    check_output(output, "--output", "dir")  # before minutes of work
    out = console()
    t_all = time.perf_counter()
    data, run = output / "data", output / "run"

    out.rule("1/4 synth: a dataset that only temporal order can solve")
    t = time.perf_counter()
    if (data / "train.txt").is_file():
        out.print(f"reusing {safe(data)}", highlight=False)
    else:
        info = make_synthetic_dataset(data, seed=seed, num_train_per_class=train_per_class, num_val_per_class=val_per_class)
        out.print(f"{info['num_train']} training + {info['num_val']} validation videos in {safe(data)} "
                  f"({time.perf_counter() - t:.0f} s)", highlight=False)

    out.rule("2/4 finetune: configs/demo.yaml")
    t = time.perf_counter()
    if (run / "last.pt").is_file():  # the demo's own folder from an earlier demo: start afresh
        shutil.rmtree(run)
        out.print(f"removed the previous demo run in {safe(run)}", highlight=False)
    cfg = load_config("demo", [f"run.seed={seed}", *set_], dict(data=dict(root=str(data)), run=dict(output=str(run))))
    final = finetune(cfg, console=out)
    top1 = final.get("top1")
    out.print(f"trained in {time.perf_counter() - t:.0f} s; final top-1 " + (f"{top1:.2f}%" if top1 is not None else "-"), highlight=False)

    out.rule(f"3/4 eval: {views} views, per-class results")
    clf = load_classifier(weights=str(run / "best.pt"), dtype="fp32")
    val = build_dataset("list", data, data / "val.txt", "val", data / "labels.txt")
    protocol = clf.protocol(parse_views(views))
    result = evaluate(clf, protocol, val, batch_size=8, workers=2)
    write_outputs(output / "eval", result, val, clf, protocol, dict(split="val"))
    render_metrics(result.metrics, out, all_classes=True)

    out.rule("4/4 predict: a held-out clip")
    clip = str(val.items[0].path)
    r = classify_video(clf, clf.protocol((2, 3)), clip, 8, 3)
    out.print(result_table(r))
    out.print(f"true class: {safe(val.classes[val.items[0].label])}", highlight=False)
    out.print(f"demo finished in {time.perf_counter() - t_all:.0f} s; everything is in {safe(output)}", highlight=False)
    return 0
