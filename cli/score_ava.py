"""``hiera-video score-ava``: AVA v2.2 frame-mAP@0.5 of a detections CSV (official protocol)."""

from pathlib import Path

import typer

from hiera_video.errors import HieraVideoError


def score_ava(
    groundtruth: Path = typer.Option(..., "--groundtruth", "-g", help="GT CSV, e.g. ava_val_v2.2.csv."),
    detections: Path = typer.Option(..., "--detections", "-d", help="Detections CSV: video_id,timestamp,x1,y1,x2,y2,action_id,score."),
    label_map: Path = typer.Option(None, "--label-map", "-l", help="Label map .pbtxt [default: the built-in 60 evaluated classes]."),
    exclusions: Path = typer.Option(None, "--exclusions", "-e", help="Excluded timestamps CSV, e.g. ava_val_excluded_timestamps_v2.2.csv."),
    output: Path = typer.Option(None, "--output", help="Folder for metrics.json and per_class.csv."),
    all_classes: bool = typer.Option(False, "--all-classes", help="List classes without GT too."),
    as_json: bool = typer.Option(False, "--json", help="Print {mAP, per_class, groups} as JSON instead of tables."),
) -> None:
    """Score AVA detections: per-class AP, pose/object/interaction means and frame-mAP@0.5."""
    from hiera_video.ava.evaluate import render_ava_metrics, write_ava_outputs
    from hiera_video.ava.files import read_ava_csv, read_exclusions, read_ground_truth, resolve_label_map
    from hiera_video.ava.metrics import evaluate_ava, metrics_to_json
    from hiera_video.engine.distributed import World
    from hiera_video.engine.output_lock import output_claim
    from hiera_video.report import check_output, console, json_text, safe

    check_output(output, "--output", "dir", writes=("metrics.json", "per_class.csv"), inputs=[
        ("--groundtruth", groundtruth), ("--detections", detections), ("--label-map", label_map), ("--exclusions", exclusions)])
    with output_claim(output, World(), "score-ava"):  # the folder's lock and ownership, before any work
        classes = resolve_label_map(label_map)
        gt = read_ground_truth(groundtruth)  # boxes checked as training checks them (pixels would score 0)
        dets = read_ava_csv(detections, kind="detections")
        excluded = read_exclusions(exclusions)
        metrics = evaluate_ava(gt, dets, classes, excluded)
        if not metrics["num_classes_with_gt"]:  # a NaN mAP is no result: exit 2, saying why
            raise HieraVideoError(f"{groundtruth} has no ground-truth box of the {len(classes)} label-map classes"
                                  + (" outside the excluded timestamps" if excluded else "")
                                  + ": nothing to score; check --groundtruth (the right split?) and --label-map")
        extra = {"groundtruth": str(groundtruth), "detections": str(detections),
                 "label_map": str(label_map) if label_map else "built-in ava_v2.2_60",
                 "exclusions": str(exclusions) if exclusions else None}
        if output is not None:
            write_ava_outputs(output, None, metrics, extra)
        if as_json:
            m = metrics_to_json(metrics)
            keys = ("mAP", "per_class", "groups", "num_classes_with_gt", "num_gt_keyframes", "num_excluded_keyframes", "num_detections")
            print(json_text({k: m[k] for k in keys} | {"inputs": extra}, indent=2))
            return
        render_ava_metrics(metrics, out := console(), title=f"AVA frame-mAP@0.5 of {safe(Path(detections).name)}", all_classes=all_classes)
        if output is not None:
            out.print(f"wrote {safe(output / 'metrics.json')}, {safe(output / 'per_class.csv')}", highlight=False, soft_wrap=True)
