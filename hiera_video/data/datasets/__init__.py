"""Video classification datasets: Kinetics, Something-Something v2, list files, folders.

``build_dataset(kind, root, ...)`` returns a :class:`VideoDataset`: the videos found on disk (in
annotation order), the class names in index order, and the entries whose file is missing (reported).

Annotations per kind: k400/k600/k700 the official CSV (``label,youtube_id,time_start,time_end,split``)
or a "path label" list, classes the built-in kinetics400/600/700 (alphabetical); ssv2
``something-something-v2-{labels,train,validation,test}.json``; list a "path label" list + ``labels``
file (else classes ``class_N``); folder none: ``root/<class>/<video>``, classes sorted alphabetically.

``labelled=False`` (pretraining, :func:`build_unlabeled`): labels -1 and no classes; ``list`` takes
paths with or without labels, ``folder`` every video under ``root`` in any layout.
"""

from __future__ import annotations

from pathlib import Path

from hiera_video.data.datasets.base import FileIndex, VideoDataset, VideoItem, check_missing, note_duplicates, warn
from hiera_video.data.datasets.kinetics import KINETICS, build_kinetics
from hiera_video.data.datasets.lists import build_folder, build_list, build_video_tree
from hiera_video.data.datasets.ssv2 import build_ssv2
from hiera_video.data.kinds import ALL_KINDS, DATASET_KINDS, KIND_ALIASES, dataset_kind
from hiera_video.data.labels import load_labels
from hiera_video.errors import HieraVideoError


def build_dataset(kind: str, root: str | Path, annotations: str | Path | None = None, split: str = "val",
                  labels: str | Path | None = None, limit: int | None = None, labelled: bool = True) -> VideoDataset:
    """Read annotations (None: the usual file names under ``root`` for ``split``; paths in them are
    relative to ``root``) and find the videos on disk. ``labels`` (a built-in set or a .txt/.json
    file) overrides the dataset's class names; ``limit`` keeps the first N videos found."""
    key = dataset_kind(kind)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise HieraVideoError(f"dataset root '{root}' is not a folder; check --root")
    if annotations is not None:
        annotations = Path(annotations).expanduser()
        if not annotations.exists() and not annotations.is_absolute() and (root / annotations).exists():
            annotations = root / annotations  # a file named in a preset is relative to the dataset root
        if not annotations.is_file():
            raise HieraVideoError(f"annotations file '{annotations}' not found; check --annotations")
    if limit is not None and int(limit) < 0:
        raise HieraVideoError(f"--limit must be >= 0, got {limit}")
    limit, split = None if limit is None else int(limit), split or "val"
    if not labelled:
        if key == "list":
            ds = build_list(root, annotations, split, None, limit, labelled=False)
        elif key == "folder":
            ds = build_video_tree(root, limit)
        else:
            ds = build_dataset(key, root, annotations, split)
            ds.items = [VideoItem(path=it.path, label=-1, id=it.id) for it in ds.items]
            ds.classes = []
        ds.items = ds.items[:limit]
        return ds
    names = load_labels(labels) if labels is not None and key != "ssv2" else None
    source = None if labels is None else str(labels)
    if key == "ssv2":
        ds = build_ssv2(root, annotations, split, source, limit)
    elif key in KINETICS:
        ds = build_kinetics(key, root, annotations, split, names, limit, labels_source=source)
    elif key == "list":
        ds = build_list(root, annotations, split, names, limit)
    else:
        ds = build_folder(root, split, names, limit)
        if annotations is not None:
            warn(ds, f"--annotations {annotations} is ignored: a folder dataset takes its classes from "
                 "root/<class>/ folders")
    note_duplicates(ds)
    return ds


def build_unlabeled(kind: str, root, annotations=None, split: str = "train", limit: int | None = None) -> VideoDataset:
    """The videos to pretrain on: :func:`build_dataset` with ``labelled=False``."""
    return build_dataset(kind, root, annotations, split, limit=limit, labelled=False)


__all__ = ["ALL_KINDS", "DATASET_KINDS", "KIND_ALIASES", "FileIndex", "VideoDataset", "VideoItem", "build_dataset",
           "build_unlabeled", "check_missing", "dataset_kind"]
