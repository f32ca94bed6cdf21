"""``extract``: features of videos, one file per video (``OUT/<relative path>.<ext>.{npy,safetensors}``), resumable.

Clips ``[N, 3, T, S, S]`` (N views, or one per window) -> ``pooled`` ``[N, C]`` or ``stageK`` ``[N, T/2, S/2^(K+1),
S/2^(K+1), C_K]`` (channels last, as ``forward_intermediates``). Files are complete or absent (feature store); a rerun
skips finished videos; ``extract.json`` records the settings (other settings are refused) and the folder the
output names are relative to (``names_relative_to``; ``a/clip.mp4`` -> ``a/clip.mp4.npy``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from hiera_video.data import ClipSpec, make_views, open_video
from hiera_video.data.feature_store import (FORMATS, INDEX, STORE_DTYPES, FeatureWriter, IndexJournal, read_index_rows,
                                              stored_shape, write_index)
from hiera_video.engine import distributed
from hiera_video.engine.inference import Classifier, classifier_on, run_model
from hiera_video.engine.output_lock import flock
from hiera_video.data.pool import decode_in_order
from hiera_video.jobs.predict import decode_windows
from hiera_video.engine.shard_files import guard, open_shard_files, weights_fingerprint
from hiera_video import limits
from hiera_video.errors import HieraVideoError, OutputError
from hiera_video.models.load import load
from hiera_video.report import atomic_write_text, json_text

LEVELS = ("pooled", "stage1", "stage2", "stage3", "stage4")
SETTINGS = "extract.json"
NAMES_BASE = "names_relative_to"  # extract.json: the folder every output name in OUT is relative to
_SETTING_KEYS = ("model", "weights", "weights_sha256", "level", "format", "store_dtype", "compute_dtype", "mode", "views",
                 "window", "stride", "protocol")
_NEWER_KEYS = ("weights_sha256", "compute_dtype")  # compared only when extract.json has them (older folders lack them)


def load_feature_model(model: str | None = None, weights: str | None = None, device: str = "auto", dtype: str = "auto",
                       allow_random_weights: bool = False) -> Classifier:
    """A classifier for features (no trained head needed); MAE weights load their encoder into the
    matching ``hiera_*`` (final norm = identity affine, so ``pooled`` is the plain LayerNorm)."""
    return classifier_on(*load("features", model, weights, allow_random=allow_random_weights), device, dtype)


def stage_map(model, x: torch.Tensor, stage: int) -> torch.Tensor:
    """``[B, T', H', W', C]`` of stage ``stage`` (1-based): ``forward_intermediates(x)[stage - 1]``,
    running only the blocks up to it."""
    ends = model.stage_ends
    if not 1 <= stage <= len(ends):
        raise HieraVideoError(f"the model has stages 1..{len(ends)}, not {stage}")
    tokens, n_units = model.embed_tokens(x, None)
    for blk in model.blocks[: ends[stage - 1] + 1]:
        tokens = blk(tokens, n_units)
    return model.reroll(tokens, ends[stage - 1], n_units, model.mask_grid(x))


def features(model, x: torch.Tensor, level: str) -> torch.Tensor:
    """``x: [B, 3, T, H, W]`` -> ``[B, C]`` (pooled) or ``[B, T', H', W', C]`` (stageK)."""
    if level == "pooled":
        return model.forward_head(model.forward_features(x), pre_logits=True)
    if level not in LEVELS:
        raise HieraVideoError(f"unknown level '{level}'; use one of {', '.join(LEVELS)}")
    return stage_map(model, x, int(level[len("stage"):]))


def level_stride(model, level: str) -> list[int] | None:
    """``[temporal, spatial, spatial]`` stride of a stage map in input frames/pixels (None for pooled)."""
    info = None if level == "pooled" else model.feature_info[int(level[len("stage"):]) - 1]
    return None if info is None else [info["temporal_stride"], info["spatial_stride"], info["spatial_stride"]]


@dataclass
class Job:
    """One video: its path, output path relative to OUT, extra index fields (dataset id, label)."""

    path: str
    output: str
    extra: dict = field(default_factory=dict)
    base: str = ""  # the absolute folder ``output`` is relative to ("" unknown)


def common_base(paths: Sequence[str]) -> str:
    """The deepest folder holding every path (the folder of the file for a single path)."""
    try:
        return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else os.getcwd()
    except ValueError:  # different drives (Windows)
        return ""


def output_name(path: str, base: str, fmt: str) -> str:
    """``path`` relative to ``base`` plus ``.<fmt>``, a safe relative POSIX path (outside ``base``: ``_abs/...``)."""
    ap = os.path.abspath(path)
    rel = os.path.relpath(ap, base) if base else ap
    parts = [p for p in Path(rel).parts if p not in ("", ".", "..", "/", "\\") and not p.endswith(":\\")]
    if rel.startswith("..") or os.path.isabs(rel):
        parts = ["_abs"] + [p for p in Path(ap).parts[1:] if p not in ("", ".", "..")]
    if not parts:
        parts = [os.path.basename(ap) or "video"]
    parts[-1] = parts[-1] + "." + fmt
    return "/".join(parts)


def jobs_for_paths(paths: Sequence[str], fmt: str, base: str | None = None) -> list[Job]:
    """One job per distinct file (a file named twice, e.g. by itself and through its folder, once)."""
    first = {}
    for p in paths:
        first.setdefault(os.path.abspath(p), p)
    paths = list(first.values())
    base = common_base(paths) if base is None else base
    return [Job(p, output_name(p, base, fmt), base=base) for p in paths]


def jobs_for_dataset(ds, fmt: str) -> list[Job]:
    """Jobs for a :class:`~hiera_video.data.datasets.VideoDataset` (names relative to its root)."""
    paths = [str(item.path) for item in ds.items]
    root = os.path.abspath(str(ds.root))
    inside = all(not os.path.relpath(os.path.abspath(p), root).startswith("..") for p in paths)
    base = root if inside else common_base(paths)
    return [Job(p, output_name(p, base, fmt), base=base, extra=dict(
        id=item.id, label=item.label,
        label_name=ds.classes[item.label] if item.label is not None and item.label < len(ds.classes) else None))
        for item, p in zip(ds.items, paths)]


@dataclass
class Extracted:
    path: str
    ok: bool = False
    error: str | None = None
    output: str | None = None
    skipped: bool = False
    shape: list[int] | None = None
    rows: list[dict] = field(default_factory=list)
    order: int = 0
    decoder: str | None = None  # what decoded the video (None: skipped, or failed)

    def to_json(self) -> dict:
        return dict(path=self.path, ok=self.ok, error=self.error, output=self.output, skipped=self.skipped,
                    shape=self.shape, items=len(self.rows), decoder=self.decoder)


@dataclass
class Extractor:
    """Extract ``level`` features into ``out_dir``: views (``views=(T, S)`` of the whole video, one
    decode) or windows (``window`` s every ``stride`` s, one centre clip each). Built by keyword
    from the command's options; :meth:`settings` is what ``extract.json`` records."""

    clf: Classifier
    out_dir: Path
    level: str = "pooled"
    fmt: str = "npy"
    views: tuple[int, int] = (1, 1)
    window: float | None = None
    stride: float | None = None
    batch_size: int = 8
    store_dtype: str = "float32"
    backend: str = "auto"
    overwrite: bool = False
    world: distributed.World = field(default_factory=distributed.World)
    workers: int = 0  # processes decoding videos (0: in this process)
    decode_timeout: float | None = limits.DEFAULT_DECODE_TIMEOUT  # seconds per video (with workers); None/0: no limit
    decode_device: str = "cpu"  # cpu | cuda (torchcodec's NVDEC)

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise HieraVideoError(f"unknown --format '{self.fmt}'; use npy or safetensors")
        if self.store_dtype not in STORE_DTYPES:
            raise HieraVideoError(f"unknown storage dtype '{self.store_dtype}'; use {' or '.join(STORE_DTYPES)}")
        if self.window is not None:  # --window, --stride and --level are checked by the command
            self.stride, self.views = self.stride or self.window, (1, 1)
        self.out_dir = Path(self.out_dir)
        self.protocol: ClipSpec = self.clf.protocol(self.views, backend=self.backend, decode_device=self.decode_device)
        limits.check_views(self.views, self.protocol.num_frames, self.protocol.crop_size)
        self.prev: dict[str, list[dict]] = {}  # earlier runs' index rows by output name
        self._journal, self.results = None, None  # results: this process's ShardFiles under torchrun (run)

    def settings(self) -> dict:
        w = self.clf.weights
        if isinstance(w, str) and os.path.exists(os.path.expanduser(w)):
            w = os.path.abspath(os.path.expanduser(w))
        return dict(model=self.clf.name, weights=w, weights_sha256=weights_fingerprint(self.clf.model), level=self.level,
                    format=self.fmt, store_dtype=self.store_dtype, mode="windows" if self.window else "views",
                    views=list(self.views) if not self.window else None, window=self.window, stride=self.stride,
                    protocol=self.protocol.recipe(), feature_stride=level_stride(self.clf.model, self.level),
                    feature_info=self.clf.model.feature_info, compute_dtype=self.clf.describe()["dtype"], device=str(self.clf.device))

    def prepare(self, jobs: Sequence[Job] = ()) -> list[Job]:
        """Check OUT against earlier runs and read what they left (every rank), record the settings
        (rank 0), barrier. Returns ``jobs`` named as the earlier runs named theirs (OUT exists: :meth:`run` made it)."""
        mine, path, old = self.settings(), self.out_dir / SETTINGS, None
        if not self.overwrite:
            try:
                old = json.loads(path.read_text()) if path.is_file() else None
            except (ValueError, OSError):
                pass
            if not isinstance(old, dict) and read_index_rows(self.out_dir):
                state = "is unreadable" if path.is_file() else "is missing"
                raise HieraVideoError(f"{self.out_dir} holds features but its {SETTINGS} {state}, so the settings they were made "
                                      "with cannot be checked; use another --output, or --overwrite to redo every video")
            if isinstance(old, dict):
                diff = [k for k in _SETTING_KEYS if (k in old or k not in _NEWER_KEYS) and _norm(old.get(k)) != _norm(mine.get(k))]
                if diff:
                    shown = "; ".join(f"{k}: {_show(old.get(k))} -> {_show(mine.get(k))}" for k in diff[:3])
                    raise HieraVideoError(f"{self.out_dir} holds features made with other settings ({shown}); use another --output, "
                                          "or --overwrite to redo every video")
        self.prev = {} if self.overwrite else read_index_rows(self.out_dir)
        jobs, mine[NAMES_BASE] = self._same_names(list(jobs), old)
        distributed.agree(self.world)  # barriers around the write
        if self.world.is_main:
            atomic_write_text(path, json_text(mine, indent=2) + "\n")
        self._journal = IndexJournal(self.out_dir, self.world.rank)
        distributed.agree(self.world)
        return jobs

    def _same_names(self, jobs: list[Job], old: dict | None) -> tuple[list[Job], str | None]:
        """Name ``jobs`` relative to the folder the first run recorded (``names_relative_to``), refusing
        a video outside it (``extract data/train`` then ``data/val`` would otherwise collide) or a name
        the index gives another video. Returns the jobs and the folder to record (None: unknown)."""
        recorded = old.get(NAMES_BASE) if isinstance(old, dict) and isinstance(old.get(NAMES_BASE), str) else None
        mine = jobs[0].base if jobs and jobs[0].base and all(j.base == jobs[0].base for j in jobs) else None
        if recorded is None:
            recorded = mine if not self.prev else None
        elif jobs:
            for j in jobs:
                rel = os.path.relpath(os.path.abspath(j.path), recorded)
                if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
                    raise HieraVideoError(
                        f"{self.out_dir} holds features named relative to '{recorded}' (its first run's input folder), and "
                        f"'{j.path}' is outside it, so its name could be an earlier video's; use another --output, or "
                        "--overwrite to redo every video (a run given the folder above all videos names each one)")
            jobs = [dataclasses.replace(j, output=output_name(j.path, recorded, self.fmt), base=recorded) for j in jobs]
        for j in jobs:
            rows = self.prev.get(j.output)
            if rows and not any(_same_file(r.get("path"), j.path) for r in rows):
                raise HieraVideoError(f"{self.out_dir / j.output} holds the features of '{rows[0].get('path')}', not of "
                                      f"'{j.path}'; use another --output, or --overwrite to redo every video")
            if not rows and not self.overwrite and os.path.lexists(self.out_dir / j.output):
                raise HieraVideoError(f"{self.out_dir / j.output} exists but {INDEX} does not list it (extract did not write "
                                      "it); move it away, use another --output, or --overwrite to replace it")
        return jobs, recorded

    def _done_or_error(self, job: Job) -> Extracted | None:
        """The finished file of ``job`` as a skipped result, an unreadable one as an error, else None."""
        rows = self.prev.get(job.output)  # none with overwrite
        try:
            shape = stored_shape(self.out_dir / job.output) if rows else None
        except HieraVideoError as e:
            return Extracted(job.path, error=str(e))
        if shape is None or shape[0] != len(rows) or not all(_same_file(r.get("path"), job.path) for r in rows):
            return None
        return Extracted(job.path, ok=True, output=job.output, skipped=True, shape=list(shape), rows=rows)

    def _process_all(self, jobs: Sequence[Job]) -> Iterator[Extracted]:
        """One :class:`Extracted` per job, in order; a bad video (or a decode past ``decode_timeout``) fails alone."""
        done = [self._done_or_error(job) for job in jobs]
        todo = [job.path for k, job in enumerate(jobs) if done[k] is None]
        if self.window:
            stream = decode_windows(self.protocol, todo, self.window, self.stride, self.workers, self.decode_timeout, check_frames=False)
        else:
            stream = decode_in_order(todo, partial(_decode_items, protocol=self.protocol), self.workers, self.decode_timeout)
        try:
            for k, job in enumerate(jobs):
                if done[k] is not None:
                    if done[k].ok:
                        self._log(done[k].rows)
                    yield done[k]
                    continue
                if self.window:
                    _, spans, windows, error = next(stream)
                    items = [dict(window=i, start=round(s, 3), end=round(e, 3)) for i, (s, e, _, _) in enumerate(spans or [])]
                    seen = []  # the decoder of each window, as it is decoded
                    clips = (seen.append(d) or views for views, _, d in windows) if windows is not None else None
                else:
                    _, decoded, error = next(stream)
                    items, clips, seen = (decoded[0], iter([decoded[1]]), [decoded[2]]) if error is None else (None, None, [])
                try:
                    if error is not None:
                        raise HieraVideoError(error)
                    yield dataclasses.replace(self._extract(job, items, clips), decoder=seen[-1] if seen else None)
                except OutputError:  # a full disk: every next video would fail too
                    raise
                except HieraVideoError as e:
                    yield Extracted(job.path, error=str(e))
                except OSError as e:
                    yield Extracted(job.path, error=f"cannot write features for '{job.path}': {e.strerror or e}")
        finally:
            stream.close()

    def _batches(self, clips: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        buf = None  # clips of several windows share batches
        for c in clips:
            buf = c if buf is None else torch.cat([buf, c])
            while len(buf) >= self.batch_size:
                yield buf[: self.batch_size]
                buf = buf[self.batch_size :]
        if buf is not None and len(buf):
            yield buf

    @torch.inference_mode()
    def _run(self, x: torch.Tensor) -> np.ndarray:
        out = run_model(lambda v: features(self.clf.model, v, self.level), x, self.clf.device, self.clf.dtype, self.clf.model)
        return out.float().cpu().numpy()

    def _extract(self, job: Job, items: list[dict], clips: Iterable[torch.Tensor]) -> Extracted:
        """Write one video's features: ``items`` describe its items, ``clips`` yields their clips in order."""
        final = self.out_dir / job.output
        if not final.resolve().is_relative_to(self.out_dir.resolve()):
            raise HieraVideoError(f"refusing to write '{final}' outside --output {self.out_dir}")
        base = dict(path=job.path, output=job.output, model=self.clf.name, weights=self.clf.weights, level=self.level,
                    dtype=self.store_dtype, feature_stride=level_stride(self.clf.model, self.level), **job.extra)
        rows = [dict(base, item=i, **it) for i, it in enumerate(items)]
        extra = dict(windows=np.array([[r["start"], r["end"]] for r in rows], dtype=np.float64)) if self.window else {}
        meta = dict(path=job.path, model=self.clf.name, weights=self.clf.weights, level=self.level,
                    mode="windows" if self.window else "views", views=json.dumps(list(self.views)),
                    feature_stride=json.dumps(base["feature_stride"]), protocol=json.dumps(self.protocol.to_dict()))
        writer = FeatureWriter(final, self.fmt, len(rows), STORE_DTYPES[self.store_dtype], meta, extra)
        try:
            for k, batch in enumerate(self._batches(clips)):
                feats = self._run(batch)
                if k == 0:  # the item shape is known now
                    for r in rows:
                        r["shape"] = list(feats.shape[1:])
                    writer.metadata["index"] = json.dumps(rows)
                    writer.metadata["item_shape"] = json.dumps(list(feats.shape[1:]))
                writer.write(feats)
            writer.commit(before_rename=lambda: self._log(rows, sync=True))
        except BaseException:
            writer.abort()
            raise
        return Extracted(job.path, ok=True, output=job.output, shape=list(writer.shape), rows=rows)

    def _log(self, rows: list[dict], sync: bool = False) -> None:
        if self._journal is not None:
            self._journal.append(rows, sync)

    def run(self, jobs: Sequence[Job], on_result: Callable[[Extracted], None] | None = None) -> list[Extracted]:
        """This rank's shard of ``jobs``, then the merged index; every rank's results on rank 0 (under torchrun through
        the result files :attr:`results`). Rank 0 holds ``OUT/.lock`` throughout: one extract per folder at a time."""
        self._check_unique(jobs)
        with distributed.together(self.world):
            self.out_dir.mkdir(parents=True, exist_ok=True)
            lock = self.world.is_main and flock(self.out_dir / ".lock", f"{self.out_dir} is in use by another run", who="hiera-video extract")
        with lock or contextlib.nullcontext():  # flock's file: closing it releases the lock
            return self._run_all(jobs, on_result)

    def _run_all(self, jobs: Sequence[Job], on_result: Callable[[Extracted], None] | None) -> list[Extracted]:
        if self.world.distributed:
            self.results = open_shard_files(self.out_dir, self.world, "extract", reuse=False,
                                            resume_hint="rerun the same command to continue (finished videos are skipped)")
        jobs = self.prepare(jobs)
        self._check_unique(jobs)
        results = []
        with guard(self.results):  # an error here ends every process with its message
            try:
                mine = distributed.shard(len(jobs), self.world)
                if self.results is not None:
                    self.results.start(len(mine))
                for i, r in zip(mine, self._process_all([jobs[i] for i in mine])):
                    r.order = i
                    results.append(r)
                    if self.results is not None:
                        self.results.add(i, dict(json=json.dumps(dataclasses.asdict(r))))
                    if on_result is not None:
                        on_result(r)
                    if self.results is not None and self.results.should_stop():
                        raise KeyboardInterrupt  # a SIGINT reached rank 0 while it waited: stop too
            finally:
                if self._journal is not None:
                    self._journal.close()
                    self._journal = None
        if self.results is not None:
            self.results.finish()  # after the journal is closed: rank 0 merges it next
            if not self.world.is_main:
                return results
            merged, _ = self.results.collect()
            everything = sorted((Extracted(**json.loads(rec["json"])) for rec in merged.values()), key=lambda r: r.order)
        else:
            everything = results
        with guard(self.results):
            write_index(self.out_dir, [(r.output, r.rows) for r in everything if r.ok], keep_previous=not self.overwrite)
        return everything

    @staticmethod
    def _check_unique(jobs: Sequence[Job]) -> None:
        seen = {}
        for j in jobs:
            if j.output in seen and seen[j.output] != j.path:
                raise HieraVideoError(f"'{j.path}' and '{seen[j.output]}' would both be written to {j.output}")
            seen[j.output] = j.path


def _decode_items(path: str, protocol: ClipSpec):
    """Views mode's decoding task: path -> (item descriptions, views ``[V, 3, T, S, S]``, decoder)."""
    with open_video(path, protocol.backend, protocol.decode_device) as reader:
        views, infos = make_views(reader, protocol)
        fps, decoder = reader.fps or 0.0, reader.decoder
    items = [dict(view=n, temporal_view=i.temporal_index, spatial_view=i.spatial_index,
                  start=round(i.frame_indices[0] / fps, 3) if fps else None,
                  end=round((i.frame_indices[-1] + 1) / fps, 3) if fps else None) for n, i in enumerate(infos)]
    return items, views, decoder


def _same_file(a, b) -> bool:
    return isinstance(a, str) and os.path.abspath(a) == os.path.abspath(b)


def _show(v) -> str:
    return f"sha256 {v[:12]}..." if isinstance(v, str) and len(v) == 64 else repr(v)


def _norm(v):
    return json.loads(json.dumps(v))
