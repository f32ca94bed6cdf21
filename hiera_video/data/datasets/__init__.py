"""Video classification datasets: Kinetics, Something-Something v2, list files, folders.

``build_dataset(kind, root, ...)`` returns a :class:`VideoDataset`: the videos found on disk
(in annotation order), the class names in index order, and the annotation entries whose
file is missing (reported, not an error; see :func:`check_missing`).

========  ==========================================================================
kind      annotations
========  ==========================================================================
k400      official CSV (``label,youtube_id,time_start,time_end,split``) or a
k600      "path label" list; classes = built-in kinetics400/600/700 (alphabetical)
k700
ssv2      ``something-something-v2-{labels,train,validation,test}.json``
list      "path label" list + ``labels`` file (else classes ``class_N``)
folder    none: ``root/<class>/<video>``, classes sorted alphabetically
========  ==========================================================================

``labelled=False`` (pretraining, :func:`build_unlabeled`): every item's label is -1 and no
classes; ``list`` takes paths with or without labels, ``folder`` every video under ``root``
in any layout, Kinetics / SSv2 their annotation files (missing labels are fine).
"""

from __future__ import annotations

from pathlib import Path

from hiera_video.data.datasets.base import (
    VIDEO_EXTENSIONS,
    FileIndex,
    VideoDataset,
    VideoItem,
    check_missing,
    note_duplicates,
    warn,
)
from hiera_video.data.datasets.kinetics import KINETICS, build_kinetics
from hiera_video.data.datasets.lists import build_folder, build_list, build_video_tree, read_list_file
from hiera_video.data.datasets.ssv2 import build_ssv2
from hiera_video.data.labels import load_labels
from hiera_video.errors import HieraVideoError

DATASET_KINDS = ("k400", "k600", "k700", "ssv2", "list", "folder")
_ALIASES = {
    "kinetics400": "k400", "kinetics-400": "k400", "kinetics600": "k600", "kinetics-600": "k600",
    "kinetics700": "k700", "kinetics-700": "k700", "something-something-v2": "ssv2", "sthv2": "ssv2",
}


def build_dataset(
    kind: str,
    root: str | Path,
    annotations: str | Path | None = None,
    split: str = "val",
    labels: str | Path | None = None,
    limit: int | None = None,
    labelled: bool = True,
) -> VideoDataset:
    """Read annotations and find the videos on disk.

    kind: one of ``DATASET_KINDS``. root: dataset folder (paths in annotations are relative
    to it). annotations: annotation file; ``None`` looks for the usual file names under
    ``root`` for ``split``. labels: class names (built-in name such as ``kinetics400`` or a
    .txt/.json file) overriding the dataset's own. limit: keep the first N videos found.
    labelled=False: the unlabelled mode of the module docstring (``labels`` is ignored).
    """
    key = str(kind).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASET_KINDS:
        raise HieraVideoError(f"unknown dataset '{kind}'; use one of {', '.join(DATASET_KINDS)}")
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
    limit = None if limit is None else int(limit)
    split = split or "val"
    if not labelled:
        if key == "list":
            ds = build_list(root, annotations, split, None, limit, labelled=False)
        elif key == "folder":
            ds = build_video_tree(root, limit)
        else:
            ds = build_dataset(key, root, annotations, split)
            ds.items = [VideoItem(path=it.path, label=-1, id=it.id) for it in ds.items]
            ds.classes = []
        if limit is not None:
            ds.items = ds.items[:limit]
        return ds
    if key == "ssv2":
        ds = build_ssv2(root, annotations, split, None if labels is None else str(labels), limit)
    elif key in KINETICS:
        ds = build_kinetics(key, root, annotations, split, load_labels(labels) if labels is not None else None, limit,
                            labels_source=None if labels is None else str(labels))
    elif key == "list":
        ds = build_list(root, annotations, split, load_labels(labels) if labels is not None else None, limit)
    else:
        ds = build_folder(root, split, load_labels(labels) if labels is not None else None, limit)
        if annotations is not None:
            warn(ds, f"--annotations {annotations} is ignored: a folder dataset takes its classes from root/<class>/ folders")
    note_duplicates(ds)
    return ds


def build_unlabeled(kind: str, root, annotations=None, split: str = "train", limit: int | None = None) -> VideoDataset:
    """The videos to pretrain on: :func:`build_dataset` with ``labelled=False``."""
    return build_dataset(kind, root, annotations, split, limit=limit, labelled=False)


__all__ = [
    "DATASET_KINDS", "VIDEO_EXTENSIONS", "FileIndex", "VideoDataset", "VideoItem", "build_dataset", "build_unlabeled",
    "check_missing", "read_list_file",
]
