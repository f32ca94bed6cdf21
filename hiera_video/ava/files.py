"""AVA v2.2 files (no headers): GT ``video_id,timestamp,x1,y1,x2,y2,action_id,person_id`` (boxes normalised
to ``[0, 1]``, a row per person and action), excluded timestamps ``video_id,timestamp``, the label map ``.pbtxt``,
person proposals as SlowFast's CSV (empty action, score in column 8) or mmaction2's pickle (``allow_pickle=True``
only: unpickling can run code). Readers are strict: errors name the file and line."""

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
LABEL_MAP_NAME = "ava_action_list_v2.2_for_activitynet_2019.pbtxt"

Key = tuple[str, int]
Proposals = dict[Key, list[tuple[tuple[float, float, float, float], float]]]


class AvaRow(NamedTuple):
    """One CSV row; ``action_id`` None for proposals, ``score`` 1.0 for GT, ``person_id`` from GT only."""

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
    if not Path(path).is_file():
        raise HieraVideoError(f"{what} file '{path}' not found; check the path")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise HieraVideoError(f"{what} file '{path}' is not a text (UTF-8) CSV file ({e.reason})") from None
    return [(n, [f.strip() for f in fields]) for n, fields in enumerate(csv.reader(io.StringIO(text)), 1)
            if any(f.strip() for f in fields)]


