"""A procedurally generated video dataset that needs temporal order: six classes in three pairs
(moving up/down, approaching/receding, splitting apart/coming together), the second of each pair the
first played backwards, so only frame order tells them apart. All are invariant under a horizontal flip.

Scenes are deliberately plain (solid objects brighter than the background in every RGB channel, a
dark gradient background, up to about a pixel per frame of motion at 96x96, light noise) so that the
demo's small Hiera learns them on two CPU cores in minutes; busier scenes left it at chance. Videos
are H.264 mp4 with ``train.txt``/``val.txt`` ("<relative path> <label>") and ``labels.txt``; video
``i`` depends only on ``(seed, split, label, i)``.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from hiera_video.errors import HieraVideoError
from hiera_video.report import atomic_path, atomic_write_text

CLASSES: list[tuple[str, str]] = [
    ("moving up", "one bright object travels upwards"),
    ("moving down", "one bright object travels downwards (class 0 played backwards)"),
    ("approaching", "one bright object grows as if coming towards the camera"),
    ("receding", "one bright object shrinks as if moving away (class 2 played backwards)"),
    ("splitting apart", "two objects start overlapping and fly apart along a random axis"),
    ("coming together", "two objects converge until they overlap (class 4 played backwards)"),
]
CLASS_NAMES = [name for name, _ in CLASSES]
NUM_CLASSES = len(CLASSES)
SHAPES = ("disk", "square", "diamond", "triangle")
SPLITS = {"train": 1, "val": 2}
X264_OPTIONS = {"crf": "18", "preset": "ultrafast", "g": "16", "threads": "1"}


def twin(label: int) -> int:
    """The class that is ``label`` played backwards (0<->1, 2<->3, 4<->5)."""
    return int(label) ^ 1


def _slug(name: str) -> str:
    return name.replace(" ", "_")


# Per-channel colour ranges: objects brighter than the background in every channel (luminance-only
# contrast left the demo model near chance after 100 steps, against about 85 % top-1 with this rule).
BG_RANGE = (0.0, 70.0)
OBJECT_RANGE = (150.0, 255.0)


def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance (in object radii; < 0 inside) of a unit-size shape."""
    if shape == "disk":
        return np.sqrt(u * u + v * v) - 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.0) / math.sqrt(2.0)
    if shape == "triangle":  # upward-pointing equilateral, circumradius 1
        k = math.sqrt(3.0)
        return np.maximum.reduce([-v - 0.5, (k * u + v - 1.0) / 2.0, (-k * u + v - 1.0) / 2.0])
    raise ValueError(f"unknown shape {shape!r}")


def _sample_object(rng: np.random.Generator) -> dict:
    return dict(shape=SHAPES[rng.integers(len(SHAPES))], colour=rng.uniform(*OBJECT_RANGE, 3),
                angle=float(rng.uniform(0, 2 * math.pi)))


