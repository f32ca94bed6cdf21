"""``report.html``: one self-contained page per evaluation or training run, a *view* of the files the command
already wrote (so ``hiera-video report DIR`` can rebuild it for any folder). CSS, JavaScript and images (JPEG data
URIs, inline SVG curves) are in the file; nothing is loaded. Every dataset string goes through jinja2's autoescape
or ``|tojson``, and the script writes text only through ``textContent``. Thumbnails, a sparse confusion matrix and
capped lists keep a 400-class Kinetics eval under :data:`SIZE_CAP` (checked by ``tests/test_html_report.py``)."""

import base64
import datetime as _dt
import io
import json
import logging
import math
import time
from pathlib import Path

from hiera_video import __version__
from hiera_video.errors import HieraVideoError, short
from hiera_video.report import atomic_write_text, read_csv, visible

log = logging.getLogger("hiera_video")

REPORT_NAME = "report.html"
MISTAKES = 12  # the most confident wrong videos shown with frame strips
STRIP_FRAMES, THUMB_HEIGHT = 8, 96  # frames per strip, their height in pixels
TOP_PAIRS = 50  # confused (true, predicted) pairs listed
SIZE_CAP = 5 * 1024 * 1024  # the documented page-size cap (bytes) for a 400-class Kinetics eval


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_csv(path: Path) -> list[dict]:
    rows = read_csv(path) if path.is_file() else []
    return [dict(zip(rows[0], row)) for row in rows[1:]] if rows else []


