"""Class-name files and their loader.

Built-in sets (files in this folder): ``kinetics400``, ``kinetics600``, ``kinetics700``
(alphabetical = the official class index order), ``ssv2`` (174 templates, alphabetical),
``ava`` (the 60 evaluated AVA v2.2 classes, ``id: name``), and ``imagenet1k`` (from
torchvision's metadata).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from hiera_video.errors import HieraVideoError

BUILTIN = {"kinetics400": "kinetics400.txt", "kinetics600": "kinetics600.txt", "kinetics700": "kinetics700.txt",
           "ssv2": "ssv2.txt", "ava": "ava_v2.2_60.txt"}
_ID_LINE = re.compile(r"^\s*(\d+)\s*:\s*(.+?)\s*$")


def load_label_map(source: str | Path) -> dict[int, str]:
    """Class index -> name. ``source`` is a built-in name or a file:

    * ``.txt``: one name per line (line order = index), or ``id: name`` lines;
    * ``.json``: a list of names, ``{"name": index}`` (SSv2 / SlowFast style) or ``{"index": "name"}``.
    """
    src = str(source)
    if src == "imagenet1k":
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        return dict(enumerate(_IMAGENET_CATEGORIES))
    if src in BUILTIN:
        text = resources.files(__name__).joinpath(BUILTIN[src]).read_text()
        return _parse_txt(text, f"built-in labels '{src}'")
    path = Path(src)
    if not path.is_file():
        raise HieraVideoError(
            f"labels file '{src}' not found; pass a .txt (one class per line) or .json file, "
            f"or a built-in set: {', '.join(sorted([*BUILTIN, 'imagenet1k']))}"
        )
    text = path.read_text(encoding="utf-8-sig", errors="replace")  # a byte-order mark is not part of the first name
    if path.suffix.lower() == ".json":
        return _parse_json(text, path)
    return _parse_txt(text, str(path))


def load_labels(source: str | Path) -> list[str]:
    """Class names in index order (indices must be 0..N-1 without gaps)."""
    m = load_label_map(source)
    if sorted(m) != list(range(len(m))):
        raise HieraVideoError(f"labels '{source}' do not cover indices 0..{len(m) - 1} without gaps (ids are {min(m)}..{max(m)})")
    return [m[i] for i in range(len(m))]


def _parse_txt(text: str, where: str) -> dict[int, str]:
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
    return {i: ln.strip() for i, (_, ln) in enumerate(lines)}


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