def _draw_object(frames: np.ndarray, obj: dict, cx, cy, radius) -> None:
    """Alpha-composite one object onto ``frames: float32 [T, H, W, 3]`` in place; ``cx, cy, radius``: ``[T]``
    or scalars, in pixels. Only the box within 1.2 radii of the centre is computed."""
    T, H, W = frames.shape[:3]
    cx, cy, radius = (np.broadcast_to(np.asarray(a, np.float64), (T,)) for a in (cx, cy, radius))
    ca, sa = math.cos(obj["angle"]), math.sin(obj["angle"])
    colour = obj["colour"].astype(np.float32)
    for t in range(T):
        r = float(radius[t])
        reach = 1.2 * r + 1.0
        y0, y1 = max(int(math.floor(cy[t] - reach)), 0), min(int(math.ceil(cy[t] + reach)), H)
        x0, x1 = max(int(math.floor(cx[t] - reach)), 0), min(int(math.ceil(cx[t] + reach)), W)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy[t]))[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx[t]))[None, :]
        u = (np.float32(ca) * dx + np.float32(sa) * dy) / np.float32(r)
        v = (np.float32(ca) * dy - np.float32(sa) * dx) / np.float32(r)
        alpha = np.clip(0.5 - _shape_sdf(obj["shape"], u, v) * np.float32(r), 0.0, 1.0)[..., None]  # 1-pixel soft edge
        region = frames[t, y0:y1, x0:x1]
        region += alpha * (colour - region)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``float32 [H, W, 3]``: a linear gradient between two ``BG_RANGE`` colours in a random direction."""
    a, b = rng.uniform(*BG_RANGE, 3), rng.uniform(*BG_RANGE, 3)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    g = np.clip(((xx * math.cos(theta) + yy * math.sin(theta)) / size + 1.0) / 2.0, 0.0, 1.0)
    return (a + g[..., None] * (b - a)).astype(np.float32)


def render_video(label: int, rng: np.random.Generator | int, frames: int = 48, size: int = 96,
                 noise: bool = True) -> np.ndarray:
    """One video ``uint8 [T, size, size, 3]``; odd labels reverse the frames before the noise, so
    ``render_video(l, seed)[::-1] == render_video(twin(l), seed)`` with ``noise=False``."""
    if not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"label must be in 0..{NUM_CLASSES - 1}, got {label}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    T, S = int(frames), int(size)
    video = np.repeat(_background(rng, S)[None], T, axis=0)
    p = np.linspace(0.0, 1.0, T) ** rng.uniform(0.85, 1.15)
    family = int(label) // 2
    if family == 0:  # moving up
        obj = _sample_object(rng)
        radius, dist = rng.uniform(0.13, 0.2) * S, rng.uniform(0.45, 0.6) * S
        y_start = 0.5 * S + dist / 2 + rng.uniform(-0.05, 0.05) * S
        x_start, drift = rng.uniform(0.3, 0.7) * S, rng.uniform(-0.06, 0.06) * S
        _draw_object(video, obj, x_start + drift * p, y_start - dist * p, radius)
    elif family == 1:  # approaching
        obj = _sample_object(rng)
        r0, r1 = rng.uniform(0.06, 0.09) * S, rng.uniform(0.28, 0.34) * S
        c = rng.uniform(0.4, 0.6, 2) * S
        _draw_object(video, obj, c[0], c[1], r0 + (r1 - r0) * p)
    else:  # splitting apart
        c, axis = rng.uniform(0.45, 0.55, 2) * S, rng.uniform(0, math.pi)
        d0, d1 = rng.uniform(0.0, 0.04) * S, rng.uniform(0.3, 0.36) * S  # half separations
        half = d0 + (d1 - d0) * p
        radius = rng.uniform(0.1, 0.14) * S
        first = _sample_object(rng)
        second = first if rng.random() < 0.5 else _sample_object(rng)  # twins or two different objects
        for sign, obj in ((1.0, first), (-1.0, second)):
            _draw_object(video, obj, c[0] + sign * half * math.cos(axis), c[1] + sign * half * math.sin(axis), radius)
    if int(label) & 1:  # the backwards member of a pair (1, 3, 5)
        video = video[::-1]
    if not noise:
        return np.clip(video, 0, 255).round().astype(np.uint8)
    noise = rng.standard_normal(video.shape, dtype=np.float32)
    noise *= np.float32(rng.uniform(1.0, 4.0))
    video = video + noise
    return np.clip(video, 0, 255, out=video).round(out=video).astype(np.uint8)


def write_mp4(path: str | Path, video: np.ndarray, fps: int = 30, options: dict | None = None) -> Path:
    """Encode ``uint8 [T, H, W, 3]`` RGB (even H and W) as H.264 mp4, atomically."""
    import av

    path = Path(path)
    with atomic_path(path, suffix=".tmp.mp4") as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps, options=dict(options or X264_OPTIONS))
            stream.height, stream.width = int(video.shape[1]), int(video.shape[2])
            stream.pix_fmt = "yuv420p"
            for i, img in enumerate(video):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, fps)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def _readme(seed: int, n_train: int, n_val: int, frames: int, size: int, fps: int) -> str:
    rows = "\n".join(f"  {i}  {name:<16} {desc}" for i, (name, desc) in enumerate(CLASSES))
    return f"""Synthetic temporal-order video dataset (generated by hiera-video synth)

Every class pairs with its time-reversed twin (0<->1, 2<->3, 4<->5): a video of class 1 is
a class-0 scene played backwards, and so on. A single frame, or the unordered set of a
clip's frames, cannot tell the twins apart; only the order of the frames can. A model that
ignores frame order can find the pair but not the twin: at most 50 % top-1 overall.

