"""The feature store of ``extract``: one file per video plus an index, written so that a
killed run never leaves a half file under a final name and a rerun knows what is complete.

- :class:`FeatureWriter` streams ``[N, ...]`` features batch by batch (bounded memory) into a
  temporary ``.NAME.*.tmp`` (``.npy``, or ``.safetensors`` with metadata) in the destination
  folder and renames it into place when complete; :func:`read_features` reads a file back and
  :func:`stored_shape` says whether a file is complete.
- Before the rename, the video's index rows are appended (and fsynced) to the journal
  ``index.rank{R}.jsonl`` (:class:`IndexJournal`), so a final file always has its rows
  somewhere. :func:`read_index_rows` reads ``index.jsonl`` and any journals a killed run left;
  :func:`write_index` merges them into ``index.jsonl`` and removes the journals.
"""

from __future__ import annotations

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
#: errnos of a failed write that stop ``extract`` (one line, exit 2) instead of failing one video.
STOP_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EIO") if hasattr(errno, n))
_SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64"}


def remove_stale_temps(final: Path) -> None:
    """Delete temporaries of ``final`` left by a killed run."""
    for p in glob.glob(os.path.join(glob.escape(str(final.parent)), glob.escape(f".{final.name}.") + "*.tmp")):
        try:
            os.remove(p)
        except OSError:
            pass


class FeatureWriter:
    """Write ``[N, *item]`` features item batch by item batch into a temporary file, then
    rename it into place (:meth:`commit`). Memory stays bounded by one batch."""

    def __init__(self, final: Path, fmt: str, n: int, dtype, metadata: dict | None = None, extra: dict | None = None):
        self.final, self.fmt, self.n, self.dtype = Path(final), fmt, n, np.dtype(dtype)
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        self.extra = {k: np.ascontiguousarray(v) for k, v in (extra or {}).items()}  # small tensors (safetensors)
        self.shape: tuple[int, ...] | None = None
        self.done = 0
        self._f = None
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.final)
            fd, tmp = tempfile.mkstemp(dir=self.final.parent, prefix=f".{self.final.name}.", suffix=".tmp")
        except OSError as e:
            raise self._failed(e) from e
        os.close(fd)
        self.tmp = Path(tmp)

    def write(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=self.dtype)
        if self.shape is None:
            self.shape = (self.n, *batch.shape[1:])
            self._open()
        if batch.shape[1:] != self.shape[1:] or self.done + len(batch) > self.n:
            raise HieraVideoError(f"internal: feature batch {batch.shape} does not fit file shape {self.shape}")
        try:
            self._f.write(batch.tobytes())
        except OSError as e:
            raise self._failed(e) from e
        self.done += len(batch)

    def _failed(self, e: OSError) -> OSError:
        """A failed write as raised to the caller: on a full disk, a quota or a file system
        gone read-only or failing (:data:`STOP_ERRNOS`) an
        :class:`~hiera_video.errors.OutputError` naming the file (every further video would
        fail the same way, so ``extract`` stops with this one line); other errors as they are."""
        if isinstance(e, OutputError) or e.errno not in STOP_ERRNOS:
            return e
        return OutputError(f"cannot write '{self.final}': {e.strerror or e}", e)

    def _open(self) -> None:
        try:
            self._f = open(self.tmp, "wb")
            if self.fmt == "npy":
                # Ordinary writes, never a memory map: a write through a map on a full disk is a
                # SIGBUS that kills the process without a word (and leaves the temporary file).
                np.lib.format.write_array_header_1_0(
                    self._f, dict(descr=np.lib.format.dtype_to_descr(self.dtype), fortran_order=False, shape=self.shape))
            else:
                self._write_safetensors_header()
        except OSError as e:
            raise self._failed(e) from e

    def _write_safetensors_header(self) -> None:
        # safetensors: 8-byte little-endian header length, JSON header (padded to 8 bytes),
        # then the raw tensors back to back in header order.
        header: dict = {}
        offset = 0
        tensors = [("features", self.dtype, self.shape, int(np.prod(self.shape)) * self.dtype.itemsize)]
        tensors += [(name, arr.dtype, arr.shape, arr.nbytes) for name, arr in self.extra.items()]
        for name, dtype, shape, nbytes in tensors:
            header[name] = dict(dtype=_SAFETENSORS_DTYPES[dtype], shape=list(shape), data_offsets=[offset, offset + nbytes])
            offset += nbytes
        header["__metadata__"] = self.metadata
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._f.write(struct.pack("<Q", len(raw)))
        self._f.write(raw)

    def commit(self, before_rename: Callable[[], None] | None = None) -> None:
        if self.shape is None or self.done != self.n:
            raise HieraVideoError(f"internal: wrote {self.done} of {self.n} feature items for {self.final}")
        try:
            if self.fmt != "npy":
                for arr in self.extra.values():
                    self._f.write(arr.tobytes())
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
        except OSError as e:
            raise self._failed(e) from e
        if before_rename is not None:
            before_rename()
        try:
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.final)
        except OSError as e:
            raise self._failed(e) from e

    def abort(self) -> None:
        """Close and remove the temporary file (after a failure: a full disk included)."""
        if self._f is not None:
            try:
                self._f.close()  # flushes what is buffered: fails again on a full disk
            except OSError:
                pass
            self._f = None
        Path(self.tmp).unlink(missing_ok=True)


