"""AVA action detection: the loss, evaluation of a detector over a dataset, and the outputs.

* :func:`ava_loss`: binary cross-entropy with logits over the 80 AVA ids (mean over boxes
  and classes, as SlowFast's ``BCELoss`` on sigmoid outputs).
* :func:`evaluate_ava_model`: run an :class:`~hiera_video.ava.model.AvaDetector` over an
  :class:`~hiera_video.ava.dataset.AvaDataset` (mode "val"), turn the sigmoid score of
  every box and every label-map class into an official detection row
  ``video_id,timestamp,x1,y1,x2,y2,action_id,score`` (boxes = the dataset's original
  normalised boxes), and score them with :func:`hiera_video.ava.metrics.evaluate_ava`.
  Items whose video cannot be decoded are skipped and listed. Under ``torchrun`` each rank
  takes every world_size-th keyframe and rank 0 merges them (no keyframe twice, none
  dropped; with ``--output`` through the per-process result files of
  :mod:`~hiera_video.engine.shard_files`, which ``--resume`` continues).
* :func:`write_ava_outputs` and :func:`render_ava_metrics`: ``detections.csv``,
  ``metrics.json``, ``per_class.csv`` and a Rich table.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from hiera_video.ava.dataset import ava_collate
from hiera_video.errors import HieraVideoError
from hiera_video.ava.files import AvaRow, resolve_label_map, write_detections_csv
from hiera_video.ava.metrics import evaluate_ava, metrics_to_json
from hiera_video.report import safe, write_csv, write_json

log = logging.getLogger("hiera_video")


def ava_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits of ``logits [K, 80]`` against multi-hot ``labels [K, 80]``."""
    if logits.shape != labels.shape:
        raise HieraVideoError(f"AVA logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
    return F.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.device, torch.float32))


