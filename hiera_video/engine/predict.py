"""``predict``: classify video files (whole video, multi-view) or a timeline of windows."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch

from hiera_video.data import open_video, window_starts
from hiera_video.data.decode import VideoReader
from hiera_video.engine.inference import Classifier, Protocol, topk
from hiera_video.errors import HieraVideoError

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".ogv"}


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

    def to_json(self) -> dict:
        d = {"path": self.path, "ok": self.ok, "error": self.error, "top": self.top}
        if self.timeline is not None:
            d["timeline"] = self.timeline
        return d


def expand_inputs(items: Iterable[str]) -> tuple[list[str], list[Result]]:
    """Files, directories (searched recursively for video files) and glob patterns ->
    (video paths in order, failures for items that name nothing usable)."""
    paths: list[str] = []
    bad: list[Result] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                bad.append(Result(item, error=f"directory '{item}' contains no video files ({', '.join(sorted(VIDEO_EXTENSIONS))})"))
            paths += found
        elif p.exists():
            paths.append(str(p))
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(os.path.expanduser(item), recursive=True) if os.path.isfile(f))
            if not found:
                bad.append(Result(item, error=f"no files match '{item}'"))
            paths += found
        else:
            bad.append(Result(item, error=f"no such file or directory: '{item}'"))
    return paths, bad


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
        self.substituted_frames = 0
        self._closed = False

    def _decode_sorted(self, unique: list[int]):
        return self.base.get_frames_numpy([self.start + i for i in unique])

    def close(self) -> None:  # the base reader owns the file
        self._closed = True


def classify_video(clf: Classifier, protocol: Protocol, path: str, batch_size: int, top_k: int) -> Result:
    """Whole-video prediction: every view from one decode, probabilities averaged over views."""
    views, _ = protocol.views(path)
    probs = clf.logits(views, batch_size).softmax(-1).mean(0)
    return Result(path, ok=True, top=topk(probs, clf.labels, top_k), probs=probs)


def classify_timeline(
    clf: Classifier, protocol: Protocol, path: str, window: float, stride: float, batch_size: int, top_k: int
) -> Result:
    """Predictions for windows of ``window`` seconds every ``stride`` seconds over the whole
    video. Each window is decoded on its own, so memory stays bounded for long videos."""
    if window <= 0 or stride <= 0:
        raise HieraVideoError("--window and --stride must be positive numbers of seconds")
    with open_video(path, protocol.backend) as reader:
        duration = reader.num_frames / reader.fps if reader.fps else 0.0
        if duration <= 0:
            raise HieraVideoError(f"cannot build a timeline for '{path}': unknown frame rate or duration")
        rows, per_window = [], []
        for start, end in window_starts(duration, window, stride):
            f0 = min(int(round(start * reader.fps)), reader.num_frames - 1)
            f1 = min(max(f0 + 1, int(round(end * reader.fps))), reader.num_frames)
            views, _ = protocol.views(FrameRange(reader, f0, f1))
            probs = clf.logits(views, batch_size).softmax(-1).mean(0)
            per_window.append(probs)
            rows.append(dict(start=round(start, 3), end=round(end, 3), top=topk(probs, clf.labels, top_k)))
    window_probs = torch.stack(per_window)
    mean = window_probs.mean(0)
    return Result(path, ok=True, top=topk(mean, clf.labels, top_k), timeline=rows, probs=mean, window_probs=window_probs)


def predict_paths(
    clf: Classifier, protocol: Protocol, paths: list[str], batch_size: int = 8, top_k: int = 5,
    window: float | None = None, stride: float | None = None,
) -> Iterator[Result]:
    """One :class:`Result` per path, in order; a bad video gives ``ok=False`` with its error
    and never stops the others."""
    for path in paths:
        try:
            if window:
                yield classify_timeline(clf, protocol, path, window, stride or window, batch_size, top_k)
            else:
                yield classify_video(clf, protocol, path, batch_size, top_k)
        except HieraVideoError as e:
            yield Result(path, error=str(e))


def plot_timeline(result: Result, out_png: str, num_classes: int = 5) -> None:
    """Probability over time of the video's top classes, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [t["index"] for t in result.top[:num_classes]]
    names = {t["index"]: t["label"] for t in result.top}
    mids = [(r["start"] + r["end"]) / 2 for r in result.timeline]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for c in classes:
        ax.plot(mids, result.window_probs[:, c].tolist(), marker="o", label=names[c])
    ax.set_xlabel("time (s), window centre")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title(Path(result.path).name)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
