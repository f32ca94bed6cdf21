"""What every dataset reader returns, and shared helpers. Annotated videos missing on disk go to
``VideoDataset.missing`` as ``(expected path, reason)``, an error only under ``--strict``."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hiera_video.errors import HieraVideoError
from hiera_video.report import atomic_write_text

log = logging.getLogger("hiera_video.data.datasets")

# earlier ones win when a stem has several files
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".ogv")


@dataclass
class VideoItem:
    path: Path
    label: int | None
    id: str


@dataclass
class VideoDataset:
    """Videos found for one split, in annotation order; ``annotated``: entries read (before ``limit``)."""
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
        per_class = Counter(item.label for item in self.items if item.label is not None)
        return {"dataset": self.name, "split": self.split, "root": str(self.root),
                "annotations": str(self.annotations) if self.annotations is not None else None,
                "annotated": self.annotated, "found": len(self.items), "missing": len(self.missing),
                "limit": self.limit,
                "labelled": sum(per_class.values()), "unlabelled": sum(1 for item in self.items if item.label is None),
                "num_classes": self.num_classes, "classes_present": len(per_class), "per_split": dict(self.splits),
                "per_class": {self.classes[i]: n for i, n in sorted(per_class.items())},
                "missing_examples": [p for p, _ in self.missing[:5]], "duplicates": len(self.duplicates),
                "warnings": list(self.warnings)}

    def save_classes(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, "".join(name + "\n" for name in self.classes))
        return path


def check_missing(dataset: VideoDataset, strict: bool = False) -> int:
    n = len(dataset.missing)
    if n == 0:
        return 0
    first, total = dataset.missing[0][0], len(dataset.items) + n
    if strict:
        raise HieraVideoError(f"{n} of {total} annotated videos of {dataset.name} are missing under '{dataset.root}' "
                              f"(first: {first}); fix --root, or drop --strict to skip them")
    log.warning("%d of %d annotated videos are missing (first: %s); they are skipped", n, total, first)
    return n


def warn(dataset: VideoDataset, message: str) -> None:
    dataset.warnings.append(message)
    log.warning("%s", message)


def note_duplicates(dataset: VideoDataset) -> None:
    seen_missing: set[str] = set()
    dataset.missing = [m for m in dataset.missing if not (m[0] in seen_missing or seen_missing.add(m[0]))]
    dups = dataset.duplicates
    if not dups:
        return
    msg = (f"{len(dups)} annotation row(s) name a video that is already listed (first: {dups[0][0]}"
           + (f", {dups[0][1]}" if dups[0][1] else "") + "): each video is evaluated and counted once")
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
    """Every video file under ``root`` by stem, one ``os.scandir`` walk (symlinks followed, loops cut)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.by_stem: dict[str, list[str]] = {}
        seen: set[tuple[int, int]] = set()
        stack = [str(self.root)]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                entries = list(os.scandir(folder))
            except OSError:
                continue
            subdirs = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():  # follows symlinks
                        subdirs.append(entry.path)
                        continue
                except OSError:
                    continue
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in VIDEO_EXTENSIONS:
                    self.by_stem.setdefault(stem, []).append(entry.path)
            stack.extend(sorted(subdirs, reverse=True))  # sorted: a deterministic choice

    def lookup(self, stem: str, prefer: tuple[str, ...] = ()) -> Path | None:
        """For a shared stem: a path with a folder in ``prefer`` first, then the ``VIDEO_EXTENSIONS`` order."""
        paths = self.by_stem.get(stem)
        if not paths:
            return None
        if len(paths) == 1:
            return Path(paths[0])

        def rank(p: str) -> tuple[int, int, str]:
            parts = set(Path(os.path.relpath(p, self.root)).parts[:-1])
            return (0 if parts.intersection(prefer) else 1, VIDEO_EXTENSIONS.index(os.path.splitext(p)[1].lower()), p)

        return Path(min(paths, key=rank))


def expected_folder(found: list[Path], root: Path, candidates: tuple[str, ...] = ()) -> Path:
    """Where a missing video likely is: the folder of most found videos, else an existing candidate, else root."""
    if found:
        return Counter(p.parent for p in found).most_common(1)[0][0]
    return next((root / sub for sub in candidates if (root / sub).is_dir()), root)


def normalize_name(name: str) -> str:
    return " ".join(name.replace("_", " ").replace('"', "").replace("'", "").lower().split())


class ClassLookup:
    """Class name -> index, exact first, then ignoring case/underscores/quotes."""
    def __init__(self, classes: list[str]):
        self.exact = {name: i for i, name in enumerate(classes)}
        self.loose = {normalize_name(name): i for i, name in reversed(list(enumerate(classes)))}  # the first wins

    def get(self, name: str) -> int | None:
        i = self.exact.get(name)
        return self.loose.get(normalize_name(name)) if i is None else i
