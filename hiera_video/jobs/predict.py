"""``predict``: classify video files (whole video, multi-view) or a timeline of windows."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Iterable, Iterator

import torch

from hiera_video.data import ClipSpec, VideoReader, decode_views, make_views, open_video, window_starts
from hiera_video.data.datasets.base import VIDEO_EXTENSIONS, is_video_name
from hiera_video.data.clip_spec import check_choices
from hiera_video.data.probe import path_problem
from hiera_video.data.pool import ReaderCache, by_group, decode_in_order
from hiera_video.engine.inference import Classifier, parse_views, substitution_warning, topk
from hiera_video import limits
from hiera_video.errors import HieraVideoError
from hiera_video.options import Options
from hiera_video.report import atomic_path, visible


@dataclass
class Result:
    """One input's outcome (``predict --json``'s schema)."""

    path: str
    ok: bool = False
    error: str | None = None
    top: list[dict] = field(default_factory=list)
    timeline: list[dict] | None = None
    probs: torch.Tensor | None = None  # [C] (not serialised)
    window_probs: torch.Tensor | None = None  # [windows, C] of a timeline (not serialised)
    warnings: list[str] = field(default_factory=list)
    decoder: str | None = None  # VideoReader.decoder

    def to_json(self) -> dict:
        return dict(path=self.path, ok=self.ok, error=self.error, top=self.top, warnings=self.warnings, decoder=self.decoder,
                    **({} if self.timeline is None else dict(timeline=self.timeline)))


def expand_inputs(items: Iterable[str]) -> tuple[list[str], list[Result]]:
    """Files, directories (searched recursively) and globs -> (video paths, failures of items naming nothing usable)."""
    entries = expand_in_order(items)
    return [e for e in entries if isinstance(e, str)], [e for e in entries if isinstance(e, Result)]


def in_input_order(entries: list, results: Iterable) -> list:
    """``results`` (one per video path of ``entries``) with the failures of ``entries`` at their places."""
    it = iter(results)
    return [e if isinstance(e, Result) else next(it) for e in entries]


def expand_in_order(items: Iterable[str]) -> list:
    """Like :func:`expand_inputs`, as one list in input order (paths and failed :class:`Result`)."""
    out: list = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and is_video_name(f.name))
            error = f"directory '{item}' contains no video files ({', '.join(sorted(VIDEO_EXTENSIONS))})"
        elif p.exists():
            found, error = [str(p)], None
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(os.path.expanduser(item), recursive=True) if os.path.isfile(f))
            error = f"no files match '{item}'"
        else:  # a symlink loop or a broken link is said as such, not as "not found"
            problem, found = path_problem(p), []
            missing = problem is None or (problem[0] == "missing" and not os.path.islink(p))
            error = f"no such file or directory: '{item}'" if missing else f"'{item}': {problem[1]}"
        out += found or [Result(item, error=error)]
    return out


class FrameRange(VideoReader):
    """Frames ``[start, stop)`` of an open reader as a video of its own (a window of a long video)."""

    def __init__(self, base: VideoReader, start: int, stop: int):
        self.base, self.start = base, start
        self.path, self.backend, self.codec = base.path, base.backend, base.codec
        self.num_frames, self.fps, self.height, self.width = max(1, stop - start), base.fps, base.height, base.width
        self.duration = self.num_frames / base.fps if base.fps else 0.0
        self._closed = False

    substituted_frames = property(lambda self: self.base.substituted_frames)  # the base reader decodes
    decoder = property(lambda self: self.base.decoder)

    def _decode_sorted(self, unique: list[int]):
        return self.base.get_frames_numpy([self.start + i for i in unique])

    def close(self) -> None:  # the base reader owns the file
        self._closed = True


def classify_video(clf: Classifier, protocol: ClipSpec, path: str, batch_size: int, top_k: int) -> Result:
    """Whole-video prediction: every view from one decode, probabilities averaged over views."""
    return _result(clf, path, None, [decode_views(path, protocol)], batch_size, top_k)


def timeline_spans(reader: VideoReader, window: float, stride: float) -> list[tuple[float, float, int, int]]:
    """``(start s, end s, first frame, end frame)`` of windows of ``window`` s every ``stride`` s (the last at the end)."""
    duration = reader.num_frames / reader.fps if reader.fps else 0.0
    if duration <= 0:
        raise HieraVideoError(f"cannot cut windows from '{reader.path}': unknown frame rate or duration")
    # Counted before any list is built (a stride of 1e-12 s asked for 1e13 windows).
    limits.check_windows(1.0 if duration <= window else (duration - window) / stride + 2, str(reader.path), duration)
    n = reader.num_frames
    return [(s, e, f0, min(max(f0 + 1, int(round(e * reader.fps))), n))
            for s, e in window_starts(duration, window, stride) for f0 in [min(int(round(s * reader.fps)), n - 1)]]


def _result(clf: Classifier, path: str, spans, windows: Iterable, batch_size: int, top_k: int) -> Result:
    """Probabilities averaged over views (and windows: ``spans`` of a timeline; None: one whole-video decode)."""
    rows, per_window, substituted, sampled, decoder = [], [], 0, 0, None
    for span, (views, (n_sub, n_sampled), decoder) in zip(spans or [None], windows):
        substituted, sampled = substituted + n_sub, sampled + n_sampled
        per_window.append(clf.logits(views, batch_size).softmax(-1).mean(0))
        if span is not None:
            rows.append(dict(start=round(span[0], 3), end=round(span[1], 3), top=topk(per_window[-1], clf.labels, top_k)))
    window_probs = torch.stack(per_window) if spans else None
    mean, note = window_probs.mean(0) if spans else per_window[0], substitution_warning(substituted, sampled)
    return Result(path, ok=True, top=topk(mean, clf.labels, top_k), timeline=rows if spans else None, probs=mean,
                  window_probs=window_probs, warnings=[note] if note else [], decoder=decoder)


def _video_spans(path: str, backend: str, window: float, stride: float):
    with open_video(path, backend) as reader:
        return timeline_spans(reader, window, stride)


class DecodeWindow:
    """Decoding task ``(path, first frame, end frame) -> (views, (substituted, sampled), decoder)``; the video stays
    open for its next windows. ``check_frames=False``: no limit on undecodable frames (counts not kept)."""

    def __init__(self, protocol: ClipSpec, check_frames: bool = True):
        self.protocol, self.check_frames = protocol, check_frames
        self.readers = ReaderCache(protocol.backend, protocol.decode_device)

    def __call__(self, task: tuple[str, int, int]):
        window = FrameRange(self.readers.open(task[0]), task[1], task[2])
        return decode_views(window, self.protocol) if self.check_frames else (make_views(window, self.protocol)[0], (0, 0), window.decoder)

    def close(self) -> None:
        self.readers.close()


def decode_windows(protocol: ClipSpec, paths: list[str], window: float, stride: float, workers: int = 0,
                   timeout: float | None = None, check_frames: bool = True) -> Iterator[tuple]:
    """Per path in order: ``(path, spans, windows, None)``, ``windows`` iterating each span's decoded views
    (raising :class:`HieraVideoError` at a failed one), or ``(path, None, None, error)``; a few windows in memory."""
    spans_of = partial(_video_spans, backend=protocol.backend, window=window, stride=stride)  # opens each video once
    planned = {p: (spans, error) for p, spans, error in decode_in_order(paths, spans_of, workers, timeout)}
    tasks = [(p, f0, f1) for p in paths if planned[p][0] for _, _, f0, f1 in planned[p][0]]
    stream = decode_in_order(tasks, DecodeWindow(protocol, check_frames), workers, timeout, describe=itemgetter(0), group=itemgetter(0))
    try:
        for path, windows in by_group(stream, [(p, len(planned[p][0] or [])) for p in paths]):
            spans, error = planned[path]
            yield (path, None, None, error) if error is not None else (path, spans, windows, None)
    finally:
        stream.close()


def check_window(window: float | None, stride: float | None) -> None:
    if stride is not None and window is None:
        raise HieraVideoError("--stride needs --window (the window length in seconds)")
    for name, value in (("--window", window), ("--stride", stride)):
        if value is not None and not value > 0:  # not: NaN too
            raise HieraVideoError(f"{name} must be a positive number of seconds, got {value:g}")


@dataclass
class PredictOptions(Options):
    """``hiera-video predict``'s options, checked on construction (printable; its outputs keep a fixed schema)."""

    paths: list[str]
    model: str | None = None
    weights: str | None = None
    labels: str | None = None
    views: tuple[int, int] | str = (1, 1)  # or "TxS"
    top_k: int = 5
    batch_size: int = 8
    window: float | None = None
    stride: float | None = None
    workers: int = 0
    decode_timeout: float | None = limits.DEFAULT_DECODE_TIMEOUT
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"
    decode_device: str = "cpu"
    allow_random_weights: bool = False
    output: Path | None = None
    plot: Path | None = None
    as_json: bool = False  # display only

    def __post_init__(self):
        check_choices(backend=self.backend, decode_device=self.decode_device)
        check_window(self.window, self.stride)
        if self.output is not None and self.output.suffix.lower() not in (".json", ".csv"):
            raise HieraVideoError(f"--output must end in .json or .csv, got '{self.output}'")
        check_plot(self.plot, self.window)
        self.views = parse_views(self.views) if isinstance(self.views, str) else tuple(self.views)


