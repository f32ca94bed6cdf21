"""Clip transforms on uint8 ``[T, H, W, 3]`` tensors; conversion to float happens last.

Test time: :func:`resize_short_side`, :func:`spatial_crops`, :func:`normalize` and
:func:`make_views`, which decodes the union of all views' frames once and slices every
temporal x spatial view from that single decode.

Training: :class:`TrainTransform` (random-resized crop, horizontal flip, RandAugment, random
erasing), clip-consistent: one set of random parameters is drawn per clip and applied to
every frame. All randomness comes from one ``torch.Generator``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from hiera_video.data import sampling as _sampling
from hiera_video.data.clip_spec import VIDEO_MEAN, VIDEO_STD
from hiera_video.data.decode import VideoReader, open_video

if TYPE_CHECKING:
    from hiera_video.data.clip_spec import ClipSpec


def _check_clip(clip: torch.Tensor) -> None:
    if clip.dim() != 4 or clip.shape[-1] != 3 or clip.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 clip [T, H, W, 3], got {tuple(clip.shape)} {clip.dtype}")


def _to_tchw(clip: torch.Tensor) -> torch.Tensor:
    return clip.permute(0, 3, 1, 2)


def _to_thwc(clip: torch.Tensor) -> torch.Tensor:
    return clip.permute(0, 2, 3, 1)


# ---------------------------------------------------------------- test time


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(h, w)`` after scaling the short side to ``size`` (long side floored, as SlowFast)."""
    if height <= width:
        return size, max(size, int(math.floor(width * size / height)))
    return max(size, int(math.floor(height * size / width))), size


