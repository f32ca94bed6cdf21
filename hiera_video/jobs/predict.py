"""``predict``: classify video files (whole video, multi-view) or a timeline of windows."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator

import torch

from hiera_video.data import ClipSpec, open_video, window_starts
from hiera_video.data.datasets.base import VIDEO_EXTENSIONS, is_video_name
from hiera_video.data.decode import VideoReader
from hiera_video.data.probe import path_problem
from hiera_video.engine.decoding import DEFAULT_DECODE_TIMEOUT, ReaderCache, by_group, decode_in_order
from hiera_video.engine.inference import Classifier, substitution_warning, topk
from hiera_video import limits
from hiera_video.errors import HieraVideoError
from hiera_video.report import atomic_path, visible


@dataclass
class Result:
    """One input's outcome (the JSON schema of ``predict --json``, plus the timeline)."""

    path: str
    ok: bool = False
    error: str | None = None
    top: list[dict] = field(default_factory=list)
    timeline: list[dict] | None = None
    probs: torch.Tensor | None = None  # [C], averaged over views (not serialised)
    window_probs: torch.Tensor | None = None  # [windows, C] for a timeline (not serialised)
    warnings: list[str] = field(default_factory=list)  # e.g. frames that could not be decoded

    def to_json(self) -> dict:
        d = {"path": self.path, "ok": self.ok, "error": self.error, "top": self.top, "warnings": self.warnings}
        if self.timeline is not None:
            d["timeline"] = self.timeline
        return d


def expand_inputs(items: Iterable[str]) -> tuple[list[str], list[Result]]:
    """Files, directories (searched recursively for video files) and glob patterns ->
    (video paths in order, failures for items that name nothing usable)."""
    entries = expand_in_order(items)
    return [e for e in entries if isinstance(e, str)], [e for e in entries if isinstance(e, Result)]


def in_input_order(entries: list, results: Iterable) -> list:
    """``results`` (one per video path of ``entries``, in order) merged with the failures of
    ``entries`` at their places, so that output follows the order of the inputs."""
    it = iter(results)
    return [e if isinstance(e, Result) else next(it) for e in entries]


def expand_in_order(items: Iterable[str]) -> list:
    """Like :func:`expand_inputs`, as one list in input order: a video path (str), or a failed
    :class:`Result` for an item that names nothing usable; a directory or glob pattern expands
    to its files in sorted order at its place."""
    out: list = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and is_video_name(f.name))
            if not found:
                out.append(Result(item, error=f"directory '{item}' contains no video files ({', '.join(sorted(VIDEO_EXTENSIONS))})"))
            out += found
        elif p.exists():
            out.append(str(p))
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(os.path.expanduser(item), recursive=True) if os.path.isfile(f))
            if not found:
                out.append(Result(item, error=f"no files match '{item}'"))
            out += found
        else:  # a symlink loop or a broken link is said as such, not as "not found"
            problem = path_problem(p)
            if problem is None or (problem[0] == "missing" and not os.path.islink(p)):
                out.append(Result(item, error=f"no such file or directory: '{item}'"))
            else:
                out.append(Result(item, error=f"'{item}': {problem[1]}"))
    return out


class FrameRange(VideoReader):
    """Frames ``[start, stop)`` of an open reader, seen as a video of its own (so the
    samplers and view makers work unchanged on a window of a long video)."""

    def __init__(self, base: VideoReader, start: int, stop: int):
        self.base, self.start = base, start
        self.path, self.backend, self.codec = base.path, base.backend, base.codec
        self.num_frames = max(1, stop - start)
        self.fps = base.fps
        self.duration = self.num_frames / base.fps if base.fps else 0.0
        self.height, self.width = base.height, base.width
        self._closed = False

    @property
    def substituted_frames(self) -> int:  # frames are decoded (and substituted) by the base reader
        return self.base.substituted_frames

    def _decode_sorted(self, unique: list[int]):
        return self.base.get_frames_numpy([self.start + i for i in unique])

    def close(self) -> None:  # the base reader owns the file
        self._closed = True


def classify_video(clf: Classifier, protocol: ClipSpec, path: str, batch_size: int, top_k: int) -> Result:
    """Whole-video prediction: every view from one decode, probabilities averaged over views."""
    return _video_result(clf, path, protocol.decode(path), batch_size, top_k)


def _video_result(clf: Classifier, path: str, decoded, batch_size: int, top_k: int) -> Result:
    views, (substituted, sampled) = decoded
    probs = clf.logits(views, batch_size).softmax(-1).mean(0)
    note = substitution_warning(substituted, sampled)
    return Result(path, ok=True, top=topk(probs, clf.labels, top_k), probs=probs, warnings=[note] if note else [])


