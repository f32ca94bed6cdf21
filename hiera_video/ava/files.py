"""AVA v2.2 files: ground truth, detections, excluded timestamps, label maps, person proposals.

Files (as published, no headers):

* ``ava_{train,val}_v2.2.csv``: ``video_id,timestamp,x1,y1,x2,y2,action_id,person_id``, boxes
  normalised to ``[0, 1]``, one row per (person, action);
* ``ava_{train,val}_excluded_timestamps_v2.2.csv``: ``video_id,timestamp``;
* ``ava_action_list_v2.2_for_activitynet_2019.pbtxt``: the 60 evaluated classes;
* person proposals (detector boxes), SlowFast CSV: the GT columns with an empty action and
  the detector score in column 8, e.g. ``ava_val_predicted_boxes.csv``; or the mmaction2
  pickle ``{"video_id,%04d": array [N, 5] (x1, y1, x2, y2, score)}``, which is only read with
  ``allow_pickle=True`` (unpickling can run code; convert it once to CSV with
  :func:`convert_proposals_pickle`).

CSV readers are strict: a wrong column count, a bad number or a non-integer timestamp raises
:class:`HieraVideoError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import math
import pickle
import re
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import numpy as np

from hiera_video.data.datasets.lists import find_list_file
from hiera_video.data.labels import load_label_map
from hiera_video.errors import HieraVideoError
from hiera_video.report import atomic_write_text

NUM_ACTIONS = 80
CSV_KINDS = ("gt", "detections", "proposals")
LABEL_MAP_NAME = "ava_action_list_v2.2_for_activitynet_2019.pbtxt"

Key = tuple[str, int]
Proposals = dict[Key, list[tuple[tuple[float, float, float, float], float]]]


class AvaRow(NamedTuple):
    """One CSV row. Boxes are normalised ``[0, 1]``, ``x1, y1, x2, y2``.

    ``action_id`` is None for proposal rows with an empty action column; ``score`` is 1.0
    for GT rows (and rows without a score column); ``person_id`` only comes from GT rows.
    """

    video_id: str
    timestamp: int
    x1: float
    y1: float
    x2: float
    y2: float
    action_id: int | None = None
    score: float = 1.0
    person_id: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.video_id, self.timestamp)

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


def read_lines(path: str | Path, what: str) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` for every non-blank line of a CSV file."""
    p = Path(path)
    if not p.is_file():
        raise HieraVideoError(f"{what} file '{path}' not found; check the path")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise HieraVideoError(f"{what} file '{path}' is not a text (UTF-8) CSV file ({e.reason})") from None
    rows = ((n, [f.strip() for f in fields]) for n, fields in enumerate(csv.reader(io.StringIO(text)), 1))
    return [(n, fields) for n, fields in rows if any(fields)]


