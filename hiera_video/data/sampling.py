"""Frame-index sampling: pure functions, the same code for training, evaluation and prediction.

Every function returns frame indices already clamped to ``[0, num_frames - 1]`` (frames past
the end repeat the last frame; nothing wraps around). Randomness only comes from the
``generator`` argument (a ``torch.Generator``), so sampling is reproducible.
"""

from __future__ import annotations

import math

import torch

MODES = ("train", "test")


def _check(num_frames: int, mode: str | None = None) -> None:
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")


def clip_span(fps: float, num_sample_frames: int = 16, stride: int = 4, target_fps: float = 30.0) -> float:
    """Source frames covered by a dense clip: ``stride * T / target_fps * fps``."""
    return stride * num_sample_frames / target_fps * fps


def dense_clip_starts(
    num_frames: int,
    fps: float,
    num_sample_frames: int = 16,
    stride: int = 4,
    target_fps: float = 30.0,
    num_clips: int = 1,
) -> list[int]:
    """Start frames of the ``num_clips`` test clips, evenly spread over the video.

    With ``delta = max(num_frames - span, 0)`` clip ``i`` starts at
    ``floor(i * delta / (num_clips - 1))``: the first clip starts at frame 0 and the last
    one ends at the last frame. (``i * floor(delta / (N - 1))`` is the same up to rounding
    but can stop short of the end.) A single clip is centred: ``floor(delta / 2)``.
    """
    _check(num_frames)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    delta = max(num_frames - clip_span(fps, num_sample_frames, stride, target_fps), 0.0)
    if num_clips == 1:
        return [int(math.floor(delta / 2))]
    return [int(math.floor(i * delta / (num_clips - 1) + 1e-9)) for i in range(num_clips)]


def dense_indices(
    num_frames: int,
    fps: float,
    num_sample_frames: int = 16,
    stride: int = 4,
    target_fps: float = 30.0,
    mode: str = "test",
    num_clips: int = 1,
    clip_idx: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Kinetics-style dense clip: ``T`` frames ``stride`` apart at ``target_fps``.

    At the video's own rate the step is ``stride * fps / target_fps`` source frames (4 at
    30 fps, 2 at 15 fps) and frame ``k`` is ``floor(start + k * step)``. ``mode="train"``
    draws the start uniformly from ``[0, max(n - span, 0)]``; ``mode="test"`` uses clip
    ``clip_idx`` of :func:`dense_clip_starts`. Returns a LongTensor ``[T]``.
    """
    _check(num_frames, mode)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if not 0 <= clip_idx < num_clips:
        raise ValueError(f"clip_idx must be in [0, {num_clips - 1}], got {clip_idx}")
    span = clip_span(fps, num_sample_frames, stride, target_fps)
    if mode == "train":
        high = int(math.floor(max(num_frames - span, 0.0)))  # inclusive
        start = int(torch.randint(0, high + 1, (1,), generator=generator))
    else:
        start = dense_clip_starts(num_frames, fps, num_sample_frames, stride, target_fps, num_clips)[clip_idx]
    step = span / num_sample_frames
    offsets = torch.floor(torch.arange(num_sample_frames, dtype=torch.float64) * step + 1e-6).long()
    return (start + offsets).clamp_(0, num_frames - 1)


def segment_indices(
    num_frames: int,
    num_segments: int = 16,
    mode: str = "test",
    num_views: int = 1,
    view_idx: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SSv2 / TSN sampling: one frame from each of ``num_segments`` equal segments.

    Train: a random frame inside each segment. Test: the frame at fraction ``offset`` of
    each segment, with ``offset = 0.5`` (midpoint) for one view and ``view_idx / num_views``
    otherwise (2 views: segment start and midpoint). Short videos repeat frames.
    Returns a LongTensor ``[num_segments]``.
    """
    _check(num_frames, mode)
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if not 0 <= view_idx < num_views:
        raise ValueError(f"view_idx must be in [0, {num_views - 1}], got {view_idx}")
    seg = num_frames / num_segments
    k = torch.arange(num_segments, dtype=torch.float64)
    if mode == "train":
        starts = torch.floor(k * seg + 1e-9)
        ends = torch.floor((k + 1) * seg + 1e-9)  # exclusive
        widths = (ends - starts).clamp(min=1)
        pick = torch.floor(torch.rand(num_segments, generator=generator, dtype=torch.float64) * widths)
        idx = starts + pick
    else:
        offset = 0.5 if num_views == 1 else view_idx / num_views
        idx = torch.floor((k + offset) * seg + 1e-9)
    return idx.long().clamp_(0, num_frames - 1)


def keyframe_indices(
    keyframe_index: int,
    num_frames: int,
    num_sample_frames: int = 16,
    stride: int = 4,
) -> torch.Tensor:
    """AVA clip centred on a keyframe: ``keyframe - T*s//2 + k*s`` for ``k < T``, clamped.

    The keyframe is sample ``T // 2`` (index 8 of 16). Returns a LongTensor ``[T]``.
    """
    _check(num_frames)
    start = int(keyframe_index) - (num_sample_frames * stride) // 2
    idx = start + torch.arange(num_sample_frames, dtype=torch.long) * stride
    return idx.clamp_(0, num_frames - 1)


def ava_keyframe_index(timestamp: float, fps: float = 30.0, start_sec: float = 900.0) -> int:
    """Frame index of an AVA keyframe in a clip cut at ``start_sec``: ``(t - 900) * fps``."""
    return int(round((timestamp - start_sec) * fps))


def window_starts(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of windows covering ``[0, duration]`` for long-video timelines.

    Windows start every ``stride`` seconds; the last one is aligned to the end of the video
    (``duration - window``) so every window has full length and the end is covered. A video
    shorter than one window gives the single window ``(0, duration)``.
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be > 0, got {window} and {stride}")
    if duration <= 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    if duration <= window:
        return [(0.0, float(duration))]
    last = duration - window
    count = int(math.floor(last / stride + 1e-9))
    starts = [i * stride for i in range(count + 1)]
    if last - starts[-1] > 1e-6:
        starts.append(last)
    return [(float(s), float(s + window)) for s in starts]