def resize_short_side(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of ``uint8 [T, H, W, 3]`` so the short side is ``size``."""
    _check_clip(clip)
    h, w = short_side_size(clip.shape[1], clip.shape[2], size)
    if (h, w) == tuple(clip.shape[1:3]):
        return clip
    out = F.resize(_to_tchw(clip), [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return _to_thwc(out)


def crop_boxes(height: int, width: int, crop_size: int, num_crops: int) -> list[tuple[int, int]]:
    """``(top, left)`` of ``num_crops`` square crops spread along the long side.

    1 crop = centre; 3 = left/centre/right (landscape) or top/centre/bottom (portrait); the
    short side is always centred.
    """
    if crop_size > height or crop_size > width:
        raise ValueError(f"crop {crop_size} does not fit in {height}x{width}; resize the short side first")
    if num_crops < 1:
        raise ValueError(f"num_crops must be >= 1, got {num_crops}")
    if num_crops == 1:
        return [((height - crop_size) // 2, (width - crop_size) // 2)]
    long_is_width = width >= height
    span = (width if long_is_width else height) - crop_size
    across = ((height if long_is_width else width) - crop_size) // 2
    along = [round(i * span / (num_crops - 1)) for i in range(num_crops)]
    return [(across, a) if long_is_width else (a, across) for a in along]


def spatial_crops(clip: torch.Tensor, crop_size: int, num_crops: int = 1) -> list[torch.Tensor]:
    """Square crops of ``[T, H, W, 3]`` (or any ``[..., H, W, C]``) along the long side."""
    h, w = clip.shape[-3], clip.shape[-2]
    return [clip[..., t : t + crop_size, l : l + crop_size, :] for t, l in crop_boxes(h, w, crop_size, num_crops)]


def normalize(
    clip: torch.Tensor,
    mean: Sequence[float] = VIDEO_MEAN,
    std: Sequence[float] = VIDEO_STD,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``uint8 [T, H, W, 3]`` -> ``float32 [3, T, H, W]`` (model layout), ``(x/255 - mean) / std``.

    ``out`` (optional, float32 ``[3, T, H, W]``) receives the result without a temporary.
    """
    _check_clip(clip)
    m = torch.as_tensor(mean, dtype=torch.float64).view(3, 1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float64).view(3, 1, 1, 1)
    scale, bias = (1.0 / (255.0 * s)).float(), (-m / s).float()
    if out is None:
        out = torch.empty((3, *clip.shape[:3]), dtype=torch.float32)
    out.copy_(clip.permute(3, 0, 1, 2))  # one strided pass: uint8 channels-last -> float planes
    return out.mul_(scale).add_(bias)


@dataclass
class ViewInfo:
    """Where one test view came from."""

    temporal_index: int
    spatial_index: int
    frame_indices: list[int]
    crop_box: tuple[int, int, int, int]  # top, left, height, width in the resized frame
    resized_size: tuple[int, int]  # (height, width) after the short-side resize
    # For the whole decode these views came from (the same in every view of a video):
    sampled: int = 0  # distinct frames decoded for all views
    substituted: int = 0  # of those, frames that could not be decoded (nearest decodable frame instead)


def temporal_view_indices(
    num_frames: int,
    fps: float,
    temporal_views: int,
    sampling_mode: str = "dense",
    num_sample_frames: int = 16,
    stride: int = 4,
    target_fps: float = 30.0,
) -> list[torch.Tensor]:
    """Test-time frame indices of every temporal view ("dense" = Kinetics, "segment" = SSv2)."""
    if sampling_mode == "dense":
        return [
            _sampling.dense_indices(num_frames, fps, num_sample_frames, stride, target_fps, "test", temporal_views, i)
            for i in range(temporal_views)
        ]
    if sampling_mode == "segment":
        return [
            _sampling.segment_indices(num_frames, num_sample_frames, "test", temporal_views, i)
            for i in range(temporal_views)
        ]
    raise ValueError(f"sampling must be 'dense' or 'segment', got {sampling_mode!r}")


def make_views(source: VideoReader | str | os.PathLike, spec: ClipSpec) -> tuple[torch.Tensor, list[ViewInfo]]:
    """All test views of one video from a single decode, as :class:`~hiera_video.data.clip_spec.ClipSpec` says.

    Steps: indices of every temporal view -> ONE ``get_frames`` call on their sorted union ->
    resize each decoded frame once (short side to ``short_side``, default ``crop_size``) ->
    per temporal view, gather its frames from the union and normalise -> slice the spatial
    crops. Returns ``float32 [V, 3, T, crop, crop]`` with ``V = temporal_views *
    spatial_views`` ordered temporal-major (view ``t * spatial_views + s``), and one
    :class:`ViewInfo` per view. ``source`` is an open reader (left open) or a path (opened
    with the spec's ``backend`` and closed).
    """
    if not isinstance(source, VideoReader):
        with open_video(source, spec.backend) as reader:
            return make_views(reader, spec)
    reader, crop_size = source, spec.crop_size
    per_view = temporal_view_indices(reader.num_frames, reader.fps, spec.temporal_views, spec.sampling,
                                     spec.num_frames, spec.stride, spec.target_fps)
    # union: sorted unique frame indices; where[t, k] = position of view t's k-th frame in it
    union, where = torch.unique(torch.stack(per_view), sorted=True, return_inverse=True)
    before = reader.substituted_frames
    frames = resize_short_side(reader.get_frames(union.tolist()), spec.short_side or crop_size)
    substituted = reader.substituted_frames - before
    h, w = frames.shape[1:3]
    boxes = crop_boxes(h, w, crop_size, spec.spatial_views)
    views = torch.empty((spec.num_views, 3, where.shape[1], crop_size, crop_size))
    infos = []
    for t in range(spec.temporal_views):
        clip = frames[where[t]]  # this view's frames, gathered from the union: [T, h, w, 3]
        for s, (top, left) in enumerate(boxes):
            # normalise each crop straight into its output slot (no float copy of the whole clip)
            normalize(clip[:, top : top + crop_size, left : left + crop_size], spec.mean, spec.std, out=views[len(infos)])
            infos.append(ViewInfo(t, s, per_view[t].tolist(), (top, left, crop_size, crop_size), (h, w),
                                  int(union.numel()), substituted))
    return views, infos


# ---------------------------------------------------------------- training

SSV2_FLIP_PAIRS = ((86, 87), (93, 94), (166, 167))
_SSV2_SWAP = {a: b for a, b in SSV2_FLIP_PAIRS} | {b: a for a, b in SSV2_FLIP_PAIRS}


def ssv2_flip_label(label):
    """SSv2 label after a horizontal flip: swaps left/right classes 86<->87, 93<->94, 166<->167.

    Accepts an int or an integer tensor (returns the same type).
    """
    if isinstance(label, torch.Tensor):
        out = label.clone()
        for a, b in _SSV2_SWAP.items():
            out[label == a] = b
        return out
    return _SSV2_SWAP.get(int(label), int(label))


def _uniform(generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def random_resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop with area fraction in ``scale`` and aspect
    (w/h) log-uniform in ``ratio``; 10 tries, then a centre crop clamped to ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(generator, *scale)
        aspect = math.exp(_uniform(generator, *log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    clip: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Same random crop on every frame, resized to ``size x size``; returns ``(clip, params)``."""
    _check_clip(clip)
    params = random_resized_crop_params(clip.shape[1], clip.shape[2], scale, ratio, generator)
    out = F.resized_crop(_to_tchw(clip), *params, [size, size], InterpolationMode.BILINEAR, antialias=True)
    return _to_thwc(out), params


def hflip(clip: torch.Tensor) -> torch.Tensor:
    """Mirror every frame of ``[T, H, W, 3]`` left-right."""
    return clip.flip(2)


# RandAugment (timm "rand-m7-n2-mstd0.5-inc1" semantics), clip-consistent.
_MAX_LEVEL = 10.0
RANDAUG_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
)
_SIGNED = {"Rotate", "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY"}


def _as_one_image(x: torch.Tensor) -> torch.Tensor:
    """``[T, 3, H, W]`` -> ``[3, T*H, W]``: the frames stacked vertically as one tall image,
    so histogram-based ops (autocontrast, equalize, contrast) use statistics of the whole clip."""
    t, c, h, w = x.shape
    return x.transpose(0, 1).reshape(c, t * h, w)


def _from_one_image(y: torch.Tensor, t: int) -> torch.Tensor:
    c, th, w = y.shape
    return y.reshape(c, t, th // t, w).transpose(0, 1)


def apply_randaug_op(
    x: torch.Tensor, op: str, magnitude: float, sign: float = 1.0, fill=(128, 128, 128)
) -> torch.Tensor:
    """One RandAugment op on ``uint8 [T, 3, H, W]`` with ``magnitude`` in [0, 10]."""
    level = magnitude / _MAX_LEVEL
    fill = [float(v) for v in fill]
    t, _, h, w = x.shape
    if op in ("AutoContrast", "Equalize"):
        histogram_op = F.autocontrast if op == "AutoContrast" else F.equalize
        return _from_one_image(histogram_op(_as_one_image(x)), t)
    if op == "Invert":
        return F.invert(x)
    if op == "Rotate":
        return F.rotate(x, sign * 30.0 * level, InterpolationMode.BILINEAR, fill=fill)
    if op == "Posterize":  # increasing: fewer bits with larger magnitude
        return F.posterize(x, max(0, 4 - int(level * 4)))
    if op == "Solarize":  # increasing: lower threshold with larger magnitude
        threshold = 256 - int(level * 256)
        return x if threshold > 255 else F.solarize(x, threshold)
    if op == "SolarizeAdd":
        added = (x.to(torch.int16) + int(level * 110)).clamp_(max=255).to(torch.uint8)
        return torch.where(x < 128, added, x)
    factor = 1.0 + sign * 0.9 * level
    if op == "Color":
        return F.adjust_saturation(x, factor)
    if op == "Contrast":
        gray_mean = F.rgb_to_grayscale(x).to(torch.float32).mean()
        return (x.to(torch.float32) * factor + gray_mean * (1 - factor)).clamp_(0, 255).to(torch.uint8)
    if op == "Brightness":
        return F.adjust_brightness(x, factor)
    if op == "Sharpness":
        return F.adjust_sharpness(x, factor)
    if op in ("ShearX", "ShearY"):
        degrees = math.degrees(math.atan(sign * 0.3 * level))
        shear = [degrees, 0.0] if op == "ShearX" else [0.0, degrees]
        return F.affine(x, 0.0, [0.0, 0.0], 1.0, shear, InterpolationMode.BILINEAR, fill=fill)
    if op in ("TranslateX", "TranslateY"):
        shift = sign * 0.45 * level
        translate = [shift * w, 0.0] if op == "TranslateX" else [0.0, shift * h]
        return F.affine(x, 0.0, translate, 1.0, [0.0, 0.0], InterpolationMode.BILINEAR, fill=fill)
    raise ValueError(f"unknown RandAugment op {op!r}")


def rand_augment(
    clip: torch.Tensor,
    num_ops: int = 2,
    magnitude: float = 7.0,
    magnitude_std: float = 0.5,
    generator: torch.Generator | None = None,
    fill=(128, 128, 128),
) -> tuple[torch.Tensor, list[tuple[str, float, float]]]:
    """RandAugment with one draw of ops/magnitudes applied to every frame of ``[T, H, W, 3]``.

    ``num_ops`` ops are chosen with replacement; each is kept with probability 0.5;
    magnitude ~ N(magnitude, magnitude_std) clipped to [0, 10]; signed ops get +-1.
    Returns ``(clip, [(op, magnitude, sign)])``, the ops that were applied.
    """
    _check_clip(clip)
    x = _to_tchw(clip).contiguous()
    applied = []
    for _ in range(num_ops):
        op = RANDAUG_OPS[int(torch.randint(0, len(RANDAUG_OPS), (1,), generator=generator))]
        keep = _uniform(generator) < 0.5
        m = magnitude
        if magnitude_std > 0:
            m += magnitude_std * float(torch.randn((), generator=generator, dtype=torch.float64))
        m = min(max(m, 0.0), _MAX_LEVEL)
        sign = -1.0 if (op in _SIGNED and _uniform(generator) < 0.5) else 1.0
        if keep:
            x = apply_randaug_op(x, op, m, sign, fill)
            applied.append((op, m, sign))
    return _to_thwc(x), applied


def random_erasing(
    clip: torch.Tensor,
    p: float = 0.25,
    scale: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    mode: str = "pixel",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, tuple[int, int, int, int] | None]:
    """Erase one rectangle, the same in every frame, of a normalised ``float [3, T, H, W]`` clip.

    ``mode="pixel"``: per-pixel N(0, 1) noise (one noise patch shared by all frames);
    ``"const"``: zeros (the mean colour). Returns ``(clip, (top, left, h, w) or None)``.
    """
    if _uniform(generator) >= p:
        return clip, None
    _, _, height, width = clip.shape
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(generator, *scale)
        aspect = math.exp(_uniform(generator, *log_ratio))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if 0 < h < height and 0 < w < width:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            out = clip.clone()
            patch = torch.randn((clip.shape[0], 1, h, w), generator=generator, dtype=clip.dtype) if mode == "pixel" else 0.0
            out[:, :, top : top + h, left : left + w] = patch
            return out, (top, left, h, w)
    return clip, None


@dataclass
class TrainTransform:
    """Training augmentation for one clip: ``uint8 [T, H, W, 3] -> float [3, T, S, S]``.

    Order: random-resized crop to ``crop_size`` -> horizontal flip -> RandAugment ->
    normalise -> random erasing; every random parameter is drawn once per clip.
    ``flip``: "random" (p=``flip_p``), "none" (e.g. SSv2 without label swap) or
    "ssv2" (flip and swap the left/right labels with :func:`ssv2_flip_label`).
    Reproducible via ``seed`` or ``generator``. ``__call__(clip, label)`` returns
    ``(tensor, label, params)`` where ``params`` records every random choice.
    """

    crop_size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: str = "random"
    flip_p: float = 0.5
    randaug: bool = True
    randaug_ops: int = 2
    randaug_magnitude: float = 7.0
    randaug_std: float = 0.5
    erase_p: float = 0.25
    erase_mode: str = "pixel"
    mean: Sequence[float] = VIDEO_MEAN
    std: Sequence[float] = VIDEO_STD
    seed: int | None = None
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.flip not in ("random", "none", "ssv2"):
            raise ValueError(f"flip must be 'random', 'none' or 'ssv2', got {self.flip!r}")
        if self.generator is None:
            self.generator = torch.Generator()
            if self.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(self.seed)

    def __call__(self, clip: torch.Tensor, label=None):
        g = self.generator
        x, crop = random_resized_crop(clip, self.crop_size, self.scale, self.ratio, g)
        flipped = False
        if self.flip != "none" and _uniform(g) < self.flip_p:
            x, flipped = hflip(x), True
            if self.flip == "ssv2" and label is not None:
                label = ssv2_flip_label(label)
        ops = []
        if self.randaug:
            fill = tuple(min(255, round(255 * m)) for m in self.mean)
            x, ops = rand_augment(x, self.randaug_ops, self.randaug_magnitude, self.randaug_std, g, fill)
        out = normalize(x, self.mean, self.std)
        erased = None
        if self.erase_p > 0:
            out, erased = random_erasing(out, self.erase_p, mode=self.erase_mode, generator=g)
        return out, label, {"crop": crop, "flipped": flipped, "randaug": ops, "erase": erased}