def _int(value: str, where: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise HieraVideoError(f"{where}: {what} '{value}' is not an integer") from None


def _float(value: str, where: str, what: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise HieraVideoError(f"{where}: {what} '{value}' is not a number") from None
    if not math.isfinite(x):
        raise HieraVideoError(f"{where}: {what} '{value}' is not a finite number")
    return x


def parse_ava_row(fields: list[str], where: str, kind: str = "gt") -> AvaRow:
    """One CSV row (already split) -> :class:`AvaRow`; ``where`` names file and line in errors.

    ``kind``: ``gt`` (7 or 8 columns, action required, column 8 = person id),
    ``detections`` (7 or 8 columns, action required, column 8 = score, 1.0 when absent, as
    the official reader) or ``proposals`` (SlowFast person boxes: action may be empty,
    column 8 = score).
    """
    if kind not in CSV_KINDS:
        raise ValueError(f"kind must be one of {CSV_KINDS}, got {kind!r}")
    if len(fields) not in (7, 8):
        layout = "video_id,timestamp,x1,y1,x2,y2,action_id" + (",person_id" if kind == "gt" else ",score")
        raise HieraVideoError(f"{where}: expected 7 or 8 comma-separated columns ({layout}), got {len(fields)}")
    video_id = fields[0]
    if not video_id:
        raise HieraVideoError(f"{where}: empty video id")
    ts = _int(fields[1], where, "timestamp")
    if ts < 0:
        raise HieraVideoError(f"{where}: timestamp {ts} is negative")
    x1, y1, x2, y2 = (_float(v, where, name) for v, name in zip(fields[2:6], ("x1", "y1", "x2", "y2")))
    action = _int(fields[6], where, "action id") if fields[6] != "" or kind != "proposals" else None
    score, person = 1.0, None
    if len(fields) == 8 and fields[7] != "":
        if kind == "gt":
            person = _int(fields[7], where, "person id")
        else:
            score = _float(fields[7], where, "score")
    elif len(fields) == 8 and kind != "gt":
        raise HieraVideoError(f"{where}: empty score column")
    return AvaRow(video_id, ts, x1, y1, x2, y2, action, score, person)


def read_ava_csv(path: str | Path, kind: str = "gt") -> list[AvaRow]:
    """Read an AVA CSV strictly (see the module docstring), skipping blank lines; ``kind``
    as in :func:`parse_ava_row`."""
    what = {"gt": "ground-truth", "detections": "detections", "proposals": "proposals"}.get(kind, kind)
    return [parse_ava_row(fields, f"{path}, line {n}", kind) for n, fields in read_lines(path, what)]


def read_exclusions(path: str | Path | None) -> set[tuple[str, int]]:
    """Excluded keyframes ``{(video_id, timestamp)}`` from ``video_id,timestamp`` lines."""
    if path is None:
        return set()
    out = set()
    for n, fields in read_lines(path, "excluded-timestamps"):
        where = f"{path}, line {n}"
        if len(fields) != 2:
            raise HieraVideoError(f"{where}: expected 2 columns (video_id,timestamp), got {len(fields)}")
        if not fields[0]:
            raise HieraVideoError(f"{where}: empty video id")
        out.add((fields[0], _int(fields[1], where, "timestamp")))
    return out


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}:])|([^\s{}:"#]+))')


def _tokens(text: str, path) -> list[tuple[str, str, int]]:
    """Protobuf text tokens ``(kind, value, line)``; kind in str/punct/word."""
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            line = text.count("\n", 0, pos) + 1
            raise HieraVideoError(f"{path}, line {line}: cannot parse '{text[pos:pos + 20].strip()}'")
        comment, string, punct, word = m.groups()
        line = text.count("\n", 0, m.start(m.lastindex)) + 1
        if string is not None:
            out.append(("str", string[1:-1].replace('\\"', '"'), line))
        elif punct is not None:
            out.append(("punct", punct, line))
        elif word is not None:
            out.append(("word", word, line))
        pos = m.end()
    return out


def read_label_map(path: str | Path) -> dict[int, str]:
    """``{id: name}`` from an AVA label map ``.pbtxt``.

    Accepts the v2.2 ``item { name: "..." id: N }`` blocks and the older
    ``label { name: "..." label_id: N label_type: PERSON_MOVEMENT }`` form (any block name;
    ``display_name`` is used when ``name`` is absent; unknown fields are ignored).
    """
    p = Path(path)
    if not p.is_file():
        raise HieraVideoError(f"label map '{path}' not found; pass the ava_action_list_v2.2*.pbtxt file")
    toks = _tokens(p.read_text(encoding="utf-8-sig"), path)
    out: dict[int, str] = {}
    i = 0

    def expect(kind, value=None):
        nonlocal i
        if i >= len(toks):
            raise HieraVideoError(f"{path}: unexpected end of file (expected {value or kind})")
        tok = toks[i]
        if tok[0] != kind or (value is not None and tok[1] != value):
            raise HieraVideoError(f"{path}, line {tok[2]}: expected {value or kind}, got '{tok[1]}'")
        i += 1
        return tok

    while i < len(toks):
        block = expect("word")
        if i < len(toks) and toks[i][1] == ":":
            i += 1
        expect("punct", "{")
        fields: dict[str, tuple[str, int]] = {}
        while i < len(toks) and toks[i][1] != "}":
            name = expect("word")
            expect("punct", ":")
            if i >= len(toks):
                raise HieraVideoError(f"{path}: unexpected end of file in field '{name[1]}'")
            value = toks[i]
            if value[0] == "punct":
                raise HieraVideoError(f"{path}, line {value[2]}: missing value for field '{name[1]}'")
            if name[1] in fields:  # protobuf text would keep the last silently: a typo or a merge gone wrong
                raise HieraVideoError(
                    f"{path}, line {name[2]}: field '{name[1]}' appears twice in the '{block[1]}' block of line {block[2]}; "
                    "keep one"
                )
            fields[name[1]] = (value[1], value[2])
            i += 1
        expect("punct", "}")
        where = f"{path}, line {block[2]}"
        id_field = fields.get("id") or fields.get("label_id")
        label = fields.get("name") or fields.get("display_name")
        if id_field is None or label is None:
            raise HieraVideoError(f"{where}: '{block[1]}' block needs a name and an id (or label_id)")
        cid = _int(id_field[0], f"{path}, line {id_field[1]}", "id")
        if cid in out:
            raise HieraVideoError(f"{where}: class id {cid} appears twice")
        out[cid] = label[0]
    if not out:
        raise HieraVideoError(f"{path}: no 'item {{ name: ... id: ... }}' entries found")
    return out


def resolve_label_map(label_map) -> dict[int, str]:
    """A label map given as ``{id: name}``, a ``.pbtxt`` path, ``None`` or ``"ava"``
    (the built-in 60-class v2.2 list) -> ``{id: name}``."""
    if isinstance(label_map, Mapping):
        return {int(k): str(v) for k, v in label_map.items()}
    if label_map is None or label_map == "ava":
        return load_label_map("ava")
    if Path(label_map).suffix.lower() == ".txt":
        return _txt_label_map(label_map)
    return read_label_map(Path(label_map))


def _txt_label_map(path) -> dict[int, str]:
    """A ``.txt`` AVA label map: ``id: name`` lines, or names only, numbered from 1 as AVA's
    action ids are (the first name is id 1). A names-only file is refused when one of its names
    is an AVA class whose official id is not its number: it lists another subset (e.g. the 60
    evaluated classes, whose ids have gaps) and every id would be off."""
    from hiera_video.data.datasets.base import normalize_name

    m = load_label_map(path, first_id=1)
    if load_label_map(path) == m:  # numbering from 0 or 1 gives the same map: the lines carry their ids
        return m
    official = {normalize_name(v): k for k, v in load_label_map("ava").items()}
    for cid, name in m.items():
        real = official.get(normalize_name(name))
        if real is not None and real != cid:
            raise HieraVideoError(
                f"{path}: names-only label map: its names are numbered from 1 (AVA ids are 1-based), so '{name}' "
                f"(name {cid}) would be id {cid}, but it is AVA id {real}; write 'id: name' lines (e.g. '{real}: {name}') "
                f"or pass the official {LABEL_MAP_NAME}"
            )
    return m


def format_detection_row(row) -> str:
    """``video_id,timestamp,x1,y1,x2,y2,action_id,score`` (timestamp zero-padded to 4)."""
    vid, ts, x1, y1, x2, y2, action, score = tuple(row)[:8]
    return f"{vid},{int(ts):04d},{x1:.4f},{y1:.4f},{x2:.4f},{y2:.4f},{int(action)},{float(score):.6f}"


def write_detections_csv(path: str | Path, rows: Iterable) -> Path:
    """Write detections in the official format (no header), atomically. ``rows`` are
    :class:`AvaRow` or any 8-sequences ``(video_id, timestamp, x1, y1, x2, y2, action, score)``."""
    atomic_write_text(path, "".join(format_detection_row(r) + "\n" for r in rows))
    return Path(path)


def read_ava_annotations(path: str | Path) -> list[AvaRow]:
    """GT CSV rows; also checks that action ids are AVA ids (1..80) and boxes are normalised,
    naming file and line."""
    rows = []
    for n, fields in read_lines(path, "AVA annotations"):
        where = f"{path}, line {n}"
        row = parse_ava_row(fields, where, "gt")
        if not 1 <= row.action_id <= NUM_ACTIONS:
            raise HieraVideoError(f"{where}: action id {row.action_id} is outside the AVA ids 1..{NUM_ACTIONS}")
        check_normalised(row, where)
        rows.append(row)
    return rows


def check_normalised(row: AvaRow, where: str) -> None:
    """Refuse a box outside ``[0, 1]`` (1% slack): AVA boxes are fractions of the frame's width
    and height, and boxes in pixels would match nothing (mAP 0)."""
    if not all(-0.01 <= v <= 1.01 for v in row.box):
        raise HieraVideoError(
            f"{where}: box {row.box} is not normalised to [0, 1]: AVA boxes are fractions of the frame width and "
            "height (pixel coordinates? columns shifted?)"
        )


def read_ground_truth(path: str | Path) -> list[AvaRow]:
    """A ground-truth CSV for scoring (``score-ava``): :func:`read_ava_csv` with the box check
    that training applies (:func:`check_normalised`)."""
    rows = []
    for n, fields in read_lines(path, "ground-truth"):
        where = f"{path}, line {n}"
        row = parse_ava_row(fields, where, "gt")
        check_normalised(row, where)
        rows.append(row)
    return rows


def read_proposals_csv(path: str | Path) -> Proposals:
    """SlowFast person-box CSV -> ``{(video_id, ts): [(box, score), ...]}`` (file order;
    exact duplicates of a box keep the highest score)."""
    out: dict[Key, dict] = defaultdict(dict)
    for n, fields in read_lines(path, "proposals"):
        row = parse_ava_row(fields, f"{path}, line {n}", "proposals")
        boxes = out[row.key]
        boxes[row.box] = max(row.score, boxes.get(row.box, -math.inf))
    return {k: list(v.items()) for k, v in out.items()}


def load_proposals_pickle(path: str | Path, allow_pickle: bool = False) -> Proposals:
    """mmaction2 proposals pickle ``{"video_id,%04d": [N, 4|5] array}`` -> proposals dict.

    Refused unless ``allow_pickle=True`` (with a warning even then). Rows without a fifth
    column get score 1.0.
    """
    path = Path(path)
    if not allow_pickle:
        raise HieraVideoError(
            f"refusing to unpickle '{path}': loading a pickle can run arbitrary code. If you trust the "
            "file, pass allow_pickle=True (CLI: --allow-pickle), or convert it once to a CSV with "
            "convert_proposals_pickle(pkl, out_csv, allow_pickle=True) and use the CSV"
        )
    if not path.is_file():
        raise HieraVideoError(f"proposals file '{path}' not found; check the path")
    warnings.warn(
        f"unpickling '{path}': a pickle can run arbitrary code, only load files you trust", UserWarning, stacklevel=2
    )
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f)  # noqa: S301 - explicit opt-in above
    except Exception as e:
        raise HieraVideoError(f"cannot read proposals pickle '{path}': {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise HieraVideoError(f"proposals pickle '{path}' holds a {type(obj).__name__}, expected a dict 'video_id,timestamp' -> [N, 5] boxes")
    out: Proposals = {}
    for k, v in obj.items():
        vid, _, ts = str(k).rpartition(",")
        try:
            key = (vid, int(ts))
        except ValueError:
            raise HieraVideoError(f"proposals pickle '{path}': key {k!r} is not 'video_id,timestamp'") from None
        if not vid:
            raise HieraVideoError(f"proposals pickle '{path}': key {k!r} is not 'video_id,timestamp'")
        arr = np.asarray(v, dtype=np.float64)
        if arr.size == 0:
            out[key] = []
            continue
        if arr.ndim != 2 or arr.shape[1] not in (4, 5) or not np.isfinite(arr).all():
            raise HieraVideoError(f"proposals pickle '{path}': entry {k!r} must be a finite [N, 4] or [N, 5] array, got shape {arr.shape}")
        scores = arr[:, 4] if arr.shape[1] == 5 else np.ones(len(arr))
        out[key] = [(tuple(float(x) for x in b[:4]), float(s)) for b, s in zip(arr, scores)]
    return out


def convert_proposals_pickle(pkl: str | Path, out_csv: str | Path, allow_pickle: bool = False) -> int:
    """Write an mmaction2 proposals pickle as a SlowFast CSV (``vid,ts,x1,y1,x2,y2,,score``);
    needs the same ``allow_pickle=True`` opt-in. Returns the number of rows written."""
    props = load_proposals_pickle(pkl, allow_pickle=allow_pickle)
    lines = []
    for (vid, ts), boxes in sorted(props.items()):
        for (x1, y1, x2, y2), s in boxes:
            lines.append(f"{vid},{ts:04d},{x1:.6f},{y1:.6f},{x2:.6f},{y2:.6f},,{s:.6f}\n")
    atomic_write_text(out_csv, "".join(lines))
    return len(lines)


def load_proposals(source, allow_pickle: bool = False) -> Proposals:
    """Proposals from a SlowFast CSV, an mmaction2 pickle (opt-in) or an existing dict."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    is_pickle = path.suffix.lower() in (".pkl", ".pickle")
    if not is_pickle and path.is_file():
        with open(path, "rb") as f:
            is_pickle = f.read(1) == b"\x80"  # pickle protocol >= 2 header
    if is_pickle:
        return load_proposals_pickle(path, allow_pickle)
    return read_proposals_csv(path)


def default_names(split: str) -> dict[str, str]:
    return {
        "annotations": f"ava_{split}_v2.2.csv",
        "exclusions": f"ava_{split}_excluded_timestamps_v2.2.csv",
        "proposals": f"ava_{split}_predicted_boxes.csv",  # SlowFast's name for detector boxes
    }


def find_ava_file(root: Path, given: str | Path | None, default_name: str | None) -> Path | None:
    """``given`` (as is, or relative to ``root``), else ``default_name`` under ``root/annotations``
    or ``root``; None when nothing is there. A ``given`` file that does not exist is an error."""
    if given:
        p = Path(given).expanduser()
        for candidate in (p, root / p):
            if candidate.is_file():
                return candidate
        raise HieraVideoError(f"AVA file '{given}' not found (also looked under '{root}'); check the path")
    if default_name:
        return find_list_file(root, [f"annotations/{default_name}", default_name])[0]
    return None

