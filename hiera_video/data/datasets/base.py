"""What every dataset reader returns, and the helpers they share.

A dataset is a list of :class:`VideoItem` (a file that exists, its class index or ``None``
when the annotations carry no label, and a stable id) plus the class names in index order.
Annotation entries whose file is not on disk are not errors: copies of public datasets
always miss some videos, so they are collected in ``VideoDataset.missing`` as
``(expected path, reason)`` and reported; :func:`check_missing` turns them into an error
when the caller asks for strictness.

Files are found through :class:`FileIndex`: one recursive directory walk that maps each
video's file stem (name without extension) to its path(s). A Kinetics copy holds ~240k
files; a walk with ``os.scandir`` reads directory entries without a ``stat`` per file, so
building the index costs one pass over the tree instead of one glob per annotation.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hiera_video.errors import HieraVideoError
from hiera_video.report import atomic_write_text

log = logging.getLogger("hiera_video.data.datasets")

# The one table of video file extensions (datasets, AVA, predict DIR/, pretraining folders);
# the first ones are preferred when a stem has several files.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".ogv")


@dataclass
class VideoItem:
    """One video on disk. ``label`` is the class index, ``None`` when the split has no labels."""

    path: Path
    label: int | None
    id: str


@dataclass
class VideoDataset:
    """Videos found on disk for one split, in annotation order.

    ``missing``: ``(expected path, reason)`` for every annotation entry without a file.
    ``annotated``: number of annotation entries read for this split (before ``limit``).
    ``splits``: rows per split value in the annotation file (files that mix splits).
    ``warnings``: notes worth showing to the user (also logged when the dataset is built).
    ``duplicates``: ``(path, where, first label, this label)`` for annotation rows naming a
    video already in the dataset; :meth:`add` keeps the first row only (each video counts once).
    """

    name: str
    items: list[VideoItem]
    classes: list[str]
    missing: list[tuple[str, str]] = field(default_factory=list)
    root: Path = Path(".")
    annotations: Path | None = None
    split: str | None = None
    annotated: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    limit: int | None = None
    warnings: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str, int | None, int | None]] = field(default_factory=list)
    _seen: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: VideoItem, where: str = "") -> bool:
        """Append ``item`` unless its file is already in the dataset: a repeated annotation row
        is recorded in ``duplicates`` (reported by :func:`note_duplicates`), not evaluated twice."""
        key = os.path.normcase(os.path.abspath(item.path))
        first = self._seen.get(key)
        if first is None:
            self._seen[key] = item
            self.items.append(item)
            return True
        self.duplicates.append((str(item.path), where, first.label, item.label))
        return False

    def __getitem__(self, index: int) -> VideoItem:
        return self.items[index]

    def __iter__(self):
        return iter(self.items)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> list[int | None]:
        return [item.label for item in self.items]

    def summary(self) -> dict:
        """Counts for reports and JSON output (plain Python types only)."""
        per_class = Counter(item.label for item in self.items if item.label is not None)
        return {
            "dataset": self.name,
            "split": self.split,
            "root": str(self.root),
            "annotations": str(self.annotations) if self.annotations is not None else None,
            "annotated": self.annotated,
            "found": len(self.items),
            "missing": len(self.missing),
            "limit": self.limit,
            "labelled": sum(per_class.values()),
            "unlabelled": sum(1 for item in self.items if item.label is None),
            "num_classes": self.num_classes,
            "classes_present": len(per_class),
            "per_split": dict(self.splits),
            "per_class": {self.classes[i]: n for i, n in sorted(per_class.items())},
            "missing_examples": [p for p, _ in self.missing[:5]],
            "duplicates": len(self.duplicates),
            "warnings": list(self.warnings),
        }

    def save_classes(self, path: str | Path) -> Path:
        """Write the class names, one per line in index order (a ``--labels`` file)."""
        path = Path(path)
        atomic_write_text(path, "".join(name + "\n" for name in self.classes))
        return path


def check_missing(dataset: VideoDataset, strict: bool = False) -> int:
    """Report annotation entries without a video; raise when ``strict``. Returns the count."""
    n = len(dataset.missing)
    if n == 0:
        return 0
    first = dataset.missing[0][0]
    total = len(dataset.items) + n
    if strict:
        raise HieraVideoError(
            f"{n} of {total} annotated videos of {dataset.name} are missing under '{dataset.root}' "
            f"(first: {first}); fix --root, or drop --strict to skip them"
        )
    log.warning("%d of %d annotated videos are missing (first: %s); they are skipped", n, total, first)
    return n


def warn(dataset: VideoDataset, message: str) -> None:
    dataset.warnings.append(message)
    log.warning("%s", message)


def note_duplicates(dataset: VideoDataset) -> None:
    """Say that repeated annotation rows were counted once (and which label was kept where
    the rows disagree); missing entries named twice are listed once."""
    seen_missing: set[str] = set()
    dataset.missing = [m for m in dataset.missing if not (m[0] in seen_missing or seen_missing.add(m[0]))]
    dups = dataset.duplicates
    if not dups:
        return
    path, where, _, _ = dups[0]
    msg = (f"{len(dups)} annotation row(s) name a video that is already listed (first: {path}"
           + (f", {where}" if where else "") + "): each video is evaluated and counted once")
    conflicts = [d for d in dups if d[2] != d[3]]
    if conflicts:
        cpath, cwhere, first, other = conflicts[0]
        def name(i):
            return dataset.classes[i] if i is not None and 0 <= i < len(dataset.classes) else str(i)
        msg += (f"; {len(conflicts)} of them give another label than the first row (first: {cpath}"
                + (f", {cwhere}" if cwhere else "") + f": '{name(other)}' vs '{name(first)}'), the first row's label is used")
    warn(dataset, msg)


def is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


class FileIndex:
    """Every video file under ``root``, by stem, from one recursive walk.

    Symlinked folders are followed (datasets are often assembled from links) with loop
    protection. ``lookup(stem, prefer=...)`` returns one path; when several files share a
    stem (e.g. the same clip under ``train/`` and ``val/``), a path whose folders include one
    of ``prefer`` wins, then the preferred extension order of ``VIDEO_EXTENSIONS``.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.by_stem: dict[str, list[str]] = {}
        self.count = 0
        self._walk()

    def _walk(self) -> None:
        seen: set[tuple[int, int]] = set()
        stack = [str(self.root)]
        by_stem = self.by_stem
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            subdirs = []
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    if entry.is_dir():  # follows symlinks
                        subdirs.append(entry.path)
                        continue
                except OSError:
                    continue
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTENSIONS:
                    by_stem.setdefault(stem, []).append(entry.path)
                    self.count += 1
            # Sorted so that the order of candidates (and thus the choice) is deterministic.
            stack.extend(sorted(subdirs, reverse=True))

    def __len__(self) -> int:
        return self.count

    def lookup(self, stem: str, prefer: tuple[str, ...] = ()) -> Path | None:
        paths = self.by_stem.get(stem)
        if not paths:
            return None
        if len(paths) == 1:
            return Path(paths[0])

        def rank(p: str) -> tuple[int, int, str]:
            parts = set(Path(os.path.relpath(p, self.root)).parts[:-1])
            ext = os.path.splitext(p)[1].lower()  # one of VIDEO_EXTENSIONS: the walk keeps no other files
            return (0 if parts.intersection(prefer) else 1, VIDEO_EXTENSIONS.index(ext), p)

        return Path(min(paths, key=rank))


def expected_folder(found: list[Path], root: Path, candidates: tuple[str, ...] = ()) -> Path:
    """Where a missing video would most likely be: the folder holding most found videos,
    else the first existing candidate subfolder of ``root``, else ``root``."""
    if found:
        return Counter(p.parent for p in found).most_common(1)[0][0]
    for sub in candidates:
        if (root / sub).is_dir():
            return root / sub
    return root


def normalize_name(name: str) -> str:
    """Loose class-name key: case, underscores, quotes and repeated spaces ignored."""
    return " ".join(name.replace("_", " ").replace('"', "").replace("'", "").lower().split())


class ClassLookup:
    """Class name -> index, exact first, then ignoring case/underscores/quotes."""

    def __init__(self, classes: list[str]):
        self.exact = {name: i for i, name in enumerate(classes)}
        self.loose: dict[str, int] = {}
        for i, name in enumerate(classes):
            self.loose.setdefault(normalize_name(name), i)

    def get(self, name: str) -> int | None:
        i = self.exact.get(name)
        return self.loose.get(normalize_name(name)) if i is None else i
