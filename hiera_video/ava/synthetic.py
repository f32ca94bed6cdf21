"""A tiny AVA-format action-detection dataset, generated in a few seconds for tests and demos.

Each "movie" is a short mp4 whose frame 0 is AVA second 900 (like the official 15-minute
clips, just shorter): ``seconds`` seconds at 30 fps, keyframes ``902 .. 900 + seconds - 2``
(each keyframe's 16x4 clip then lies inside the video). One to three "persons" stand in
separate lanes; each does one pose action and possibly an object / interaction action:

========  ======================  ===================================================
 AVA id    name                    what the person looks like
========  ======================  ===================================================
 12        stand                   tall box, reddish, horizontal stripes, sways slightly
 11        sit                     short wide box low in the frame, bluish, checkerboard
 14        walk                    tall box, greenish, vertical stripes, walks left-right
 17        carry/hold (an object)  a yellow square held at the side of the box
 79        talk to (...)           the head (top quarter of the box) blinks
========  ======================  ===================================================

A black strip along the bottom edge carries a timecode: a white 4x4 block at
``x = 4 * frame_index mod W`` (:func:`timecode_position`), so tests can tell which frame
they got. The hue encodes the pose class on purpose (with random variation), so a tiny model learns
it in a few dozen CPU steps; the other cues (motion, texture, blinking, the held object)
are there so that the clips are worth looking at and test the temporal path.

Written under ``out_dir`` (the official file names)::

    videos/<video_id>.mp4
    frames/<video_id>/<video_id>_%06d.jpg                      (frames=True; numbered from 1)
    annotations/ava_{train,val}_v2.2.csv                        GT: vid,ts,x1,y1,x2,y2,action,person
    annotations/ava_{train,val}_excluded_timestamps_v2.2.csv    one excluded val keyframe
    annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt the 60-class label map
    annotations/ava_{train,val}_predicted_boxes.csv             person proposals (SlowFast CSV)

Proposals: every GT person box jittered by a few percent with a score in [0.85, 1), plus per
keyframe one false positive (score 0.82, above the default 0.8 threshold) and one weak box
(score 0.3, below it). The excluded val keyframe keeps its GT rows, so excluding it has an
observable effect. Deterministic for a seed.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    """The official ``item { name: "..." id: N }`` text of a label map."""
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
    if pose == 11:
        h, w = 0.38 * H, min(0.7 * lane_w, 0.3 * W)
        y0 = H * rng.uniform(0.5, 0.58)
    else:
        h, w = rng.uniform(0.55, 0.65) * H, min(0.45 * lane_w, 0.2 * W)
        y0 = H * rng.uniform(0.22, 0.3)
    colour = np.clip(np.array(_HUES[pose], np.float64) + rng.normal(0, 18, 3), 0, 255)
    return {
        "pose": pose, "extras": extras, "w": w, "h": h, "y0": y0, "lane": lane,
        "x_center": (lane[0] + lane[1]) / 2 + rng.uniform(-0.1, 0.1) * lane_w,
        "phase": rng.uniform(0, 2 * np.pi), "speed": rng.uniform(0.6, 1.0) * rng.choice([-1, 1]),
        "colour": colour, "blink": int(rng.choice([3, 5])),  # odd half-periods: no aliasing with strides 4 and 8
    }


def _box_at(p: dict, f: int, H: int, W: int) -> tuple[int, int, int, int]:
    """Integer pixel box (x1, y1, x2, y2) of person ``p`` at frame ``f``."""
    t = f / FPS
    lane_w = p["lane"][1] - p["lane"][0]
    room = max(0.0, (lane_w - p["w"]) / 2 - 1)
    if p["pose"] == 14:  # walk: back and forth across the lane
        cx = (p["lane"][0] + p["lane"][1]) / 2 + room * np.sin(p["phase"] + p["speed"] * 2.0 * t)
        cy_off = 1.0 * np.sin(p["phase"] + 12 * t)  # bobbing steps
    elif p["pose"] == 12:  # stand: slight sway
        cx = p["x_center"] + min(room, 1.5) * np.sin(p["phase"] + 1.3 * t)
        cy_off = 0.0
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
    body = p["colour"][None, None, :] * (0.7 + 0.3 * pattern[..., None])
    frame[y1:y2, x1:x2] = body
    if 79 in p["extras"]:  # talking head: blinks
        hh = max(2, (y2 - y1) // 4)
        on = (f // p["blink"]) % 2 == 0
        frame[y1 : y1 + hh, x1:x2] = 245 if on else 15
    if 17 in p["extras"]:  # held object: yellow square at the right side
        s = max(3, (x2 - x1) // 3)
        oy = y1 + (y2 - y1) // 2
        frame[oy : oy + s, x2 - s : x2] = (235, 220, 30)


def _background(rng, H: int, W: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    base = rng.uniform(70, 130)
    grad = base + 25 * (yy / H) + 15 * np.sin(xx / W * np.pi * rng.uniform(1, 3))
    bg = np.repeat(grad[..., None], 3, axis=2) + rng.normal(0, 4, (H, W, 3))
    return np.clip(bg, 0, 255)


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
        x = timecode_position(f, W)
        frame[H - TIMECODE_BLOCK :, x : x + TIMECODE_BLOCK] = 255
        video[f] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


def _fmt_box(b, H, W) -> str:
    return ",".join(f"{v / s:.3f}" for v, s in zip(b, (W, H, W, H)))


def _write_jpegs(folder: Path, vid: str, video: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(video):
        Image.fromarray(img).save(folder / f"{vid}_{i + 1:06d}.jpg", quality=95)


def make_synthetic_ava(
    out_dir: str | Path,
    seed: int = 0,
    num_videos: int = 4,
    seconds: int = 6,
    size: tuple[int, int] = (72, 96),
    val_videos: int | None = None,
    frames: bool = False,
    max_persons: int = 3,
) -> SyntheticAva:
    """Write the dataset (see the module docstring); returns the paths as :class:`SyntheticAva`.

    ``size`` = (height, width), even numbers (H.264). ``val_videos`` defaults to a third of
    the videos (at least one); ``seconds >= 4`` so that there is at least one keyframe 902..
    """
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
    ann = root / "annotations"
    vids_dir = root / "videos"
    frames_dir = root / "frames" if frames else None
    ann.mkdir(parents=True, exist_ok=True)
    vids_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    ids = [_video_id(rng, taken) for _ in range(num_videos)]
    splits = {"train": sorted(ids[: num_videos - n_val]), "val": sorted(ids[num_videos - n_val :])}
    keyframes = list(range(902, 900 + seconds - 1))
    n_frames = seconds * FPS
    gt_lines = {"train": [], "val": []}
    prop_lines = {"train": [], "val": []}
    excluded = []
    for split, vids in splits.items():
        for v_i, vid in enumerate(vids):
            vrng = np.random.default_rng([seed, 7919, ids.index(vid)])
            n_p = int(vrng.integers(1, max_persons + 1))
            persons = [_person(vrng, (W * j / n_p, W * (j + 1) / n_p), H, W) for j in range(n_p)]  # one lane each
            video = _render(vrng, persons, n_frames, H, W)
            write_mp4(vids_dir / f"{vid}.mp4", video, fps=FPS)
            if frames_dir is not None:
                _write_jpegs(frames_dir / vid, vid, video)
            for ts in keyframes:
                f = (ts - 900) * FPS
                for pid, p in enumerate(persons):
                    box = _box_at(p, f, H, W)
                    for a in sorted([p["pose"], *p["extras"]]):
                        gt_lines[split].append(f"{vid},{ts:04d},{_fmt_box(box, H, W)},{a},{pid}\n")
                    j = vrng.normal(0, 0.02, 4) * np.array([W, H, W, H])
                    jb = np.clip(np.array(box, np.float64) + j, 0, [W, H, W, H])
                    prop_lines[split].append(f"{vid},{ts:04d},{_fmt_box(jb, H, W)},,{vrng.uniform(0.85, 0.999):.3f}\n")
                # a false positive (background patch) above, and a weak box below the 0.8 threshold
                for score in (0.82, 0.30):
                    bw, bh = vrng.uniform(0.1, 0.2) * W, vrng.uniform(0.1, 0.2) * H
                    bx, by = vrng.uniform(0, W - bw), vrng.uniform(0, 0.15 * H)
                    prop_lines[split].append(f"{vid},{ts:04d},{_fmt_box((bx, by, bx + bw, by + bh), H, W)},,{score:.3f}\n")
            if split == "val" and v_i == 0:
                excluded.append((vid, keyframes[-1]))
    paths = {
        "train_csv": ann / "ava_train_v2.2.csv",
        "val_csv": ann / "ava_val_v2.2.csv",
        "train_exclusions": ann / "ava_train_excluded_timestamps_v2.2.csv",
        "val_exclusions": ann / "ava_val_excluded_timestamps_v2.2.csv",
        "label_map": ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
        "train_proposals": ann / "ava_train_predicted_boxes.csv",
        "val_proposals": ann / "ava_val_predicted_boxes.csv",
    }
    for split in ("train", "val"):
        atomic_write_text(paths[f"{split}_csv"], "".join(gt_lines[split]))
        atomic_write_text(paths[f"{split}_proposals"], "".join(prop_lines[split]))
    atomic_write_text(paths["train_exclusions"], "")
    atomic_write_text(paths["val_exclusions"], "".join(f"{v},{t:04d}\n" for v, t in excluded))
    atomic_write_text(paths["label_map"], label_map_pbtxt(load_label_map("ava")))
    return SyntheticAva(root=root, videos=vids_dir, frames=frames_dir, video_ids=splits, keyframes=keyframes,
                        excluded=excluded, size=(H, W), fps=FPS, **paths)
