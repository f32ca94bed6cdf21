"""``report.html``: one self-contained page per evaluation or training run.

The page is a *view* of the files a command already wrote (``metrics.json``, ``per_class.csv``,
``confusion.csv``, ``predictions.pt``, ``failed.csv``, ``missing.csv``; a run folder's
``config.json``, ``metrics.jsonl``, ``bad_videos.csv``, ``reconstruction.png`` and ``eval/``),
never the only copy, so ``hiera-video report DIR`` can (re)build it for any folder, old ones
included. It loads nothing from anywhere: CSS, JavaScript (table sorting and filtering, the
confusion heatmap) and images (small JPEG data URIs, curves as inline SVG) are in the file.

Security: every string that comes from a dataset (class names, paths, CSV fields, the
config) goes through jinja2's autoescape in HTML, or through ``|tojson`` (which escapes ``<``,
``>``, ``&`` and quotes) into the one JSON block the script reads; the script writes text
only through ``textContent``, never ``innerHTML``.

Size: thumbnails are 8 frames of at most 96 px height per mistake (``MISTAKES`` of them), the
confusion matrix is stored sparse (non-zero cells only) and the confused-pairs list is capped,
so a 400-class Kinetics eval stays well under :data:`SIZE_CAP` (``tests/test_html_report.py``
checks a generated 400-class, 20,000-video folder).
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import logging
import math
import time
from pathlib import Path

from hiera_video.errors import HieraVideoError
from hiera_video.report import atomic_write_text, read_csv

log = logging.getLogger("hiera_video")

REPORT_NAME = "report.html"
#: the most confident wrong videos shown with frame strips
MISTAKES = 12
#: frames per strip and their height in pixels
STRIP_FRAMES, THUMB_HEIGHT = 8, 96
#: confused (true, predicted) pairs listed
TOP_PAIRS = 50
#: the documented page-size cap for a 400-class Kinetics eval (bytes)
SIZE_CAP = 5 * 1024 * 1024


def _env():
    """The jinja2 environment: templates from the package, autoescape always on."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("hiera_video", "templates"),
        autoescape=True,  # every template, whatever its file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = read_csv(path)  # neutralised cells and names that are not UTF-8 read back as written
    return [dict(zip(rows[0], row)) for row in rows[1:]] if rows else []


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def folder_kind(folder: Path) -> str | None:
    """``"eval"`` (classification eval output), ``"ava"`` (AVA eval output), ``"run"``
    (finetune/pretrain run folder) or None."""
    if (folder / "metrics.jsonl").is_file() or (folder / "config.json").is_file():
        return "run"
    m = _read_json(folder / "metrics.json")
    if isinstance(m, dict):
        if "mAP" in m:
            return "ava"
        return "eval"
    if (folder / "predictions.pt").is_file():
        return "eval"
    return None


