"""``hiera-video eval``: a held-out split with the paper's multi-view protocol and per-class metrics."""

from pathlib import Path
from typing import Optional

import typer

from hiera_video.cli import options
from hiera_video.cli.options import ALL_KINDS
from hiera_video.errors import HieraVideoError, Interrupted


def eval_command(
    dataset: str = options.dataset(ALL_KINDS, ...),
    root: Path = typer.Option(..., "--root", help="Dataset folder (video paths are relative to it)."),
    annotations: Optional[Path] = typer.Option(None, help="Annotation file (official CSV/JSON or a 'path label' list) [default: looked up under --root]."),
    split: str = typer.Option("val", help="Split to evaluate."),
    labels: Optional[str] = typer.Option(None, help=options.labels_help(
        "Class names: of the videos for list/folder datasets; of the weights for k400/k600/k700/ssv2 (checked against "
        "the names the weights carry; e.g. kinetics400 names official weights given by path); the label map for ava.")),
    model: Optional[str] = options.model(), weights: Optional[str] = options.weights(),
    views: Optional[str] = typer.Option(None, help="Temporal x spatial views [default: the dataset preset: K400 5x3, SSv2 1x3]."),
    sampling: Optional[str] = typer.Option(None, help="dense | segment [default: the dataset preset]."),
    stride: Optional[int] = typer.Option(None, min=1, help="Dense sampling: frame stride at 30 fps [default: 4]."),
    batch_size: int = options.batch_size(), workers: int = options.workers(),
    limit: Optional[int] = typer.Option(None, min=0, help="Only the first N videos."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for metrics.json, per-class/confusion files, predictions."),
    strict: bool = typer.Option(False, help="Missing or unreadable videos are an error instead of being skipped."),
    decode_timeout: float = options.decode_timeout(),
    save_views: bool = typer.Option(False, help="Also save every view's logits in the predictions file."),
    all_classes: bool = typer.Option(False, help="Show every class, not only the worst and best."),
    device: str = options.device(), dtype: str = options.dtype(), backend: str = options.backend(),
    decode_device: str = options.decode_device(), allow_random_weights: bool = options.allow_random_weights(),
    as_json: bool = options.as_json("Print the summary metrics as JSON to stdout."),
    proposals: Optional[Path] = typer.Option(None, help="AVA: person boxes to detect on [default: ava_<split>_predicted_boxes.csv if present, else GT boxes]."),
    exclusions: Optional[Path] = typer.Option(None, help="AVA: excluded timestamps [default: ava_<split>_excluded_timestamps_v2.2.csv if present]."),
    proposal_threshold: float = typer.Option(0.8, min=0.0, max=1.0, help="AVA: keep proposals with at least this score."),
    frames: bool = typer.Option(False, "--frames", help="AVA: media are frame folders <vid>/<vid>_%06d.jpg (root/frames), not videos."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="AVA: read an mmaction2 proposals .pkl (pickle can run code: trusted files only)."),
    view: Optional[str] = typer.Option(None, "--view", help="AVA: full (whole frame) | center (centre square) [default: the detector's training config, else full]."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run that left results in --output (killed or interrupted): its finished videos are kept; the protocol must match."),
) -> int:
    """Evaluate a classifier (or an AVA detector: --dataset ava) on a dataset split (works under torchrun: one shard per process)."""
    from hiera_video.data.clip_spec import check_choices
    from hiera_video.data.datasets import dataset_kind
    from hiera_video.engine.shard_files import finish_on_main, wait_on_others
    from hiera_video.jobs.evaluate import EvalOptions, eval_job, evaluate
    from hiera_video.report import console, progress_bar, safe

    check_choices(sampling=sampling, backend=backend, decode_device=decode_device)  # before any work
    if limit == 0:
        raise HieraVideoError("--limit 0 leaves nothing to evaluate; pass --limit N (N >= 1) for the first N videos, or leave it out for all")
    if resume and output is None:
        raise HieraVideoError("--resume needs --output: the folder of the run to continue")
    if (dataset := dataset_kind(dataset, ALL_KINDS)) == "ava":
        if decode_device != "cpu":
            raise HieraVideoError("--decode-device cuda decodes classification datasets only; drop it for --dataset ava")
        from hiera_video.ava.evaluate import AvaEvalOptions

        return eval_ava(AvaEvalOptions.of(locals()))
    with eval_job(EvalOptions.of(locals())) as job:
        world, clf, ds, protocol, files = job.world, job.clf, job.dataset, job.protocol, job.results
        out = console(stderr=as_json)
        if world.is_main:
            out.print(f"eval {safe(ds.name)} {safe(split)}: {len(ds)} videos ({job.missing} missing), model {safe(clf.name)}, "
                      f"{protocol.temporal_views}x{protocol.spatial_views} views, {protocol.sampling} sampling, "
                      f"{world.world_size} process(es)", highlight=False)
            if files is not None and files.earlier:
                out.print(f"resuming: {len(files.earlier)} videos done by the earlier run in {safe(output)}, "
                          f"{len(ds) - len(files.earlier)} left", highlight=False)
        progress = progress_bar("[bold]eval", "{task.fields[rate]}", "failed {task.fields[failed]}", console=out, disable=not world.is_main)
        with progress:
            task = progress.add_task("eval", total=None, rate="", failed=0)

            def tick(done, total, failed):
                elapsed = progress.tasks[0].elapsed or 1e-9
                progress.update(task, completed=done, total=total, failed=failed, rate=f"{done / elapsed:.2f} videos/s")

            result = evaluate(clf, protocol, ds, batch_size, workers, strict, save_views, world, tick, decode_timeout,
                              stop=lambda: False, results=files)  # interruptible: SIGINT keeps finished videos
        if not world.is_main:  # rank 0 reports; every process exits with its code
            return wait_on_others(files, world)
        return finish_on_main(files, world, lambda: _report(result, job, out))


def _report(result, job, out) -> int:
    """Rank 0: print and write the merged result; returns the exit code."""
    from hiera_video.engine.inference import substitution_warning
    from hiera_video.jobs.evaluate import write_failure_lists, write_outputs
    from hiera_video.metrics.classification import render_metrics
    from hiera_video.report import json_text, safe

    ds, missing, output, as_json = job.dataset, job.missing, job.options.output, job.options.as_json

    for path, reason in result.failed:
        out.print(f"[yellow]skipped[/] {safe(reason)}", highlight=False, soft_wrap=True)
    stopped = f"SIGINT after {len(result.indices) + len(result.failed)} of {len(ds)} videos" if result.interrupted else None
    if stopped and not result.indices:
        raise Interrupted(f"{stopped}, none scored: nothing written")
    if stopped:
        out.print(f"[yellow]warning:[/] {stopped}: the metrics cover the {len(result.indices)} videos scored before it "
                  f"(partial; {result.not_evaluated} not evaluated)", highlight=False)
    if not result.indices:  # nothing scored: an error that names why, not an empty result
        lists = write_failure_lists(output, result, ds) if output is not None else []
        raise HieraVideoError(f"no video of {ds.name} could be evaluated: all {len(result.failed)} failed"
                              + (f" (first: {result.failed[0][1]})" if result.failed else "")
                              + (f"; listed in {lists[0]}" if lists else "") + "; check them with hiera-video check-videos")
    for path, n, m in result.substituted:
        out.print(f"[yellow]warning:[/] {safe(path)}: {safe(substitution_warning(n, m))}", highlight=False, soft_wrap=True)
    if result.failed or missing:
        out.print(f"[yellow]warning:[/] {len(result.failed)} unreadable and {missing} missing videos are excluded from the metrics",
                  highlight=False)
    if output is not None:
        extra = dict(world_size=job.world.world_size, split=job.options.split, options=job.options.to_dict())
        files = write_outputs(output, result, ds, job.clf, job.protocol, extra)
        out.print(f"wrote {', '.join(safe(p) for p in files.values())}", highlight=False, soft_wrap=True)
    if result.metrics is None:
        out.print("no labelled videos: predictions only (no metrics)")
    elif not as_json:
        render_metrics(result.metrics, out, all_classes=job.options.all_classes)
    if as_json:
        m = result.metrics or {}
        print(json_text(dict(top1=m.get("top1"), top5=m.get("top5"), mean_class_accuracy=m.get("mean_class_accuracy"),
                             num_videos=len(result.indices), num_failed=len(result.failed), num_missing=missing,
                             num_videos_with_substituted_frames=len(result.substituted), decoders=result.decoders,
                             seconds=round(result.seconds, 3), partial=result.interrupted, num_not_evaluated=result.not_evaluated,
                             resumed=result.resumed)))
    if stopped:
        where = [f"written to {output} (metrics.json: \"partial\": true)"] * (output is not None) + ["printed as JSON"] * as_json
        raise Interrupted(f"{stopped}: partial metrics over the {len(result.indices)} videos scored"
                          + (f" {' and '.join(where)}" if where else " shown above (--output DIR keeps them)")
                          + ("; --resume continues it" if output is not None else ""))
    return 1 if result.failed or missing else 0  # 1: written, but not every annotated video


def eval_ava(o) -> int:
    """Frame-mAP@0.5 of a detector saved by ``finetune --dataset ava`` (official protocol); ``o``: AvaEvalOptions."""
    from hiera_video.ava.evaluate import ava_eval_job, ava_protocol, evaluate_ava_model
    from hiera_video.ava.files import resolve_label_map
    from hiera_video.engine.shard_files import finish_on_main, open_shard_files, wait_on_others
    from hiera_video.report import console, safe

    with ava_eval_job(o) as job:
        world, ds = job.world, job.dataset
        out = console(stderr=o.as_json)
        files = None
        if o.output is not None:  # per-process result files (see engine/shard_files.py)
            protocol = ava_protocol(job.model, ds, job.amp, resolve_label_map(ds.label_map)) if world.is_main else None
            files = open_shard_files(o.output, world, "eval --dataset ava", protocol, o.resume, what="keyframes")
        try:
            if world.is_main:
                boxes = "proposals" if ds.proposals is not None else "ground-truth boxes"
                out.print(f"eval ava {safe(o.split)}: {len(ds)} keyframes on {boxes}, model {safe(job.prov.meta['model'])}, "
                          f"{world.world_size} process(es)", highlight=False)
                if files is not None and files.earlier:
                    out.print(f"resuming: {len(files.earlier)} keyframes done by the earlier run in {safe(o.output)}, "
                              f"{len(ds) - len(files.earlier)} left", highlight=False)
            rows, metrics = evaluate_ava_model(job.model, ds, o.batch_size, job.device, o.workers, amp_dtype=job.amp, world=world, results=files)
            if not world.is_main:  # rank 0 reports; every process exits with its code
                return wait_on_others(files, world)
            return finish_on_main(files, world, lambda: _report_ava(rows, metrics, ds, o, out))
        finally:
            if files is not None:
                files.close()


def _report_ava(rows, metrics, ds, o, out) -> int:
    """Rank 0: print and write the merged AVA result; returns the exit code."""
    from hiera_video.ava.evaluate import render_ava_metrics, write_ava_outputs
    from hiera_video.report import json_text, safe

    if len(ds) and not rows:
        skipped = (metrics or {}).get("skipped") or []
        raise HieraVideoError(f"no AVA keyframe could be evaluated: all {len(ds)} failed" + (f" (first: {skipped[0][2]})" if skipped else "")
                              + "; check the videos with hiera-video check-videos")
    if o.output is not None:
        files = write_ava_outputs(o.output, rows, metrics, dict(split=o.split, weights=str(o.weights), options=o.to_dict()), dataset=ds)
        out.print(f"wrote {', '.join(safe(p) for p in files.values())}", highlight=False, soft_wrap=True)
    if metrics is None:
        out.print("no ground truth for this split: detections only (no metrics)")
    elif not o.as_json:
        render_ava_metrics(metrics, out, all_classes=o.all_classes)
    if metrics is not None and metrics.get("subset"):
        sub = metrics["subset"]
        out.print(f"[yellow]note:[/] mAP of a subset: {sub['keyframes']} of {sub['of']} keyframes (--limit), scored against "
                  "their own ground truth only; not comparable with a full-split mAP", highlight=False)
    if o.as_json:
        m = metrics or {}
        print(json_text(dict(mAP=m.get("mAP"), groups=m.get("groups"), num_keyframes=m.get("num_keyframes"),
                              skipped=len(m.get("skipped", [])), num_detections=len(rows), subset=m.get("subset"),
                              resumed=m.get("resumed", 0), decoders=m.get("decoders"))))
    return 1 if (metrics or {}).get("skipped") or ds.missing else 0  # 1: skipped or missing