def read_features(path: str | Path) -> tuple[np.ndarray, dict]:
    """``(features [N, ...], metadata)`` of a file written by ``extract``. ``metadata`` is
    empty for ``.npy`` (see ``index.jsonl``); for ``.safetensors`` it holds the settings and
    ``index`` (the file's index rows), plus ``windows`` ``[N, 2]`` seconds in windows mode."""
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
            try:
                meta[k] = json.loads(meta[k])
            except ValueError:
                pass
    if "windows" in tensors:
        meta["windows"] = tensors["windows"]
    return tensors["features"], meta


def stored_shape(path: Path) -> tuple[int, ...] | None:
    """Shape of a complete features file, or None when it is missing or does not read back."""
    try:
        if not path.is_file():
            return None
        if path.suffix == ".npy":
            return tuple(np.load(path, mmap_mode="r").shape)  # checks the header and that the data is all there
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            if "features" not in f.keys():
                return None
            shape = tuple(f.get_slice("features").get_shape())
        (hlen,) = struct.unpack("<Q", path.open("rb").read(8))
        header = json.loads(path.open("rb").read(8 + hlen)[8:])
        end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
        return shape if path.stat().st_size >= 8 + hlen + end else None
    except Exception:  # truncated, foreign or unreadable: redo it
        return None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        text = path.read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line.strip())
        except ValueError:  # a blank line, or one cut by a killed run
            continue
        if isinstance(row, dict) and isinstance(row.get("output"), str):
            rows.append(row)
    return rows


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
    """This process's journal ``index.rank{R}.jsonl`` in ``out_dir``, appended to."""

    def __init__(self, out_dir: Path, rank: int):
        self._f = open(Path(out_dir) / JOURNAL.format(rank=rank), "a")

    def append(self, rows: list[dict], sync: bool = False) -> None:
        try:
            self._f.write("".join(json_text(r) + "\n" for r in rows))
            self._f.flush()
            if sync:
                os.fsync(self._f.fileno())
        except OSError as e:
            if e.errno in STOP_ERRNOS:
                raise OutputError(f"cannot write '{self._f.name}': {e.strerror or e}", e) from e
            raise

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:  # what is left in the buffer on a full disk: the rows of a file never renamed into place
            pass


def write_index(out_dir: Path, written: Sequence[tuple[str, list[dict]]], keep_previous: bool = True) -> Path:
    """``index.jsonl`` = earlier rows (``keep_previous``) of files not written now, if still
    there, + the rows of ``written`` (``(output, rows)`` per file written now) in order; the
    journals are removed."""
    old = read_index_rows(out_dir) if keep_previous else {}
    now = {out for out, _ in written}
    rows = []
    for out, rs in old.items():
        if out not in now and (out_dir / out).is_file():
            rows += rs
    for _, rs in written:
        rows += rs
    path = out_dir / INDEX
    atomic_write_text(path, "".join(json_text(r) + "\n" for r in rows))  # strict JSON (null, not NaN)
    for j in _journals(out_dir):
        j.unlink(missing_ok=True)
    return path
