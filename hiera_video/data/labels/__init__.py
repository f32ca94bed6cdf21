"""Class-name files and their loader.

Built-in sets (files in this folder): ``kinetics400``, ``kinetics600``, ``kinetics700``
(alphabetical = the official class index order), ``ssv2`` (174 templates, alphabetical),
``ava`` (the 60 evaluated AVA v2.2 classes, ``id: name``), and ``imagenet1k`` (from
torchvision's metadata).
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path

from hiera_video.errors import HieraVideoError

BUILTIN = {"kinetics400": "kinetics400.txt", "kinetics600": "kinetics600.txt", "kinetics700": "kinetics700.txt",
           "ssv2": "ssv2.txt", "ava": "ava_v2.2_60.txt"}
_ID_LINE = re.compile(r"^\s*(\d+)\s*:\s*(.+?)\s*$")


def load_label_map(source: str | Path, first_id: int = 0) -> dict[int, str]:
    """Class index -> name. ``source`` is a built-in name or a file:

    * ``.txt``: one name per line (line order = index, the first ``first_id``: 0 for
      classifiers, 1 for AVA's 1-based action ids), or ``id: name`` lines;
    * ``.json``: a list of names, ``{"name": index}`` (SSv2 / SlowFast style) or ``{"index": "name"}``.
    """
    src = str(source)
    if src == "imagenet1k":
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        return dict(enumerate(_IMAGENET_CATEGORIES))
    if src in BUILTIN:
        text = resources.files(__name__).joinpath(BUILTIN[src]).read_text()
        return _parse_txt(text, f"built-in labels '{src}'", first_id)
    path = Path(src)
    text = _read_labels_file(path, src)
    if path.suffix.lower() == ".json":
        return _parse_json(text, path)
    return _parse_txt(text, str(path), first_id)


#: What was read from pipes and character devices (``--labels <(...)`` is ``/dev/fd/63``, a
#: FIFO that can be read once), by path, so a command that reads its labels twice gets them twice.
_STREAMED: dict[str, str] = {}
STREAM_LIMIT = 64 << 20  # bytes read from a pipe or device at most (``/dev/zero`` never ends)


def _read_labels_file(path: Path, src: str) -> str:
    """The text of a labels file: a regular file, or a named pipe / character device such as a
    shell's process substitution (read once, to its end, at most :data:`STREAM_LIMIT` bytes).
    Anything else is a one-line error saying what the path is."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise HieraVideoError(
            f"labels file '{src}' not found; pass a .txt (one class per line) or .json file, "
            f"or a built-in set: {', '.join(sorted([*BUILTIN, 'imagenet1k']))}"
        ) from None
    except OSError as e:
        raise HieraVideoError(f"cannot read labels file '{src}': {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise HieraVideoError(f"labels '{src}' is a directory; pass a .txt (one class per line) or .json file in it")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        kind = "a socket" if stat.S_ISSOCK(mode) else "a block device" if stat.S_ISBLK(mode) else "not a regular file"
        raise HieraVideoError(f"labels '{src}' is {kind}; pass a .txt (one class per line) or .json file")
    streamed = not stat.S_ISREG(mode)
    key = os.path.abspath(src)
    if streamed and key in _STREAMED:
        return _STREAMED[key]
    try:
        with open(path, "rb") as f:
            data = f.read(STREAM_LIMIT + 1) if streamed else f.read()
    except OSError as e:
        raise HieraVideoError(f"cannot read labels file '{src}': {e.strerror or e}") from None
    if streamed and len(data) > STREAM_LIMIT:
        raise HieraVideoError(f"labels '{src}' is a pipe or device giving more than {STREAM_LIMIT >> 20} MiB; "
                              "pass a labels file (one class per line)")
    text = data.decode("utf-8-sig", errors="replace")  # a byte-order mark is not part of the first name
    if streamed:
        _STREAMED[key] = text
    return text


def load_labels(source: str | Path) -> list[str]:
    """Class names in index order (indices must be 0..N-1 without gaps)."""
    m = load_label_map(source)
    if sorted(m) != list(range(len(m))):
        raise HieraVideoError(f"labels '{source}' do not cover indices 0..{len(m) - 1} without gaps (ids are {min(m)}..{max(m)})")
    return [m[i] for i in range(len(m))]


def _parse_txt(text: str, where: str, first_id: int = 0) -> dict[int, str]:
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise HieraVideoError(f"{where}: no class names found (expected one name per line)")
    with_ids = [_ID_LINE.match(ln) for _, ln in lines]
    if all(with_ids):
        out: dict[int, str] = {}
        for (n, _), m in zip(lines, with_ids):
            i = int(m.group(1))
            if i in out:
                raise HieraVideoError(f"{where}, line {n}: class id {i} appears twice")
            out[i] = m.group(2)
        return out
    return {i: ln.strip() for i, (_, ln) in enumerate(lines, first_id)}


def _parse_json(text: str, path: Path) -> dict[int, str]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise HieraVideoError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(obj, list) and all(isinstance(x, str) for x in obj):
        return dict(enumerate(obj))
    if isinstance(obj, dict):
        try:
            if all(str(v).lstrip("-").isdigit() for v in obj.values()):
                return {int(v): str(k) for k, v in obj.items()}
            if all(str(k).isdigit() for k in obj):
                return {int(k): str(v) for k, v in obj.items()}
        except (TypeError, ValueError):
            pass
    raise HieraVideoError(f"{path}: expected a JSON list of names, {{name: index}} or {{index: name}}")
