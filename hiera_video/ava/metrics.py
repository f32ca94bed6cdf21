"""AVA v2.2 frame-mAP@0.5, as the official ActivityNet ``get_ava_performance.py`` (TF object detection's
``PascalDetectionEvaluator``) computes it: GT and detections restricted to the label map's classes; excluded
keyframes dropped; at most 50 detections per keyframe (highest scores, all classes together), then boxes with
``x2 <= x1`` or ``y2 <= y1`` dropped; per class and keyframe, detections by descending score take their best-IoU
GT box (first on ties) when IoU >= 0.5 and it is unmatched, else are false positives (the VOC rule: never the
second-best box); VOC all-point AP over the pooled detections; mAP = mean over the classes with GT. IoU is
continuous (no ``+1``). Where the official code is undefined: a repeated GT row counts once, cap ties keep
file order, tied scores enter the precision/recall curve together. Groups: pose (ids <= 14), object (15..63),
interaction (>= 64). APs are fractions."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from hiera_video.ava.files import AvaRow, as_keys, resolve_label_map
from hiera_video.ava.boxes import box_iou
from hiera_video.errors import HieraVideoError

IOU_THRESHOLD = 0.5
MAX_DETECTIONS_PER_KEYFRAME = 50
GROUPS = {"pose": (0, 14), "object": (15, 63), "interaction": (64, 10**9)}


def group_of(action_id: int) -> str:
    return next((name for name, (lo, hi) in GROUPS.items() if lo <= action_id <= hi), "interaction")


def match_detections(det_boxes: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """TP flags of ONE class and keyframe's detections (by descending score), by the official VOC rule."""
    tp = np.zeros(len(det_boxes), dtype=bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(det_boxes, gt_boxes)
    best = np.argmax(iou, axis=1)  # first maximum on ties, as the official code
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for i, g in enumerate(best):
        if iou[i, g] >= iou_threshold and not taken[g]:
            tp[i] = taken[g] = True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """VOC all-point AP; tied scores enter the curve together. NaN without GT, 0.0 without detections."""
    if num_gt <= 0:
        return float("nan")
    scores, tp = np.asarray(scores, np.float64).reshape(-1), np.asarray(tp, bool).reshape(-1)
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], tp[order].astype(np.float64)
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # keep only the point after each tie group
    ctp, cfp = np.cumsum(t)[last_of_tie], np.cumsum(1.0 - t)[last_of_tie]
    recall = np.concatenate([[0.0], ctp / num_gt, [1.0]])
    precision = np.concatenate([[0.0], ctp / (ctp + cfp), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone from the right
    changes = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[changes] - recall[changes - 1]) * precision[changes]))


def _nanmean(values) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else float("nan")


def cap_detections(rows: list, max_per_key: int = MAX_DETECTIONS_PER_KEYFRAME) -> dict[tuple[str, int], list]:
    """``{key: its rows by descending score, the first max_per_key}`` (ties keep file order), keys by first appearance."""
    by_key: dict[tuple[str, int], list] = defaultdict(list)
    for r in rows:
        by_key[r.key].append(r)
    return {key: sorted(rs, key=lambda r: -r.score)[:max_per_key if max_per_key and max_per_key > 0 else None]
            for key, rs in by_key.items()}