def predict_paths(clf: Classifier, protocol: ClipSpec, paths: list[str], o: PredictOptions) -> Iterator[Result]:
    """One :class:`Result` per path, in order; a bad (or timed-out) video fails alone with ``ok=False``."""
    window, batch_size, top_k = o.window, o.batch_size, o.top_k
    stream = (decode_windows(protocol, paths, window, o.stride or window, o.workers, o.decode_timeout) if window
              else decode_in_order(paths, partial(decode_views, spec=protocol), o.workers, o.decode_timeout))
    try:
        for path, *decoded, error in stream:
            try:
                if error is not None:
                    raise HieraVideoError(error)
                yield _result(clf, path, *(decoded if window else (None, decoded)), batch_size, top_k)
            except HieraVideoError as e:
                yield Result(path, error=str(e))
    finally:
        stream.close()


PLOT_FORMATS = (".png", ".svg", ".pdf")


def check_plot(plot: Path | None, window: float | None) -> None:
    """Refuse, before any work, a ``--plot`` without ``--window`` or with an extension not in :data:`PLOT_FORMATS`."""
    if plot is not None and window is None:
        raise HieraVideoError("--plot draws the timeline of --window: pass --window SECONDS too "
                              "(a whole-video prediction has no timeline to plot)")
    if plot is not None and plot.suffix.lower() not in PLOT_FORMATS:
        raise HieraVideoError(f"--plot must end in {', '.join(PLOT_FORMATS[:-1])} or {PLOT_FORMATS[-1]} "
                              f"(the extension picks the format), got '{plot}'")


