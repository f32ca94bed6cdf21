"""Class-name files: built-in ``kinetics400/600/700``, ``ssv2`` (official index order), ``ava`` (the 60 evaluated
v2.2 classes, ``id: name``), ``imagenet1k`` (torchvision)."""

from __future__ import annotations

import json
import os
import re
import stat
from importlib import resources
from pathlib import Path

from hiera_video.errors import HieraVideoError

BUILTIN = {"kinetics400": "kinetics400.txt", "kinetics600": "kinetics600.txt", "kinetics700": "kinetics700.txt",
           "ssv2": "ssv2.txt", "ava": "ava_v2.2_60.txt"}
_ID_LINE = re.compile(r"^\s*(\d+)\s*:\s*(.+?)\s*$")


def load_label_map(source: str | Path, first_id: int = 0) -> dict[int, str]:
    """Class index -> name from a built-in name, a ``.txt`` (a name per line from ``first_id``, or ``id: name``
    lines) or a ``.json`` (a list of names, ``{name: index}`` or ``{index: name}``)."""
    src = str(source)
    if src == "imagenet1k":
        from torchvision.models._meta import _IMAGENET_CATEGORIES
        return dict(enumerate(_IMAGENET_CATEGORIES))
    if src in BUILTIN:
        return _parse_txt(resources.files(__name__).joinpath(BUILTIN[src]).read_text(), f"built-in labels '{src}'",
                          first_id)
    path = Path(src)
    text = _read_labels_file(path, src)
    return _parse_json(text, path) if path.suffix.lower() == ".json" else _parse_txt(text, str(path), first_id)


_STREAMED: dict[str, str] = {}  # text read from pipes/devices (``--labels <(...)`` can be read once), by path
STREAM_LIMIT = 64 << 20  # bytes read from a pipe or device at most (``/dev/zero`` never ends)


def _read_labels_file(path: Path, src: str) -> str:
    """A regular file's text, or a pipe's or character device's (read once)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise HieraVideoError(f"labels file '{src}' not found; pass a .txt (one class per line) or .json file, "
                              f"or a built-in set: {', '.join(sorted([*BUILTIN, 'imagenet1k']))}") from None
    except OSError as e:
        raise HieraVideoError(f"cannot read labels file '{src}': {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise HieraVideoError(f"labels '{src}' is a directory; pass a .txt (one class per line) or .json file in it")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        kind = "a socket" if stat.S_ISSOCK(mode) else "a block device" if stat.S_ISBLK(mode) else "not a regular file"
        raise HieraVideoError(f"labels '{src}' is {kind}; pass a .txt (one class per line) or .json file")
    streamed, key = not stat.S_ISREG(mode), os.path.abspath(src)
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
    text = data.decode("utf-8-sig", errors="replace")
    return _STREAMED.setdefault(key, text) if streamed else text


def load_labels(source: str | Path) -> list[str]:
    """Class names in index order."""
    m = load_label_map(source)
    if sorted(m) != list(range(len(m))):
        raise HieraVideoError(f"labels '{source}' do not cover indices 0..{len(m) - 1} without gaps (ids are {min(m)}..{max(m)})")
    return [m[i] for i in range(len(m))]


def _parse_txt(text: str, where: str, first_id: int = 0) -> dict[int, str]:
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise HieraVideoError(f"{where}: no class names found (expected one name per line)")
    with_ids = [_ID_LINE.match(ln) for _, ln in lines]
    if not all(with_ids):
        return {i: ln.strip() for i, (_, ln) in enumerate(lines, first_id)}
    out: dict[int, str] = {}
    for (n, _), m in zip(lines, with_ids):
        if int(m.group(1)) in out:
            raise HieraVideoError(f"{where}, line {n}: class id {int(m.group(1))} appears twice")
        out[int(m.group(1))] = m.group(2)
    return out


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
        except (TypeError, ValueError):  # e.g. "²".isdigit()
            pass
    raise HieraVideoError(f"{path}: expected a JSON list of names, {{name: index}} or {{index: name}}")
