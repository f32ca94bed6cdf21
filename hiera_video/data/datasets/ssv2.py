"""Something-Something v2 from its official JSON files: ``-labels.json`` (``{template: "index"}``), the split
lists (``{id, label, template, placeholders}``; the class is the template without brackets; test has ids
only) and ``{id}.webm`` videos anywhere under the root. A non-JSON ``--annotations`` is a "path label" list.
"""

from __future__ import annotations

import json
from pathlib import Path

from hiera_video.data.datasets.base import ClassLookup, FileIndex, VideoDataset, VideoItem, expected_folder, warn
from hiera_video.data.datasets.lists import dataset_from_list
from hiera_video.data.labels import load_labels
from hiera_video.errors import HieraVideoError

PREFIX = "something-something-v2"
LABELS_FILE = f"{PREFIX}-labels.json"
SPLIT_FILES = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
               "validate": "validation", "validation": "validation", "test": "test"}
VIDEO_FOLDERS = ("20bn-something-something-v2", "videos", "something-something-v2")


def _load_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise HieraVideoError(f"cannot read '{path}' ({e.strerror})") from None
    except UnicodeDecodeError:
        raise HieraVideoError(f"{path}: not a UTF-8 text file; pass the SSv2 JSON annotations") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise HieraVideoError(f"{path}, line {e.lineno}: not valid JSON ({e.msg}); re-download the file") from None


def read_labels_json(path: Path) -> list[str]:
    obj = _load_json(path)
    if not isinstance(obj, dict) or not obj:
        raise HieraVideoError(f"{path}: expected a JSON object {{template: \"index\"}}; pass {LABELS_FILE}")
    by_index: dict[int, str] = {}
    for name, value in obj.items():
        try:
            i = int(value)
        except (TypeError, ValueError):
            raise HieraVideoError(f"{path}, entry '{name}': index {value!r} is not an integer") from None
        if i in by_index:
            raise HieraVideoError(f"{path}, entry '{name}': index {i} is also used by '{by_index[i]}'")
        by_index[i] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise HieraVideoError(f"{path}: class indices must be 0..{len(by_index) - 1} without gaps")
    return [by_index[i] for i in range(len(by_index))]


def read_split_json(path: Path, lookup: ClassLookup | None, num_classes: int) -> list[tuple[str, int | None]]:
    """``[(video id, class index or None)]``."""
    obj = _load_json(path)
    if not isinstance(obj, list):
        raise HieraVideoError(f"{path}: expected a JSON list of {{id, label, template, placeholders}} entries")
    out: list[tuple[str, int | None]] = []
    for k, entry in enumerate(obj):
        if not isinstance(entry, dict) or "id" not in entry:
            raise HieraVideoError(f"{path}, entry {k}: expected an object with an 'id'; re-download the file")
        vid = str(entry["id"]).strip()
        template = entry.get("template")
        if template is None:
            out.append((vid, None))
            continue
        if not isinstance(template, str):
            raise HieraVideoError(f"{path}, entry {k} (id {vid}): 'template' is not a string")
        name = template.replace("[", "").replace("]", "")
        i = lookup.get(name) if lookup is not None else None
        if i is None:
            raise HieraVideoError(f"{path}, entry {k} (id {vid}): template '{name}' is not one of the {num_classes} "
                                  f"classes; pass the matching {LABELS_FILE} with --labels")
        out.append((vid, i))
    return out


def _find(dirs: list[Path], name: str) -> Path | None:
    return next((d / name for d in dirs if (d / name).is_file()), None)


def build_ssv2(root: Path, annotations: Path | None, split: str, labels: str | None, limit: int | None) -> VideoDataset:
    dirs = [annotations.parent] if annotations is not None else []
    dirs = list(dict.fromkeys(dirs + [root, root / "annotations", root / "labels", root / "label", root / PREFIX]))
    notes = []
    if labels is not None:
        src = Path(str(labels))
        classes = read_labels_json(src) if src.suffix.lower() == ".json" and src.is_file() else load_labels(labels)
    else:
        labels_path = _find(dirs, LABELS_FILE)
        if labels_path is None:
            classes = load_labels("ssv2")
            notes.append(f"{LABELS_FILE} not found (looked in {', '.join(map(str, dirs))}); using the built-in ssv2 class order")
        else:
            classes = read_labels_json(labels_path)
            if classes != load_labels("ssv2"):
                notes.append(f"class order in {labels_path} differs from the built-in ssv2 order used by public "
                             "checkpoints; indices follow the file")
    if annotations is not None and annotations.suffix.lower() != ".json":
        ds = dataset_from_list("ssv2", root, annotations, classes, split, limit)
        for note in notes:
            warn(ds, note)
        return ds
    if annotations is None:
        key = SPLIT_FILES.get(split.lower())
        if key is None:
            raise HieraVideoError(f"unknown SSv2 split '{split}'; use train, val or test")
        name = f"{PREFIX}-{key}.json"
        annotations = _find(dirs, name)
        if annotations is None:
            raise HieraVideoError(f"{name} not found (looked in {', '.join(map(str, dirs))}); pass --annotations FILE")
    entries = read_split_json(annotations, ClassLookup(classes), len(classes))
    ds = VideoDataset(name="ssv2", items=[], classes=classes, root=root, annotations=annotations, split=split,
                      annotated=len(entries), splits={split: len(entries)}, limit=limit)
    for note in notes:
        warn(ds, note)
    index = FileIndex(root)
    missing_ids: list[tuple[int, str]] = []
    for k, (vid, label) in enumerate(entries):
        if limit is not None and len(ds.items) >= limit:
            break
        path = index.lookup(vid, VIDEO_FOLDERS)
        if path is None:
            missing_ids.append((k, vid))
        else:
            ds.add(VideoItem(path=path, label=label, id=vid), f"{annotations.name}, entry {k}")
    folder = expected_folder([it.path for it in ds.items], root, VIDEO_FOLDERS)
    ds.missing = [(str(folder / f"{vid}.webm"), f"no {vid}.webm under the root ({annotations.name}, entry {k})")
                  for k, vid in missing_ids]
    return ds
