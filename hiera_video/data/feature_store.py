"""``extract``'s feature store: one ``.npy``/``.safetensors`` file per video (a temp file renamed into place) and
``index.jsonl``; rows go (fsynced) to ``index.rank{R}.jsonl`` before the rename, so no file lacks its rows."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hiera_video.errors import HieraVideoError, OutputError
from hiera_video.report import atomic_write_text, json_text

FORMATS = ("npy", "safetensors")
STORE_DTYPES = {"float32": np.float32, "float16": np.float16}
INDEX = "index.jsonl"
JOURNAL = "index.rank{rank}.jsonl"
STOP_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EIO") if hasattr(errno, n))
_SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64"}


@contextlib.contextmanager
def _io(name):
    """Raises :data:`STOP_ERRNOS` (full disk, read-only: extract stops) as an OutputError naming the file."""
    try:
        yield
    except OSError as e:
        if isinstance(e, OutputError) or e.errno not in STOP_ERRNOS:
            raise
        raise OutputError(f"cannot write '{name}': {e.strerror or e}", e) from e


class FeatureWriter:
    """Write ``[N, *item]`` features batch by batch into a temporary file; :meth:`commit` renames it into place."""

    def __init__(self, final: Path, fmt: str, n: int, dtype, metadata: dict | None = None, extra: dict | None = None):
        self.final = final = Path(final)
        self.fmt, self.n, self.dtype, self.shape, self.done, self._f = fmt, n, np.dtype(dtype), None, 0, None
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        self.extra = {k: np.ascontiguousarray(v) for k, v in (extra or {}).items()}  # small tensors (safetensors)
        with _io(self.final):
            self.final.parent.mkdir(parents=True, exist_ok=True)
            for p in glob.glob(os.path.join(glob.escape(str(final.parent)), glob.escape(f".{final.name}.") + "*.tmp")):
                with contextlib.suppress(OSError):
                    os.remove(p)
            fd, tmp = tempfile.mkstemp(dir=self.final.parent, prefix=f".{self.final.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)

    def write(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=self.dtype)
        if self.shape is None:
            self.shape = (self.n, *batch.shape[1:])
            self._open()
        if batch.shape[1:] != self.shape[1:] or self.done + len(batch) > self.n:
            raise HieraVideoError(f"internal: feature batch {batch.shape} does not fit file shape {self.shape}")
        with _io(self.final):
            self._f.write(batch.tobytes())
        self.done += len(batch)

    def _open(self) -> None:
        with _io(self.final):
            self._f = open(self.tmp, "wb")
            if self.fmt == "npy":
                # never a memory map: writing through one on a full disk is a silent SIGBUS
                np.lib.format.write_array_header_1_0(
                    self._f, dict(descr=np.lib.format.dtype_to_descr(self.dtype), fortran_order=False, shape=self.shape))
                return
            # safetensors: 8-byte little-endian length, JSON header (padded to 8 bytes), tensors in header order
            header, offset = {}, 0
            tensors = [("features", self.dtype, self.shape, int(np.prod(self.shape)) * self.dtype.itemsize)]
            tensors += [(name, arr.dtype, arr.shape, arr.nbytes) for name, arr in self.extra.items()]
            for name, dtype, shape, nbytes in tensors:
                header[name] = dict(dtype=_SAFETENSORS_DTYPES[dtype], shape=list(shape),
                                    data_offsets=[offset, offset + nbytes])
                offset += nbytes
            header["__metadata__"] = self.metadata
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            self._f.write(struct.pack("<Q", len(raw)) + raw)

    def commit(self, before_rename: Callable[[], None] | None = None) -> None:
        if self.shape is None or self.done != self.n:
            raise HieraVideoError(f"internal: wrote {self.done} of {self.n} feature items for {self.final}")
        with _io(self.final):
            if self.fmt != "npy":
                for arr in self.extra.values():
                    self._f.write(arr.tobytes())
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        self._f = None
        if before_rename is not None:
            before_rename()
        with _io(self.final):
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.final)

    def abort(self) -> None:
        if self._f is not None:
            with contextlib.suppress(OSError):  # fails again on a full disk
                self._f.close()
            self._f = None
        Path(self.tmp).unlink(missing_ok=True)


def read_features(path: str | Path) -> tuple[np.ndarray, dict]:
    """``(features [N, ...], metadata)``; metadata: empty for ``.npy``, else settings, ``index`` rows, ``windows``."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path), {}
    from safetensors.numpy import load_file
    from safetensors import safe_open
    tensors = load_file(str(path))
    with safe_open(str(path), "np") as f:
        meta = dict(f.metadata() or {})
    for k in ("index", "views", "protocol", "feature_stride", "item_shape"):
        if k in meta:
            with contextlib.suppress(ValueError):
                meta[k] = json.loads(meta[k])
    if "windows" in tensors:
        meta["windows"] = tensors["windows"]
    return tensors["features"], meta


def stored_shape(path: Path) -> tuple[int, ...] | None:
    """Shape of a complete features file, else None."""
    try:
        if not path.is_file():
            return None
        if path.suffix == ".npy":
            return tuple(np.load(path, mmap_mode="r").shape)  # checks that the data is all there
        from safetensors import safe_open
        with safe_open(str(path), "np") as f:
            if "features" not in f.keys():
                return None
            shape = tuple(f.get_slice("features").get_shape())
        (hlen,) = struct.unpack("<Q", path.open("rb").read(8))
        header = json.loads(path.open("rb").read(8 + hlen)[8:])
        end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
        return shape if path.stat().st_size >= 8 + hlen + end else None
    except Exception:
        return None


def _read_jsonl(path: Path) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        with contextlib.suppress(ValueError):  # blank, or cut by a killed run
            rows.append(json.loads(line.strip()))
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("output"), str)]


def read_index_rows(out_dir: Path) -> dict[str, list[dict]]:
    """Rows per output file from ``index.jsonl`` and any journals a killed run left."""
    by_output: dict[str, list[dict]] = {}
    for src in [out_dir / INDEX] + _journals(out_dir):
        fresh: dict[str, list[dict]] = {}
        for row in _read_jsonl(src):
            fresh.setdefault(row["output"], []).append(row)
        by_output.update(fresh)  # later sources win, as a whole per file
    return by_output


def _journals(out_dir: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(os.path.join(glob.escape(str(out_dir)), JOURNAL.format(rank="*"))))


class IndexJournal:
    def __init__(self, out_dir: Path, rank: int):
        self._f = open(Path(out_dir) / JOURNAL.format(rank=rank), "a")

    def append(self, rows: list[dict], sync: bool = False) -> None:
        with _io(self._f.name):
            self._f.write("".join(json_text(r) + "\n" for r in rows))
            self._f.flush()
            if sync:
                os.fsync(self._f.fileno())

    def close(self) -> None:
        with contextlib.suppress(OSError):  # full disk: the rows of a file never renamed into place
            self._f.close()


def write_index(out_dir: Path, written: Sequence[tuple[str, list[dict]]], keep_previous: bool = True) -> Path:
    """``index.jsonl`` = earlier rows of files still there and not written now, then ``written``; journals removed."""
    old = read_index_rows(out_dir) if keep_previous else {}
    now = {out for out, _ in written}
    rows = [r for out, rs in old.items() if out not in now and (out_dir / out).is_file() for r in rs]
    rows += [r for _, rs in written for r in rs]
    path = out_dir / INDEX
    atomic_write_text(path, "".join(json_text(r) + "\n" for r in rows))  # strict JSON (null, not NaN)
    for j in _journals(out_dir):
        j.unlink(missing_ok=True)
    return path
