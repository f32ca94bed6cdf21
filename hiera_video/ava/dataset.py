"""AVA v2.2 spatio-temporal action detection: a keyframe dataset (its files are read by
:mod:`hiera_video.ava.files`, its boxes transformed by :mod:`hiera_video.ava.boxes`).

Videos: the 15-minute clips (AVA seconds 900..1800) as ``{root}/{video_id}.{mp4,mkv,webm,...}``
(frame of second ``t`` = ``round((t - 900) * fps)``), or extracted frames
``{root}/{video_id}/{video_id}_%06d.jpg`` at 30 fps, numbered from 1 as in the official
frame dumps (file ``n`` is frame ``n - 1``).

One item = one keyframe ``(video_id, timestamp)`` (timestamps 902..1798) with ALL its person
boxes. Labels are multi-hot over the 80 AVA action ids (column ``id - 1``); training uses all
80 (as SlowFast), evaluation keeps the 60 of the label map.

* ``mode="train"``: boxes = GT boxes (rows of the same key and box merged into one box with
  several labels), plus, when ``proposals`` are given, proposals with score >=
  ``proposal_threshold`` (a proposal whose best IoU with a GT box is >= ``proposal_match_iou``
  takes that box's labels, the others are negatives with all-zero labels). Only keyframes
  with GT are items.
* ``mode="val"``: boxes = proposals with score >= ``proposal_threshold`` when given (the
  detector boxes the model is evaluated on), else the GT boxes. Items = keyframes with at
  least one such box; GT keyframes without any box simply count as misses in the mAP.

The proposal threshold defaults to 0.8: the value of SlowFast's AVA configs
(``AVA.DETECTION_SCORE_THRESH: 0.8``); SlowFast's code default and mmaction2 use 0.9.

Clip: ``num_frames`` frames ``stride`` apart (at 30 fps; scaled for other frame rates) centred
on the keyframe (the keyframe is frame ``num_frames // 2``), clamped at the ends of the video.

Spatial (SlowFast's AVA recipe; boxes follow every step in continuous pixel coordinates,
where pixel ``i`` covers ``[i, i + 1)``):

* train: short side resized to a random size in ``crop_size * train_jitter`` (256..320 for
  224), random ``crop_size`` square crop, horizontal flip with p=0.5 (``x -> W - x``);
* val/test (``test_view="full"``, default): short side resized to ``crop_size``, the whole
  frame kept (no crop: boxes are never cut); :func:`ava_collate` pads a batch at the
  bottom/right to a common size that is a multiple of 32. ``test_view="center"`` takes the
  centre ``crop_size`` square (SlowFast's "val" split behaviour).

Boxes are clipped to the transformed frame; a box cropped away entirely keeps its labels as
a zero-area box at the border (SlowFast does the same).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from hiera_video.ava.files import (
    LABEL_MAP_NAME,
    NUM_ACTIONS,
    AvaRow,
    Key,
    default_names,
    find_ava_file,
    load_proposals,
    read_ava_annotations,
    read_exclusions,
    resolve_label_map,
)
from hiera_video.ava.boxes import box_iou, boxes_to_pixels, clip_boxes, crop_boxes_px, flip_boxes, resize_boxes
from hiera_video.data.datasets.base import VIDEO_EXTENSIONS
from hiera_video.data.decode import open_video
from hiera_video.data.clip_spec import VIDEO_MEAN, VIDEO_STD
from hiera_video.data.transforms import hflip, normalize, resize_short_side, short_side_size
from hiera_video.errors import HieraVideoError

log = logging.getLogger("hiera_video.data.datasets")

AVA_START_SEC = 900
AVA_FPS = 30.0
VALID_TIMESTAMPS = (902, 1798)
DEFAULT_PROPOSAL_THRESHOLD = 0.8
TRAIN_JITTER = (256 / 224, 320 / 224)
FRAME_NAME = "{vid}_{n:06d}.jpg"


# --------------------------------------------------------------------------- views


def _uniform(generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _randint(generator, high: int) -> int:
    """Uniform integer in ``[0, high]``."""
    return int(torch.randint(0, high + 1, (1,), generator=generator))


def train_view(
    frames: torch.Tensor,
    boxes: np.ndarray,
    crop_size: int,
    jitter: tuple[float, float] = TRAIN_JITTER,
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, np.ndarray, dict]:
    """SlowFast AVA training view of ``uint8 [T, H, W, 3]`` frames and normalised boxes:
    short side -> random size in ``crop_size * jitter`` -> random square crop -> flip.
    Returns ``(frames [T, S, S, 3], pixel boxes [K, 4], params)``."""
    H, W = frames.shape[1:3]
    short = int(round(_uniform(generator, crop_size * jitter[0], crop_size * jitter[1])))
    short = max(short, crop_size)
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


def test_view(frames: torch.Tensor, boxes: np.ndarray, crop_size: int, view: str = "full") -> tuple[torch.Tensor, np.ndarray, dict]:
    """Evaluation view: short side -> ``crop_size``; ``view="full"`` keeps the whole frame,
    ``"center"`` takes the centre square. Returns ``(frames, pixel boxes, params)``."""
    if view not in ("full", "center"):
        raise HieraVideoError(f"test_view must be 'full' or 'center', got {view!r}")
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


def clip_frame_indices(key_index: int, num_frames: int, num_sample: int = 16, stride: int = 4, fps: float = AVA_FPS,
                       target_fps: float = AVA_FPS) -> list[int]:
    """Frames of a clip centred on frame ``key_index``: ``key + (k - T//2) * stride * fps/30``
    (rounded), clamped to ``[0, num_frames - 1]``. At 30 fps this is
    :func:`hiera_video.data.sampling.keyframe_indices`."""
    step = stride * fps / target_fps
    idx = [key_index + int(round((k - num_sample // 2) * step)) for k in range(num_sample)]
    return [min(max(i, 0), num_frames - 1) for i in idx]


# --------------------------------------------------------------------------- frame sources


def find_video(root: Path, video_id: str) -> Path | None:
    for ext in VIDEO_EXTENSIONS:
        p = root / f"{video_id}{ext}"
        if p.is_file():
            return p
    return None


def _decode_jpeg(path: Path) -> torch.Tensor:
    """``uint8 [H, W, 3]`` from a JPEG file (torchvision.io, PIL as fallback)."""
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
        self.folder = folder
        self.video_id = video_id
        self.fps = fps
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
                except HieraVideoError:
                    raise
                except Exception as e:
                    raise HieraVideoError(f"cannot decode frame '{path}': {type(e).__name__}: {e}") from None
            out.append(cache[i])
        shapes = {tuple(f.shape) for f in out}
        if len(shapes) > 1:
            raise HieraVideoError(f"frames of '{self.video_id}' in '{self.folder}' differ in size: {sorted(shapes)}")
        return torch.stack(out)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- dataset


@dataclass
class AvaBoxes:
    """The boxes of one keyframe: normalised ``boxes [K, 4]``, ``labels [K, 80]``,
    ``scores [K]`` (1.0 for GT boxes, the detector score for proposals), ``is_gt [K]``."""

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
    """AVA keyframes with all their person boxes (see the module docstring).

    ``__getitem__`` returns ``(clip, boxes, labels, meta)``: ``clip`` float ``[3, T, H, W]``
    normalised (mean 0.45, std 0.225), ``boxes`` float ``[K, 4]`` x1,y1,x2,y2 in pixels of
    the clip, ``labels`` float ``[K, 80]`` multi-hot, ``meta`` a dict with ``video_id``,
    ``timestamp``, ``boxes`` (the original normalised boxes, float64 ``[K, 4]``), ``scores``,
    ``is_gt``, ``frame_indices``, ``size`` (clip ``(H, W)``), ``orig_size``, ``view``
    (resize/crop/flip parameters) and ``index``. A video that cannot be read raises
    :class:`HieraVideoError` (wrap the dataset in :class:`SkipBadItems` to skip such items).

    Arguments: ``root`` folder of the videos (``frames_layout="video"``) or frame folders
    (``"frames"``); ``annotations_csv`` the GT CSV (may be None in ``mode="val"`` with
    proposals); ``label_map`` ``.pbtxt`` / ``{id: name}`` / None (built-in 60 classes);
    ``exclusions`` excluded-timestamps CSV or keys; ``proposals`` CSV / pickle / dict;
    ``generator`` for the training randomness (default: torch's global RNG, which
    ``DataLoader`` seeds differently in every worker).
    """

    def __init__(
        self,
        root: str | Path,
        annotations_csv: str | Path | None,
        label_map=None,
        split: str = "train",
        mode: str = "train",
        proposals=None,
        frames_layout: str = "video",
        num_frames: int = 16,
        stride: int = 4,
        crop_size: int = 224,
        exclusions=None,
        proposal_threshold: float = DEFAULT_PROPOSAL_THRESHOLD,
        proposal_match_iou: float = 0.5,
        allow_pickle: bool = False,
        train_jitter: tuple[float, float] = TRAIN_JITTER,
        flip_p: float = 0.5,
        test_view: str = "full",
        frames_fps: float = AVA_FPS,
        start_sec: float = AVA_START_SEC,
        timestamps: tuple[int, int] | None = VALID_TIMESTAMPS,
        backend: str = "auto",
        mean: Sequence[float] = VIDEO_MEAN,
        std: Sequence[float] = VIDEO_STD,
        generator: torch.Generator | None = None,
        max_open_videos: int = 4,
    ):
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
        self.num_frames, self.stride, self.crop_size = int(num_frames), int(stride), int(crop_size)
        self.train_jitter, self.flip_p, self.test_view = tuple(train_jitter), float(flip_p), test_view
        self.frames_fps, self.start_sec, self.backend = float(frames_fps), float(start_sec), backend
        self.mean, self.std = tuple(mean), tuple(std)
        self.generator = generator
        self.proposal_threshold = float(proposal_threshold)
        self.max_open_videos = max(1, int(max_open_videos))
        self.label_map = resolve_label_map(label_map)
        self.classes = [self.label_map[i] for i in sorted(self.label_map)]
        self.annotations = None if annotations_csv is None else Path(annotations_csv)
        self.gt_rows: list[AvaRow] = read_ava_annotations(annotations_csv) if annotations_csv is not None else []
        if isinstance(exclusions, (str, Path)):
            self.exclusions = read_exclusions(exclusions)
        else:
            self.exclusions = {(str(v), int(t)) for v, t in (exclusions or ())}
        self.proposals = None if proposals is None else load_proposals(proposals, allow_pickle)

        gt = _gt_by_key(self.gt_rows)
        entries: dict[Key, AvaBoxes] = {}
        if mode == "train":
            keys = list(gt)
        else:
            keys = list(self.proposals) if self.proposals is not None else list(gt)
        dropped = {"excluded": 0, "outside_timestamps": 0, "no_boxes": 0}
        for key in keys:
            if key in self.exclusions:
                dropped["excluded"] += 1
                continue
            if timestamps is not None and not timestamps[0] <= key[1] <= timestamps[1]:
                dropped["outside_timestamps"] += 1
                continue
            e = self._boxes_for(key, gt.get(key), proposal_match_iou)
            if e is None:
                dropped["no_boxes"] += 1
                continue
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

    # ------------------------------------------------------------------ boxes
    def _boxes_for(self, key: Key, gt_boxes, match_iou: float) -> AvaBoxes | None:
        gt_list = list(gt_boxes.items()) if gt_boxes else []
        gt_arr = np.array([b for b, _ in gt_list], np.float64).reshape(-1, 4)
        gt_lab = np.stack([_multi_hot(a) for _, a in gt_list]) if gt_list else np.zeros((0, NUM_ACTIONS), np.float32)
        props = []
        if self.proposals is not None:
            props = [(b, s) for b, s in self.proposals.get(key, []) if s >= self.proposal_threshold]
        if self.mode == "train":
            boxes, labels, scores, is_gt = [gt_arr], [gt_lab], [np.ones(len(gt_list))], [np.ones(len(gt_list), bool)]
            known = {b for b, _ in gt_list}
            props = [(b, s) for b, s in props if b not in known]
        else:
            if self.proposals is None:
                boxes, labels, scores, is_gt = [gt_arr], [gt_lab], [np.ones(len(gt_list))], [np.ones(len(gt_list), bool)]
                props = []
            else:
                boxes, labels, scores, is_gt = [], [], [], []
        if props:
            p_arr = np.array([b for b, _ in props], np.float64)
            p_lab = np.zeros((len(props), NUM_ACTIONS), np.float32)
            if len(gt_arr):
                iou = box_iou(p_arr, gt_arr)
                best = iou.argmax(1)
                hit = iou[np.arange(len(props)), best] >= match_iou
                p_lab[hit] = gt_lab[best[hit]]
            boxes.append(p_arr)
            labels.append(p_lab)
            scores.append(np.array([s for _, s in props], np.float64))
            is_gt.append(np.zeros(len(props), bool))
        if not boxes:
            return None
        b = np.concatenate(boxes)
        if len(b) == 0:
            return None
        return AvaBoxes(b, np.concatenate(labels).astype(np.float32), np.concatenate(scores), np.concatenate(is_gt))

    # ------------------------------------------------------------------ sources
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
        if self.frames_layout == "frames":
            src = _FrameFolderSource(path, vid, self.frames_fps)
        else:
            src = open_video(path, self.backend)  # a VideoReader: fps, num_frames, get_frames, close
        self._sources[vid] = src
        while len(self._sources) > self.max_open_videos:
            _, old = self._sources.popitem(last=False)
            old.close()
        return src

    def close(self) -> None:
        for src in self._sources.values():
            src.close()
        self._sources.clear()

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.items)

    def frame_indices(self, index: int) -> list[int]:
        """Frame indices (0-based) of item ``index``'s clip."""
        vid, ts = self.items[index]
        return self._indices(self._source(vid), ts)

    def _indices(self, src, ts: int) -> list[int]:
        key_index = int(round((ts - self.start_sec) * src.fps))
        return clip_frame_indices(key_index, src.num_frames, self.num_frames, self.stride, src.fps)

    def __getitem__(self, index: int):
        key = self.items[index]
        vid, ts = key
        entry = self.entries[key]
        try:
            src = self._source(vid)
            idx = self._indices(src, ts)
            frames = src.get_frames(idx)
        except HieraVideoError as e:
            self._sources.pop(vid, None)
            raise HieraVideoError(f"AVA keyframe {vid},{ts:04d} (item {index}): {e}") from None
        if self.mode == "train":
            x, boxes, params = train_view(frames, entry.boxes, self.crop_size, self.train_jitter, self.flip_p, self.generator)
        else:
            x, boxes, params = test_view(frames, entry.boxes, self.crop_size, self.test_view)
        clip = normalize(x, self.mean, self.std)
        meta = {
            "video_id": vid,
            "timestamp": ts,
            "boxes": torch.from_numpy(entry.boxes.copy()),
            "scores": torch.from_numpy(entry.scores.copy()),
            "is_gt": torch.from_numpy(entry.is_gt.copy()),
            "frame_indices": idx,
            "size": tuple(clip.shape[-2:]),
            "orig_size": tuple(frames.shape[1:3]),
            "view": params,
            "index": index,
        }
        return clip, torch.from_numpy(boxes).float(), torch.from_numpy(entry.labels.copy()), meta

    def summary(self) -> dict:
        n_boxes = sum(len(e.boxes) for e in self.entries.values())
        return {
            "dataset": "ava", "split": self.split, "mode": self.mode, "root": str(self.root),
            "annotations": str(self.annotations) if self.annotations else None,
            "keyframes": len(self.items), "boxes": n_boxes, "videos": len(self._paths),
            "missing_videos": len(self.missing), "dropped_keyframes": dict(self.dropped),
            "proposals": self.proposals is not None, "proposal_threshold": self.proposal_threshold,
            "frames_layout": self.frames_layout, "clip": f"{self.num_frames}x{self.stride}",
            "crop_size": self.crop_size, "test_view": self.test_view,
        }


class SkipBadItems(Dataset):
    """Wraps a dataset so that an item raising :class:`HieraVideoError` (a video that cannot
    be decoded) becomes ``None``, which :func:`ava_collate` drops. The messages are logged and
    kept in ``skipped`` (of this process; with worker processes, in the worker's log)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.skipped: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except HieraVideoError as e:
            log.warning("skipping: %s", e)
            self.skipped.append((index, str(e)))
            return None


def ava_collate(batch: list, pad_multiple: int = 32):
    """``[(clip, boxes, labels, meta)]`` -> ``(clips [B, 3, T, H, W], [boxes [K_i, 4]],
    labels [sum K_i, 80], metas)``.

    Clips of different sizes (full-frame evaluation) are zero-padded at the bottom/right
    (zero = the mean colour after normalisation) to the largest size in the batch, rounded up
    to ``pad_multiple`` (what Hiera needs: patch stride 4 x mask unit 8); boxes are unchanged
    by such padding. ``None`` items (see :class:`SkipBadItems`) are dropped; a batch with no
    item left gives ``None``.
    """
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
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
    boxes = [b[1] for b in batch]
    labels = torch.cat([b[2] for b in batch]) if batch else torch.zeros(0, NUM_ACTIONS)
    metas = []
    for b in batch:
        meta = dict(b[3])
        meta["padded_size"] = (H, W)
        metas.append(meta)
    return out, boxes, labels, metas


# --------------------------------------------------------------------------- a split from a dataset folder


def media_folder(root: Path, frames_layout: str) -> Path:
    """Where the videos (``root/videos``, ``root/videos_15min``) or frame folders
    (``root/frames``) are; ``root`` itself otherwise."""
    names = ("frames",) if frames_layout == "frames" else ("videos", "videos_15min")
    for name in names:
        if (root / name).is_dir():
            return root / name
    return root


def open_ava_split(root: str | Path, split: str, mode: str, annotations=None, exclusions=None, proposals=None,
                   label_map=None, default_proposals: bool = False, limit: int | None = None, **kwargs) -> "AvaDataset":
    """:class:`AvaDataset` of ``split`` from an AVA folder laid out as published (files in
    ``root`` or ``root/annotations``, media in ``root/videos`` / ``root/frames`` / ``root``).

    Each file argument overrides the official name looked up there: ``ava_{split}_v2.2.csv``,
    ``ava_{split}_excluded_timestamps_v2.2.csv``, the 2019 label map, and, with
    ``default_proposals``, ``ava_{split}_predicted_boxes.csv``. ``limit`` keeps the first N
    keyframes; ``kwargs`` go to AvaDataset."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise HieraVideoError(f"AVA root '{root}' is not a folder; check --root")
    names = default_names(split)
    gt = find_ava_file(root, annotations, names["annotations"])
    props = find_ava_file(root, proposals, names["proposals"] if default_proposals else None)
    if gt is None and (mode == "train" or props is None):
        raise HieraVideoError(
            f"no AVA annotations for split '{split}': expected {names['annotations']} in '{root}/annotations' or '{root}'; "
            "pass the file with --annotations"
        )
    if isinstance(label_map, (str, Path)) and str(label_map) != "ava":
        label_map = find_ava_file(root, label_map, None)
    elif label_map is None:
        label_map = find_ava_file(root, None, LABEL_MAP_NAME)  # else the built-in 60 classes
    layout = kwargs.get("frames_layout", "video")
    if layout not in ("video", "frames"):
        raise HieraVideoError(f"config key 'data.frames_layout' must be video or frames, got '{layout}'")
    ds = AvaDataset(media_folder(root, layout), gt, label_map, split=split, mode=mode, proposals=props,
                    exclusions=find_ava_file(root, exclusions, names["exclusions"]), **kwargs)
    if limit is not None and limit < len(ds.items):
        ds.subset = (limit, len(ds.items))  # mAP then scores these keyframes against their own GT only
        ds.items = ds.items[:limit]
    return ds
