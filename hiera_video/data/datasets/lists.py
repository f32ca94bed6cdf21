"""Generic datasets: "path label" lists (SlowFast/mmaction2: a root-relative path, then a class index after
whitespace or one comma) and ``root/<class>/<video>`` trees (classes sorted unless a labels file fixes them)."""

from __future__ import annotations

import os
from pathlib import Path

from hiera_video.data.datasets.base import (VIDEO_EXTENSIONS, ClassLookup, FileIndex, VideoDataset, VideoItem,
                                            is_video_name, warn)
from hiera_video.errors import HieraVideoError

_HEADER_WORDS = {"label", "labels", "class", "class_id", "label_id", "target", "category"}


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def _list_lines(path: Path, expected: str) -> list[tuple[int, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise HieraVideoError(f"list file '{path}' not found; check --annotations") from None
    except UnicodeDecodeError as e:
        raise HieraVideoError(f"{path}: not a text file ({e.reason} at byte {e.start}); pass {expected}") from None
    lines = ((n, raw.strip()) for n, raw in enumerate(text.splitlines(), 1))
    return [(n, line) for n, line in lines if line and not line.startswith("#")]


def read_list_file(path: Path) -> list[tuple[int, str, int]]:
    """``[(line number, video path, label)]``."""
    path = Path(path)
    if not path.is_file():
        raise HieraVideoError(f"annotations file '{path}' not found; check --annotations")
    rows: list[tuple[int, str, int]] = []
    comma: bool | None = None  # separator, decided by the first data line
    for n, line in _list_lines(path, "a 'path label' list"):
        if comma is None:
            parts = line.split(",")
            comma = len(parts) >= 2 and (_is_int(parts[-1]) or parts[-1].strip().lower() in _HEADER_WORDS)
        if comma:
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != 2:
                raise HieraVideoError(f"{path}, line {n}: expected 2 comma-separated columns (path,label), "
                                      f"found {len(fields)}; fix or remove the line")
        else:
            tokens = line.split()
            if len(tokens) < 2:
                raise HieraVideoError(f"{path}, line {n}: expected 2 columns (path label), found 1; "
                                      "fix or remove the line")
            if len(tokens) > 2 and _is_int(tokens[-2]) and _is_int(tokens[-1]):
                raise HieraVideoError(f"{path}, line {n}: expected 2 columns (path label), found {len(tokens)} "
                                      "(a rawframes list 'path num_frames label'?); pass a list of video files")
            fields = [line[: line.rstrip().rfind(tokens[-1])].strip(), tokens[-1]]
        video, label = fields
        if not _is_int(label):
            if not rows and label.lower() in _HEADER_WORDS:
                continue  # header line
            raise HieraVideoError(f"{path}, line {n}: label '{label}' is not an integer class index; fix or remove the line")
        if not video:
            raise HieraVideoError(f"{path}, line {n}: empty video path; fix or remove the line")
        if int(label) < 0:
            raise HieraVideoError(f"{path}, line {n}: negative label {int(label)}; class indices start at 0")
        rows.append((n, video, int(label)))
    return rows


def read_path_list(path: Path) -> list[tuple[int, str]]:
    """``[(line number, video path)]``; a label after the path is ignored."""
    rows = []
    for n, line in _list_lines(path, "a list of video paths"):
        video = line
        if "," in line and _is_int(line.rsplit(",", 1)[1]):
            video = line.rsplit(",", 1)[0].strip()
        else:
            parts = line.split()
            if len(parts) >= 2 and _is_int(parts[-1]):
                video = line[: line.rstrip().rfind(parts[-1])].strip()
        if not rows and video.lower() in ("path", "video", "filename", "file", "path,label", "video,label"):
            continue  # header
        if not is_video_name(video) and is_video_name(line):
            video = line  # a name that merely ends in digits
        rows.append((n, video))
    return rows


def _resolve_listed(video: str, root: Path, index_holder: list, prefer: tuple[str, ...]) -> tuple[Path | None, str]:
    """The file for a listed path: as written, else by stem anywhere under root; ``(None, reason)`` when not found."""
    p = Path(video)
    full = root / p  # an absolute listed path stays as it is
    if full.is_file():
        return full, ""
    if not index_holder:
        index_holder.append(FileIndex(root))
    index = index_holder[0]
    stem = p.stem if p.suffix.lower() in VIDEO_EXTENSIONS else p.name
    candidates = index.by_stem.get(stem, [])
    if len(candidates) == 1:
        return Path(candidates[0]), ""
    if len(candidates) > 1:
        want = p.parent.parts
        best = [c for c in candidates if want and Path(c).parent.parts[-len(want):] == want]  # folders end alike
        if len(best) == 1:
            return Path(best[0]), ""
        found = None if want else index.lookup(stem, prefer)
        if found is not None:
            return found, ""
        return None, f"{len(candidates)} files named {stem}.* under {root} and none at the listed path"
    return None, "file not found"


def dataset_from_list(name: str, root: Path, annotations: Path, classes: list[str] | None, split: str | None,
                      limit: int | None) -> VideoDataset:
    rows = read_list_file(annotations)
    generated = classes is None
    if generated:
        classes = [f"class_{i}" for i in range(max((label for _, _, label in rows), default=-1) + 1)]
    for n, _, label in rows:
        if label >= len(classes):
            raise HieraVideoError(f"{annotations}, line {n}: label {label} is out of range for {len(classes)} classes; "
                                  "pass the matching --labels file")
    ds = VideoDataset(name=name, items=[], classes=classes, root=root, annotations=annotations, split=split,
                      annotated=len(rows), limit=limit, splits={split: len(rows)} if split else {})
    if generated and rows:
        warn(ds, f"no --labels given: classes are named class_0..class_{len(classes) - 1}")
    index_holder: list = []
    prefer = (split,) if split else ()
    for n, video, label in rows:
        if limit is not None and len(ds.items) >= limit:
            break
        path, reason = _resolve_listed(video, root, index_holder, prefer)
        item_id = Path(video).with_suffix("").as_posix() if Path(video).suffix.lower() in VIDEO_EXTENSIONS else video
        if path is None:
            ds.missing.append((str(root / video), f"{reason} ({annotations.name}, line {n})"))
        else:
            ds.add(VideoItem(path=path, label=label, id=item_id), f"{annotations.name}, line {n}")
    return ds


def find_list_file(root: Path, names: list[str]) -> tuple[Path | None, list[Path]]:
    tried = [root / name for name in names]
    return next((p for p in tried if p.is_file()), None), tried


def split_aliases(split: str) -> tuple[str, ...]:
    for g in (("val", "validate", "validation", "valid"), ("train", "training"), ("test", "testing")):
        if split.lower() in g:
            return (split,) + tuple(a for a in g if a != split)
    return (split,)


def build_list(root: Path, annotations: Path | None, split: str, classes: list[str] | None, limit: int | None,
               labelled: bool = True) -> VideoDataset:
    """``labelled=False``: a list of paths (every label -1)."""
    if annotations is None:
        names = []
        for s in split_aliases(split):
            names += [f"{s}.txt", f"{s}.csv", f"{s}_list.txt", f"{s}_list_videos.txt",
                      *([] if labelled else [f"{s}_videos.txt"]), f"annotations/{s}.txt", f"annotations/{s}.csv"]
        annotations, tried = find_list_file(root, names + ([] if labelled else ["videos.txt", "list.txt"]))
        if annotations is None:
            shown = ", ".join(str(p.relative_to(root)) for p in tried[:6])
            raise HieraVideoError(f"no list file for split '{split}' under '{root}' (tried {shown}, ...); "
                                  "pass --annotations FILE")
    if labelled:
        return dataset_from_list("list", root, Path(annotations), classes, split, limit)
    rows = read_path_list(annotations)
    ds = VideoDataset(name="list", items=[], classes=[], root=root, annotations=Path(annotations), split=split,
                      annotated=len(rows), limit=limit)
    index_holder: list = []
    for n, video in rows:
        found, reason = _resolve_listed(video, root, index_holder, (split,) if split else ())
        if found is None:
            ds.missing.append((str(root / video), f"{reason} ({Path(annotations).name}, line {n})"))
        else:
            ds.items.append(VideoItem(path=found, label=-1, id=Path(video).with_suffix("").as_posix()))
    return ds


def build_video_tree(root: Path, limit: int | None) -> VideoDataset:
    """Every video under ``root``, label -1."""
    paths = sorted(Path(p) for paths in FileIndex(root).by_stem.values() for p in paths)
    if not paths:
        raise HieraVideoError(f"no videos under '{root}' (extensions {', '.join(VIDEO_EXTENSIONS)}); check --root")
    items = [VideoItem(path=p, label=-1, id=p.relative_to(root).with_suffix("").as_posix()) for p in paths]
    return VideoDataset(name="folder", items=items, classes=[], root=root, annotated=len(items), limit=limit)


def build_folder(root: Path, split: str | None, classes: list[str] | None, limit: int | None) -> VideoDataset:
    """``root/<class>/<video>``; uses ``root/<split>/`` when that folder exists."""
    base = root / split if split and (root / split).is_dir() else root
    try:
        subdirs = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        loose = sum(1 for e in os.scandir(base) if e.is_file() and is_video_name(e.name))
    except OSError as e:
        raise HieraVideoError(f"cannot read dataset folder '{base}' ({e.strerror}); check --root") from None
    per_class: dict[str, list[Path]] = {}
    empty_dirs = []
    for d in subdirs:
        videos = []
        for folder, dirnames, filenames in os.walk(base / d, followlinks=True):
            dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
            videos += [Path(folder) / f for f in filenames if is_video_name(f) and not f.startswith(".")]
        if videos:
            per_class[d] = sorted(videos)
        else:
            empty_dirs.append(d)
    if not per_class:
        raise HieraVideoError(f"no class folders with videos under '{base}' (expected <class>/<video> with extensions "
                              f"{', '.join(VIDEO_EXTENSIONS)}); check --root")
    classes = sorted(per_class) if classes is None else classes
    lookup = ClassLookup(classes)
    index_of = {d: lookup.get(d) for d in per_class}
    unknown = next((d for d in per_class if index_of[d] is None), None)  # only with given labels
    if unknown is not None:
        raise HieraVideoError(f"folder '{base / unknown}' is not a class of the given labels ({len(classes)} classes); "
                              "rename the folder or pass matching --labels")
    items = [VideoItem(path=p, label=index_of[d], id=p.relative_to(base).with_suffix("").as_posix())
             for d in sorted(per_class, key=lambda d: (index_of[d], d)) for p in per_class[d]]
    split = split if base != root else None
    ds = VideoDataset(name="folder", items=items[:limit], classes=classes, root=root, split=split, limit=limit,
                      annotated=len(items), splits={split: len(items)} if split else {})
    if empty_dirs:
        warn(ds, f"{len(empty_dirs)} folder(s) under '{base}' hold no videos and are not classes (e.g. '{empty_dirs[0]}')")
    if loose:
        warn(ds, f"{loose} video(s) directly in '{base}' are outside any class folder and are skipped")
    return ds
