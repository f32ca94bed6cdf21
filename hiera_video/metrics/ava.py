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

import csv
import io
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import numpy as np

from hiera_video.errors import HieraVideoError
from hiera_video.report import atomic_write_text

IOU_THRESHOLD = 0.5
MAX_DETECTIONS_PER_KEYFRAME = 50
GROUPS = {"pose": (0, 14), "object": (15, 63), "interaction": (64, 10**9)}
CSV_KINDS = ("gt", "detections", "proposals")


class AvaRow(NamedTuple):
    """One CSV row. Boxes are normalised ``[0, 1]``, ``x1, y1, x2, y2``.

    ``action_id`` is None for proposal rows with an empty action column; ``score`` is 1.0
    for GT rows (and rows without a score column); ``person_id`` only comes from GT rows.
    """

    video_id: str
    timestamp: int
    x1: float
    y1: float
    x2: float
    y2: float
    action_id: int | None = None
    score: float = 1.0
    person_id: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.video_id, self.timestamp)

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


def group_of(action_id: int) -> str:
    """``pose`` / ``object`` / ``interaction`` for an AVA action id."""
    for name, (lo, hi) in GROUPS.items():
        if lo <= action_id <= hi:
            return name
    return "interaction"


# --------------------------------------------------------------------------- reading