class _Guarded(Dataset):
    """Item ``j`` -> ``(dataset index, item or None, error or None)``; never raises for a bad video."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        try:
            return i, self.dataset[i], None
        except HieraVideoError as e:
            return i, None, str(e)


def _collate(batch, pad_multiple: int = 32):
    """``(ava_collate(good items) or None, their dataset indices, [(index, reason)] of the bad ones)``."""
    good = [b for b in batch if b[1] is not None]
    failed = [(b[0], b[2]) for b in batch if b[1] is None]
    return (ava_collate([b[1] for b in good], pad_multiple) if good else None), [b[0] for b in good], failed


def detection_rows(metas: list[dict], probs: torch.Tensor, classes: list[int]) -> list[AvaRow]:
    """Official rows for every box of ``metas`` (in order) and every class id in ``classes``;
    ``probs [K, 80]`` are per-box sigmoid scores (column ``id - 1``)."""
    rows = []
    cols = torch.tensor([c - 1 for c in classes], dtype=torch.long)
    p = probs.detach().float().cpu()[:, cols].tolist()
    k = 0
    for meta in metas:
        boxes = meta["boxes"].tolist()
        for x1, y1, x2, y2 in boxes:
            for c, s in zip(classes, p[k]):
                rows.append(AvaRow(meta["video_id"], int(meta["timestamp"]), x1, y1, x2, y2, c, float(s)))
            k += 1
    if k != len(p):
        raise HieraVideoError(f"got scores for {len(p)} boxes but the batch has {k}")
    return rows


@torch.no_grad()
def evaluate_ava_model(
    model: torch.nn.Module,
    dataset,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    label_map=None,
    gt_rows=None,
    exclusions=None,
    amp_dtype: torch.dtype | None = None,
    pad_multiple: int = 32,
    world=None,
    progress=None,
    results=None,
    stop=None,
) -> tuple[list[AvaRow], dict | None]:
    """Detections of ``model`` on ``dataset`` and their AVA metrics.

    ``label_map`` (default: the dataset's) picks the classes written as rows; ``gt_rows`` and
    ``exclusions`` default to the dataset's GT rows and excluded keys (``metrics`` is None
    when there is no GT). ``amp_dtype`` (e.g. ``torch.bfloat16``) runs the model under
    autocast. ``progress``: an optional callable ``progress(done, total)``.
    Returns ``(rows, metrics)``, rows in keyframe order; ``metrics`` also holds
    ``num_keyframes``, ``skipped`` (``[(video_id, timestamp, reason)]``), ``seconds`` and
    ``resumed`` (keyframes an earlier run did). On ranks other than 0 of a distributed run,
    returns ``([], None)``.

    ``results`` (``eval --dataset ava --output``): each keyframe's rows also go to this
    process's result file, keyframes an earlier run did are skipped, and rank 0 merges the
    files without a collective timeout (:mod:`~hiera_video.engine.shard_files`); without it
    rank 0 gathers in one collective.

    ``stop`` (a training run's validation: its signal flag) is asked after every batch; once it
    says True this process stops, and ``metrics["interrupted"]`` is True (the metrics cover
    only the keyframes finished before it).
    """
    from hiera_video.engine import distributed
    from hiera_video.engine.shard_files import guard

    world = world or distributed.World()
    device = torch.device(device)
    classes = sorted(resolve_label_map(label_map if label_map is not None else getattr(dataset, "label_map", None)))
    indices = results.mine(len(dataset)) if results is not None else distributed.shard(len(dataset), world)
    start = time.perf_counter()
    with guard(results):  # an error here ends every process with its message
        done, failed, interrupted = _detect_shard(model, dataset, indices, batch_size, device, num_workers, classes, amp_dtype,
                                                  pad_multiple, world, progress, results, stop)
    seconds = time.perf_counter() - start
    resumed = 0
    if results is not None:
        results.finish(seconds=seconds)
        if not world.is_main:
            return [], None
        merged, states = results.collect()
        done = {i: [AvaRow(*r) for r in rec["rows"]] for i, rec in merged.items() if rec.get("error") is None}
        failed = [(i, rec["error"]) for i, rec in merged.items() if rec.get("error") is not None]
        seconds = max(float(s.get("seconds") or 0) for s in states)
        earlier = set(results.earlier)
        resumed = sum(i in earlier for i in merged)
    else:
        gathered = distributed.gather_to_main((done, failed, seconds, interrupted), world)
        if not world.is_main:
            return [], None
        done = {i: r for part in gathered for i, r in part[0].items()}
        failed = [f for part in gathered for f in part[1]]
        seconds = max(part[2] for part in gathered)
        interrupted = any(part[3] for part in gathered)
    rows = [r for i in sorted(done) for r in done[i]]
    failed = sorted(failed)
    items = getattr(dataset, "items", None)
    skipped = [(*(items[i] if items is not None else (str(i), -1)), reason) for i, reason in failed]
    for vid, ts, reason in skipped[:5]:
        log.warning("skipped AVA keyframe %s,%04d: %s", vid, ts, reason)
    subset = getattr(dataset, "subset", None)
    if gt_rows is None:
        gt_rows = getattr(dataset, "gt_rows", None)
        if subset and gt_rows and items is not None:
            # Only the first keyframes were evaluated (--limit, data.limit_val): score them against
            # their own ground truth, not the whole split's (which would count every other
            # keyframe's boxes as missed).
            keys = set(items)
            gt_rows = [r for r in gt_rows if r.key in keys]
    if exclusions is None:
        exclusions = getattr(dataset, "exclusions", None)
    metrics = None
    if gt_rows:
        lm = resolve_label_map(label_map if label_map is not None else getattr(dataset, "label_map", None))
        metrics = evaluate_ava(gt_rows, rows, lm, exclusions)
        metrics.update(num_keyframes=len(done), skipped=skipped, seconds=round(seconds, 3), resumed=resumed, interrupted=interrupted,
                       subset=dict(keyframes=subset[0], of=subset[1]) if subset else None)
    return rows, metrics


def _detect_shard(model, dataset, indices, batch_size, device, num_workers, classes, amp_dtype, pad_multiple, world, progress,
                  results, stop) -> tuple[dict[int, list[AvaRow]], list[tuple[int, str]], bool]:
    """This process's keyframes: ``({index: rows}, [(index, reason)] of the unreadable ones,
    stopped early by ``stop``)``; each keyframe's outcome also goes to ``results``."""
    from hiera_video.engine import faults

    loader = DataLoader(
        _Guarded(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=partial(_collate, pad_multiple=pad_multiple),
    )
    was_training = model.training
    model.eval()
    done: dict[int, list[AvaRow]] = {}
    failed: list[tuple[int, str]] = []
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext())
    try:
        for batch, good, bad in loader:
            for _ in range(len(good) + len(bad)):
                faults.slow(world.rank)  # tests: processes that finish far apart
            failed += bad
            for i, reason in bad:
                if results is not None:
                    results.add(i, dict(error=reason))
            if batch is not None:
                clips, boxes, _, metas = batch
                with autocast:
                    logits = model(clips.to(device, non_blocking=True), [b.to(device) for b in boxes])
                probs = torch.sigmoid(logits.float())
                k = 0
                for i, meta in zip(good, metas):  # one keyframe's boxes after the other
                    n = len(meta["boxes"])
                    done[i] = detection_rows([meta], probs[k : k + n], classes)
                    k += n
                    if results is not None:
                        results.add(i, dict(rows=[tuple(r) for r in done[i]]))
                if k != len(probs):
                    raise HieraVideoError(f"got scores for {len(probs)} boxes but the batch has {k}")
            if progress is not None:
                progress(len(done) + len(failed), len(indices))
            if results is not None and results.should_stop():
                raise KeyboardInterrupt  # a SIGINT stopped another process: stop here too
            if stop is not None and stop():
                return done, failed, True
    finally:
        model.train(was_training)
    return done, failed, False


