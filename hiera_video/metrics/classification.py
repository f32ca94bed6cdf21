"""Classification metrics, view aggregation, reports and the predictions file (accuracies in percent).

* top-k: the true class's rank is the number of classes with a higher score plus those with an equal score and a
  lower index (ties broken like ``argmax``, so top-1 == ``argmax == label``); top-5 uses ``k = min(5, C)``.
* mean class accuracy: per-class top-1 averaged over classes with videos (mmaction2 counts empty ones as 0).
* confusion ``[C, C]``: rows true, columns predicted; above :data:`DENSE_CONFUSION_MAX_CLASSES` a sparse COO
  tensor (a dense one for 60,000 classes is 28.8 GB), ``confusion.csv`` then lists the non-zero cells, no PNG.

Label ``-1`` (unknown) is not scored; NaN/inf scores are refused (a NaN true class would rank first). Predictions
file: a ``torch.save`` dict of plain values (loads with ``weights_only=True``): ``format``, ``version``, ``paths``,
``labels`` (int64 [N]), ``probs`` (float32 [N, C]), ``classes``, ``view_logits`` ([N, V, C], optional), ``meta``."""

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hiera_video.errors import HieraVideoError, short
from hiera_video.report import atomic_path, safe, write_csv, write_json

AGGREGATIONS = ("prob", "logit")
PREDICTIONS_FORMAT = "hiera-video-predictions"
PREDICTIONS_VERSION = 1
#: Classes up to which the confusion matrix is a dense ``[C, C]`` tensor (int64: 32 MB at 2048).
DENSE_CONFUSION_MAX_CLASSES = 2048


def aggregate_views(view_logits: torch.Tensor, agg: str = "prob") -> torch.Tensor:
    """Per-view logits ``[N, V, C]`` (or ``[V, C]``) -> probabilities ``[N, C]`` (``[C]``): ``prob`` = mean of the
    views' softmax (official Hiera / SlowFast evaluation), ``logit`` = softmax of the mean logits."""
    if agg not in AGGREGATIONS:
        raise HieraVideoError(f"unknown view aggregation '{agg}'; use one of {', '.join(AGGREGATIONS)}")
    x = torch.as_tensor(view_logits)
    x = x.double() if x.dtype == torch.float64 else x.float()
    return x.softmax(dim=-1).mean(dim=-2) if agg == "prob" else x.mean(dim=-2).softmax(dim=-1)


