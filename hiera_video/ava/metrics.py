"""AVA v2.2 frame-level action detection mAP@0.5 (the ActivityNet challenge protocol).

The official evaluator (``get_ava_performance.py`` of ActivityNet, copied into SlowFast and
mmaction2 on top of the TF object-detection ``PascalDetectionEvaluator``) does, and this
module reproduces:

1. GT and detections are restricted to the classes of the label map (60 of the 80 AVA ids).
2. A keyframe is a key ``(video_id, timestamp)``. Keys listed in the excluded-timestamps
   file are dropped from GT and detections.
3. At most 50 detections are kept per keyframe, the highest scores (the cap counts rows of
   every class together, after the class filter). Detection boxes with ``x2 <= x1`` or
   ``y2 <= y1`` are dropped after the cap.
4. Per class and keyframe, detections are visited by descending score; each is compared
   with ALL GT boxes of that class and keyframe, and the GT box with the highest IoU is
   taken (first one on equal IoU). If that IoU is ``>= 0.5`` and the box is still
   unmatched, the detection is a true positive and the box becomes matched; otherwise
   (IoU too low, or the best box is already matched) it is a false positive. This is the
   VOC rule: a detection never falls back to its second-best box. Detections on keyframes
   without any GT of the class are false positives.
5. Per class, the detections of all keyframes are pooled and sorted by score; precision and
   recall (over the number of GT boxes of the class) give an AP by VOC all-point
   interpolation: precision made monotone from the right, summed over recall changes.
   A class with GT but no detection has AP 0.
6. mAP = mean over the classes that have GT (classes without GT are NaN and ignored).

IoU uses continuous coordinates on normalised ``[0, 1]`` boxes: area = ``(x2-x1)*(y2-y1)``,
no ``+1`` (the official ``np_box_ops`` has none either).

Choices where the official code is undefined or incidental (documented, tested):

* GT: rows with the same key and the same box are one box; each class listed for it gives
  one GT instance of that class (an identical row repeated in the file counts once; the
  official reader would count it twice).
* Cap ties: detections are ranked by score, equal scores keep file order (earlier rows
  win). The official heap keeps earlier rows too, except when it evicts among equal
  minimum scores, where the order of its tuples decides.
* AP ties: detections with exactly the same score enter the precision/recall curve
  together (one point after the whole tie group), so the AP does not depend on row order.
  The official ``np.argsort(scores)[::-1]`` leaves tied order to the sort algorithm.

Groups (reported besides the mAP): pose (ids <= 14), object manipulation (15..63) and
person interaction (>= 64): the mean AP over the group's classes that have GT.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from hiera_video.ava.files import AvaRow, read_exclusions, resolve_label_map
from hiera_video.ava.boxes import box_iou
from hiera_video.errors import HieraVideoError

IOU_THRESHOLD = 0.5
MAX_DETECTIONS_PER_KEYFRAME = 50
GROUPS = {"pose": (0, 14), "object": (15, 63), "interaction": (64, 10**9)}


def group_of(action_id: int) -> str:
    """``pose`` / ``object`` / ``interaction`` for an AVA action id."""
    for name, (lo, hi) in GROUPS.items():
        if lo <= action_id <= hi:
            return name
    return "interaction"


# --------------------------------------------------------------------------- scoring


def match_detections(det_boxes: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """TP flags for detections (already in descending score order) of ONE class and keyframe,
    by the VOC rule of the official evaluator (best-IoU GT box; a second hit is a FP)."""
    n = len(det_boxes)
    tp = np.zeros(n, dtype=bool)
    if n == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(det_boxes, gt_boxes)
    best = np.argmax(iou, axis=1)  # first maximum on ties, as np.argmax in the official code
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for i in range(n):
        g = best[i]
        if iou[i, g] >= iou_threshold and not taken[g]:
            tp[i] = True
            taken[g] = True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """VOC all-point AP of pooled detections; tied scores enter the curve together.
    NaN when ``num_gt == 0``; 0.0 when there are no detections."""
    if num_gt <= 0:
        return float("nan")
    scores = np.asarray(scores, np.float64).reshape(-1)
    tp = np.asarray(tp, bool).reshape(-1)
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(t), np.cumsum(1.0 - t)
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # keep only the point after each tie group
    ctp, cfp = ctp[last_of_tie], cfp[last_of_tie]
    recall = np.concatenate([[0.0], ctp / num_gt, [1.0]])
    precision = np.concatenate([[0.0], ctp / (ctp + cfp), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone from the right
    changes = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[changes] - recall[changes - 1]) * precision[changes]))


def _nanmean(values) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else float("nan")


def cap_detections(rows: list, max_per_key: int = MAX_DETECTIONS_PER_KEYFRAME) -> dict[tuple[str, int], list]:
    """Group detection rows by keyframe and keep the ``max_per_key`` highest scores per key
    (equal scores: earlier rows first). Returns ``{key: rows sorted by descending score}``,
    keys in order of first appearance."""
    by_key: dict[tuple[str, int], list] = defaultdict(list)
    for r in rows:
        by_key[r.key].append(r)
    out = {}
    for key, rs in by_key.items():
        ranked = sorted(rs, key=lambda r: -r.score)  # stable: ties keep file order
        out[key] = ranked[:max_per_key] if max_per_key and max_per_key > 0 else ranked
    return out


def evaluate_ava(gt_rows: Iterable[AvaRow], det_rows: Iterable[AvaRow], label_map=None,
                 exclusions: Iterable[tuple[str, int]] | str | Path | None = None, iou_threshold: float = IOU_THRESHOLD,
                 max_detections: int = MAX_DETECTIONS_PER_KEYFRAME) -> dict:
    """Frame-mAP@0.5 of ``det_rows`` against ``gt_rows`` (see the module docstring).

    ``label_map``: ``{id: name}``, a ``.pbtxt`` path or None (the built-in 60 classes).
    ``exclusions``: keys ``(video_id, timestamp)`` or an excluded-timestamps CSV path.
    Detection rows need ``action_id`` and ``score``; rows are :class:`AvaRow` (or tuples in
    the official column order). Returns::

        {"mAP": float, "per_class": {id: {"name", "ap", "num_gt", "num_detections", "group"}},
         "groups": {"pose": float, "object": float, "interaction": float},
         "num_classes_with_gt", "num_gt_keyframes", "num_detection_keyframes",
         "num_detections", "num_excluded_keyframes", "num_detections_without_gt_keyframe"}

    APs are fractions in [0, 1]; NaN for classes without GT (and for an empty group).
    """
    classes = resolve_label_map(label_map)
    cls_set = set(classes)
    if isinstance(exclusions, (str, Path)):
        excluded = read_exclusions(exclusions)
    else:
        excluded = {(str(v), int(t)) for v, t in (exclusions or ())}
    gt_rows = [_as_row(r) for r in gt_rows]
    det_rows = [_as_row(r) for r in det_rows]

    # Ground truth: key -> class -> unique boxes (first-appearance order).
    gt: dict[tuple[str, int], dict[int, list]] = defaultdict(lambda: defaultdict(list))
    excluded_seen = set()
    for r in gt_rows:
        if r.action_id not in cls_set:
            continue
        if r.key in excluded:
            excluded_seen.add(r.key)
            continue
        boxes = gt[r.key][r.action_id]
        if r.box not in boxes:
            boxes.append(r.box)
    num_gt = {c: 0 for c in classes}
    for per_cls in gt.values():
        for c, boxes in per_cls.items():
            num_gt[c] += len(boxes)

    # Detections: class filter -> 50 per keyframe -> exclusions -> invalid boxes.
    for r in det_rows:
        if r.action_id is None:
            raise HieraVideoError(
                f"detection row {r.video_id},{r.timestamp:04d} has no action id; detections need "
                "video_id,timestamp,x1,y1,x2,y2,action_id,score"
            )
    kept = cap_detections([r for r in det_rows if r.action_id in cls_set], max_detections)
    scores: dict[int, list] = defaultdict(list)
    tps: dict[int, list] = defaultdict(list)
    num_det = {c: 0 for c in classes}
    n_dets, n_det_keys, n_no_gt = 0, 0, 0
    for key, rows in kept.items():
        if key in excluded:
            excluded_seen.add(key)
            continue
        rows = [r for r in rows if r.x1 < r.x2 and r.y1 < r.y2]
        n_det_keys += 1
        n_dets += len(rows)
        gt_here = gt.get(key, {})
        if key not in gt:
            n_no_gt += len(rows)
        by_cls: dict[int, list] = defaultdict(list)
        for r in rows:
            by_cls[r.action_id].append(r)
        for c, rs in by_cls.items():
            det_boxes = np.array([r.box for r in rs], np.float64)
            gt_boxes = np.array(gt_here.get(c, []), np.float64).reshape(-1, 4)
            scores[c].append(np.array([r.score for r in rs], np.float64))
            tps[c].append(match_detections(det_boxes, gt_boxes, iou_threshold))
            num_det[c] += len(rs)

    per_class = {}
    for c, name in sorted(classes.items()):
        ap = average_precision(np.concatenate([np.zeros(0), *scores[c]]), np.concatenate([np.zeros(0, bool), *tps[c]]),
                               num_gt[c])
        per_class[c] = {"name": name, "ap": ap, "num_gt": num_gt[c], "num_detections": num_det[c], "group": group_of(c)}
    groups = {g: _nanmean(v["ap"] for v in per_class.values() if v["group"] == g) for g in GROUPS}
    return {
        "mAP": _nanmean(v["ap"] for v in per_class.values()),
        "per_class": per_class,
        "groups": groups,
        "num_classes": len(classes),
        "num_classes_with_gt": sum(1 for v in per_class.values() if v["num_gt"] > 0),
        "num_gt_keyframes": len(gt),
        "num_detection_keyframes": n_det_keys,
        "num_detections": n_dets,
        "num_excluded_keyframes": len(excluded_seen),
        "num_detections_without_gt_keyframe": n_no_gt,
        "iou_threshold": iou_threshold,
        "max_detections_per_keyframe": max_detections,
    }


def _as_row(r) -> AvaRow:
    if isinstance(r, AvaRow):
        return r
    r = tuple(r)
    if len(r) == 8:
        vid, ts, x1, y1, x2, y2, action, score = r
        return AvaRow(str(vid), int(ts), float(x1), float(y1), float(x2), float(y2),
                      None if action is None else int(action), float(score))
    if len(r) == 7:
        vid, ts, x1, y1, x2, y2, action = r
        return AvaRow(str(vid), int(ts), float(x1), float(y1), float(x2), float(y2), int(action))
    raise HieraVideoError(f"an AVA row needs 7 or 8 fields (video_id, timestamp, x1, y1, x2, y2, action_id[, score]), got {r!r}")


def metrics_to_json(metrics: dict) -> dict:
    """The metrics with NaN -> None and class ids as strings (valid JSON)."""

    def clean(x):
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            return clean(x.item())
        return x

    return clean(metrics)