def plot_paths(plot: Path, videos: list[str]) -> list[Path]:
    """The ``--plot`` file of each video: ``plot`` for one; else ``NAME_<path>.EXT``, ``<path>`` relative to the
    videos' common folder without extension, ``/`` as ``_`` (``x/c.mp4`` -> ``tl_x_c.png``); names that still
    coincide (case-insensitively) get ``-2``, ``-3``... in input order."""
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


def plot_timeline(result: Result, out_png: str, num_classes: int = 5) -> None:
    """Probability over time of the video's top classes, in the format ``out_png``'s extension names (else PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain = {ord("$"): r"\$"}  # text as written: "$" would start mathtext (control characters: visible)
    mids = [(r["start"] + r["end"]) / 2 for r in result.timeline]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for t in result.top[:num_classes]:
        ax.plot(mids, result.window_probs[:, t["index"]].tolist(), marker="o", label=visible(t["label"]).translate(plain))
    ax.set(xlabel="time (s), window centre", ylabel="probability", ylim=(0, 1), title=visible(Path(result.path).name).translate(plain))
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    try:
        fmt = Path(out_png).suffix.lower()[1:] if Path(out_png).suffix.lower() in PLOT_FORMATS else "png"
        with atomic_path(out_png, suffix=f".tmp.{fmt}") as tmp:  # a failed write: one line naming --plot's file
            fig.savefig(tmp, format=fmt, dpi=100)
    finally:
        plt.close(fig)