def build_report(folder: str | Path, decode: bool = True, ava_dataset=None) -> Path:
    """Write ``folder/report.html`` (atomically) from the files in ``folder``; returns its path.

    ``decode``: decode the worst mistakes' clips again (from their paths, with the saved
    protocol) for the frame strips. ``ava_dataset``: the evaluated AVA dataset, for keyframes
    with boxes (rebuilt pages without it list the worst classes only).
    Raises :class:`HieraVideoError` when the folder holds nothing a page can show."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HieraVideoError(f"'{folder}' is not a folder: pass an eval --output folder or a training run folder")
    kind = folder_kind(folder)
    t0 = time.perf_counter()
    if kind == "eval":
        ctx = eval_context(folder, decode)
    elif kind == "ava":
        ctx = ava_context(folder, ava_dataset)
    elif kind == "run":
        ctx = run_context(folder)
    else:
        raise HieraVideoError(
            f"'{folder}' holds no results to show (no metrics.json, predictions.pt, config.json or metrics.jsonl): "
            "pass the --output folder of eval or a finetune/pretrain run folder"
        )
    ctx.update(kind=kind, folder=str(folder.resolve()),
               built=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    from hiera_video import __version__ as version

    ctx["version"] = version
    html = _env().get_template("report.html.j2").render(**ctx)
    path = folder / REPORT_NAME
    atomic_write_text(path, html)
    log.info("wrote %s (%.0f KB in %.2f s)", path, len(html.encode()) / 1024, time.perf_counter() - t0)
    return path


def write_report_safely(folder: str | Path, **kwargs) -> Path | None:
    """:func:`build_report`, where a failure is a warning and never an error: the results
    (JSON, CSV, predictions) are written before it and stay whatever happens here."""
    try:
        return build_report(folder, **kwargs)
    except Exception as e:  # noqa: BLE001 - the page is a view; it must not cost the results
        from hiera_video.report import visible

        log.warning("could not write %s: %s (the results are written; retry with hiera-video report %s)",
                    visible(Path(folder) / REPORT_NAME), visible(" ".join(str(e).split()) or type(e).__name__),
                    visible(folder))
        return None


# --------------------------------------------------------------------------- classification eval


def _confusion(folder: Path, n: int):
    """Sparse confusion ``[[true, pred, count], ...]`` from ``confusion.csv`` (None without it)."""
    path = folder / "confusion.csv"
    if not path.is_file():
        return None
    cells = []
    rows = iter(read_csv(path))
    next(rows, None)
    for i, row in enumerate(rows):
        for j, v in enumerate(row[1:]):
            if v not in ("", "0"):
                cells.append([i, j, int(v)])
    return cells if cells or n else None


def _thumb(frame) -> str:
    """One ``[3, H, W]`` uint8 tensor -> a small JPEG data URI."""
    from PIL import Image

    img = Image.fromarray(frame.permute(1, 2, 0).contiguous().numpy())
    if img.height > THUMB_HEIGHT:
        img = img.resize((max(1, round(img.width * THUMB_HEIGHT / img.height)), THUMB_HEIGHT))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=72)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def clip_strip(path: str, protocol: dict) -> tuple[list[str], str | None]:
    """Frame thumbnails of the centre view of ``path`` cut by the saved ``protocol`` (the
    clip the model saw, de-normalised): ``(data URIs, None)`` or ``([], reason)``."""
    import torch

    from hiera_video.data.clip_spec import ClipSpec

    if not Path(path).is_file():
        return [], "the video is no longer at this path"
    try:
        spec = ClipSpec.from_dict(protocol).with_(temporal_views=1, spatial_views=1)
        views, _ = spec.views(path)
        clip = views[0].float()  # [3, T, S, S], normalised
        mean = torch.tensor(spec.mean).view(3, 1, 1, 1)
        std = torch.tensor(spec.std).view(3, 1, 1, 1)
        clip = (clip * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
        t = clip.shape[1]
        picks = sorted({round(k * (t - 1) / max(1, STRIP_FRAMES - 1)) for k in range(min(t, STRIP_FRAMES))})
        return [_thumb(clip[:, k]) for k in picks], None
    except Exception as e:  # noqa: BLE001 - one undecodable video costs its strip only
        return [], " ".join(str(e).split())[:200] or type(e).__name__


def _mistakes(folder: Path, classes: list[str], decode: bool) -> tuple[list[dict], dict]:
    """The most confident wrong videos from ``predictions.pt`` with top-5 and frame strips."""
    path = folder / "predictions.pt"
    if not path.is_file():
        return [], {}
    from hiera_video.metrics.classification import load_predictions

    preds = load_predictions(path)
    probs, labels = preds.probs.float(), preds.labels
    meta = preds.meta or {}
    protocol = meta.get("protocol") or {}
    names = list(preds.classes) or classes
    if len(labels) == 0:
        return [], protocol
    conf, top1 = probs.max(dim=1)
    wrong = ((labels >= 0) & (top1 != labels)).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: -float(conf[i]))
    k = min(5, probs.shape[1])
    out = []
    for i in wrong[:MISTAKES]:
        p, idx = probs[i].topk(k)
        frames, why = clip_strip(preds.paths[i], protocol) if decode else ([], "not decoded (--no-frames)")
        out.append(dict(path=preds.paths[i], truth=names[int(labels[i])], confidence=float(conf[i]) * 100,
                        top5=[(names[int(j)], float(q) * 100) for q, j in zip(p, idx)], frames=frames, no_frames=why))
    return out, protocol


def eval_context(folder: Path, decode: bool = True) -> dict:
    m = _read_json(folder / "metrics.json") or {}
    per_class = m.get("per_class") or [
        dict(index=int(r["index"]), name=r["name"], support=int(r["support"]), correct=int(r["correct"]),
             accuracy=float(r["accuracy"]) if r.get("accuracy") not in (None, "", "-") else None,
             top5=float(r["top5"]) if r.get("top5") not in (None, "", "-") else None, predicted=int(r["predicted"]))
        for r in _read_csv(folder / "per_class.csv")
    ]
    classes = [pc["name"] for pc in per_class]
    cells = _confusion(folder, len(classes)) if classes else None
    # most confused with (off-diagonal row maximum) and the top confused pairs
    worst: dict[int, tuple[int, int]] = {}
    pairs = []
    for i, j, v in cells or []:
        if i != j:
            pairs.append((v, i, j))
            if v > worst.get(i, (0, -1))[0]:
                worst[i] = (v, j)
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    support = {pc["index"]: pc["support"] for pc in per_class}
    rows = []
    for pc in per_class:
        w = worst.get(pc["index"])
        rows.append(dict(pc, confused=classes[w[1]] if w else "", confused_n=w[0] if w else 0))
    top_pairs = [dict(truth=classes[i], pred=classes[j], count=v, share=100 * v / support[i] if support.get(i) else None)
                 for v, i, j in pairs[:TOP_PAIRS]]
    mistakes, saved_protocol = _mistakes(folder, classes, decode)
    protocol = m.get("protocol") or saved_protocol or {}
    failed = _read_csv(folder / "failed.csv")
    missing = _read_csv(folder / "missing.csv")
    headline = [
        ("top-1 %", _pct(m.get("top1"))), (f"top-{m.get('top5_k', 5)} %", _pct(m.get("top5"))),
        ("mean class accuracy %", _pct(m.get("mean_class_accuracy"))),
        ("videos scored", m.get("num_videos", "–")), ("failed", m.get("num_failed", len(failed))),
        ("missing", m.get("num_missing", len(missing))),
    ]
    provenance = {k: v for k, v in m.items() if k not in ("per_class", "protocol", "substituted_frames", "confusion")
                  and not isinstance(v, (list, dict))}
    return dict(
        title=" ".join(str(x) for x in ((m.get("dataset") or {}).get("dataset") if isinstance(m.get("dataset"), dict) else None,
                                          m.get("split")) if x) or folder.name,
        headline=headline, partial=bool(m.get("partial")), protocol=_flat(protocol), provenance=_flat(provenance),
        dataset=_flat(m.get("dataset") or {}) if isinstance(m.get("dataset"), dict) else {},
        rows=rows, top_pairs=top_pairs, mistakes=mistakes, failed=failed, missing=missing,
        substituted=(m.get("substituted_frames") or {}).get("videos") or [],
        data=dict(classes=classes, confusion=cells or [], support=[pc["support"] for pc in per_class]),
        run=None, ava=None,
    )


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested dicts as ``{"a.b": "value"}`` strings (lists as JSON) for a key/value table."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (list, tuple)):
            text = json.dumps(v)
            out[key] = text if len(text) <= 300 else text[:300] + f"… ({len(v)} items)"
        else:
            out[key] = "" if v is None else str(v)
    return out


# --------------------------------------------------------------------------- AVA


def ava_context(folder: Path, dataset=None) -> dict:
    m = _read_json(folder / "metrics.json") or {}
    per = m.get("per_class") or {}
    rows = []
    for cid, v in sorted(per.items(), key=lambda kv: int(kv[0])):
        ap = v.get("ap")
        rows.append(dict(index=int(cid), name=v.get("name", ""), group=v.get("group", ""),
                         ap=None if ap is None or (isinstance(ap, float) and math.isnan(ap)) else 100 * ap,
                         num_gt=v.get("num_gt", 0), num_detections=v.get("num_detections", 0)))
    groups = m.get("groups") or {}
    headline = [("mAP %", _pct(100 * m["mAP"] if m.get("mAP") is not None else None))] + [
        (f"{g} mAP %", _pct(100 * groups[g] if groups.get(g) is not None else None)) for g in ("pose", "object", "interaction")
    ] + [("keyframes", m.get("num_keyframes", "–")), ("skipped", len(m.get("skipped") or []))]
    worst = sorted((r for r in rows if r["num_gt"] and r["ap"] is not None), key=lambda r: r["ap"])[:5]
    keyframes = _ava_keyframes(folder, dataset, worst) if dataset is not None else []
    provenance = {k: v for k, v in m.items() if not isinstance(v, (list, dict))}
    failed = [dict(path=f"{s[0]},{s[1]}", reason=s[2]) for s in (m.get("skipped") or []) if len(s) >= 3]
    return dict(
        title=f"eval ava {m.get('split', '')}".strip(), headline=headline, partial=bool(m.get("interrupted")),
        protocol={}, provenance=_flat(provenance), dataset={}, rows=[], top_pairs=[], mistakes=[], failed=failed,
        missing=[], substituted=[], data=dict(classes=[], confusion=[], support=[]), run=None,
        ava=dict(rows=rows, worst=worst, keyframes=keyframes, has_dataset=dataset is not None),
    )


def _ava_keyframes(folder: Path, dataset, worst: list[dict], per_class: int = 2) -> list[dict]:
    """For each of the worst classes, up to ``per_class`` evaluated keyframes holding a
    ground-truth box of it, drawn with the ground truth (green) and this class's detections
    scoring at least 0.5 (red)."""
    from hiera_video.ava.files import read_ava_csv

    det: dict[tuple, list] = {}
    path = folder / "detections.csv"
    if path.is_file():
        for r in read_ava_csv(path, "detections"):
            if r.score >= 0.5:
                det.setdefault((r.video_id, int(r.timestamp), r.action_id), []).append(r)
    gt = getattr(dataset, "gt_rows", None) or []
    evaluated = set(getattr(dataset, "items", []))
    out = []
    for w in worst:
        keys: list = []
        for r in gt:
            key = (r.video_id, int(r.timestamp))
            if r.action_id == w["index"] and key in evaluated and key not in keys:
                keys.append(key)
            if len(keys) >= per_class:
                break
        for key in keys:
            img = _ava_frame(dataset, key)
            if img is None:
                continue
            boxes = [("gt", r) for r in gt if (r.video_id, int(r.timestamp)) == key and r.action_id == w["index"]]
            boxes += [("pred", r) for r in det.get((key[0], key[1], w["index"]), [])]
            out.append(dict(cls=w["name"], key=f"{key[0]},{key[1]:04d}", image=_draw_boxes(img, boxes)))
    return out


def _ava_frame(dataset, key):
    """The keyframe of ``key`` as a PIL image, or None when it cannot be read."""
    try:
        from PIL import Image

        src = dataset._source(key[0])
        i = int(round((key[1] - dataset.start_sec) * src.fps))
        frame = src.get_frames([max(0, min(i, src.num_frames - 1))])[0]
        arr = frame.numpy() if hasattr(frame, "numpy") else frame
        if arr.shape[0] == 3:  # [3, H, W] -> [H, W, 3]
            arr = arr.transpose(1, 2, 0)
        return Image.fromarray(arr)
    except Exception:  # noqa: BLE001 - a keyframe that cannot be read is left out
        return None


def _draw_boxes(img, boxes) -> str:
    from PIL import ImageDraw

    img = img.convert("RGB")
    img.thumbnail((320, 240))
    draw = ImageDraw.Draw(img)
    for kind, r in boxes:
        x1, x2 = sorted((r.x1 * img.width, r.x2 * img.width))
        y1, y2 = sorted((r.y1 * img.height, r.y2 * img.height))
        draw.rectangle([x1, y1, x2, y2],
                       outline=(40, 200, 60) if kind == "gt" else (230, 40, 40), width=2)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# --------------------------------------------------------------------------- training runs


def svg_chart(title: str, series: list[tuple[str, list[float], list[float]]], xlabel: str = "step",
              width: int = 420, height: int = 240, log_y: bool = False) -> str:
    """A line chart as inline SVG markup (built from numbers; the labels are escaped), which
    the template inserts with ``|safe``."""
    from html import escape

    pts = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    L, R, T, B = 52, 10, 24, 30
    sx = lambda x: L + (x - x0) / (x1 - x0) * (width - L - R)  # noqa: E731
    sy = lambda y: T + (y1 - y) / (y1 - y0) * (height - T - B)  # noqa: E731
    colours = ["#3b6fd6", "#e07b39", "#2a9d5b", "#b03a8c"]
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<text x="{width / 2}" y="15" text-anchor="middle" class="ct">{escape(title)}</text>',
             f'<line x1="{L}" y1="{height - B}" x2="{width - R}" y2="{height - B}" class="ax"/>',
             f'<line x1="{L}" y1="{T}" x2="{L}" y2="{height - B}" class="ax"/>']
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        parts.append(f'<text x="{L - 4}" y="{sy(yv) + 4:.1f}" text-anchor="end" class="tk">{yv:.3g}</text>')
        xv = x0 + (x1 - x0) * k / 4
        parts.append(f'<text x="{sx(xv):.1f}" y="{height - B + 14}" text-anchor="middle" class="tk">{xv:.4g}</text>')
    parts.append(f'<text x="{width - R}" y="{height - 2}" text-anchor="end" class="tk">{escape(xlabel)}</text>')
    for n, (name, xs, ys) in enumerate(series):
        c = colours[n % len(colours)]
        xy = [(sx(x), sy(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
        if not xy:
            continue
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="'
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in xy) + '"/>')
        if len(xy) <= 60:
            parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{c}"/>' for a, b in xy]
        if len(series) > 1:
            parts.append(f'<text x="{width - R - 4}" y="{T + 12 + 12 * n}" text-anchor="end" fill="{c}" class="tk">'
                         f'{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _image_uri(path: Path, max_width: int = 1400) -> str | None:
    """An image file as a JPEG data URI, at most ``max_width`` wide (None when unreadable)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.width > max_width:
                im = im.resize((max_width, round(im.height * max_width / im.width)))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:  # noqa: BLE001
        return None


