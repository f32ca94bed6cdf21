"""AVA v2.2 keyframe dataset: an item is a keyframe ``(video_id, timestamp)`` (902..1798) with all its person
boxes and multi-hot labels over the 80 action ids (column ``id - 1``). Media: ``{root}/{video_id}.mp4`` etc. (the
15-minute cuts from second 900: frame ``round((t - 900) * fps)``) or ``{root}/{video_id}/{video_id}_%06d.jpg`` at
30 fps, numbered from 1. Boxes: train = GT, plus proposals scoring >= ``proposal_threshold`` (0.8, SlowFast's AVA
config) labelled by the GT box they overlap with IoU >= 0.5, else negatives; val = proposals when given, else GT.
Clip: frames ``stride`` apart (at 30 fps) centred on the keyframe, clamped. Views (SlowFast's; boxes follow in
continuous pixels, clipped; a box cropped away keeps its labels at zero area): train = short side random in
``crop * (256/224 .. 320/224)``, random square crop, flip; val = short side ``crop``, the whole frame (``"full"``,
padded by :func:`ava_collate`) or the centre square (``"center"``).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hiera_video.ava.files import (LABEL_MAP_NAME, NUM_ACTIONS, AvaRow, Key, as_keys, default_names, find_ava_file,
                                   load_proposals, read_ava_annotations, resolve_label_map)
from hiera_video.ava.boxes import box_iou, boxes_to_pixels, clip_boxes, crop_boxes_px, flip_boxes, resize_boxes
from hiera_video.data.datasets.base import VIDEO_EXTENSIONS
from hiera_video.data.decode import open_video
from hiera_video.data.clip_spec import ClipSpec
from hiera_video.data.transforms import hflip, normalize, resize_short_side, short_side_size
from hiera_video.errors import HieraVideoError

log = logging.getLogger("hiera_video.data.datasets")

AVA_START_SEC = 900
AVA_FPS = 30.0
VALID_TIMESTAMPS = (902, 1798)
DEFAULT_PROPOSAL_THRESHOLD = 0.8
TRAIN_JITTER = (256 / 224, 320 / 224)
FRAME_NAME = "{vid}_{n:06d}.jpg"


def _uniform(generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _randint(generator, high: int) -> int:  # in [0, high]
    return int(torch.randint(0, high + 1, (1,), generator=generator))


def train_view(frames: torch.Tensor, boxes: np.ndarray, crop_size: int, jitter: tuple[float, float] = TRAIN_JITTER,
               flip_p: float = 0.5, generator: torch.Generator | None = None) -> tuple[torch.Tensor, np.ndarray, dict]:
    """``uint8 [T, H, W, 3]`` frames and normalised boxes -> ``(frames [T, S, S, 3], pixel boxes, params)``:
    short side random in ``crop_size * jitter``, random square crop, flip."""
    H, W = frames.shape[1:3]
    short = max(int(round(_uniform(generator, crop_size * jitter[0], crop_size * jitter[1]))), crop_size)
    h, w = short_side_size(H, W, short)
    x = resize_short_side(frames, short)
    b = resize_boxes(boxes_to_pixels(boxes, H, W), (H, W), (h, w))
    top, left = _randint(generator, h - crop_size), _randint(generator, w - crop_size)
    x = x[:, top : top + crop_size, left : left + crop_size]
    b = crop_boxes_px(b, top, left, crop_size, crop_size)
    flipped = flip_p > 0 and _uniform(generator, 0.0, 1.0) < flip_p
    if flipped:
        x = hflip(x)
        b = flip_boxes(b, crop_size)
    return x, b, {"short_side": short, "resized": (h, w), "crop": (top, left, crop_size, crop_size), "flipped": flipped}


def test_view(frames: torch.Tensor, boxes: np.ndarray, crop_size: int, view: str = "full"):
    """Short side -> ``crop_size``, the whole frame (``"full"``) or the centre square; as :func:`train_view`."""
    H, W = frames.shape[1:3]
    h, w = short_side_size(H, W, crop_size)
    x = resize_short_side(frames, crop_size)
    b = clip_boxes(resize_boxes(boxes_to_pixels(boxes, H, W), (H, W), (h, w)), h, w)
    crop = None
    if view == "center":
        top, left = (h - crop_size) // 2, (w - crop_size) // 2
        x = x[:, top : top + crop_size, left : left + crop_size]
        b = crop_boxes_px(b, top, left, crop_size, crop_size)
        crop = (top, left, crop_size, crop_size)
    return x, b, {"short_side": crop_size, "resized": (h, w), "crop": crop, "flipped": False}


def keyframe_index(ts: float, fps: float = AVA_FPS, start_sec: float = AVA_START_SEC) -> int:
    """Frame index of the keyframe at AVA time ``ts`` (seconds) in a video cut at ``start_sec``."""
    return int(round((ts - start_sec) * fps))


def clip_frame_indices(key_index: int, num_frames: int, num_sample: int = 16, stride: int = 4, fps: float = AVA_FPS,
                       target_fps: float = AVA_FPS) -> list[int]:
    """``key + round((k - T//2) * stride * fps/30)``, clamped to the video (at 30 fps: ``keyframe_indices``)."""
    step = stride * fps / target_fps
    idx = [key_index + int(round((k - num_sample // 2) * step)) for k in range(num_sample)]
    return [min(max(i, 0), num_frames - 1) for i in idx]


def find_video(root: Path, video_id: str) -> Path | None:
    for ext in VIDEO_EXTENSIONS:
        p = root / f"{video_id}{ext}"
        if p.is_file():
            return p
    return None


def _decode_jpeg(path: Path) -> torch.Tensor:  # uint8 [H, W, 3]; PIL without torchvision's image io
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 deprecates image io
            from torchvision.io import ImageReadMode, decode_jpeg, read_file

            img = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
        return img.permute(1, 2, 0)
    except (ImportError, AttributeError):  # pragma: no cover - torchvision without image io
        from PIL import Image

        with Image.open(path) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy())


class _FrameFolderSource:
    def __init__(self, folder: Path, video_id: str, fps: float):
        self.folder, self.video_id, self.fps = folder, video_id, fps
        prefix, n = f"{video_id}_", 0
        try:
            for name in os.listdir(folder):
                if name.startswith(prefix) and name.endswith(".jpg") and name[len(prefix):-4].isdigit():
                    n = max(n, int(name[len(prefix):-4]))
        except OSError as e:
            raise HieraVideoError(f"cannot list frames of '{video_id}' in '{folder}' ({e.strerror})") from None
        if n == 0:
            raise HieraVideoError(f"no frames '{FRAME_NAME.format(vid=video_id, n=1)}' ... in '{folder}'")
        self.num_frames = n

    def get_frames(self, indices: list[int]) -> torch.Tensor:
        cache: dict[int, torch.Tensor] = {}
        out = []
        for i in indices:
            if i not in cache:
                path = self.folder / FRAME_NAME.format(vid=self.video_id, n=i + 1)
                if not path.is_file():
                    raise HieraVideoError(f"frame file '{path}' is missing (frames are numbered from 1 without gaps)")
                try:
                    cache[i] = _decode_jpeg(path)
                except Exception as e:
                    raise HieraVideoError(f"cannot decode frame '{path}': {type(e).__name__}: {e}") from None
            out.append(cache[i])
        shapes = {tuple(f.shape) for f in out}
        if len(shapes) > 1:
            raise HieraVideoError(f"frames of '{self.video_id}' in '{self.folder}' differ in size: {sorted(shapes)}")
        return torch.stack(out)

    def close(self) -> None:
        pass


@dataclass
class AvaBoxes:
    """One keyframe's normalised ``boxes [K, 4]``, ``labels [K, 80]``, ``scores [K]`` (GT: 1.0), ``is_gt [K]``."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    is_gt: np.ndarray


def _gt_by_key(rows: list[AvaRow]) -> dict[Key, "OrderedDict[tuple, set[int]]"]:
    out: dict[Key, OrderedDict] = {}
    for r in rows:
        boxes = out.setdefault(r.key, OrderedDict())
        boxes.setdefault(r.box, set()).add(r.action_id)
    return out


def _multi_hot(actions) -> np.ndarray:
    v = np.zeros(NUM_ACTIONS, np.float32)
    for a in actions:
        v[a - 1] = 1.0
    return v


class AvaDataset(Dataset):
    """Item: ``(clip [3, T, H, W] normalised, boxes [K, 4] in clip pixels, labels [K, 80], meta)`` (meta: the
    normalised ``boxes``, ``scores``, ``is_gt``, ``frame_indices``, ``view``...); an unreadable video raises
    HieraVideoError. ``proposals``: CSV or ``{key: [(box, score)]}`` (pickles: :func:`load_proposals`).
    ``generator`` (attribute; default torch's global RNG) drives the training view."""

    generator: torch.Generator | None = None
    max_open_videos = 4
    proposal_match_iou, train_jitter = 0.5, TRAIN_JITTER
    frames_fps, start_sec, timestamps = AVA_FPS, AVA_START_SEC, VALID_TIMESTAMPS

    def __init__(self, root: str | Path, annotations_csv: str | Path | None, label_map=None, split: str = "train",
                 mode: str = "train", clip: ClipSpec | None = None, proposals=None, exclusions=None,
                 frames_layout: str = "video", proposal_threshold: float = DEFAULT_PROPOSAL_THRESHOLD,
                 flip_p: float = 0.5, test_view: str = "full"):
        if mode not in ("train", "val"):
            raise HieraVideoError(f"AVA mode must be 'train' or 'val', got {mode!r}")
        if frames_layout not in ("video", "frames"):
            raise HieraVideoError(f"frames_layout must be 'video' or 'frames', got {frames_layout!r}")
        if test_view not in ("full", "center"):
            raise HieraVideoError(f"test_view must be 'full' or 'center', got {test_view!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise HieraVideoError(f"AVA {frames_layout} folder '{root}' not found; check the path")
        if annotations_csv is None and (mode == "train" or proposals is None):
            raise HieraVideoError("AVA needs a ground-truth CSV (ava_{train,val}_v2.2.csv), or proposals in mode 'val'")
        self.split, self.mode, self.frames_layout = split, mode, frames_layout
        self.clip = clip = clip or ClipSpec()
        self.flip_p, self.test_view, self.proposal_threshold = float(flip_p), test_view, float(proposal_threshold)
        self.label_map = resolve_label_map(label_map)
        self.classes = [self.label_map[i] for i in sorted(self.label_map)]
        self.gt_rows: list[AvaRow] = read_ava_annotations(annotations_csv) if annotations_csv is not None else []
        self.exclusions = as_keys(exclusions)
        self.proposals = None if proposals is None else load_proposals(proposals)

        gt = _gt_by_key(self.gt_rows)
        entries: dict[Key, AvaBoxes] = {}
        keys = list(self.proposals) if mode == "val" and self.proposals is not None else list(gt)
        dropped = {"excluded": 0, "outside_timestamps": 0, "no_boxes": 0}
        for key in keys:
            if key in self.exclusions:
                dropped["excluded"] += 1
            elif self.timestamps is not None and not self.timestamps[0] <= key[1] <= self.timestamps[1]:
                dropped["outside_timestamps"] += 1
            elif (e := self._boxes_for(key, gt.get(key))) is None:
                dropped["no_boxes"] += 1
            else:
                entries[key] = e
        self.dropped = dropped

        # Find the videos once; keyframes of missing videos are reported, not errors.
        self.missing: list[str] = []
        self._paths: dict[str, Path] = {}
        for vid in sorted({k[0] for k in entries}):
            p = self.root / vid if frames_layout == "frames" else find_video(self.root, vid)
            if p is None or (frames_layout == "frames" and not p.is_dir()):
                self.missing.append(vid)
            else:
                self._paths[vid] = p
        self.items: list[Key] = sorted(k for k in entries if k[0] in self._paths)
        self.entries = {k: entries[k] for k in self.items}
        self.subset: tuple[int, int] | None = None  # (kept, of) keyframes when only the first ones are used
        if self.missing:
            where = "frame folders" if frames_layout == "frames" else "video files"
            log.warning("AVA %s: %d of %d videos have no %s under '%s' (first: %s); their keyframes are skipped",
                        split, len(self.missing), len(self.missing) + len(self._paths), where, self.root, self.missing[0])
        self._sources: OrderedDict = OrderedDict()
        self._pid = os.getpid()

    def _boxes_for(self, key: Key, gt_boxes) -> AvaBoxes | None:
        """GT boxes (train; val without proposals), then proposals above the threshold (train: not a GT box
        again) labelled by their best-IoU GT box when IoU >= ``proposal_match_iou``, else negatives."""
        gt_boxes = gt_boxes or {}
        gt_arr = np.array(list(gt_boxes), np.float64).reshape(-1, 4)
        gt_lab = np.stack([_multi_hot(a) for a in gt_boxes.values()]) if gt_boxes else np.zeros((0, NUM_ACTIONS), np.float32)
        props = [(b, s) for b, s in (self.proposals or {}).get(key, []) if s >= self.proposal_threshold
                 and (self.mode != "train" or b not in gt_boxes)]
        n = len(gt_arr) if self.mode == "train" or self.proposals is None else 0
        p_arr = np.array([b for b, _ in props], np.float64).reshape(-1, 4)
        p_lab = np.zeros((len(props), NUM_ACTIONS), np.float32)
        if props and len(gt_arr):
            iou = box_iou(p_arr, gt_arr)
            best = iou.argmax(1)
            hit = iou[np.arange(len(props)), best] >= self.proposal_match_iou
            p_lab[hit] = gt_lab[best[hit]]
        if n + len(props) == 0:
            return None
        return AvaBoxes(np.concatenate([gt_arr[:n], p_arr]), np.concatenate([gt_lab[:n], p_lab]).astype(np.float32),
                        np.concatenate([np.ones(n), np.array([s for _, s in props], np.float64)]),
                        np.concatenate([np.ones(n, bool), np.zeros(len(props), bool)]))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_sources"] = OrderedDict()  # open readers never travel to worker processes
        return state

    def _source(self, vid: str):
        if self._pid != os.getpid():  # forked worker: do not share the parent's readers
            self._sources, self._pid = OrderedDict(), os.getpid()
        src = self._sources.get(vid)
        if src is not None:
            self._sources.move_to_end(vid)
            return src
        path = self._paths[vid]
        frames = self.frames_layout == "frames"
        src = _FrameFolderSource(path, vid, self.frames_fps) if frames else open_video(path, self.clip.backend)
        self._sources[vid] = src
        while len(self._sources) > self.max_open_videos:
            _, old = self._sources.popitem(last=False)
            old.close()
        return src

    def close(self) -> None:
        for src in self._sources.values():
            src.close()
        self._sources.clear()

    def __len__(self) -> int:
        return len(self.items)

    def frame_indices(self, index: int) -> list[int]:  # 0-based
        vid, ts = self.items[index]
        return self._indices(self._source(vid), ts)

    def _indices(self, src, ts: int) -> list[int]:
        return clip_frame_indices(keyframe_index(ts, src.fps, self.start_sec), src.num_frames, self.clip.num_frames, self.clip.stride, src.fps)

    def __getitem__(self, index: int):
        vid, ts = key = self.items[index]
        entry = self.entries[key]
        try:
            src = self._source(vid)
            idx = self._indices(src, ts)
            frames = src.get_frames(idx)
        except HieraVideoError as e:
            self._sources.pop(vid, None)
            raise HieraVideoError(f"AVA keyframe {vid},{ts:04d} (item {index}): {e}") from None
        crop = self.clip.crop_size
        if self.mode == "train":
            x, boxes, params = train_view(frames, entry.boxes, crop, self.train_jitter, self.flip_p, self.generator)
        else:
            x, boxes, params = test_view(frames, entry.boxes, crop, self.test_view)
        clip = normalize(x, self.clip.mean, self.clip.std)
        meta = {"video_id": vid, "timestamp": ts, "boxes": torch.from_numpy(entry.boxes.copy()),
                "scores": torch.from_numpy(entry.scores.copy()), "is_gt": torch.from_numpy(entry.is_gt.copy()),
                "frame_indices": idx, "decoder": getattr(src, "decoder", ""),  # "": a frame folder
                "size": tuple(clip.shape[-2:]), "orig_size": tuple(frames.shape[1:3]), "view": params, "index": index}
        return clip, torch.from_numpy(boxes).float(), torch.from_numpy(entry.labels.copy()), meta


def ava_collate(batch: list, pad_multiple: int = 32):
    """``[(clip, boxes, labels, meta)]`` -> ``(clips [B, 3, T, H, W], [boxes [K_i, 4]], labels [sum K_i, 80], metas)``;
    clips zero-padded (the mean colour) at the bottom/right to the largest size rounded up to ``pad_multiple``
    (Hiera: patch stride 4 x mask unit 8), which leaves the boxes as they are."""
    clips = [b[0] for b in batch]
    m = max(1, int(pad_multiple))
    H = math.ceil(max(c.shape[-2] for c in clips) / m) * m
    W = math.ceil(max(c.shape[-1] for c in clips) / m) * m
    if all(tuple(c.shape[-2:]) == (H, W) for c in clips):
        out = torch.stack(clips)
    else:
        out = clips[0].new_zeros((len(clips), *clips[0].shape[:-2], H, W))
        for i, c in enumerate(clips):
            out[i, ..., : c.shape[-2], : c.shape[-1]] = c
    return out, [b[1] for b in batch], torch.cat([b[2] for b in batch]), [{**b[3], "padded_size": (H, W)} for b in batch]


def media_folder(root: Path, frames_layout: str) -> Path:
    """``root/videos`` or ``root/videos_15min`` (``root/frames`` for frame folders) when there, else ``root``."""
    names = ("frames",) if frames_layout == "frames" else ("videos", "videos_15min")
    return next((root / name for name in names if (root / name).is_dir()), root)


def open_ava_split(root: str | Path, split: str, mode: str, annotations=None, exclusions=None, proposals=None,
                   label_map=None, default_proposals: bool = False, limit: int | None = None, allow_pickle: bool = False,
                   **kwargs) -> "AvaDataset":
    """:class:`AvaDataset` of ``split`` from an AVA folder as published (files in ``root`` or ``root/annotations``);
    file arguments override the official names (proposals looked up only with ``default_proposals``); ``limit``
    keeps the first N keyframes; ``kwargs`` go to AvaDataset."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise HieraVideoError(f"AVA root '{root}' is not a folder; check --root")
    names = default_names(split)
    gt = find_ava_file(root, annotations, names["annotations"])
    props = find_ava_file(root, proposals, names["proposals"] if default_proposals else None)
    if gt is None and (mode == "train" or props is None):
        raise HieraVideoError(f"no AVA annotations for split '{split}': expected {names['annotations']} in "
                              f"'{root}/annotations' or '{root}'; pass the file with --annotations")
    if isinstance(label_map, (str, Path)) and str(label_map) != "ava":
        label_map = find_ava_file(root, label_map, None)
    elif label_map is None:
        label_map = find_ava_file(root, None, LABEL_MAP_NAME)  # else the built-in 60 classes
    layout = kwargs.get("frames_layout", "video")
    if layout not in ("video", "frames"):
        raise HieraVideoError(f"config key 'data.frames_layout' must be video or frames, got '{layout}'")
    props = None if props is None else load_proposals(props, allow_pickle)
    ds = AvaDataset(media_folder(root, layout), gt, label_map, split=split, mode=mode, proposals=props,
                    exclusions=find_ava_file(root, exclusions, names["exclusions"]), **kwargs)
    if limit is not None and limit < len(ds.items):
        ds.subset = (limit, len(ds.items))  # mAP then scores these keyframes against their own GT only
        ds.items = ds.items[:limit]
    return ds