def evaluate_ava(gt_rows: Iterable[AvaRow], det_rows: Iterable[AvaRow], label_map=None,
                 exclusions: Iterable[tuple[str, int]] | str | Path | None = None, iou_threshold: float = IOU_THRESHOLD,
                 max_detections: int = MAX_DETECTIONS_PER_KEYFRAME) -> dict:
    """Frame-mAP@0.5 of detections (:class:`AvaRow` or official-order tuples) against GT.
    ``label_map``: as :func:`resolve_label_map`; ``exclusions``: keys or a CSV path. Returns ``mAP``,
    ``per_class`` ``{id: {name, ap, num_gt, num_detections, group}}``, ``groups`` and counts (NaN: no GT)."""
    classes = resolve_label_map(label_map)
    excluded = as_keys(exclusions)
    gt_rows, det_rows = [_as_row(r) for r in gt_rows], [_as_row(r) for r in det_rows]
    gt: dict[tuple[str, int], dict[int, list]] = defaultdict(lambda: defaultdict(list))  # key -> class -> unique boxes
    excluded_seen = set()
    for r in gt_rows:
        if r.action_id not in classes:
            continue
        if r.key in excluded:
            excluded_seen.add(r.key)
        elif r.box not in gt[r.key][r.action_id]:
            gt[r.key][r.action_id].append(r.box)
    num_gt = {c: sum(len(per_cls.get(c, ())) for per_cls in gt.values()) for c in classes}
    for r in det_rows:
        if r.action_id is None:
            raise HieraVideoError(f"detection row {r.video_id},{r.timestamp:04d} has no action id; detections need "
                                  "video_id,timestamp,x1,y1,x2,y2,action_id,score")
    scores, tps = defaultdict(list), defaultdict(list)
    num_det = {c: 0 for c in classes}
    n_dets, n_det_keys, n_no_gt = 0, 0, 0
    # class filter -> 50 per keyframe -> exclusions -> invalid boxes
    for key, rows in cap_detections([r for r in det_rows if r.action_id in classes], max_detections).items():
        if key in excluded:
            excluded_seen.add(key)
            continue
        rows = [r for r in rows if r.x1 < r.x2 and r.y1 < r.y2]
        n_det_keys, n_dets = n_det_keys + 1, n_dets + len(rows)
        n_no_gt += 0 if key in gt else len(rows)
        by_cls: dict[int, list] = defaultdict(list)
        for r in rows:
            by_cls[r.action_id].append(r)
        for c, rs in by_cls.items():
            gt_boxes = np.array(gt.get(key, {}).get(c, []), np.float64).reshape(-1, 4)
            scores[c].append(np.array([r.score for r in rs], np.float64))
            tps[c].append(match_detections(np.array([r.box for r in rs], np.float64), gt_boxes, iou_threshold))
            num_det[c] += len(rs)
    per_class = {c: {"name": name, "ap": average_precision(np.concatenate([np.zeros(0), *scores[c]]),
                                                         np.concatenate([np.zeros(0, bool), *tps[c]]), num_gt[c]),
                     "num_gt": num_gt[c], "num_detections": num_det[c], "group": group_of(c)}
                 for c, name in sorted(classes.items())}
    return {
        "mAP": _nanmean(v["ap"] for v in per_class.values()), "per_class": per_class,
        "groups": {g: _nanmean(v["ap"] for v in per_class.values() if v["group"] == g) for g in GROUPS},
        "num_classes": len(classes), "num_classes_with_gt": sum(1 for v in per_class.values() if v["num_gt"] > 0),
        "num_gt_keyframes": len(gt), "num_detection_keyframes": n_det_keys, "num_detections": n_dets,
        "num_excluded_keyframes": len(excluded_seen), "num_detections_without_gt_keyframe": n_no_gt,
        "iou_threshold": iou_threshold, "max_detections_per_keyframe": max_detections,
    }


def _as_row(r) -> AvaRow:
    if isinstance(r, AvaRow):
        return r
    r = tuple(r)
    if len(r) not in (7, 8):
        raise HieraVideoError(f"an AVA row needs 7 or 8 fields (video_id, timestamp, x1, y1, x2, y2, action_id[, score]), got {r!r}")
    vid, ts, x1, y1, x2, y2, action, *score = r
    return AvaRow(str(vid), int(ts), float(x1), float(y1), float(x2), float(y2), None if action is None else int(action),
                  float(score[0]) if score else 1.0)


def metrics_to_json(metrics: dict) -> dict:
    """The metrics with NaN -> None and class ids as strings (valid JSON)."""
    if isinstance(metrics, float) and math.isnan(metrics):
        return None
    if isinstance(metrics, dict):
        return {str(k): metrics_to_json(v) for k, v in metrics.items()}
    if isinstance(metrics, (list, tuple)):
        return [metrics_to_json(v) for v in metrics]
    return metrics_to_json(metrics.item()) if isinstance(metrics, np.generic) else metrics