def _num(value: str, where: str, what: str, kind=float):
    try:
        x = kind(value)
    except ValueError:
        raise HieraVideoError(f"{where}: {what} '{value}' is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(x):
        raise HieraVideoError(f"{where}: {what} '{value}' is not a finite number")
    return x


def parse_ava_row(fields: list[str], where: str, kind: str = "gt") -> AvaRow:
    """One split CSV row; ``kind``: ``gt`` (column 8 = person id), ``detections`` (column 8 = score,
    1.0 when absent, as the official reader) or ``proposals`` (action may be empty)."""
    if len(fields) not in (7, 8):
        layout = "video_id,timestamp,x1,y1,x2,y2,action_id" + (",person_id" if kind == "gt" else ",score")
        raise HieraVideoError(f"{where}: expected 7 or 8 comma-separated columns ({layout}), got {len(fields)}")
    if not fields[0]:
        raise HieraVideoError(f"{where}: empty video id")
    ts = _num(fields[1], where, "timestamp", int)
    if ts < 0:
        raise HieraVideoError(f"{where}: timestamp {ts} is negative")
    x1, y1, x2, y2 = (_num(v, where, name) for v, name in zip(fields[2:6], ("x1", "y1", "x2", "y2")))
    action = _num(fields[6], where, "action id", int) if fields[6] != "" or kind != "proposals" else None
    extra = fields[7] if len(fields) == 8 else None
    if extra == "" and kind != "gt":
        raise HieraVideoError(f"{where}: empty score column")
    person = _num(extra, where, "person id", int) if extra and kind == "gt" else None
    score = _num(extra, where, "score") if extra and kind != "gt" else 1.0
    return AvaRow(fields[0], ts, x1, y1, x2, y2, action, score, person)


def read_ava_csv(path: str | Path, kind: str = "gt") -> list[AvaRow]:
    """An AVA CSV, strictly (blank lines skipped); ``kind`` as in :func:`parse_ava_row`."""
    return [parse_ava_row(fields, f"{path}, line {n}", kind)
            for n, fields in read_lines(path, {"gt": "ground-truth"}.get(kind, kind))]


def read_exclusions(path: str | Path | None) -> set[tuple[str, int]]:
    out = set()
    for n, fields in read_lines(path, "excluded-timestamps") if path is not None else ():
        where = f"{path}, line {n}"
        if len(fields) != 2:
            raise HieraVideoError(f"{where}: expected 2 columns (video_id,timestamp), got {len(fields)}")
        if not fields[0]:
            raise HieraVideoError(f"{where}: empty video id")
        out.add((fields[0], _num(fields[1], where, "timestamp", int)))
    return out


def as_keys(exclusions) -> set[tuple[str, int]]:
    """An excluded-timestamps CSV path or keys -> a set of keys."""
    if isinstance(exclusions, (str, Path)):
        return read_exclusions(exclusions)
    return {(str(v), int(t)) for v, t in (exclusions or ())}


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}:])|([^\s{}:"#]+))')


def _tokens(text: str, path) -> list[tuple[str, str, int]]:
    """Protobuf text tokens ``(kind, value, line)``; kind in str/punct/word (comments dropped)."""
    out, pos = [], 0
    while text[pos:].strip():
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise HieraVideoError(f"{path}, line {text.count(chr(10), 0, pos) + 1}: cannot parse '{text[pos:pos + 20].strip()}'")
        if m.lastindex > 1:
            kind, value = ("str", "punct", "word")[m.lastindex - 2], m.group(m.lastindex)
            out.append((kind, value[1:-1].replace('\\"', '"') if kind == "str" else value, text.count("\n", 0, m.start(m.lastindex)) + 1))
        pos = m.end()
    return out


def read_label_map(path: str | Path) -> dict[int, str]:
    """``{id: name}`` from a ``.pbtxt``: v2.2 ``item { name id }`` blocks or the older ``label { name
    label_id label_type }`` (any block name; ``display_name`` when ``name`` is absent; other fields ignored)."""
    p = Path(path)
    if not p.is_file():
        raise HieraVideoError(f"label map '{path}' not found; pass the ava_action_list_v2.2*.pbtxt file")
    toks = _tokens(p.read_text(encoding="utf-8-sig"), path)
    out, i = {}, 0

    def expect(kind, value=None):  # kind "value": a string or word, the value of field toks[i - 2]
        nonlocal i
        if i >= len(toks):
            raise HieraVideoError(f"{path}: unexpected end of file (expected {value or kind})")
        tok = toks[i]
        if kind == "value" and tok[0] == "punct":
            raise HieraVideoError(f"{path}, line {tok[2]}: missing value for field '{toks[i - 2][1]}'")
        if kind != "value" and (tok[0] != kind or value not in (None, tok[1])):
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
            name, _, value = expect("word"), expect("punct", ":"), expect("value")
            if name[1] in fields:  # protobuf text would silently keep the last
                raise HieraVideoError(f"{path}, line {name[2]}: field '{name[1]}' appears twice in the '{block[1]}' "
                                      f"block of line {block[2]}; keep one")
            fields[name[1]] = (value[1], value[2])
        expect("punct", "}")
        where = f"{path}, line {block[2]}"
        id_field, label = fields.get("id") or fields.get("label_id"), fields.get("name") or fields.get("display_name")
        if id_field is None or label is None:
            raise HieraVideoError(f"{where}: '{block[1]}' block needs a name and an id (or label_id)")
        cid = _num(id_field[0], f"{path}, line {id_field[1]}", "id", int)
        if cid in out:
            raise HieraVideoError(f"{where}: class id {cid} appears twice")
        out[cid] = label[0]
    if not out:
        raise HieraVideoError(f"{path}: no 'item {{ name: ... id: ... }}' entries found")
    return out


def resolve_label_map(label_map) -> dict[int, str]:
    """``{id: name}``, a ``.pbtxt``/``.txt`` path, None or ``"ava"`` (the built-in 60 classes) -> ``{id: name}``."""
    if isinstance(label_map, Mapping):
        return {int(k): str(v) for k, v in label_map.items()}
    if label_map is None or label_map == "ava":
        return load_label_map("ava")
    return _txt_label_map(label_map) if Path(label_map).suffix.lower() == ".txt" else read_label_map(Path(label_map))


def _txt_label_map(path) -> dict[int, str]:
    """``id: name`` lines, or names numbered from 1 (AVA ids are 1-based); names-only is refused when a
    name is an AVA class of another id (a subset such as the 60 evaluated classes: every id would be off)."""
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
                f"or pass the official {LABEL_MAP_NAME}")
    return m


def write_detections_csv(path: str | Path, rows: Iterable) -> Path:
    """Detections in the official format, atomically: ``video_id,timestamp(%04d),x1,y1,x2,y2,action_id,score``
    from :class:`AvaRow` or 8-sequences."""
    atomic_write_text(path, "".join(f"{v},{int(t):04d},{x1:.4f},{y1:.4f},{x2:.4f},{y2:.4f},{int(a)},{float(s):.6f}\n"
                                    for v, t, x1, y1, x2, y2, a, s in (tuple(r)[:8] for r in rows)))
    return Path(path)


def read_ground_truth(path: str | Path, what: str = "ground-truth", check_ids: bool = False) -> list[AvaRow]:
    """GT rows whose boxes must be normalised (1% slack: pixel boxes would match nothing, mAP 0);
    ``check_ids``: action ids must be AVA ids 1..80."""
    rows = []
    for n, fields in read_lines(path, what):
        where = f"{path}, line {n}"
        row = parse_ava_row(fields, where, "gt")
        if check_ids and not 1 <= row.action_id <= NUM_ACTIONS:
            raise HieraVideoError(f"{where}: action id {row.action_id} is outside the AVA ids 1..{NUM_ACTIONS}")
        if not all(-0.01 <= v <= 1.01 for v in row.box):
            raise HieraVideoError(f"{where}: box {row.box} is not normalised to [0, 1]: AVA boxes are fractions of the "
                                  "frame width and height (pixel coordinates? columns shifted?)")
        rows.append(row)
    return rows


def read_ava_annotations(path: str | Path) -> list[AvaRow]:  # training GT: action ids checked too
    return read_ground_truth(path, "AVA annotations", check_ids=True)


def read_proposals_csv(path: str | Path) -> Proposals:
    """SlowFast person-box CSV -> ``{key: [(box, score)]}`` (file order; a repeated box keeps its best score)."""
    out: dict[Key, dict] = defaultdict(dict)
    for n, fields in read_lines(path, "proposals"):
        row = parse_ava_row(fields, f"{path}, line {n}", "proposals")
        out[row.key][row.box] = max(row.score, out[row.key].get(row.box, -math.inf))
    return {k: list(v.items()) for k, v in out.items()}


def load_proposals_pickle(path: str | Path, allow_pickle: bool = False) -> Proposals:
    """mmaction2 proposals pickle ``{"video_id,%04d": [N, 4|5]}`` (score 1.0 without a fifth column);
    refused unless ``allow_pickle`` (and a warning even then)."""
    path = Path(path)
    if not allow_pickle:
        raise HieraVideoError(
            f"refusing to unpickle '{path}': loading a pickle can run arbitrary code. If you trust the "
            "file, pass allow_pickle=True (CLI: --allow-pickle), or convert it once to a CSV with "
            "convert_proposals_pickle(pkl, out_csv, allow_pickle=True) and use the CSV")
    if not path.is_file():
        raise HieraVideoError(f"proposals file '{path}' not found; check the path")
    warnings.warn(f"unpickling '{path}': a pickle can run arbitrary code, only load files you trust", UserWarning, stacklevel=2)
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
        if not vid or not re.fullmatch(r"\s*[+-]?\d+\s*", ts):
            raise HieraVideoError(f"proposals pickle '{path}': key {k!r} is not 'video_id,timestamp'")
        arr = np.asarray(v, dtype=np.float64)
        if arr.size and (arr.ndim != 2 or arr.shape[1] not in (4, 5) or not np.isfinite(arr).all()):
            raise HieraVideoError(f"proposals pickle '{path}': entry {k!r} must be a finite [N, 4] or [N, 5] array, got shape {arr.shape}")
        scores = arr[:, 4] if arr.size and arr.shape[1] == 5 else np.ones(len(arr))
        out[(vid, int(ts))] = [(tuple(float(x) for x in b[:4]), float(s)) for b, s in zip(arr, scores)] if arr.size else []
    return out


def convert_proposals_pickle(pkl: str | Path, out_csv: str | Path, allow_pickle: bool = False) -> int:
    """An mmaction2 proposals pickle as a SlowFast CSV (same opt-in); returns the number of rows."""
    lines = [f"{vid},{ts:04d},{x1:.6f},{y1:.6f},{x2:.6f},{y2:.6f},,{s:.6f}\n"
             for (vid, ts), boxes in sorted(load_proposals_pickle(pkl, allow_pickle=allow_pickle).items())
             for (x1, y1, x2, y2), s in boxes]
    atomic_write_text(out_csv, "".join(lines))
    return len(lines)


def load_proposals(source, allow_pickle: bool = False) -> Proposals:
    """Proposals from a SlowFast CSV, an mmaction2 pickle (opt-in; found by suffix or content) or a dict."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    is_pickle = path.suffix.lower() in (".pkl", ".pickle")
    if not is_pickle and path.is_file():
        with open(path, "rb") as f:
            is_pickle = f.read(1) == b"\x80"  # pickle protocol >= 2 header
    return load_proposals_pickle(path, allow_pickle) if is_pickle else read_proposals_csv(path)


def default_names(split: str) -> dict[str, str]:
    return {"annotations": f"ava_{split}_v2.2.csv", "exclusions": f"ava_{split}_excluded_timestamps_v2.2.csv",
            "proposals": f"ava_{split}_predicted_boxes.csv"}  # SlowFast's name for detector boxes


def find_ava_file(root: Path, given: str | Path | None, default_name: str | None) -> Path | None:
    """``given`` (as is or under ``root``; an error when missing), else ``default_name`` under
    ``root/annotations`` or ``root``; None when nothing is there."""
    if given:
        p = Path(given).expanduser()
        for candidate in (p, root / p):
            if candidate.is_file():
                return candidate
        raise HieraVideoError(f"AVA file '{given}' not found (also looked under '{root}'); check the path")
    return find_list_file(root, [f"annotations/{default_name}", default_name])[0] if default_name else None
