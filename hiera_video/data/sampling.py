"""Frame-index sampling for training, evaluation and prediction: indices are clamped to
``[0, num_frames - 1]`` (no wrap-around); randomness comes only from ``generator``.
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


def dense_clip_starts(num_frames: int, fps: float, num_sample_frames: int = 16, stride: int = 4,
                      target_fps: float = 30.0, num_clips: int = 1) -> list[int]:
    """Test clip starts ``floor(i * delta / (N - 1))``, ``delta = max(num_frames - span, 0)``: the first at 0,
    the last ending at the last frame; one clip is centred (``floor(delta / 2)``)."""
    _check(num_frames)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    delta = max(num_frames - clip_span(fps, num_sample_frames, stride, target_fps), 0.0)
    if num_clips == 1:
        return [int(math.floor(delta / 2))]
    return [int(math.floor(i * delta / (num_clips - 1) + 1e-9)) for i in range(num_clips)]


def dense_indices(num_frames: int, fps: float, num_sample_frames: int = 16, stride: int = 4, target_fps: float = 30.0,
                  mode: str = "test", num_clips: int = 1, clip_idx: int = 0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Kinetics dense clip ``[T]``: frame ``k`` is ``floor(start + k * stride * fps / target_fps)``; train draws
    the start uniformly from ``[0, max(n - span, 0)]``, test takes clip ``clip_idx`` of :func:`dense_clip_starts`."""
    _check(num_frames, mode)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if not 0 <= clip_idx < num_clips:
        raise ValueError(f"clip_idx must be in [0, {num_clips - 1}], got {clip_idx}")
    span = clip_span(fps, num_sample_frames, stride, target_fps)
    if mode == "train":
        high = int(math.floor(max(num_frames - span, 0.0)))
        start = int(torch.randint(0, high + 1, (1,), generator=generator))
    else:
        start = dense_clip_starts(num_frames, fps, num_sample_frames, stride, target_fps, num_clips)[clip_idx]
    step = span / num_sample_frames
    offsets = torch.floor(torch.arange(num_sample_frames, dtype=torch.float64) * step + 1e-6).long()
    return (start + offsets).clamp_(0, num_frames - 1)


def segment_indices(num_frames: int, num_segments: int = 16, mode: str = "test", num_views: int = 1, view_idx: int = 0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """SSv2/TSN: one frame per equal segment ``[num_segments]``; train a random one, test the one at fraction
    0.5 (one view) or ``view_idx / num_views`` of each segment."""
    _check(num_frames, mode)
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if not 0 <= view_idx < num_views:
        raise ValueError(f"view_idx must be in [0, {num_views - 1}], got {view_idx}")
    seg = num_frames / num_segments
    k = torch.arange(num_segments, dtype=torch.float64)
    if mode == "train":
        starts = torch.floor(k * seg + 1e-9)
        widths = (torch.floor((k + 1) * seg + 1e-9) - starts).clamp(min=1)
        pick = torch.floor(torch.rand(num_segments, generator=generator, dtype=torch.float64) * widths)
        idx = starts + pick
    else:
        offset = 0.5 if num_views == 1 else view_idx / num_views
        idx = torch.floor((k + offset) * seg + 1e-9)
    return idx.long().clamp_(0, num_frames - 1)


def keyframe_indices(keyframe_index: int, num_frames: int, num_sample_frames: int = 16,
                     stride: int = 4) -> torch.Tensor:
    """AVA clip ``[T]`` centred on a keyframe (sample ``T // 2``): ``keyframe - T*s//2 + k*s``."""
    _check(num_frames)
    start = int(keyframe_index) - (num_sample_frames * stride) // 2
    idx = start + torch.arange(num_sample_frames, dtype=torch.long) * stride
    return idx.clamp_(0, num_frames - 1)


def window_starts(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of full-length windows every ``stride`` s, the last ending at ``duration``;
    a shorter video gives ``(0, duration)``."""
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
