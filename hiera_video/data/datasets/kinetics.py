"""Kinetics-400/600/700 from the official CSVs (``label,youtube_id,time_start,time_end,split``) or "path label"
lists; clips ``{youtube_id}_{start:06d}_{end:06d}.*`` or ``{youtube_id}.*``, flat or under class folders."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from hiera_video.data.datasets.base import ClassLookup, FileIndex, VideoDataset, VideoItem, normalize_name, warn
from hiera_video.data.datasets.lists import dataset_from_list, find_list_file, split_aliases
from hiera_video.data.labels import load_labels
from hiera_video.errors import HieraVideoError

KINETICS = {"k400": 400, "k600": 600, "k700": 700}
REQUIRED = ("youtube_id", "time_start", "time_end")
CANDIDATES = ("{s}.csv", "kinetics{num}_{s}.csv", "kinetics_{num}_{s}.csv", "kinetics-{num}_{s}.csv",
              "kinetics{num}_{s}_list_videos.txt", "{s}_list_videos.txt", "{s}.txt")


def annotation_candidates(split: str, num: int) -> list[str]:
    return list(dict.fromkeys(folder + name.format(s=s, num=num)
                              for s in split_aliases(split) for folder in ("annotations/", "") for name in CANDIDATES))


def is_official_csv(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            first = f.readline()
    except OSError as e:
        raise HieraVideoError(f"cannot read annotations file '{path}' ({e.strerror})") from None
    return "youtube_id" in first.lower().replace(" ", "")


def _time(value: str, path: Path, line: int, column: str) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise HieraVideoError(f"{path}, line {line}: {column} '{value}' is not a number; fix or remove the line") from None


def read_kinetics_csv(path: Path) -> list[tuple[int, str | None, str, int, int, str | None]]:
    rows = []
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise HieraVideoError(f"{path}: empty annotations file") from None
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise HieraVideoError(f"{path}, line 1: header lacks column(s) {', '.join(missing)}; "
                                  "expected label,youtube_id,time_start,time_end,split")
        col = {name: i for i, name in enumerate(header)}
        c_label, c_split = col.get("label"), col.get("split")
        c_id, c_start, c_end = col["youtube_id"], col["time_start"], col["time_end"]
        for row in reader:
            n = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise HieraVideoError(f"{path}, line {n}: expected {len(header)} columns ({','.join(header)}), "
                                      f"found {len(row)}; fix or remove the line")
            label, yid = row[c_label].strip() if c_label is not None else "", row[c_id].strip()
            if not yid:
                raise HieraVideoError(f"{path}, line {n}: empty youtube_id; fix or remove the line")
            start = _time(row[c_start].strip(), path, n, "time_start")
            end = _time(row[c_end].strip(), path, n, "time_end")
            split = row[c_split].strip() if c_split is not None else None
            rows.append((n, label or None, yid, start, end, split or None))
    return rows


def _select_split(rows, split: str, path: Path, ds: VideoDataset):
    counts = Counter(r[5] for r in rows if r[5] is not None)
    ds.splits = dict(counts)
    if not counts:
        return rows
    wanted = set(split_aliases(split))
    if any(r[5] in wanted for r in rows):
        return [r for r in rows if r[5] in wanted or r[5] is None]
    if len(counts) == 1:
        only = next(iter(counts))
        warn(ds, f"{path.name} holds split '{only}' only, not '{split}'; using all its rows")
        ds.split = only
        return rows
    raise HieraVideoError(f"{path} has no rows of split '{split}' (it has {', '.join(sorted(counts))}); "
                          "pass --split with one of those")


def dataset_from_csv(kind: str, root: Path, path: Path, classes: list[str], split: str, limit: int | None,
                     class_source: str) -> VideoDataset:
    ds = VideoDataset(name=kind, items=[], classes=classes, root=root, annotations=path, split=split, limit=limit)
    rows = _select_split(read_kinetics_csv(path), split, path, ds)
    ds.annotated = len(rows)
    lookup = ClassLookup(classes)
    labelled: list[int | None] = []
    for n, label, *_ in rows:
        i = None if label is None else lookup.get(label)
        if label is not None and i is None:
            raise HieraVideoError(f"{path}, line {n}: class '{label}' is not one of the {len(classes)} classes of "
                                  f"{class_source}; pass --labels with this dataset's class list")
        labelled.append(i)
    index = FileIndex(root)
    prefer_split = split_aliases(ds.split or split)
    found_layout, pending_missing = Counter(), []  # pending: (clip, label, reason)
    for (n, label, yid, start, end, _), cls in zip(rows, labelled):
        if limit is not None and len(ds.items) >= limit:
            break
        clip = f"{yid}_{start:06d}_{end:06d}"
        prefer = prefer_split + ((label, label.replace(" ", "_")) if label else ())
        path_found = index.lookup(clip, prefer) or index.lookup(yid, prefer)
        if path_found is None:
            pending_missing.append((clip, label, f"no {clip}.* or {yid}.* under the root ({path.name}, line {n})"))
            continue
        if not ds.add(VideoItem(path=path_found, label=cls, id=clip), f"{path.name}, line {n}"):
            continue
        parent = path_found.parent
        is_class = bool(label) and normalize_name(parent.name) == normalize_name(label)
        found_layout[("class", parent.parent) if is_class else ("flat", parent)] += 1
    ds.missing = [(str(_expected(root, found_layout, clip, label)), reason) for clip, label, reason in pending_missing]
    return ds


def _expected(root: Path, layout: Counter, clip: str, label: str | None) -> Path:
    kind, folder = layout.most_common(1)[0][0] if layout else ("flat", root)
    return (folder / label if kind == "class" and label else folder if kind == "flat" else root) / f"{clip}.mp4"


def build_kinetics(kind: str, root: Path, annotations: Path | None, split: str, classes: list[str] | None,
                   limit: int | None, labels_source: str | None = None) -> VideoDataset:
    num = KINETICS[kind]
    class_source = labels_source or f"kinetics{num}"
    classes = load_labels(f"kinetics{num}") if classes is None else classes
    if annotations is None:
        annotations, _ = find_list_file(root, annotation_candidates(split, num))
        if annotations is None:
            aliases = split_aliases(split)
            names = [n for n in annotation_candidates(split, num) if n.startswith("annotations/") and f"{split}" in n
                     and not any(a != split and a in n for a in aliases)]
            shown = ", ".join(n.removeprefix("annotations/") for n in names)
            also = f" (and the same names with {'/'.join(aliases[1:])})" if len(aliases) > 1 else ""
            raise HieraVideoError(
                f"no Kinetics annotations for split '{split}' under '{root}' (tried {shown}{also}, in the root and in "
                f"annotations/); pass --annotations FILE (official CSV or 'path label' list), or use --dataset folder")
    annotations = Path(annotations)
    if is_official_csv(annotations):
        return dataset_from_csv(kind, root, annotations, classes, split, limit, class_source)
    return dataset_from_list(kind, root, annotations, classes, split, limit)