def _read_lines(path: str | Path, what: str) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` for every non-blank line of a CSV file."""
    p = Path(path)
    if not p.is_file():
        raise HieraVideoError(f"{what} file '{path}' not found; check the path")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise HieraVideoError(f"{what} file '{path}' is not a text (UTF-8) CSV file ({e.reason})") from None
    out = []
    for n, fields in enumerate(csv.reader(io.StringIO(text)), 1):
        if not fields or all(not f.strip() for f in fields):
            continue
        out.append((n, [f.strip() for f in fields]))
    return out


def _int(value: str, where: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise HieraVideoError(f"{where}: {what} '{value}' is not an integer") from None


def _float(value: str, where: str, what: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise HieraVideoError(f"{where}: {what} '{value}' is not a number") from None
    if not math.isfinite(x):
        raise HieraVideoError(f"{where}: {what} '{value}' is not a finite number")
    return x


def parse_ava_row(fields: list[str], where: str, kind: str = "gt") -> AvaRow:
    """One CSV row (already split) -> :class:`AvaRow`; ``where`` names file and line in errors.

    ``kind``: ``gt`` (7 or 8 columns, action required, column 8 = person id),
    ``detections`` (7 or 8 columns, action required, column 8 = score, 1.0 when absent, as
    the official reader) or ``proposals`` (SlowFast person boxes: action may be empty,
    column 8 = score).
    """
    if kind not in CSV_KINDS:
        raise ValueError(f"kind must be one of {CSV_KINDS}, got {kind!r}")
    if len(fields) not in (7, 8):
        layout = "video_id,timestamp,x1,y1,x2,y2,action_id" + (",person_id" if kind == "gt" else ",score")
        raise HieraVideoError(f"{where}: expected 7 or 8 comma-separated columns ({layout}), got {len(fields)}")
    video_id = fields[0]
    if not video_id:
        raise HieraVideoError(f"{where}: empty video id")
    ts = _int(fields[1], where, "timestamp")
    if ts < 0:
        raise HieraVideoError(f"{where}: timestamp {ts} is negative")
    x1, y1, x2, y2 = (_float(v, where, name) for v, name in zip(fields[2:6], ("x1", "y1", "x2", "y2")))
    action = None
    if fields[6] != "" or kind != "proposals":
        action = _int(fields[6], where, "action id")
    score, person = 1.0, None
    if len(fields) == 8 and fields[7] != "":
        if kind == "gt":
            person = _int(fields[7], where, "person id")
        else:
            score = _float(fields[7], where, "score")
    elif len(fields) == 8 and kind != "gt":
        raise HieraVideoError(f"{where}: empty score column")
    return AvaRow(video_id, ts, x1, y1, x2, y2, action, score, person)


def read_ava_csv(path: str | Path, kind: str = "gt") -> list[AvaRow]:
    """Read an AVA CSV (no header) strictly: a wrong column count, a bad number or a
    non-integer timestamp raises :class:`HieraVideoError` naming the file and line.
    Blank lines are skipped. See :func:`parse_ava_row` for ``kind``."""
    what = {"gt": "ground-truth", "detections": "detections", "proposals": "proposals"}.get(kind, kind)
    return [parse_ava_row(fields, f"{path}, line {n}", kind) for n, fields in _read_lines(path, what)]


def read_exclusions(path: str | Path | None) -> set[tuple[str, int]]:
    """Excluded keyframes ``{(video_id, timestamp)}`` from ``video_id,timestamp`` lines."""
    if path is None:
        return set()
    out = set()
    for n, fields in _read_lines(path, "excluded-timestamps"):
        where = f"{path}, line {n}"
        if len(fields) != 2:
            raise HieraVideoError(f"{where}: expected 2 columns (video_id,timestamp), got {len(fields)}")
        if not fields[0]:
            raise HieraVideoError(f"{where}: empty video id")
        out.add((fields[0], _int(fields[1], where, "timestamp")))
    return out


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}:])|([^\s{}:"#]+))')


def _tokens(text: str, path) -> list[tuple[str, str, int]]:
    """Protobuf text tokens ``(kind, value, line)``; kind in str/punct/word."""
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            line = text.count("\n", 0, pos) + 1
            raise HieraVideoError(f"{path}, line {line}: cannot parse '{text[pos:pos + 20].strip()}'")
        comment, string, punct, word = m.groups()
        line = text.count("\n", 0, m.start(m.lastindex)) + 1
        if string is not None:
            out.append(("str", string[1:-1].replace('\\"', '"'), line))
        elif punct is not None:
            out.append(("punct", punct, line))
        elif word is not None:
            out.append(("word", word, line))
        pos = m.end()
    return out


def read_label_map(path: str | Path) -> dict[int, str]:
    """``{id: name}`` from an AVA label map ``.pbtxt``.

    Accepts the v2.2 ``item { name: "..." id: N }`` blocks and the older
    ``label { name: "..." label_id: N label_type: PERSON_MOVEMENT }`` form (any block name;
    ``display_name`` is used when ``name`` is absent; unknown fields are ignored).
    """
    p = Path(path)
    if not p.is_file():
        raise HieraVideoError(f"label map '{path}' not found; pass the ava_action_list_v2.2*.pbtxt file")
    toks = _tokens(p.read_text(encoding="utf-8-sig"), path)
    out: dict[int, str] = {}
    i = 0

    def expect(kind, value=None):
        nonlocal i
        if i >= len(toks):
            raise HieraVideoError(f"{path}: unexpected end of file (expected {value or kind})")
        tok = toks[i]
        if tok[0] != kind or (value is not None and tok[1] != value):
            raise HieraVideoError(f"{path}, line {tok[2]}: expected {value or kind}, got '{tok[1]}'")
        i += 1
        return tok

    while i < len(toks):
        block = expect("word")
        if i < len(toks) and toks[i][1] == ":":
            i += 1
        expect("punct", "{")
        fields: dict[str, tuple[str, int]] = {}
        while i < len(toks) and toks[i][1] != "}":
            name = expect("word")
            expect("punct", ":")
            if i >= len(toks):
                raise HieraVideoError(f"{path}: unexpected end of file in field '{name[1]}'")
            value = toks[i]
            if value[0] == "punct":
                raise HieraVideoError(f"{path}, line {value[2]}: missing value for field '{name[1]}'")
            fields[name[1]] = (value[1], value[2])
            i += 1
        expect("punct", "}")
        where = f"{path}, line {block[2]}"
        id_field = fields.get("id") or fields.get("label_id")
        label = fields.get("name") or fields.get("display_name")
        if id_field is None or label is None:
            raise HieraVideoError(f"{where}: '{block[1]}' block needs a name and an id (or label_id)")
        cid = _int(id_field[0], f"{path}, line {id_field[1]}", "id")
        if cid in out:
            raise HieraVideoError(f"{where}: class id {cid} appears twice")
        out[cid] = label[0]
    if not out:
        raise HieraVideoError(f"{path}: no 'item {{ name: ... id: ... }}' entries found")
    return out


def resolve_label_map(label_map) -> dict[int, str]:
    """A label map given as ``{id: name}``, a ``.pbtxt`` path, ``None`` or ``"ava"``
    (the built-in 60-class v2.2 list) -> ``{id: name}``."""
    if label_map is None or (isinstance(label_map, str) and label_map == "ava"):
        from hiera_video.data.labels import load_label_map

        return load_label_map("ava")
    if isinstance(label_map, Mapping):
        return {int(k): str(v) for k, v in label_map.items()}
    p = Path(label_map)
    if p.suffix.lower() == ".txt":
        from hiera_video.data.labels import load_label_map

        return load_label_map(p)
    return read_label_map(p)


def format_detection_row(row) -> str:
    """``video_id,timestamp,x1,y1,x2,y2,action_id,score`` (timestamp zero-padded to 4)."""
    vid, ts, x1, y1, x2, y2, action, score = tuple(row)[:8]
    return f"{vid},{int(ts):04d},{x1:.4f},{y1:.4f},{x2:.4f},{y2:.4f},{int(action)},{float(score):.6f}"


def write_detections_csv(path: str | Path, rows: Iterable) -> Path:
    """Write detections in the official format (no header), atomically. ``rows`` are
    :class:`AvaRow` or any 8-sequences ``(video_id, timestamp, x1, y1, x2, y2, action, score)``."""
    text = "".join(format_detection_row(r) + "\n" for r in rows)
    atomic_write_text(path, text)
    return Path(path)


# --------------------------------------------------------------------------- scoring


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of ``x1, y1, x2, y2`` boxes (continuous coordinates, no ``+1``)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


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
    precision = ctp / (ctp + cfp)
    recall = ctp / num_gt
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
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


def evaluate_ava(
    gt_rows: Iterable[AvaRow],
    det_rows: Iterable[AvaRow],
    label_map=None,
    exclusions: Iterable[tuple[str, int]] | str | Path | None = None,
    iou_threshold: float = IOU_THRESHOLD,
    max_detections: int = MAX_DETECTIONS_PER_KEYFRAME,
) -> dict:
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
        if scores[c]:
            ap = average_precision(np.concatenate(scores[c]), np.concatenate(tps[c]), num_gt[c])
        else:
            ap = average_precision(np.zeros(0), np.zeros(0, bool), num_gt[c])
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
