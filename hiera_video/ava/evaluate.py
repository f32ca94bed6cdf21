"""AVA evaluation: the loss, a detector's official rows (every box x every label-map class; unreadable keyframes
skipped and listed; one shard per rank, merged on rank 0), the ``eval --dataset ava`` job and its outputs."""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from hiera_video.ava.dataset import ava_collate, keyframe_index, open_ava_split
from hiera_video.ava.files import AvaRow, read_ava_csv, resolve_label_map, write_detections_csv
from hiera_video.ava.metrics import evaluate_ava, metrics_to_json
from hiera_video.data.pool import count_decoders
from hiera_video.engine import distributed
from hiera_video.engine.output_lock import output_claim
from hiera_video.engine.shard_files import guard, list_fingerprint, weights_fingerprint
from hiera_video.engine.train_data import Guarded, collate_items
from hiera_video.errors import HieraVideoError
from hiera_video.html_report import draw_boxes, write_report_safely
from hiera_video.options import Options
from hiera_video.report import check_output, safe, write_csv, write_json
from hiera_video.runtime import resolve_dtype

log = logging.getLogger("hiera_video")


def ava_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits of ``logits [K, 80]`` against multi-hot ``labels [K, 80]``."""
    if logits.shape != labels.shape:
        raise HieraVideoError(f"AVA logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
    return F.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.device, torch.float32))


@torch.no_grad()
def evaluate_ava_model(model: torch.nn.Module, dataset, batch_size: int = 8, device: str | torch.device = "cpu",
                       num_workers: int = 0, amp_dtype: torch.dtype | None = None, world=None, results=None,
                       stop=None) -> tuple[list[AvaRow], dict | None]:
    """``(rows in keyframe order, metrics)`` vs the split's GT + exclusions (None without GT; rank > 0: ``([], None)``);
    ``results``: per-process files (``--output``, resumable), else a gather; ``stop()`` (per batch): end early."""
    world = world or distributed.World()
    label_map = resolve_label_map(getattr(dataset, "label_map", None))
    indices = results.mine(len(dataset)) if results is not None else distributed.shard(len(dataset), world)
    start = time.perf_counter()
    with guard(results):  # an error here ends every process with its message
        part = _detect_shard(model, dataset, indices, batch_size, torch.device(device), num_workers,
                             sorted(label_map), amp_dtype, results, stop)
    seconds, resumed = time.perf_counter() - start, 0
    parts = distributed.gather_to_main((*part, seconds), world) if results is None else results.finish(seconds=seconds)
    if not world.is_main:
        return [], None
    if results is not None:  # every process's records (and the earlier runs'), read back from the files
        merged, states = results.collect()
        bad = {i: rec["error"] for i, rec in merged.items() if rec.get("error") is not None}
        videos = {rec["video"]: rec["decoder"] for rec in merged.values() if rec.get("video") is not None}
        parts = [({i: [AvaRow(*r) for r in rec["rows"]] for i, rec in merged.items() if i not in bad},
                  list(bad.items()), part[2], videos, max(float(s.get("seconds") or 0) for s in states))]
        resumed = len(set(results.earlier) & set(merged))
    done = {i: r for p in parts for i, r in p[0].items()}  # p: (done, failed, interrupted, decoders, seconds)
    rows, items = [r for i in sorted(done) for r in done[i]], getattr(dataset, "items", None)
    failed = sorted(f for p in parts for f in p[1])
    skipped = [(*(items[i] if items is not None else (str(i), -1)), why) for i, why in failed]
    for vid, ts, reason in skipped[:5]:
        log.warning("skipped AVA keyframe %s,%04d: %s", vid, ts, reason)
    subset, gt_rows, keys = getattr(dataset, "subset", None), getattr(dataset, "gt_rows", None), set(items or ())
    if subset and gt_rows and items is not None:  # --limit: score against these keyframes' own GT only
        gt_rows = [r for r in gt_rows if r.key in keys]
    if not gt_rows:
        return rows, None
    metrics = evaluate_ava(gt_rows, rows, label_map, getattr(dataset, "exclusions", None))
    decoders = {v: d for p in parts for v, d in p[3].items()}  # one per video, whichever process decoded it
    metrics.update(decoders=count_decoders(decoders.values()), num_keyframes=len(done), skipped=skipped,
                   seconds=round(max(p[4] for p in parts), 3), resumed=resumed, interrupted=any(p[2] for p in parts),
                   subset=dict(keyframes=subset[0], of=subset[1]) if subset else None)
    return rows, metrics


def _detect_shard(model, dataset, indices, batch_size, device, num_workers, classes, amp_dtype, results, stop):
    """This process's ``({index: rows}, [(index, reason)], stopped early, {video: decoder})``, also to ``results``."""
    loader = DataLoader(Guarded(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=partial(collate_items, join=ava_collate))
    was_training = model.training
    model.eval()
    done, failed, decoders = {}, [], {}
    cols = torch.tensor([c - 1 for c in classes], dtype=torch.long)  # class id c scores in column c - 1
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    try:
        for batch, good, bad in loader:
            failed += bad
            for i, reason in bad if results is not None else ():
                results.add(i, dict(error=reason))
            if batch is not None:
                clips, boxes, _, metas = batch
                with autocast:
                    logits = model(clips.to(device, non_blocking=True), [b.to(device) for b in boxes])
                probs = torch.sigmoid(logits.float()).cpu()[:, cols].tolist()
                if len(probs) != (nb := sum(len(m["boxes"]) for m in metas)):
                    raise HieraVideoError(f"got scores for {len(probs)} boxes but the batch has {nb}")
                k = 0
                for i, meta in zip(good, metas):  # one keyframe's boxes after the other
                    vid, ts, n = meta["video_id"], int(meta["timestamp"]), len(meta["boxes"])
                    done[i] = [AvaRow(vid, ts, *box, c, float(s))
                               for box, p in zip(meta["boxes"].tolist(), probs[k : k + n]) for c, s in zip(classes, p)]
                    decoders[vid] = meta.get("decoder", "")
                    k += n
                    if results is not None:
                        results.add(i, dict(rows=[tuple(r) for r in done[i]], video=vid, decoder=decoders[vid]))
            if results is not None and results.should_stop():
                raise KeyboardInterrupt  # a SIGINT stopped another process: stop here too
            if stop is not None and stop():
                return done, failed, True, decoders
    finally:
        model.train(was_training)
    return done, failed, False, decoders


@dataclass(frozen=True)
class AvaEvalOptions(Options):
    """``eval --dataset ava``'s options, built and checked once by the command."""

    root: Path
    split: str = "val"
    annotations: Path | None = None
    labels: str | None = None  # label map [default: the detector's]
    weights: str | None = None
    proposals: Path | None = None
    exclusions: Path | None = None
    proposal_threshold: float = 0.8
    frames: bool = False
    view: str | None = None
    allow_pickle: bool = False
    batch_size: int = 8
    workers: int = 0
    limit: int | None = None
    output: Path | None = None
    all_classes: bool = False
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"
    as_json: bool = False
    resume: bool = False
    allow_random_weights: bool = False

    def __post_init__(self):
        if not self.weights:
            raise HieraVideoError("AVA evaluation needs --weights RUN_DIR/best.pt (a detector saved by finetune --dataset ava)")


@contextmanager
def ava_eval_job(o: AvaEvalOptions):
    """Process group, output check, detector and split as trained: ``options world model prov dataset device amp``."""
    from hiera_video.ava.model import load_ava_detector  # torchvision: only when a detector is run

    with distributed.session(o.device) as (world, dev):
        if world.is_main:
            check_output(o.output, "--output", "dir")
        with output_claim(o.output, world, "eval --dataset ava"):  # OUTPUT/.lock until the outputs are written
            model, prov = load_ava_detector(o.weights, dev, o.allow_random_weights)
            view = o.view or prov.meta["preprocessing"].get("test_view", "full")
            ds = open_ava_split(o.root, o.split, "val", o.annotations, o.exclusions, o.proposals,
                                o.labels or prov.meta.get("label_map"), default_proposals=True, limit=o.limit,
                                allow_pickle=o.allow_pickle, clip=prov.clip.with_(backend=o.backend), test_view=view,
                                proposal_threshold=o.proposal_threshold, frames_layout="frames" if o.frames else "video")
            if len(ds) == 0:  # scoring nothing is an error, not a 0.0 (--limit 0: refused by the CLI)
                source = "the annotations list no keyframe" if ds.proposals is None else (
                    f"the proposals ({o.proposals or 'ava_' + o.split + '_predicted_boxes.csv'}) give no person box "
                    f"scoring at least --proposal-threshold {o.proposal_threshold}")
                raise HieraVideoError(f"nothing to evaluate in AVA {o.split}: {source}; check the file, or lower --proposal-threshold")
            yield SimpleNamespace(options=o, world=world, model=model, prov=prov, dataset=ds, device=dev,
                                  amp=resolve_dtype(o.dtype, dev))


def ava_protocol(model: torch.nn.Module, dataset, amp_dtype: torch.dtype | None, classes) -> dict:
    """What the detections depend on (not the process count), compared field by field by ``--resume``."""
    keyframes = [(vid, ts, dataset.entries[(vid, ts)].boxes.round(6).tolist()) for vid, ts in dataset.items]
    return dict(weights_sha256=weights_fingerprint(model), dtype=str(amp_dtype or torch.float32).replace("torch.", ""),
                **dataset.clip.to_dict(), test_view=dataset.test_view, frames_layout=dataset.frames_layout,
                classes=sorted(int(c) for c in classes), split=dataset.split,
                keyframes=f"{len(keyframes)} keyframes, sha256 {list_fingerprint(keyframes)[:16]}")


def write_ava_outputs(output_dir: str | Path, detections, metrics: dict | None, extra: dict | None = None,
                      dataset=None) -> dict[str, Path]:
    """``detections.csv`` (unless None), ``metrics.json`` (+ ``extra``), ``per_class.csv``, ``report.html``; their paths."""
    (out := Path(output_dir)).mkdir(parents=True, exist_ok=True)
    files = {} if detections is None else {"detections": write_detections_csv(out / "detections.csv", detections)}
    if metrics is not None:
        files["metrics"], files["per_class"] = out / "metrics.json", out / "per_class.csv"
        write_json(files["metrics"], metrics_to_json({**metrics, **(extra or {})}))
        write_csv(files["per_class"], ["action_id", "name", "group", "ap", "num_gt", "num_detections"], [
            (c, v["name"], v["group"], "" if math.isnan(v["ap"]) else f"{v['ap']:.6f}", v["num_gt"], v["num_detections"])
            for c, v in sorted(metrics["per_class"].items())])
        keyframes = None if dataset is None else partial(report_keyframes, dataset)
        if report := write_report_safely(out, ava_keyframes=keyframes):
            files["report"] = report
    return files


def report_keyframes(dataset, folder: Path, worst: list[dict], per_class: int = 2) -> list[dict]:
    """report.html: per worst class, up to ``per_class`` evaluated keyframes with its GT (green) and detections >= 0.5."""
    gt: dict[tuple, list] = {}  # (video id, timestamp, action id) -> boxes to draw, in file order
    for r in getattr(dataset, "gt_rows", None) or []:
        gt.setdefault((r.video_id, int(r.timestamp), r.action_id), []).append(("gt", r))
    det: dict[tuple, list] = {}
    if (folder / "detections.csv").is_file():
        for r in read_ava_csv(folder / "detections.csv", "detections"):
            if r.score >= 0.5:
                det.setdefault((r.video_id, int(r.timestamp), r.action_id), []).append(("pred", r))
    evaluated, out = set(getattr(dataset, "items", [])), []
    for w in worst:
        for k in [g for g in gt if g[2] == w["index"] and g[:2] in evaluated][:per_class]:
            try:
                src = dataset._source(k[0])
                i = keyframe_index(k[1], src.fps, dataset.start_sec)
                img = Image.fromarray(src.get_frames([max(0, min(i, src.num_frames - 1))])[0].numpy())  # [H, W, 3]
            except Exception:  # noqa: BLE001 - a keyframe that cannot be read is left out
                continue
            out.append(dict(cls=w["name"], key=f"{k[0]},{k[1]:04d}", image=draw_boxes(img, gt[k] + det.get(k, []))))
    return out


def render_ava_metrics(metrics: dict, console, title: str | None = None, all_classes: bool = False) -> None:
    """Rich tables: per-class AP % (classes with GT, or all), then the group means and the mAP."""
    from rich.table import Table

    def _pct(x) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"

    t = Table(title=title or "AVA frame-mAP@0.5 per class")  # title: markup the caller made safe
    for name in ("id", "action", "group", "GT boxes", "detections", "AP %"):
        t.add_column(name, justify="left" if name in ("action", "group") else "right")
    for c, v in sorted(metrics["per_class"].items(), key=lambda kv: int(kv[0])):
        if v["num_gt"] or all_classes:
            t.add_row(str(c), safe(v["name"]), safe(v["group"]), str(v["num_gt"]), str(v.get("num_detections", "")), _pct(v["ap"]))
    console.print(t)
    s = Table(show_header=False, title="Summary")
    s.add_column("metric", style="bold")
    s.add_column("value", justify="right")
    m, sub = metrics.get, metrics.get("subset")
    rows = [(f"{g} mAP %", _pct(metrics["groups"].get(g))) for g in ("pose", "object", "interaction")]
    classes = f"{m('num_classes_with_gt', '-')} / {m('num_classes', '-')}"
    rows += [("mAP %", _pct(metrics["mAP"])), ("classes with GT", classes)]
    rows += [(name, str(m(key, "-"))) for name, key in [("GT keyframes", "num_gt_keyframes"),
             ("excluded keyframes", "num_excluded_keyframes"), ("detections scored", "num_detections")]]
    rows += [("skipped keyframes (unreadable video)", str(len(m("skipped"))))] if m("skipped") else []
    rows += [("subset (first keyframes only)", f"{sub['keyframes']} of {sub['of']}")] if sub else []
    for row in rows:
        s.add_row(*row)
    console.print(s)
