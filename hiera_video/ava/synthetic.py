"""A tiny AVA-format dataset, generated in seconds for tests and demos. Each "movie" is an mp4 whose frame 0 is
AVA second 900, keyframes ``902 .. 900 + seconds - 2`` (their 16x4 clips inside the video); one to three
"persons" in separate lanes each do a pose (12 stand: tall reddish box, horizontal stripes, sways; 11 sit: short
wide bluish box, checkerboard; 14 walk: greenish, vertical stripes, walks) and maybe 17 carry/hold (a yellow
square at the side) or 79 talk to (the head blinks). The hue encodes the pose (a tiny model learns it in a few
dozen CPU steps); a white block at ``x = 4 * frame mod W`` in the bottom strip (:func:`timecode_position`) tells
tests which frame they got. Files use the official names (``videos/``, ``frames/`` with ``frames=True``,
``annotations/``). Proposals: each GT box jittered (score 0.85..1), plus per keyframe a false positive (0.82,
above the 0.8 threshold) and a weak box (0.3). One val keyframe is excluded (its GT rows kept). Deterministic."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hiera_video.ava.files import LABEL_MAP_NAME
from hiera_video.data.labels import load_label_map
from hiera_video.errors import HieraVideoError
from hiera_video.report import atomic_write_text

FPS = 30
POSES = {12: "stand", 11: "sit", 14: "walk"}
EXTRAS = {17: "carry/hold (an object)", 79: "talk to (e.g., self, a person, a group)"}
ACTIONS = sorted([*POSES, *EXTRAS])
_HUES = {12: (200, 60, 50), 11: (50, 80, 210), 14: (60, 190, 70)}
_ID_CHARS = string.ascii_letters + string.digits + "-_"
TIMECODE_BLOCK = 4


@dataclass
class SyntheticAva:
    """Where :func:`make_synthetic_ava` wrote everything."""
    root: Path
    videos: Path
    frames: Path | None
    train_csv: Path
    val_csv: Path
    train_exclusions: Path
    val_exclusions: Path
    label_map: Path
    train_proposals: Path
    val_proposals: Path
    video_ids: dict[str, list[str]] = field(default_factory=dict)
    keyframes: list[int] = field(default_factory=list)
    excluded: list[tuple[str, int]] = field(default_factory=list)
    size: tuple[int, int] = (72, 96)
    fps: int = FPS


def label_map_pbtxt(label_map: dict[int, str]) -> str:
    return "".join(f'item {{\n  name: "{name}"\n  id: {i}\n}}\n' for i, name in sorted(label_map.items()))


def _video_id(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        vid = "".join(_ID_CHARS[i] for i in rng.integers(0, len(_ID_CHARS), 11))
        if vid not in taken and not vid.startswith("-"):
            taken.add(vid)
            return vid


def _person(rng, lane: tuple[float, float], H: int, W: int) -> dict:
    pose = int(rng.choice(list(POSES)))
    extras = [a for a in EXTRAS if rng.random() < 0.35]
    lane_w = lane[1] - lane[0]
    if pose == 11:  # (tuples evaluate left to right: the draws keep their order)
        h, w, y0 = 0.38 * H, min(0.7 * lane_w, 0.3 * W), H * rng.uniform(0.5, 0.58)
    else:
        h, w, y0 = rng.uniform(0.55, 0.65) * H, min(0.45 * lane_w, 0.2 * W), H * rng.uniform(0.22, 0.3)
    colour = np.clip(np.array(_HUES[pose], np.float64) + rng.normal(0, 18, 3), 0, 255)
    return {"pose": pose, "extras": extras, "w": w, "h": h, "y0": y0, "lane": lane,
            "x_center": (lane[0] + lane[1]) / 2 + rng.uniform(-0.1, 0.1) * lane_w,
            "phase": rng.uniform(0, 2 * np.pi), "speed": rng.uniform(0.6, 1.0) * rng.choice([-1, 1]),
            "colour": colour, "blink": int(rng.choice([3, 5]))}  # odd half-periods: no aliasing with strides 4 and 8


def _box_at(p: dict, f: int, H: int, W: int) -> tuple[int, int, int, int]:
    t = f / FPS
    lane_w = p["lane"][1] - p["lane"][0]
    room = max(0.0, (lane_w - p["w"]) / 2 - 1)
    if p["pose"] == 14:  # walk: back and forth across the lane
        cx = (p["lane"][0] + p["lane"][1]) / 2 + room * np.sin(p["phase"] + p["speed"] * 2.0 * t)
        cy_off = 1.0 * np.sin(p["phase"] + 12 * t)  # bobbing steps
    elif p["pose"] == 12:  # stand: slight sway
        cx, cy_off = p["x_center"] + min(room, 1.5) * np.sin(p["phase"] + 1.3 * t), 0.0
    else:
        cx, cy_off = p["x_center"], 0.0
    x1 = int(round(np.clip(cx - p["w"] / 2, 0, W - p["w"])))
    y1 = int(round(np.clip(p["y0"] + cy_off, 0, H - TIMECODE_BLOCK - p["h"])))
    return x1, y1, min(W, x1 + int(round(p["w"]))), min(H, y1 + int(round(p["h"])))


def _draw(frame: np.ndarray, p: dict, f: int, H: int, W: int) -> None:
    x1, y1, x2, y2 = _box_at(p, f, H, W)
    yy, xx = np.mgrid[y1:y2, x1:x2]
    if p["pose"] == 12:
        pattern = ((yy - y1) // 3) % 2
    elif p["pose"] == 11:
        pattern = (((yy - y1) // 3) + ((xx - x1) // 3)) % 2
    else:
        pattern = ((xx - x1 + f // 3) // 3) % 2  # stripes that move with the steps
    frame[y1:y2, x1:x2] = p["colour"][None, None, :] * (0.7 + 0.3 * pattern[..., None])
    if 79 in p["extras"]:  # talking head: blinks
        frame[y1 : y1 + max(2, (y2 - y1) // 4), x1:x2] = 245 if (f // p["blink"]) % 2 == 0 else 15
    if 17 in p["extras"]:  # held object: yellow square at the right side
        s, oy = max(3, (x2 - x1) // 3), y1 + (y2 - y1) // 2
        frame[oy : oy + s, x2 - s : x2] = (235, 220, 30)


def _background(rng, H: int, W: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    grad = rng.uniform(70, 130) + 25 * (yy / H) + 15 * np.sin(xx / W * np.pi * rng.uniform(1, 3))
    return np.clip(np.repeat(grad[..., None], 3, axis=2) + rng.normal(0, 4, (H, W, 3)), 0, 255)


def timecode_position(frame_index: int, width: int) -> int:
    """Left x of the white timecode block of frame ``frame_index`` (bottom rows of the frame)."""
    return (frame_index * TIMECODE_BLOCK) % (width - width % TIMECODE_BLOCK)


def _render(rng, persons: list[dict], n_frames: int, H: int, W: int) -> np.ndarray:
    bg = _background(rng, H, W)
    video = np.empty((n_frames, H, W, 3), np.uint8)
    for f in range(n_frames):
        frame = bg.copy()
        for p in persons:
            _draw(frame, p, f, H, W)
        frame[H - TIMECODE_BLOCK :] = 0  # timecode strip: a block that moves one block width per frame
        frame[H - TIMECODE_BLOCK :, timecode_position(f, W) :][:, :TIMECODE_BLOCK] = 255
        video[f] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


def _fmt_box(b, H, W) -> str:
    return ",".join(f"{v / s:.3f}" for v, s in zip(b, (W, H, W, H)))


def _write_jpegs(folder: Path, vid: str, video: np.ndarray) -> None:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(video):
        Image.fromarray(img).save(folder / f"{vid}_{i + 1:06d}.jpg", quality=95)


def make_synthetic_ava(out_dir: str | Path, seed: int = 0, num_videos: int = 4, seconds: int = 6,
                       size: tuple[int, int] = (72, 96), val_videos: int | None = None, frames: bool = False,
                       max_persons: int = 3) -> SyntheticAva:
    """Write the dataset; ``size`` (H, W) even (H.264); ``val_videos``: a third by default."""
    H, W = int(size[0]), int(size[1])
    if H % 2 or W % 2 or H < 32 or W < 32:
        raise HieraVideoError(f"size must be even and at least 32x32, got {H}x{W}")
    if seconds < 4:
        raise HieraVideoError(f"seconds must be >= 4 (keyframes start at AVA second 902), got {seconds}")
    if num_videos < 2:
        raise HieraVideoError(f"num_videos must be >= 2 (train and val), got {num_videos}")
    n_val = max(1, num_videos // 3) if val_videos is None else int(val_videos)
    if not 1 <= n_val < num_videos:
        raise HieraVideoError(f"val_videos must be in 1..{num_videos - 1}, got {n_val}")
    from hiera_video.data.synthetic import write_mp4
    root = Path(out_dir)
    ann, vids_dir, frames_dir = root / "annotations", root / "videos", root / "frames" if frames else None
    for d in (ann, vids_dir):
        d.mkdir(parents=True, exist_ok=True)
    rng, taken = np.random.default_rng(seed), set()
    ids = [_video_id(rng, taken) for _ in range(num_videos)]
    splits = {"train": sorted(ids[: num_videos - n_val]), "val": sorted(ids[num_videos - n_val :])}
    keyframes = list(range(902, 900 + seconds - 1))
    gt_lines, prop_lines, excluded = {"train": [], "val": []}, {"train": [], "val": []}, []
    for split, vids in splits.items():
        for v_i, vid in enumerate(vids):
            vrng = np.random.default_rng([seed, 7919, ids.index(vid)])
            n_p = int(vrng.integers(1, max_persons + 1))
            persons = [_person(vrng, (W * j / n_p, W * (j + 1) / n_p), H, W) for j in range(n_p)]  # one lane each
            video = _render(vrng, persons, seconds * FPS, H, W)
            write_mp4(vids_dir / f"{vid}.mp4", video, fps=FPS)
            if frames_dir is not None:
                _write_jpegs(frames_dir / vid, vid, video)
            for ts in keyframes:
                f = (ts - 900) * FPS
                for pid, p in enumerate(persons):
                    box = _box_at(p, f, H, W)
                    for a in sorted([p["pose"], *p["extras"]]):
                        gt_lines[split].append(f"{vid},{ts:04d},{_fmt_box(box, H, W)},{a},{pid}\n")
                    jb = np.clip(np.array(box, np.float64) + vrng.normal(0, 0.02, 4) * np.array([W, H, W, H]), 0, [W, H, W, H])
                    prop_lines[split].append(f"{vid},{ts:04d},{_fmt_box(jb, H, W)},,{vrng.uniform(0.85, 0.999):.3f}\n")
                # a false positive (background patch) above, and a weak box below the 0.8 threshold
                for score in (0.82, 0.30):
                    bw, bh = vrng.uniform(0.1, 0.2) * W, vrng.uniform(0.1, 0.2) * H
                    bx, by = vrng.uniform(0, W - bw), vrng.uniform(0, 0.15 * H)
                    prop_lines[split].append(f"{vid},{ts:04d},{_fmt_box((bx, by, bx + bw, by + bh), H, W)},,{score:.3f}\n")
            if split == "val" and v_i == 0:
                excluded.append((vid, keyframes[-1]))
    paths = {"label_map": ann / LABEL_MAP_NAME}
    for split in ("train", "val"):
        paths.update({f"{split}_csv": ann / f"ava_{split}_v2.2.csv", f"{split}_proposals": ann / f"ava_{split}_predicted_boxes.csv",
                      f"{split}_exclusions": ann / f"ava_{split}_excluded_timestamps_v2.2.csv"})
        atomic_write_text(paths[f"{split}_csv"], "".join(gt_lines[split]))
        atomic_write_text(paths[f"{split}_proposals"], "".join(prop_lines[split]))
        atomic_write_text(paths[f"{split}_exclusions"], "".join(f"{v},{t:04d}\n" for v, t in excluded if split == "val"))
    atomic_write_text(paths["label_map"], label_map_pbtxt(load_label_map("ava")))
    return SyntheticAva(root=root, videos=vids_dir, frames=frames_dir, video_ids=splits, keyframes=keyframes,
                        excluded=excluded, size=(H, W), fps=FPS, **paths)