def _pct(x, scale: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{scale * x:.2f}"


def folder_kind(folder: Path) -> str | None:
    """``"eval"`` (classification eval output), ``"ava"`` (AVA eval), ``"run"`` (finetune/pretrain run) or None."""
    if (folder / "metrics.jsonl").is_file() or (folder / "config.json").is_file():
        return "run"
    m = _read_json(folder / "metrics.json")
    if isinstance(m, dict):
        return "ava" if "mAP" in m else "eval"
    return "eval" if (folder / "predictions.pt").is_file() else None


def build_report(folder: str | Path, decode: bool = True, ava_keyframes=None) -> Path:
    """Write ``folder/report.html`` atomically; ``decode``: decode the worst mistakes again for frame strips;
    ``ava_keyframes(folder, worst rows)``: the AVA keyframes to draw (without it: the worst classes only)."""
    import jinja2

    folder = Path(folder)
    if not folder.is_dir():
        raise HieraVideoError(f"'{folder}' is not a folder: pass an eval --output folder or a training run folder")
    kind = folder_kind(folder)
    t0 = time.perf_counter()
    if kind is None:
        raise HieraVideoError(
            f"'{folder}' holds no results to show (no metrics.json, predictions.pt, config.json or metrics.jsonl): "
            "pass the --output folder of eval or a finetune/pretrain run folder")
    ctx = eval_context(folder, decode) if kind == "eval" else ava_context(folder, ava_keyframes) if kind == "ava" \
        else run_context(folder)
    ctx.update(kind=kind, folder=str(folder.resolve()), version=__version__,
               built=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    env = jinja2.Environment(loader=jinja2.PackageLoader("hiera_video", "templates"), autoescape=True,  # always
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("report.html.j2").render(**ctx)
    path = folder / REPORT_NAME
    atomic_write_text(path, html)
    log.info("wrote %s (%.0f KB in %.2f s)", path, len(html.encode()) / 1024, time.perf_counter() - t0)
    return path


def write_report_safely(folder: str | Path, **kwargs) -> Path | None:
    """:func:`build_report`, where a failure is only a warning (the results are already written)."""
    try:
        return build_report(folder, **kwargs)
    except Exception as e:  # noqa: BLE001 - the page is a view; it must not cost the results
        log.warning("could not write %s: %s (the results are written; retry with hiera-video report %s)",
                    visible(Path(folder) / REPORT_NAME), visible(" ".join(str(e).split()) or type(e).__name__),
                    visible(folder))
        return None


def _jpeg(img, quality: int, height: int | None = None) -> str:
    """A PIL image as a JPEG data URI, scaled down to at most ``height`` pixels high."""
    if height and img.height > height:
        img = img.resize((max(1, round(img.width * height / img.height)), height))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def clip_strip(path: str, protocol: dict) -> tuple[list[str], str | None]:
    """Thumbnails of the clip the model saw (centre view, ``protocol``): ``(data URIs, None)`` or ``([], why)``."""
    import torch
    from PIL import Image

    from hiera_video.data.clip_spec import ClipSpec
    from hiera_video.data.transforms import make_views

    if not Path(path).is_file():
        return [], "the video is no longer at this path"
    try:
        spec = ClipSpec.from_dict(protocol).with_(temporal_views=1, spatial_views=1)
        views, _ = make_views(path, spec)
        clip = views[0].float()  # [3, T, S, S], normalised
        mean, std = torch.tensor(spec.mean).view(3, 1, 1, 1), torch.tensor(spec.std).view(3, 1, 1, 1)
        clip = (clip * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
        t = clip.shape[1]
        picks = sorted({round(k * (t - 1) / max(1, STRIP_FRAMES - 1)) for k in range(min(t, STRIP_FRAMES))})
        frames = [Image.fromarray(clip[:, k].permute(1, 2, 0).contiguous().numpy()) for k in picks]  # [H, W, 3]
        return [_jpeg(img, 72, THUMB_HEIGHT) for img in frames], None
    except Exception as e:  # noqa: BLE001 - one undecodable video costs its strip only
        return [], short(e, 200) or type(e).__name__


def _mistakes(folder: Path, classes: list[str], decode: bool) -> tuple[list[dict], dict]:
    """The most confident wrong videos from ``predictions.pt`` with top-5 and frame strips."""
    path = folder / "predictions.pt"
    if not path.is_file():
        return [], {}
    from hiera_video.metrics.classification import load_predictions

    preds = load_predictions(path)
    probs, labels = preds.probs.float(), preds.labels
    protocol = (preds.meta or {}).get("protocol") or {}
    names = list(preds.classes) or classes
    if len(labels) == 0:
        return [], protocol
    conf, top1 = probs.max(dim=1)
    wrong = sorted(((labels >= 0) & (top1 != labels)).nonzero().flatten().tolist(), key=lambda i: -float(conf[i]))
    out = []
    for i in wrong[:MISTAKES]:
        p, idx = probs[i].topk(min(5, probs.shape[1]))
        frames, why = clip_strip(preds.paths[i], protocol) if decode else ([], "not decoded (--no-frames)")
        out.append(dict(path=preds.paths[i], truth=names[int(labels[i])], confidence=float(conf[i]) * 100,
                        top5=[(names[int(j)], float(q) * 100) for q, j in zip(p, idx)], frames=frames, no_frames=why))
    return out, protocol


def eval_context(folder: Path, decode: bool = True) -> dict:
    m = _read_json(folder / "metrics.json") or {}
    num = lambda v: float(v) if v not in (None, "", "-") else None  # noqa: E731
    per_class = m.get("per_class") or [  # older folders: from per_class.csv
        dict(index=int(r["index"]), name=r["name"], support=int(r["support"]), correct=int(r["correct"]),
             accuracy=num(r.get("accuracy")), top5=num(r.get("top5")), predicted=int(r["predicted"]))
        for r in _read_csv(folder / "per_class.csv")]
    classes = [pc["name"] for pc in per_class]
    path = folder / "confusion.csv"  # as sparse [[true, pred, count], ...]
    cells = [[i, j, int(v)] for i, row in enumerate(read_csv(path)[1:] if classes and path.is_file() else [])
             for j, v in enumerate(row[1:]) if v not in ("", "0")]
    worst, pairs = {}, []  # most confused with (off-diagonal row maximum: (count, j)); confused pairs
    for i, j, v in cells:
        if i != j:
            pairs.append((v, i, j))
            if v > worst.get(i, (0, -1))[0]:
                worst[i] = (v, j)
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    support = {pc["index"]: pc["support"] for pc in per_class}
    rows = [dict(pc, confused=classes[w[1]] if w else "", confused_n=w[0] if w else 0)
            for pc in per_class for w in [worst.get(pc["index"])]]
    top_pairs = [dict(truth=classes[i], pred=classes[j], count=v, share=100 * v / support[i] if support.get(i) else None)
                 for v, i, j in pairs[:TOP_PAIRS]]
    mistakes, saved_protocol = _mistakes(folder, classes, decode)
    protocol = m.get("protocol") or saved_protocol or {}
    failed, missing = _read_csv(folder / "failed.csv"), _read_csv(folder / "missing.csv")
    headline = [("top-1 %", _pct(m.get("top1"))), (f"top-{m.get('top5_k', 5)} %", _pct(m.get("top5"))),
                ("mean class accuracy %", _pct(m.get("mean_class_accuracy"))),
                ("videos scored", m.get("num_videos", "–")), ("failed", m.get("num_failed", len(failed))),
                ("missing", m.get("num_missing", len(missing)))]
    provenance = {k: v for k, v in m.items() if k not in ("per_class", "protocol", "substituted_frames", "confusion")
                  and not isinstance(v, (list, dict))}
    provenance["options"] = m.get("options") or {}  # the command's options (flattened as options.NAME)
    ds = m.get("dataset") if isinstance(m.get("dataset"), dict) else {}
    return dict(title=" ".join(str(x) for x in (ds.get("dataset"), m.get("split")) if x) or folder.name,
                headline=headline, partial=bool(m.get("partial")), protocol=_flat(protocol),
                provenance=_flat({**provenance, **_decoders(m)}), dataset=_flat(ds), rows=rows, top_pairs=top_pairs,
                mistakes=mistakes, failed=failed, missing=missing,
                substituted=(m.get("substituted_frames") or {}).get("videos") or [],
                data=dict(classes=classes, confusion=cells, support=[pc["support"] for pc in per_class]),
                run=None, ava=None)


def _decoders(m: dict) -> dict:
    """metrics.json's videos per decoder as one provenance row ("pyav 14.0.1 (FFmpeg 7.1): 12; ...")."""
    d = m.get("decoders")
    return {"decoders (videos)": "; ".join(f"{k}: {v}" for k, v in d.items())} if isinstance(d, dict) and d else {}


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


def ava_context(folder: Path, keyframes=None) -> dict:
    m = _read_json(folder / "metrics.json") or {}
    per = m.get("per_class") or {}
    rows = [dict(index=int(cid), name=v.get("name", ""), group=v.get("group", ""),
                 ap=None if ap is None or (isinstance(ap, float) and math.isnan(ap)) else 100 * ap,
                 num_gt=v.get("num_gt", 0), num_detections=v.get("num_detections", 0))
            for cid, v in sorted(per.items(), key=lambda kv: int(kv[0])) for ap in [v.get("ap")]]
    groups = m.get("groups") or {}
    headline = [("mAP %", _pct(m.get("mAP"), 100))]
    headline += [(f"{g} mAP %", _pct(groups.get(g), 100)) for g in ("pose", "object", "interaction")]
    headline += [("keyframes", m.get("num_keyframes", "–")), ("skipped", len(m.get("skipped") or []))]
    worst = sorted((r for r in rows if r["num_gt"] and r["ap"] is not None), key=lambda r: r["ap"])[:5]
    drawn = keyframes(folder, worst) if keyframes is not None else []
    provenance = {k: v for k, v in m.items() if not isinstance(v, (list, dict))}
    failed = [dict(path=f"{s[0]},{s[1]}", reason=s[2]) for s in (m.get("skipped") or []) if len(s) >= 3]
    return dict(title=f"eval ava {m.get('split', '')}".strip(), headline=headline, partial=bool(m.get("interrupted")),
                protocol={}, provenance=_flat({**provenance, **_decoders(m)}), dataset={}, rows=[], top_pairs=[],
                mistakes=[], failed=failed, missing=[], substituted=[], data=dict(classes=[], confusion=[], support=[]),
                run=None, ava=dict(rows=rows, worst=worst, keyframes=drawn, has_dataset=keyframes is not None))


def draw_boxes(img, boxes) -> str:
    """``img`` (PIL) as a JPEG data URI, with ``[("gt" | "pred", row with x1..y2 normalised)]`` drawn."""
    from PIL import ImageDraw

    img = img.convert("RGB")
    img.thumbnail((320, 240))
    draw = ImageDraw.Draw(img)
    for kind, r in boxes:
        x1, x2 = sorted((r.x1 * img.width, r.x2 * img.width))
        y1, y2 = sorted((r.y1 * img.height, r.y2 * img.height))
        draw.rectangle([x1, y1, x2, y2], outline=(40, 200, 60) if kind == "gt" else (230, 40, 40), width=2)
    return _jpeg(img, 75)


def svg_chart(title: str, series: list[tuple[str, list[float], list[float]]]) -> str:
    """A line chart of ``(name, xs, ys)`` as inline SVG (numbers; labels escaped) for the template's ``|safe``."""
    from html import escape

    width, height, xlabel = 420, 240, "step"
    pts = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1 = x1 if x1 != x0 else x0 + 1
    y0, y1 = (y0, y1) if y1 != y0 else (y0 - 0.5, y1 + 0.5)
    L, R, T, B = 52, 10, 24, 30
    sx = lambda x: L + (x - x0) / (x1 - x0) * (width - L - R)  # noqa: E731
    sy = lambda y: T + (y1 - y) / (y1 - y0) * (height - T - B)  # noqa: E731
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<text x="{width / 2}" y="15" text-anchor="middle" class="ct">{escape(title)}</text>',
             f'<line x1="{L}" y1="{height - B}" x2="{width - R}" y2="{height - B}" class="ax"/>',
             f'<line x1="{L}" y1="{T}" x2="{L}" y2="{height - B}" class="ax"/>']
    for k in range(5):
        xv, yv = x0 + (x1 - x0) * k / 4, y0 + (y1 - y0) * k / 4
        parts += [f'<text x="{L - 4}" y="{sy(yv) + 4:.1f}" text-anchor="end" class="tk">{yv:.3g}</text>',
                  f'<text x="{sx(xv):.1f}" y="{height - B + 14}" text-anchor="middle" class="tk">{xv:.4g}</text>']
    parts.append(f'<text x="{width - R}" y="{height - 2}" text-anchor="end" class="tk">{escape(xlabel)}</text>')
    for n, (name, xs, ys) in enumerate(series):
        c = ("#3b6fd6", "#e07b39", "#2a9d5b", "#b03a8c")[n % 4]
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
    return "".join(parts) + "</svg>"


def _image_uri(path: Path, max_width: int = 1400) -> str | None:
    """An image file as a JPEG data URI, at most ``max_width`` wide (None when unreadable)."""
    try:
        from PIL import Image
        with Image.open(path) as im:
            im = im.convert("RGB")
        if im.width > max_width:
            im = im.resize((max_width, round(im.height * max_width / im.width)))
        return _jpeg(im, 80)
    except Exception:  # noqa: BLE001
        return None


def run_context(folder: Path) -> dict:
    from hiera_video.engine.train_log import read_rows

    try:
        rows = read_rows(folder / "metrics.jsonl")
    except ValueError:
        rows = []
    train, epochs, val = ([r for r in rows if r.get("kind") == k] for k in ("train", "epoch", "val"))
    xy = lambda rs, key: ([r["step"] for r in rs], [r.get(key) for r in rs])  # noqa: E731
    charts = [svg_chart("training loss", [("step", *xy(train, "loss")), ("epoch mean", *xy(epochs, "loss"))])] \
        if train or epochs else []
    if train and any("lr" in r for r in train):
        charts.append(svg_chart("learning rate", [("lr", *xy(train, "lr"))]))
    val_keys = [k for k in ("top1", "top5", "mAP") if any(isinstance(r.get(k), (int, float)) for r in val)]
    charts += [svg_chart(f"validation {k}", [(k, *xy(val, k))]) for k in val_keys]
    cfg = _read_json(folder / "config.json") or {}
    final = _read_json(folder / "metrics.json") or {}
    bad = _read_csv(folder / "bad_videos.csv")
    recon = _image_uri(folder / "reconstruction.png")  # None when absent
    sub_kind = folder_kind(folder / "eval") if (folder / "eval").is_dir() else None
    sub = eval_context(folder / "eval", decode=False) if sub_kind == "eval" else \
        ava_context(folder / "eval") if sub_kind == "ava" else {}  # AVA: its per-class AP table
    headline = [("steps", final.get("steps", train[-1]["step"] if train else "–")),
                ("epochs", final.get("epochs_done", epochs[-1].get("epoch") if epochs else "–"))]
    for k in ("top1", "top5", "mean_class_accuracy", "best_val_top1_centre_view", "mAP", "best_val_mAP"):
        if isinstance(final.get(k), (int, float)):  # mAP is a fraction
            headline.append((k.replace("_", " ") + " %", _pct(final[k], 100 if "mAP" in k else 1)))
    if val and not final:
        headline += [(f"last val {k}", _pct(val[-1].get(k))) for k in val_keys]
    headline.append(("bad training videos", final.get("bad_training_videos", len(bad))))
    return dict(title=f"run {folder.name}", headline=headline, partial=not final, protocol={},
                provenance=_flat({k: v for k, v in final.items() if not isinstance(v, (list, dict))}), dataset={},
                rows=sub.get("rows", []), top_pairs=sub.get("top_pairs", []), mistakes=[], failed=[], missing=[],
                substituted=[], data=sub.get("data") or dict(classes=[], confusion=[], support=[]), ava=sub.get("ava"),
                run=dict(charts=charts, config=_flat(cfg), bad=bad, reconstruction=recon, val=val[-20:],
                         eval_report=(folder / "eval" / REPORT_NAME).is_file() or bool(sub), finished=bool(final)))