Classes (id, name, what happens):
{rows}

All classes are unchanged by a horizontal flip, so random-flip augmentation is safe.
Scenes: solid-coloured objects, brighter than the background in every RGB channel, on a
dark background with a gentle gradient; no clutter, light pixel noise.
Randomised per video: object shape (disk, square, diamond, triangle), orientation and
colour, size, start position, distance, speed profile and drift, split axis and whether
the two split objects are alike, background colours and gradient direction, noise level.

Files:
  train.txt, val.txt   "<path relative to this folder> <label>" per line
  labels.txt           class names, line i = label i
  train/<class>/*.mp4, val/<class>/*.mp4   H.264 (yuv420p), {size}x{size}, {frames} frames at {fps} fps

Generated with seed {seed}: {n_train} train and {n_val} val videos per class.
"""


def make_synthetic_dataset(out_dir: str | Path, seed: int = 0, num_train_per_class: int = 40,
                           num_val_per_class: int = 10, frames: int = 48, size: int = 96, fps: int = 30,
                           overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the dataset into ``out_dir`` (``progress(done, total)`` per video); returns a summary dict."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    if num_train_per_class < 0 or num_val_per_class < 0 or num_train_per_class + num_val_per_class == 0:
        raise HieraVideoError("ask for at least one video (train and val counts per class must be >= 0, not both 0)")
    if size < 32 or size % 2:
        raise HieraVideoError(f"size must be an even number >= 32 (H.264 needs even sizes), got {size}")
    if frames < 4:
        raise HieraVideoError(f"a video needs at least 4 frames, got {frames}")
    if fps <= 0:
        raise HieraVideoError(f"fps must be positive, got {fps}")
    if out.exists() and not out.is_dir():
        raise HieraVideoError(f"'{out}' exists and is not a folder")
    if not overwrite and any((out / f).exists() for f in ("train.txt", "val.txt", "labels.txt")):
        raise HieraVideoError(f"'{out}' already holds a dataset; pass --overwrite or choose another folder")
    if not overwrite:  # never replace unasked README.txt or class-folder videos not named as synth names them
        mine = [out / "README.txt"] + [p for split in SPLITS for name in CLASS_NAMES for p in sorted((out / split / _slug(name)).glob("*.mp4"))
                                       if not re.fullmatch(re.escape(_slug(name)) + r"_\d{4,}\.mp4", p.name)]
        taken = next((p for p in mine if os.path.lexists(p)), None)
        if taken is not None:
            raise HieraVideoError(f"'{out}' already holds '{taken.relative_to(out)}', which synth would replace; pass --overwrite "
                                  "or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train": num_train_per_class, "val": num_val_per_class}
    total, done = NUM_CLASSES * (num_train_per_class + num_val_per_class), 0
    for split, n in counts.items():
        for name in CLASS_NAMES:
            folder = out / split / _slug(name)
            if folder.is_dir():  # stale videos of an earlier dataset
                for old in folder.glob("*.mp4"):
                    old.unlink()
        lines = []
        for i in range(n):
            for label, name in enumerate(CLASS_NAMES):  # interleaved: the list is class-balanced at any prefix
                rel = f"{split}/{_slug(name)}/{_slug(name)}_{i:04d}.mp4"
                rng = np.random.default_rng([int(seed), SPLITS[split], label, i])
                write_mp4(out / rel, render_video(label, rng, frames, size), fps)
                lines.append(f"{rel} {label}")
                done += 1
                if progress is not None:
                    progress(done, total)
        atomic_write_text(out / f"{split}.txt", "".join(line + "\n" for line in lines))
    atomic_write_text(out / "labels.txt", "".join(name + "\n" for name in CLASS_NAMES))
    atomic_write_text(out / "README.txt", _readme(seed, num_train_per_class, num_val_per_class, frames, size, fps))
    return {"root": str(out), "train": str(out / "train.txt"), "val": str(out / "val.txt"),
            "labels": str(out / "labels.txt"), "readme": str(out / "README.txt"), "classes": list(CLASS_NAMES),
            "num_classes": NUM_CLASSES, "num_train": NUM_CLASSES * num_train_per_class,
            "num_val": NUM_CLASSES * num_val_per_class, "frames": frames, "size": size, "fps": fps, "seed": seed,
            "seconds": round(time.perf_counter() - t0, 3)}