def run_context(folder: Path) -> dict:
    from hiera_video.engine.train_log import read_rows

    try:
        rows = read_rows(folder / "metrics.jsonl")
    except ValueError:
        rows = []
    train = [r for r in rows if r.get("kind") == "train"]
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    val = [r for r in rows if r.get("kind") == "val"]
    charts = []
    if train or epochs:
        charts.append(svg_chart("training loss", [("step", [r["step"] for r in train], [r.get("loss") for r in train]),
                                                  ("epoch mean", [r["step"] for r in epochs], [r.get("loss") for r in epochs])]))
    if train and any("lr" in r for r in train):
        charts.append(svg_chart("learning rate", [("lr", [r["step"] for r in train], [r.get("lr") for r in train])]))
    val_keys = [k for k in ("top1", "top5", "mAP") if any(isinstance(r.get(k), (int, float)) for r in val)]
    for k in val_keys:
        charts.append(svg_chart(f"validation {k}", [(k, [r["step"] for r in val], [r.get(k) for r in val])]))
    cfg = _read_json(folder / "config.json") or {}
    final = _read_json(folder / "metrics.json") or {}
    bad = _read_csv(folder / "bad_videos.csv")
    recon = _image_uri(folder / "reconstruction.png") if (folder / "reconstruction.png").is_file() else None
    sub, sub_kind = {}, folder_kind(folder / "eval") if (folder / "eval").is_dir() else None
    if sub_kind == "eval":
        sub = eval_context(folder / "eval", decode=False)
    elif sub_kind == "ava":  # an AVA detector's run: its per-class AP table
        sub = ava_context(folder / "eval")
    headline = [("steps", final.get("steps", train[-1]["step"] if train else "–")),
                ("epochs", final.get("epochs_done", epochs[-1].get("epoch") if epochs else "–"))]
    for k in ("top1", "top5", "mean_class_accuracy", "best_val_top1_centre_view"):
        if isinstance(final.get(k), (int, float)):
            headline.append((k.replace("_", " ") + " %", _pct(final[k])))
    for k in ("mAP", "best_val_mAP"):
        if isinstance(final.get(k), (int, float)):
            headline.append((k.replace("_", " ") + " %", _pct(100 * final[k])))
    if val and not final:
        last = val[-1]
        headline += [(f"last val {k}", _pct(last.get(k))) for k in val_keys]
    headline.append(("bad training videos", final.get("bad_training_videos", len(bad))))
    return dict(
        title=f"run {folder.name}", headline=headline, partial=not final, protocol={}, provenance=_flat(
            {k: v for k, v in final.items() if not isinstance(v, (list, dict))}),
        dataset={}, rows=sub.get("rows", []), top_pairs=sub.get("top_pairs", []), mistakes=[], failed=[], missing=[],
        substituted=[], data=sub.get("data") or dict(classes=[], confusion=[], support=[]), ava=sub.get("ava"),
        run=dict(charts=charts, config=_flat(cfg), bad=bad, reconstruction=recon,
                 eval_report=(folder / "eval" / REPORT_NAME).is_file() or bool(sub), val=val[-20:], finished=bool(final)),
    )