def _ranks(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rank (0 = first) of each true class, ties broken by lower class index first."""
    true = probs.gather(1, labels[:, None])
    idx = torch.arange(probs.shape[1])[None, :]
    return ((probs > true) | ((probs == true) & (idx < labels[:, None]))).sum(dim=1)


def _pct(num: float, den: float) -> float | None:
    return None if den == 0 else 100.0 * float(num) / float(den)


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict:
    """Top-1/top-5, mean class accuracy, per-class results and the confusion matrix of ``[N, C]`` scores (only
    their order matters) and ``[N]`` labels (-1 = unknown)."""
    probs = torch.as_tensor(probs).detach().cpu()
    labels = torch.as_tensor(labels).detach().cpu().long()
    n, c = probs.shape
    if labels.shape != (n,):
        raise HieraVideoError(f"labels must be [N] = [{n}], got shape {list(labels.shape)}")
    if len(class_names) != c:
        raise HieraVideoError(f"{len(class_names)} class names for {c} score columns; pass the matching labels")
    if c == 0:
        raise HieraVideoError("scores have 0 classes")
    if labels.numel() and (labels.max() >= c or labels.min() < -1):
        bad = labels[(labels >= c) | (labels < -1)][0].item()
        raise HieraVideoError(f"label {bad} is out of range for {c} classes (use -1 for unknown)")
    known = labels >= 0
    nan_rows = torch.isnan(probs[known]).any(dim=1) if probs.is_floating_point() else torch.zeros(0, dtype=torch.bool)
    if nan_rows.any():
        raise HieraVideoError(f"the scores of {int(nan_rows.sum())} of {int(known.sum())} labelled videos are NaN; "
                              "metrics from them would count those videos as correct, so none are computed")
    p = probs[known] if probs.dtype in (torch.float32, torch.float64) else probs[known].float()
    y, k = labels[known], min(5, c)
    pred = p.argmax(dim=1) if len(y) else torch.zeros(0, dtype=torch.long)
    ranks = _ranks(p, y) if len(y) else torch.zeros(0, dtype=torch.long)
    hit1, hitk = ranks == 0, ranks < k
    support, correct, correct_k, predicted = (torch.bincount(v, minlength=c) for v in (y, y[hit1], y[hitk], pred))
    if c <= DENSE_CONFUSION_MAX_CLASSES:
        confusion = torch.bincount(y * c + pred, minlength=c * c).reshape(c, c)
    else:  # sparse COO of the non-zero cells (torch.unique sorts them: already coalesced)
        cells, counts = torch.unique(y * c + pred, return_counts=True)
        confusion = torch.sparse_coo_tensor(torch.stack([cells // c, cells % c]), counts, (c, c), is_coalesced=True,
                                            check_invariants=True)
    per_class = [dict(index=i, name=class_names[i], support=s, correct=int(correct[i]), accuracy=_pct(correct[i], s),
                      top5=_pct(correct_k[i], s), predicted=int(predicted[i])) for i, s in enumerate(support.tolist())]
    accs = [pc["accuracy"] for pc in per_class if pc["accuracy"] is not None]
    return dict(top1=_pct(hit1.sum(), len(y)), top5=_pct(hitk.sum(), len(y)), top5_k=k,
                mean_class_accuracy=sum(accs) / len(accs) if accs else None, num_videos=int(len(y)),
                num_unlabelled=int(n - len(y)), num_classes=c, classes_with_support=len(accs), per_class=per_class,
                confusion=confusion)


def metrics_summary(metrics: dict) -> dict:
    """The JSON-ready part of :func:`classification_metrics` (no confusion tensor)."""
    return {key: value for key, value in metrics.items() if key != "confusion"}


def plot_confusion(path: str | Path, confusion: torch.Tensor, class_names: list[str], title: str | None = None,
                   max_labelled: int = 40) -> Path:
    """PNG heatmap of the row-normalised confusion matrix; up to ``max_labelled`` classes get named ticks."""
    # An Agg canvas on a bare Figure: no pyplot, no global backend switch, safe in threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conf = torch.as_tensor(confusion).double()
    c = conf.shape[0]
    rows = conf.sum(dim=1, keepdim=True)
    norm = torch.where(rows > 0, conf / rows.clamp(min=1), torch.zeros_like(conf)).numpy()
    labelled = c <= max_labelled
    side = min(max(4.0, 0.32 * c + 2.5), 14.0) if labelled else 9.0
    fig = Figure(figsize=(side + 1.2, side), dpi=120 if labelled else 150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if labelled:
        ax.set_xticks(range(c), [short(n, 32) for n in class_names], rotation=90, fontsize=7)
        ax.set_yticks(range(c), [short(n, 32) for n in class_names], fontsize=7)
        if c <= 20:
            counts = torch.as_tensor(confusion).long()
            for i, j in counts.nonzero().tolist():
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=6,
                        color="black" if norm[i, j] > 0.5 else "white")
    else:
        ax.set(xticks=[], yticks=[])
    ax.set(xlabel="predicted class", ylabel="true class", title=title or f"Confusion matrix ({c} classes)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def write_metrics(output: str | Path, metrics: dict, class_names: list[str], extra: dict | None = None,
                  plot: bool = True) -> dict[str, Path]:
    """``metrics.json``, ``per_class.csv``, ``confusion.csv`` and ``confusion.png`` in ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    files = dict(metrics=out / "metrics.json", per_class=out / "per_class.csv", confusion_csv=out / "confusion.csv")
    write_json(files["metrics"], to_jsonable({**(extra or {}), **metrics_summary(metrics)}))
    write_csv(files["per_class"], ["index", "name", "support", "correct", "accuracy", "top5", "predicted"],
              ([pc["index"], pc["name"], pc["support"], pc["correct"], _fmt(pc["accuracy"]), _fmt(pc["top5"]),
                pc["predicted"]] for pc in metrics["per_class"]))
    conf = metrics["confusion"]
    if getattr(conf, "is_sparse", False):  # one row per non-zero cell (and no heatmap: 60,000 classes show nothing)
        (rows, cols), counts = conf.indices().tolist(), conf.values().tolist()
        write_csv(files["confusion_csv"], ["true_index", "true", "predicted_index", "predicted", "count"],
                  ([i, class_names[i], j, class_names[j], n] for i, j, n in zip(rows, cols, counts)))
    else:  # rows true, columns predicted
        write_csv(files["confusion_csv"], ["true \\ predicted", *class_names],
                  ([name, *row] for name, row in zip(class_names, torch.as_tensor(conf).tolist())))
        if plot:
            files["confusion_png"] = plot_confusion(out / "confusion.png", conf, class_names)
    return files


def to_jsonable(obj):
    """Tensors -> lists, paths -> str, tuples -> lists, recursively (for JSON output)."""
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _most_confused(metrics: dict, index: int) -> str:
    conf = metrics.get("confusion")
    if conf is None:
        return ""
    row = conf[index].to_dense() if getattr(conf, "is_sparse", False) else torch.as_tensor(conf)[index].clone()
    row[index] = 0
    if int(row.sum()) == 0:
        return "-"
    j = int(row.argmax())
    return f"{metrics['per_class'][j]['name']} ({int(row[j])})"


def render_metrics(metrics: dict, console, all_classes: bool = False, k: int = 10, title: str | None = None) -> None:
    """Summary table, then the ``k`` worst and ``k`` best classes (or every class)."""
    from rich.table import Table

    if title:
        console.print(f"[bold]{safe(title)}[/]", highlight=False)
    summary = Table(show_header=False)
    summary.add_column("metric", style="bold")
    summary.add_column("value", justify="right")
    summary.add_row("videos scored", str(metrics["num_videos"]))
    if metrics.get("num_unlabelled"):
        summary.add_row("videos without label", str(metrics["num_unlabelled"]))
    summary.add_row("top-1 %", _fmt(metrics["top1"]) or "-")
    summary.add_row(f"top-{metrics['top5_k']} %", _fmt(metrics["top5"]) or "-")
    summary.add_row("mean class accuracy %", _fmt(metrics["mean_class_accuracy"]) or "-")
    summary.add_row("classes with videos", f"{metrics['classes_with_support']} / {metrics['num_classes']}")
    console.print(summary)
    supported = [pc for pc in metrics["per_class"] if pc["support"] > 0]
    if not supported:
        return

    def table(rows: list[dict], name: str):
        t = Table(title=name)
        cols = ("#", "class", "videos", "top-1 %", f"top-{metrics['top5_k']} %", "most often predicted instead")
        for i, col in enumerate(cols):
            t.add_column(col, justify="left" if i in (1, 5) else "right")
        for pc in rows:
            t.add_row(str(pc["index"]), safe(pc["name"]), str(pc["support"]), _fmt(pc["accuracy"], 1) or "-",
                      _fmt(pc["top5"], 1) or "-", safe(_most_confused(metrics, pc["index"])) if pc["support"] else "")
        console.print(t)

    if all_classes:
        table(metrics["per_class"], "Per-class results")
        return
    order = sorted(supported, key=lambda pc: (pc["accuracy"], -pc["support"], pc["index"]))
    if len(order) <= 2 * k:
        table(order, "Per-class results (worst first)")
        return
    table(order[:k], f"Worst {k} classes")
    table(sorted(supported, key=lambda pc: (-pc["accuracy"], -pc["support"], pc["index"]))[:k], f"Best {k} classes")


@dataclass
class Predictions:
    """Contents of a predictions file (see the module docstring)."""
    paths: list[str]
    labels: torch.Tensor  # int64 [N], -1 = unknown
    probs: torch.Tensor  # float [N, C]
    classes: list[str]
    view_logits: torch.Tensor | None = None  # float [N, V, C]
    meta: dict = field(default_factory=dict)


def _plain(value, where: str):
    """Meta values restricted to types ``torch.load(weights_only=True)`` accepts."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalars
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"predictions meta key {key!r} at {where} must be a str")
            out[key] = _plain(v, f"{where}.{key}")
        return out
    raise TypeError(f"predictions meta value at {where} has type {type(value).__name__}; use plain values")


def save_predictions(path: str | Path, paths: list[str], labels: torch.Tensor, probs: torch.Tensor, classes: list[str],
                     view_logits: torch.Tensor | None = None, meta: dict | None = None) -> Path:
    """Write a predictions file atomically (temp file + rename). Shapes are checked."""
    path = Path(path)
    labels, probs = torch.as_tensor(labels).detach().cpu().long(), torch.as_tensor(probs).detach().cpu().float()
    data = {"format": PREDICTIONS_FORMAT, "version": PREDICTIONS_VERSION, "paths": [os.fspath(p) for p in paths],
            "labels": labels, "probs": probs, "classes": [str(c) for c in classes],
            "meta": _plain(dict(meta or {}), "meta")}
    if view_logits is not None:
        vl = torch.as_tensor(view_logits).detach().cpu()
        data["view_logits"] = vl if vl.is_floating_point() else vl.float()
    _validate(data, path)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def _validate(data, path: Path) -> Predictions:
    def bad(what: str) -> HieraVideoError:
        return HieraVideoError(f"'{path}' is not a valid predictions file: {what}; re-run hiera-video eval to write it")

    if not isinstance(data, dict) or data.get("format") != PREDICTIONS_FORMAT:
        raise HieraVideoError(f"'{path}' is not a hiera-video predictions file; pass the file written by hiera-video eval")
    if not isinstance(version := data.get("version"), int) or version > PREDICTIONS_VERSION:
        raise HieraVideoError(f"'{path}' has predictions format version {version!r}; this hiera-video reads up to "
                              f"{PREDICTIONS_VERSION}, upgrade it")
    paths, labels, probs, classes = data.get("paths"), data.get("labels"), data.get("probs"), data.get("classes")
    view_logits, meta = data.get("view_logits"), data.get("meta", {})
    for name, value in (("probs", probs), ("labels", labels), ("view_logits", view_logits)):
        if isinstance(value, torch.Tensor) and value.layout != torch.strided:  # most ops raise NotImplementedError on them
            raise bad(f"'{name}' is a {str(value.layout).removeprefix('torch.')} tensor; hiera-video eval writes dense "
                      "tensors (convert it with .to_dense())")
    for name, value in (("paths", paths), ("classes", classes)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(f"'{name}' must be a list of strings")
    if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or not probs.is_floating_point():
        raise bad("'probs' must be a float tensor [N, C]")
    n, c = probs.shape
    if labels.shape != (n,):
        raise HieraVideoError(f"labels must be [N] = [{n}], got shape {list(labels.shape)}")
    if len(paths) != n:
        raise bad(f"{len(paths)} paths for {n} rows of probs")
    if len(classes) != c:
        raise bad(f"{len(classes)} class names for {c} columns of probs")
    if not isinstance(labels, torch.Tensor) or labels.shape != (n,) or labels.is_floating_point() or labels.is_complex():
        raise bad(f"'labels' must be an integer tensor [{n}]")
    if n and (labels.min() < -1 or labels.max() >= c):
        raise bad(f"labels must be in -1..{c - 1}")
    if view_logits is not None:
        if not isinstance(view_logits, torch.Tensor) or view_logits.dim() != 3 or view_logits.shape[0] != n \
                or view_logits.shape[2] != c or not view_logits.is_floating_point():
            raise bad(f"'view_logits' must be a float tensor [{n}, V, {c}]")
        if n and view_logits.shape[1] == 0:
            raise bad(f"'view_logits' has 0 views for each of the {n} videos (nothing to aggregate)")
    if not isinstance(meta, dict):
        raise bad("'meta' must be a dict")
    bad_rows = ~torch.isfinite(probs).all(dim=1)
    if bad_rows.any():
        raise bad(f"'probs' is NaN or infinite for {int(bad_rows.sum())} of {n} videos "
                  f"(first: '{paths[int(bad_rows.nonzero()[0])]}')")
    if view_logits is not None and n:
        bad_views = ~torch.isfinite(view_logits).all(dim=2)  # [N, V]: a view with any non-finite logit
        if bad_views.any():
            videos = bad_views.any(dim=1)
            raise bad(f"'view_logits' is NaN or infinite in {int(bad_views.sum())} of {bad_views.numel()} views, "
                      f"of {int(videos.sum())} of {n} videos (first: '{paths[int(videos.nonzero()[0])]}')")
    return Predictions(paths=paths, labels=labels.long(), probs=probs, classes=classes, view_logits=view_logits, meta=meta)


def _load_failure(e: Exception) -> str:
    """A short reason for a failed ``torch.load(weights_only=True)``."""
    if found := re.search(r"GLOBAL ([\w.]+)", str(e)):
        return f"it holds a Python object ({found.group(1)}) and such files are never unpickled"
    if isinstance(e, OSError) and e.strerror:
        return f"cannot read it: {e.strerror}"
    return "not a torch.save file, or truncated/corrupt"


def load_predictions(path: str | Path) -> Predictions:
    """Read and check a predictions file (``weights_only=True``: nothing is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise HieraVideoError(f"predictions file '{path}' not found; pass the file written by hiera-video eval")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "pickle protocol 4" notes on plain pickles
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, a pickle with arbitrary objects, truncated zip...
        raise HieraVideoError(f"'{path}' is not a hiera-video predictions file ({_load_failure(e)}); "
                              "pass the file written by hiera-video eval") from None
    return _validate(data, path)


def predictions_probs(preds: Predictions, agg: str | None = None) -> tuple[torch.Tensor, str]:
    """Scores to evaluate: the stored probabilities (``agg=None`` or the stored one), else re-aggregated view logits."""
    stored = str(preds.meta.get("agg", "prob"))
    if agg is None:
        return preds.probs, stored
    if agg not in AGGREGATIONS:
        raise HieraVideoError(f"unknown --agg '{agg}'; use one of {', '.join(AGGREGATIONS)}")
    if preds.view_logits is not None:
        return aggregate_views(preds.view_logits, agg), agg
    if agg == stored:
        return preds.probs, agg
    raise HieraVideoError(f"this predictions file has no per-view logits, so --agg {agg} cannot be computed (its "
                          f"probabilities were aggregated with '{stored}'); drop --agg or re-run hiera-video eval with "
                          "per-view logits saved")