def timeline_spans(reader: VideoReader, window: float, stride: float) -> list[tuple[float, float, int, int]]:
    """``(start s, end s, first frame, end frame)`` of the windows of ``window`` seconds every
    ``stride`` seconds over the whole video (the last one aligned to the end)."""
    if window <= 0 or stride <= 0:
        raise HieraVideoError("--window and --stride must be positive numbers of seconds")
    duration = reader.num_frames / reader.fps if reader.fps else 0.0
    if duration <= 0:
        raise HieraVideoError(f"cannot cut windows from '{reader.path}': unknown frame rate or duration")
    # Counted before any list is built: a stride of 1e-12 s asked for 1e13 windows (MemoryError, or a worker grown to 22 GB).
    limits.check_windows(1.0 if duration <= window else (duration - window) / stride + 2, str(reader.path), duration)
    spans = []
    for start, end in window_starts(duration, window, stride):
        f0 = min(int(round(start * reader.fps)), reader.num_frames - 1)
        f1 = min(max(f0 + 1, int(round(end * reader.fps))), reader.num_frames)
        spans.append((start, end, f0, f1))
    return spans


def _timeline_result(clf: Classifier, path: str, spans, windows: Iterable, batch_size: int, top_k: int) -> Result:
    rows, per_window = [], []
    substituted = sampled = 0
    for (start, end, _, _), (views, (n_sub, n_sampled)) in zip(spans, windows):
        substituted, sampled = substituted + n_sub, sampled + n_sampled
        probs = clf.logits(views, batch_size).softmax(-1).mean(0)
        per_window.append(probs)
        rows.append(dict(start=round(start, 3), end=round(end, 3), top=topk(probs, clf.labels, top_k)))
    window_probs = torch.stack(per_window)
    mean = window_probs.mean(0)
    note = substitution_warning(substituted, sampled)
    return Result(path, ok=True, top=topk(mean, clf.labels, top_k), timeline=rows, probs=mean, window_probs=window_probs,
                  warnings=[note] if note else [])


def _video_spans(path: str, backend: str, window: float, stride: float):
    """Decoding task ``path -> timeline_spans`` (opens the video, reads its length)."""
    with open_video(path, backend) as reader:
        return timeline_spans(reader, window, stride)


class DecodeWindow:
    """Decoding task ``(path, first frame, end frame) -> (views, (substituted, sampled))`` of
    that window; the video stays open for its next windows (one open per worker process).
    ``check_frames=False``: no limit on frames that could not be decoded (counts not kept)."""

    def __init__(self, protocol: ClipSpec, check_frames: bool = True):
        self.protocol, self.check_frames = protocol, check_frames
        self.readers = ReaderCache(protocol.backend)

    def __call__(self, task: tuple[str, int, int]):
        path, f0, f1 = task
        window = FrameRange(self.readers.open(path), f0, f1)
        return self.protocol.decode(window) if self.check_frames else (self.protocol.views(window)[0], (0, 0))

    def close(self) -> None:
        self.readers.close()


def _first(task):
    return task[0]


def decode_windows(
    protocol: ClipSpec, paths: list[str], window: float, stride: float, workers: int = 0, timeout: float | None = None,
    check_frames: bool = True,
) -> Iterator[tuple[str, list | None, Iterator | None, str | None]]:
    """For each path in order: ``(path, spans, windows, None)`` with ``windows`` iterating the
    decoded views of every span (raising :class:`HieraVideoError` at a window that failed), or
    ``(path, None, None, error)``. Everything is decoded by
    :func:`~hiera_video.engine.decoding.decode_in_order` (``workers`` processes, ``timeout``
    seconds per item); memory holds a few windows, never a whole long video."""
    spans_of = partial(_video_spans, backend=protocol.backend, window=window, stride=stride)
    planned = {p: (spans, error) for p, spans, error in decode_in_order(paths, spans_of, workers, timeout)}
    tasks = [(p, f0, f1) for p in paths if planned[p][0] for _, _, f0, f1 in planned[p][0]]
    stream = decode_in_order(tasks, DecodeWindow(protocol, check_frames), workers, timeout, describe=_first, group=_first)
    try:
        groups = by_group(stream, [(p, len(planned[p][0] or [])) for p in paths])
        for path, windows in groups:
            spans, error = planned[path]
            yield (path, None, None, error) if error is not None else (path, spans, windows, None)
    finally:
        stream.close()


