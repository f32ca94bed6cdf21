"""Clip transforms on uint8 ``[T, H, W, 3]`` tensors; conversion to float happens last.

Test time: :func:`make_views` slices every temporal x spatial view from one decode. Training:
:class:`TrainTransform`, clip-consistent (one draw of random parameters per clip, applied to every
frame), all randomness from one ``torch.Generator``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from hiera_video.data.clip_spec import MAX_SUBSTITUTED_FRACTION, VIDEO_MEAN, VIDEO_STD, ClipSpec
from hiera_video.data.decode import VideoReader, open_video
from hiera_video.data.sampling import dense_indices, segment_indices
from hiera_video.errors import HieraVideoError


def _check_clip(clip: torch.Tensor) -> None:
    if clip.dim() != 4 or clip.shape[-1] != 3 or clip.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 clip [T, H, W, 3], got {tuple(clip.shape)} {clip.dtype}")


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
    return F.resize(clip.permute(0, 3, 1, 2), [h, w], interpolation=InterpolationMode.BILINEAR,
                    antialias=True).permute(0, 2, 3, 1)


def crop_boxes(height: int, width: int, crop_size: int, num_crops: int) -> list[tuple[int, int]]:
    """``(top, left)`` of ``num_crops`` square crops spread along the long side (1 = centre,
    3 = left/centre/right or top/centre/bottom); the short side is always centred."""
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


def normalize(clip: torch.Tensor, mean=VIDEO_MEAN, std=VIDEO_STD, out: torch.Tensor | None = None) -> torch.Tensor:
    """``uint8 [T, H, W, 3]`` -> ``float32 [3, T, H, W]`` (model layout), ``(x/255 - mean) / std``,
    into ``out`` (float32 ``[3, T, H, W]``) when given."""
    _check_clip(clip)
    m, s = (torch.as_tensor(v, dtype=torch.float64).view(3, 1, 1, 1) for v in (mean, std))
    scale, bias = (1.0 / (255.0 * s)).float(), (-m / s).float()
    if out is None:
        out = torch.empty((3, *clip.shape[:3]), dtype=torch.float32)
    out.copy_(clip.permute(3, 0, 1, 2))  # one strided pass: uint8 channels-last -> float planes
    return out.mul_(scale).add_(bias)


@dataclass
class ViewInfo:
    """Where one test view came from; the last three fields describe the whole decode (all views)."""

    temporal_index: int
    spatial_index: int
    frame_indices: list[int]
    crop_box: tuple[int, int, int, int]  # top, left, height, width in the resized frame
    resized_size: tuple[int, int]  # (height, width) after the short-side resize
    sampled: int = 0  # distinct frames decoded for all views
    substituted: int = 0  # of those, frames that could not be decoded (nearest decodable frame instead)
    decoder: str = ""  # VideoReader.decoder


def temporal_view_indices(num_frames: int, fps: float, temporal_views: int, sampling_mode: str = "dense",
                          num_sample_frames: int = 16, stride: int = 4, target_fps: float = 30.0) -> list[torch.Tensor]:
    """Test-time frame indices of every temporal view ("dense" = Kinetics, "segment" = SSv2)."""
    if sampling_mode not in ("dense", "segment"):
        raise ValueError(f"sampling must be 'dense' or 'segment', got {sampling_mode!r}")
    return [dense_indices(num_frames, fps, num_sample_frames, stride, target_fps, "test", temporal_views, i)
            if sampling_mode == "dense" else segment_indices(num_frames, num_sample_frames, "test", temporal_views, i)
            for i in range(temporal_views)]


def make_views(source: VideoReader | str | os.PathLike, spec: ClipSpec) -> tuple[torch.Tensor, list[ViewInfo]]:
    """All test views of one video from a single decode.

    Indices of every temporal view -> ONE ``get_frames`` on their sorted union -> resize each
    frame once (short side to ``short_side or crop_size``) -> per temporal view, gather its frames
    and normalise each spatial crop into its slot. Returns ``float32 [V, 3, T, crop, crop]``,
    temporal-major (view ``t * spatial_views + s``), and one :class:`ViewInfo` per view. ``source``:
    an open reader (left open) or a path (opened with ``spec.backend`` and closed).
    """
    if not isinstance(source, VideoReader):
        with open_video(source, spec.backend, spec.decode_device) as reader:
            return make_views(reader, spec)
    reader, crop_size = source, spec.crop_size
    per_view = temporal_view_indices(reader.num_frames, reader.fps, spec.temporal_views, spec.sampling,
                                     spec.num_frames, spec.stride, spec.target_fps)
    # where[t, k] = position of view t's k-th frame in the union
    union, where = torch.unique(torch.stack(per_view), sorted=True, return_inverse=True)
    before = reader.substituted_frames
    frames = resize_short_side(reader.get_frames(union.tolist()), spec.short_side or crop_size)
    substituted = reader.substituted_frames - before
    h, w = frames.shape[1:3]
    boxes = crop_boxes(h, w, crop_size, spec.spatial_views)
    views = torch.empty((spec.num_views, 3, where.shape[1], crop_size, crop_size))
    infos = []
    for t in range(spec.temporal_views):
        clip = frames[where[t]]  # [T, h, w, 3]
        for s, (top, left) in enumerate(boxes):
            normalize(clip[:, top : top + crop_size, left : left + crop_size], spec.mean, spec.std, views[len(infos)])
            infos.append(ViewInfo(t, s, per_view[t].tolist(), (top, left, crop_size, crop_size), (h, w),
                                  int(union.numel()), substituted, reader.decoder))
    return views, infos


def decode_views(source: VideoReader | str | os.PathLike, spec: ClipSpec) -> tuple[torch.Tensor, tuple[int, int], str]:
    """:func:`make_views`, ``(substituted, sampled)`` frames and the decoder's name; a video with
    more than ``MAX_SUBSTITUTED_FRACTION`` substituted frames raises :class:`HieraVideoError`."""
    views, infos = make_views(source, spec)
    sampled, substituted = (infos[0].sampled, infos[0].substituted) if infos else (0, 0)
    if sampled and substituted > MAX_SUBSTITUTED_FRACTION * sampled:
        raise HieraVideoError(f"cannot use video '{getattr(source, 'path', source)}': {substituted} of the {sampled} "
                              f"frames its clips need could not be decoded (more than {MAX_SUBSTITUTED_FRACTION:.0%}); "
                              "the file is damaged: re-encode or re-download it")
    return views, (substituted, sampled), infos[0].decoder if infos else ""


_SSV2_SWAP = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}


def ssv2_flip_label(label):
    """SSv2 label (int or integer tensor) after a horizontal flip: swaps the left/right classes."""
    if isinstance(label, torch.Tensor):
        out = label.clone()
        for a, b in _SSV2_SWAP.items():
            out[label == a] = b
        return out
    return _SSV2_SWAP.get(int(label), int(label))


def _uniform(generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _area_and_aspect(area: int, scale, ratio, generator) -> tuple[int, int]:
    """Sides ``(sqrt(a * r), sqrt(a / r))`` of a box of ``a = area * U(scale)`` pixels, ``r``
    log-uniform in ``ratio``: ``(w, h)`` for a crop, ``(h, w)`` for random erasing."""
    target = area * _uniform(generator, *scale)
    aspect = math.exp(_uniform(generator, math.log(ratio[0]), math.log(ratio[1])))
    return int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))


def random_resized_crop_params(height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), generator=None):
    """``(top, left, h, w)`` of a random crop with area fraction in ``scale`` and aspect
    (w/h) log-uniform in ``ratio``; 10 tries, then a centre crop clamped to ``ratio``."""
    for _ in range(10):
        w, h = _area_and_aspect(height * width, scale, ratio, generator)
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    w = width if width / height <= ratio[1] else int(round(height * ratio[1]))
    h = height if width / height >= ratio[0] else int(round(width / ratio[0]))
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(clip: torch.Tensor, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), generator=None):
    """Same random crop on every frame, resized to ``size x size``; returns ``(clip, params)``."""
    _check_clip(clip)
    params = random_resized_crop_params(clip.shape[1], clip.shape[2], scale, ratio, generator)
    out = F.resized_crop(clip.permute(0, 3, 1, 2), *params, [size, size], InterpolationMode.BILINEAR, antialias=True)
    return out.permute(0, 2, 3, 1), params


def hflip(clip: torch.Tensor) -> torch.Tensor:
    """Mirror every frame of ``[T, H, W, 3]`` left-right."""
    return clip.flip(2)


# RandAugment (timm "rand-m7-n2-mstd0.5-inc1" semantics), clip-consistent.
_MAX_LEVEL = 10.0
RANDAUG_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
               "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY")
_SIGNED = {"Rotate", *RANDAUG_OPS[7:]}


def apply_randaug_op(x: torch.Tensor, op: str, magnitude: float, sign: float = 1.0, fill=(128, 128, 128)):
    """One RandAugment op on ``uint8 [T, 3, H, W]`` with ``magnitude`` in [0, 10]."""
    level = magnitude / _MAX_LEVEL
    fill = [float(v) for v in fill]
    t, c, h, w = x.shape
    if op in ("AutoContrast", "Equalize"):
        # histogram ops see the clip as one tall image [3, T*H, W] (statistics of the whole clip)
        histogram_op = F.autocontrast if op == "AutoContrast" else F.equalize
        return histogram_op(x.transpose(0, 1).reshape(c, t * h, w)).reshape(c, t, h, w).transpose(0, 1)
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
    if op in ("Color", "Brightness", "Sharpness"):
        adjust = {"Color": F.adjust_saturation, "Brightness": F.adjust_brightness, "Sharpness": F.adjust_sharpness}[op]
        return adjust(x, factor)
    if op == "Contrast":
        gray_mean = F.rgb_to_grayscale(x).to(torch.float32).mean()
        return (x.to(torch.float32) * factor + gray_mean * (1 - factor)).clamp_(0, 255).to(torch.uint8)
    if op in ("ShearX", "ShearY"):
        degrees = math.degrees(math.atan(sign * 0.3 * level))
        shear = [degrees, 0.0] if op == "ShearX" else [0.0, degrees]
        return F.affine(x, 0.0, [0.0, 0.0], 1.0, shear, InterpolationMode.BILINEAR, fill=fill)
    if op in ("TranslateX", "TranslateY"):
        shift = sign * 0.45 * level
        translate = [shift * w, 0.0] if op == "TranslateX" else [0.0, shift * h]
        return F.affine(x, 0.0, translate, 1.0, [0.0, 0.0], InterpolationMode.BILINEAR, fill=fill)
    raise ValueError(f"unknown RandAugment op {op!r}")


def rand_augment(clip: torch.Tensor, num_ops: int = 2, magnitude: float = 7.0, magnitude_std: float = 0.5,
                 generator=None, fill=(128, 128, 128)):
    """RandAugment, one draw applied to every frame of ``[T, H, W, 3]``: ``num_ops`` ops chosen with
    replacement, each kept with p=0.5, magnitude ~ N(magnitude, magnitude_std) clipped to [0, 10],
    signed ops get +-1. Returns ``(clip, [(op, magnitude, sign)])`` of the ops applied."""
    _check_clip(clip)
    x = clip.permute(0, 3, 1, 2).contiguous()
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
    return x.permute(0, 2, 3, 1), applied


def random_erasing(clip: torch.Tensor, p: float = 0.25, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3), mode: str = "pixel",
                   generator=None):
    """Erase one rectangle, the same in every frame, of a normalised ``float [3, T, H, W]`` clip:
    ``mode="pixel"``: N(0, 1) noise (one patch shared by all frames), ``"const"``: zeros (the mean
    colour). Returns ``(clip, (top, left, h, w) or None)``."""
    if _uniform(generator) >= p:
        return clip, None
    _, _, height, width = clip.shape
    for _ in range(10):
        h, w = _area_and_aspect(height * width, scale, ratio, generator)
        if 0 < h < height and 0 < w < width:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            out = clip.clone()
            out[:, :, top : top + h, left : left + w] = (
                torch.randn((len(clip), 1, h, w), generator=generator, dtype=clip.dtype) if mode == "pixel" else 0.0)
            return out, (top, left, h, w)
    return clip, None


@dataclass
class TrainTransform:
    """Training augmentation for one clip: ``uint8 [T, H, W, 3] -> float [3, T, S, S]``.

    Random-resized crop to ``clip.crop_size`` -> horizontal flip -> RandAugment -> normalise ->
    random erasing. ``flip``: "random" (p=``flip_p``), "none" or "ssv2" (flip and swap the
    left/right labels). ``__call__(clip, label)`` returns ``(tensor, label, params)``, ``params``
    recording every random choice.
    """

    clip: ClipSpec = field(default_factory=ClipSpec)  # crop size, mean and std
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
    seed: int | None = None
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.flip not in ("random", "none", "ssv2"):
            raise ValueError(f"flip must be 'random', 'none' or 'ssv2', got {self.flip!r}")
        if self.generator is None:
            self.generator = torch.Generator()
            self.generator.seed() if self.seed is None else self.generator.manual_seed(self.seed)

    def __call__(self, clip: torch.Tensor, label=None):
        g = self.generator
        x, crop = random_resized_crop(clip, self.clip.crop_size, self.scale, self.ratio, g)
        flipped = self.flip != "none" and _uniform(g) < self.flip_p
        if flipped:
            x = hflip(x)
            if self.flip == "ssv2" and label is not None:
                label = ssv2_flip_label(label)
        ops, erased = [], None
        if self.randaug:
            fill = tuple(min(255, round(255 * m)) for m in self.clip.mean)
            x, ops = rand_augment(x, self.randaug_ops, self.randaug_magnitude, self.randaug_std, g, fill)
        out = normalize(x, self.clip.mean, self.clip.std)
        if self.erase_p > 0:
            out, erased = random_erasing(out, self.erase_p, mode=self.erase_mode, generator=g)
        return out, label, {"crop": crop, "flipped": flipped, "randaug": ops, "erase": erased}