def ava_protocol(model: torch.nn.Module, dataset, amp_dtype: torch.dtype | None, classes) -> dict:
    """What a keyframe's detections depend on, compared field by field by ``eval --dataset ava
    --resume``: the detector's weights (content), the precision, the clips and view, the
    classes written, and the keyframes with their boxes (the number of processes does not matter)."""
    from hiera_video.engine.shard_files import list_fingerprint, weights_fingerprint

    keyframes = [(vid, ts, dataset.entries[(vid, ts)].boxes.round(6).tolist()) for vid, ts in dataset.items]
    return dict(
        weights_sha256=weights_fingerprint(model), dtype=str(amp_dtype or torch.float32).replace("torch.", ""),
        num_frames=dataset.num_frames, stride=dataset.stride, crop_size=dataset.crop_size, mean=list(dataset.mean),
        std=list(dataset.std), backend=dataset.backend, test_view=dataset.test_view, frames_layout=dataset.frames_layout,
        classes=sorted(int(c) for c in classes), split=dataset.split,
        keyframes=f"{len(keyframes)} keyframes, sha256 {list_fingerprint(keyframes)[:16]}",
    )


def write_ava_outputs(output_dir: str | Path, detections, metrics: dict | None, extra: dict | None = None,
                      dataset=None) -> dict[str, Path]:
    """``detections.csv`` (official format, no header; skipped when ``detections`` is None), ``metrics.json`` (mAP, groups,
    per-class AP with GT counts, plus ``extra``), ``per_class.csv`` and ``report.html`` (with ``dataset``: keyframes of the
    worst classes with their boxes); returns the paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if detections is not None:
        files["detections"] = write_detections_csv(out / "detections.csv", detections)
    if metrics is not None:
        files["metrics"] = out / "metrics.json"
        write_json(files["metrics"], metrics_to_json({**metrics, **(extra or {})}))
        files["per_class"] = out / "per_class.csv"
        write_csv(files["per_class"], ["action_id", "name", "group", "ap", "num_gt", "num_detections"], [
            (c, v["name"], v["group"], "" if math.isnan(v["ap"]) else f"{v['ap']:.6f}", v["num_gt"], v["num_detections"])
            for c, v in sorted(metrics["per_class"].items())
        ])
        from hiera_video.html_report import write_report_safely  # after the results: a failure here is a warning

        report = write_report_safely(out, ava_dataset=dataset)
        if report is not None:
            files["report"] = report
    return files


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def render_ava_metrics(metrics: dict, console, title: str | None = None, all_classes: bool = False) -> None:
    """Rich tables: per-class AP (%) with GT counts (classes with GT; every class with
    ``all_classes``), then the group means and the mAP."""
    from rich.table import Table

    t = Table(title=title or "AVA frame-mAP@0.5 per class")  # title: markup the caller made safe
    t.add_column("id", justify="right")
    t.add_column("action")
    t.add_column("group")
    t.add_column("GT boxes", justify="right")
    t.add_column("detections", justify="right")
    t.add_column("AP %", justify="right")
    for c, v in sorted(metrics["per_class"].items(), key=lambda kv: int(kv[0])):
        if v["num_gt"] == 0 and not all_classes:
            continue
        t.add_row(str(c), safe(v["name"]), safe(v["group"]), str(v["num_gt"]), str(v.get("num_detections", "")), _pct(v["ap"]))
    console.print(t)
    s = Table(show_header=False, title="Summary")
    s.add_column("metric", style="bold")
    s.add_column("value", justify="right")
    for g in ("pose", "object", "interaction"):
        s.add_row(f"{g} mAP %", _pct(metrics["groups"].get(g)))
    s.add_row("mAP %", _pct(metrics["mAP"]))
    s.add_row("classes with GT", f"{metrics.get('num_classes_with_gt', '-')} / {metrics.get('num_classes', '-')}")
    s.add_row("GT keyframes", str(metrics.get("num_gt_keyframes", "-")))
    s.add_row("excluded keyframes", str(metrics.get("num_excluded_keyframes", "-")))
    s.add_row("detections scored", str(metrics.get("num_detections", "-")))
    if metrics.get("skipped"):
        s.add_row("skipped keyframes (unreadable video)", str(len(metrics["skipped"])))
    if metrics.get("subset"):
        s.add_row("subset (first keyframes only)", f"{metrics['subset']['keyframes']} of {metrics['subset']['of']}")
    console.print(s)