def predict_paths(
    clf: Classifier, protocol: ClipSpec, paths: list[str], batch_size: int = 8, top_k: int = 5,
    window: float | None = None, stride: float | None = None, workers: int = 0,
    decode_timeout: float | None = DEFAULT_DECODE_TIMEOUT,
) -> Iterator[Result]:
    """One :class:`Result` per path, in order; a bad video gives ``ok=False`` with its error
    and never stops the others. Videos are decoded in ``workers`` processes (0: in this
    process) as ``eval`` does; with workers, a video whose decoding takes longer than
    ``decode_timeout`` seconds (a decoder stuck in native code) is stopped and fails alone."""
    if window:
        stream = decode_windows(protocol, paths, window, stride or window, workers, decode_timeout)
    else:
        stream = decode_in_order(paths, protocol.decode, workers, decode_timeout)
    try:
        for path, *decoded, error in stream:
            try:
                if error is not None:
                    raise HieraVideoError(error)
                if window:
                    yield _timeline_result(clf, path, *decoded, batch_size, top_k)
                else:
                    yield _video_result(clf, path, *decoded, batch_size, top_k)
            except HieraVideoError as e:
                yield Result(path, error=str(e))
    finally:
        stream.close()


#: ``--plot`` file types (the extension picks the format).
PLOT_FORMATS = (".png", ".svg", ".pdf")


def check_plot(plot: Path | None, window: float | None) -> None:
    """Refuse a ``--plot`` that would write nothing or fail after the first video, before any
    work: it needs ``--window`` (a whole-video prediction has no timeline) and an extension
    of :data:`PLOT_FORMATS`."""
    if plot is None:
        return
    if window is None:
        raise HieraVideoError("--plot draws the timeline of --window: pass --window SECONDS too "
                              "(a whole-video prediction has no timeline to plot)")
    if plot.suffix.lower() not in PLOT_FORMATS:
        raise HieraVideoError(f"--plot must end in {', '.join(PLOT_FORMATS[:-1])} or {PLOT_FORMATS[-1]} "
                              f"(the extension picks the format), got '{plot}'")


def plot_paths(plot: Path, videos: list[str]) -> list[Path]:
    """The ``--plot`` file of each of ``videos`` (in order): ``plot`` itself for one video;
    for several, ``NAME_<path>.EXT`` where ``<path>`` is the video's path relative to the
    folder all the videos share, without its extension, ``/`` written ``_`` (``x/c.mp4``
    and ``y/c.mp4`` give ``tl_x_c.png`` and ``tl_y_c.png``; videos of one folder give
    ``tl_c.png`` as before). Names that still coincide (``c.mp4`` and ``c.avi``, the same
    video twice, names differing in case only) get ``-2``, ``-3``... in input order, so
    no plot replaces another of the same run and the names do not depend on timing."""
    if len(videos) == 1:
        return [plot]
    full = [os.path.abspath(v) for v in videos]
    common = os.path.commonpath([os.path.dirname(f) for f in full])
    out, used = [], set()
    for f in full:
        stem = os.path.splitext(os.path.relpath(f, common))[0].replace(os.sep, "_")
        name, n = f"{plot.stem}_{stem}{plot.suffix}", 2
        while name.lower() in used:
            name, n = f"{plot.stem}_{stem}-{n}{plot.suffix}", n + 1
        used.add(name.lower())
        out.append(plot.with_name(name))
    return out


def _plain(text: str) -> str:
    """``text`` for matplotlib as written: ``$`` would start mathtext (an unbalanced one makes
    the plot fail); control characters are shown as escapes (:func:`~hiera_video.report.visible`)."""
    return visible(text).replace("$", r"\$")


def plot_timeline(result: Result, out_png: str, num_classes: int = 5) -> None:
    """Probability over time of the video's top classes, one line each, written to
    ``out_png`` in the format its extension names (:data:`PLOT_FORMATS`, PNG otherwise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [t["index"] for t in result.top[:num_classes]]
    names = {t["index"]: t["label"] for t in result.top}
    mids = [(r["start"] + r["end"]) / 2 for r in result.timeline]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for c in classes:
        ax.plot(mids, result.window_probs[:, c].tolist(), marker="o", label=_plain(names[c]))
    ax.set_xlabel("time (s), window centre")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title(_plain(Path(result.path).name))
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    try:
        fmt = Path(out_png).suffix.lower()
        fmt = fmt[1:] if fmt in PLOT_FORMATS else "png"
        with atomic_path(out_png, suffix=f".tmp.{fmt}") as tmp:  # a failed write: one line naming --plot's file
            fig.savefig(tmp, format=fmt, dpi=100)
    finally:
        plt.close(fig)
