"""``extract``: embeddings or stage feature maps of videos, one file per video, resumable.

video --decode--> clips [N, 3, T, S, S] (N = views of the whole video, or one clip per window
      of a long video) --batches--> features [N, ...] --> OUT/<relative path>.<ext>.{npy,safetensors}

Levels (``feature_info`` of the model gives the strides; Hiera video models use patch stride
(2, 4, 4) and q-stride (1, 2, 2), so for a ``T x S x S`` clip):

=========  ========================================  ==========================================
level      per item                                  stride (frames, pixels)
=========  ========================================  ==========================================
pooled     ``[C]`` normed mean of the last stage     -- (``forward_head(..., pre_logits=True)``)
stage1     ``[T/2, S/4, S/4, C1]``                   2, 4
stage2     ``[T/2, S/8, S/8, C2]``                   2, 8
stage3     ``[T/2, S/16, S/16, C3]``                 2, 16
stage4     ``[T/2, S/32, S/32, C4]``                 2, 32
=========  ========================================  ==========================================

Stage maps are spatially ordered, channels last (the layout of
``Hiera.forward_intermediates(x, channels_last=True)``); only the blocks up to the chosen
stage run.

Files and resuming
------------------
Files are written through the feature store (:mod:`hiera_video.data.feature_store`: each
file appears complete or not at all, its index rows are journalled first). A rerun skips
every video whose file exists, reads back, and has index rows; everything else is redone. At
the end the journals and the previous ``index.jsonl`` are merged into ``index.jsonl`` (under
torchrun by rank 0, once every process's result file says it is finished: no collective
timeout while processes end far apart, see :mod:`~hiera_video.engine.shard_files`).
``extract.json`` records the settings, the weights' content (sha256) included; a rerun into
the same folder with other settings is refused (``overwrite`` starts over).

Output names mirror the inputs relative to their common folder (the dataset root in dataset
mode) and keep the video's extension (``a/clip.mp4`` -> ``a/clip.mp4.npy``), so files with
the same name in different folders, or with the same stem and another container, never
collide. The folder is the first run's, recorded in ``extract.json`` (``names_relative_to``):
later runs into the same output name their videos relative to it and a video outside it is
refused, so two runs never write one name (:meth:`Extractor._same_names`).

A full disk stops the run (:class:`~hiera_video.errors.OutputError`, one line) instead of
failing one video after another; features are written with ordinary writes, never through a
memory map (where a full disk is a SIGBUS).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from hiera_video.data import ClipSpec, open_video
from hiera_video.data.feature_store import (
    FORMATS, INDEX, STORE_DTYPES, FeatureWriter, IndexJournal, read_index_rows, stored_shape, write_index,
)
from hiera_video.engine import distributed, faults
from hiera_video.engine.inference import Classifier, classifier_on, run_model
from hiera_video.engine.decoding import DEFAULT_DECODE_TIMEOUT, decode_in_order
from hiera_video.jobs.predict import decode_windows
from hiera_video.engine.shard_files import ShardFiles, guard, open_shard_files, weights_fingerprint
from hiera_video import limits
from hiera_video.errors import HieraVideoError, OutputError
from hiera_video.models.load import load
from hiera_video.report import atomic_write_text, json_text

log = logging.getLogger("hiera_video")

LEVELS = ("pooled", "stage1", "stage2", "stage3", "stage4")
SETTINGS = "extract.json"
NAMES_BASE = "names_relative_to"  # extract.json: the folder every output name in OUT is relative to
# Settings that change what the files hold: a rerun with other values is refused.
_SETTING_KEYS = ("model", "weights", "weights_sha256", "level", "format", "store_dtype", "compute_dtype", "mode", "views",
                 "window", "stride", "protocol")
_NEWER_KEYS = ("weights_sha256", "compute_dtype")  # compared only when extract.json has them (older folders lack them)


# ====================================================================== model
def load_feature_model(model: str | None = None, weights: str | None = None, device: str = "auto", dtype: str = "auto",
                       allow_random_weights: bool = False) -> Classifier:
    """A video classifier ready for feature extraction (like :func:`load_classifier`, no
    trained head needed), that also accepts MAE weights: an MAE model name (``mae_hiera_*``),
    an MAE zoo tag (``mae_k400``) or an MAE checkpoint file loads the encoder into the matching
    classifier architecture (``hiera_*``). Its decoder is dropped; the final ``norm`` is not in
    an MAE checkpoint and is set to the identity affine map, so ``pooled`` is the plain
    LayerNorm of the mean last-stage token.
    """
    return classifier_on(*load("features", model, weights, allow_random=allow_random_weights), device, dtype)


def stage_map(model, x: torch.Tensor, stage: int) -> torch.Tensor:
    """Spatially ordered map of stage ``stage`` (1-based), ``[B, T', H', W', C]``.

    Equals ``model.forward_intermediates(x)[stage - 1]`` but runs only the blocks up to the
    end of that stage.
    """
    ends = model.stage_ends
    if not 1 <= stage <= len(ends):
        raise HieraVideoError(f"the model has stages 1..{len(ends)}, not {stage}")
    end = ends[stage - 1]
    mask_grid = model.mask_grid(x)
    tokens, n_units = model.embed_tokens(x, None)
    for blk in model.blocks[: end + 1]:
        tokens = blk(tokens, n_units)
    return model.reroll(tokens, end, n_units, mask_grid)


def features(model, x: torch.Tensor, level: str) -> torch.Tensor:
    """``x: [B, 3, T, H, W]`` -> ``[B, C]`` (pooled) or ``[B, T', H', W', C]`` (stageK)."""
    if level == "pooled":
        return model.forward_head(model.forward_features(x), pre_logits=True)
    if level not in LEVELS:
        raise HieraVideoError(f"unknown level '{level}'; use one of {', '.join(LEVELS)}")
    return stage_map(model, x, int(level[len("stage"):]))


def level_stride(model, level: str) -> list[int] | None:
    """``[temporal, spatial, spatial]`` stride of a stage map in input frames/pixels (None for pooled)."""
    if level == "pooled":
        return None
    info = model.feature_info[int(level[len("stage"):]) - 1]
    return [info["temporal_stride"], info["spatial_stride"], info["spatial_stride"]]


# ====================================================================== inputs and names
@dataclass
class Job:
    """One video to extract: its path, its output path relative to the output folder, and
    extra index fields (dataset id and label)."""

    path: str
    output: str
    extra: dict = field(default_factory=dict)
    base: str = ""  # the absolute folder ``output`` is relative to ("" unknown)


def common_base(paths: Sequence[str]) -> str:
    """The deepest folder holding every path (the folder of the file for a single path)."""
    parents = [os.path.dirname(os.path.abspath(p)) for p in paths]
    if not parents:
        return os.getcwd()
    try:
        return os.path.commonpath(parents)
    except ValueError:  # different drives (Windows)
        return ""


def output_name(path: str, base: str, fmt: str) -> str:
    """``path`` relative to ``base`` with ``.<fmt>`` appended, as a safe relative POSIX path
    (no absolute parts, no ``..``; a path outside ``base`` keeps its absolute folders below
    the output folder instead)."""
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
    jobs = []
    for item, p in zip(ds.items, paths):
        label = item.label
        extra = dict(id=item.id, label=label, label_name=ds.classes[label] if label is not None and label < len(ds.classes) else None)
        jobs.append(Job(p, output_name(p, base, fmt), extra, base))
    return jobs


# ====================================================================== extraction
@dataclass
class Extracted:
    """One video's outcome."""

    path: str
    ok: bool = False
    error: str | None = None
    output: str | None = None
    skipped: bool = False
    shape: list[int] | None = None
    rows: list[dict] = field(default_factory=list)
    order: int = 0

    def to_json(self) -> dict:
        return dict(path=self.path, ok=self.ok, error=self.error, output=self.output, skipped=self.skipped,
                    shape=self.shape, items=len(self.rows))


@dataclass
class Extractor:
    """Extract ``level`` features of videos into ``out_dir``.

    Modes: views (``views=(T, S)``: T temporal x S spatial views of the whole video, decoded
    once) or windows (``window`` seconds every ``stride`` seconds over the whole video, one
    centre clip per window, each window decoded on its own).
    """

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
    decode_timeout: float | None = DEFAULT_DECODE_TIMEOUT  # seconds per video (with workers); None/0: no limit

    def __post_init__(self):
        if self.level not in LEVELS:
            raise HieraVideoError(f"unknown --level '{self.level}'; use one of {', '.join(LEVELS)}")
        if self.fmt not in FORMATS:
            raise HieraVideoError(f"unknown --format '{self.fmt}'; use npy or safetensors")
        if self.store_dtype not in STORE_DTYPES:
            raise HieraVideoError(f"unknown storage dtype '{self.store_dtype}'; use {' or '.join(STORE_DTYPES)}")
        if self.window is not None:
            if self.window <= 0 or (self.stride is not None and self.stride <= 0):
                raise HieraVideoError("--window and --stride must be positive numbers of seconds")
            self.stride = self.stride or self.window
            self.views = (1, 1)
        elif self.stride is not None:
            raise HieraVideoError("--stride needs --window (the window length in seconds)")
        self.out_dir = Path(self.out_dir)
        self.protocol: ClipSpec = self.clf.protocol(self.views, backend=self.backend)
        limits.check_views(self.views, self.protocol.num_frames, self.protocol.crop_size)
        self.prev: dict[str, list[dict]] = {}
        self._journal = None
        self.results: ShardFiles | None = None  # this process's result file under torchrun (run)

    # ------------------------------------------------------------------ settings
    def settings(self) -> dict:
        w = self.clf.weights
        if isinstance(w, str) and os.path.exists(os.path.expanduser(w)):
            w = os.path.abspath(os.path.expanduser(w))
        return dict(
            model=self.clf.name, weights=w, weights_sha256=weights_fingerprint(self.clf.model), level=self.level, format=self.fmt, store_dtype=self.store_dtype,
            mode="windows" if self.window else "views", views=list(self.views) if not self.window else None,
            window=self.window, stride=self.stride, protocol=self.protocol.recipe(),
            feature_stride=level_stride(self.clf.model, self.level), feature_info=self.clf.model.feature_info,
            compute_dtype=self.clf.describe()["dtype"], device=str(self.clf.device),
        )

    def prepare(self, jobs: Sequence[Job] = ()) -> list[Job]:
        """Check the output folder against earlier runs and read what they left (every rank),
        then record the settings (rank 0). Ends with a barrier. Returns ``jobs`` named as the
        folder's earlier runs named theirs (:meth:`_same_names`)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        mine = self.settings()
        path = self.out_dir / SETTINGS
        old = None
        if not self.overwrite:
            try:
                old = json.loads(path.read_text()) if path.is_file() else None
            except (ValueError, OSError):
                old = None
            if not isinstance(old, dict):
                if read_index_rows(self.out_dir):
                    state = "is unreadable" if path.is_file() else "is missing"
                    raise HieraVideoError(
                        f"{self.out_dir} holds features but its {SETTINGS} {state}, so the settings they were made with "
                        "cannot be checked; use another --output, or --overwrite to redo every video"
                    )
            else:
                diff = [k for k in _SETTING_KEYS if (k in old or k not in _NEWER_KEYS) and _norm(old.get(k)) != _norm(mine.get(k))]
                if diff:
                    shown = "; ".join(f"{k}: {_show(old.get(k))} -> {_show(mine.get(k))}" for k in diff[:3])
                    raise HieraVideoError(
                        f"{self.out_dir} holds features made with other settings ({shown}); use another --output, "
                        "or --overwrite to redo every video"
                    )
        self.prev = {} if self.overwrite else read_index_rows(self.out_dir)
        jobs, mine[NAMES_BASE] = self._same_names(list(jobs), old)
        distributed.agree(self.world)  # a barrier
        if self.world.is_main:
            atomic_write_text(path, json_text(mine, indent=2) + "\n")
        self._journal = IndexJournal(self.out_dir, self.world.rank)
        distributed.agree(self.world)  # a barrier
        return jobs

    def _same_names(self, jobs: list[Job], old: dict | None) -> tuple[list[Job], str | None]:
        """Name ``jobs`` as the earlier runs into this folder named theirs, so that runs never
        overwrite each other: output names are relative to one folder, the one the first run
        recorded in ``extract.json`` (``names_relative_to``; this run's common input folder
        for a new folder or with ``overwrite``). A video outside it is refused (its name
        relative to this run's folder could be an earlier video's name: ``extract data/train``
        then ``extract data/val`` would replace train features with val ones). In a folder of
        an older version (no ``names_relative_to``) a name that the index gives to another
        video is refused. Returns the jobs and the folder to record (None: unknown)."""
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
                        "--overwrite to redo every video (a run given the folder above all videos names each one)"
                    )
            jobs = [dataclasses.replace(j, output=output_name(j.path, recorded, self.fmt), base=recorded) for j in jobs]
        for j in jobs:
            rows = self.prev.get(j.output)
            if rows and not any(_same_file(r.get("path"), j.path) for r in rows):
                raise HieraVideoError(
                    f"{self.out_dir / j.output} holds the features of '{rows[0].get('path')}', not of '{j.path}'; "
                    "use another --output, or --overwrite to redo every video"
                )
            if not rows and not self.overwrite and os.path.lexists(self.out_dir / j.output):
                raise HieraVideoError(
                    f"{self.out_dir / j.output} exists but {INDEX} does not list it (extract did not write it); move it "
                    "away, use another --output, or --overwrite to replace it"
                )
        return jobs, recorded

    # ------------------------------------------------------------------ one video
    def done_already(self, job: Job) -> Extracted | None:
        rows = self.prev.get(job.output)  # none with overwrite
        if not rows:
            return None
        shape = stored_shape(self.out_dir / job.output)
        if shape is None or shape[0] != len(rows) or not all(_same_file(r.get("path"), job.path) for r in rows):
            return None
        return Extracted(job.path, ok=True, output=job.output, skipped=True, shape=list(shape), rows=rows)

    def _process_all(self, jobs: Sequence[Job]) -> Iterator[Extracted]:
        """One :class:`Extracted` per job, in order; never raises for a bad video. The videos
        still to do are decoded by :func:`~hiera_video.engine.decoding.decode_in_order`
        (``workers`` processes; a video whose decoding takes longer than ``decode_timeout``
        seconds is stopped and fails alone)."""
        done = {}
        for k, job in enumerate(jobs):
            try:
                done[k] = self.done_already(job)
            except HieraVideoError as e:
                done[k] = Extracted(job.path, error=str(e))
        todo = [job.path for k, job in enumerate(jobs) if done[k] is None]
        if self.window:
            stream = decode_windows(self.protocol, todo, self.window, self.stride, self.workers, self.decode_timeout,
                                    check_frames=False)
        else:
            stream = decode_in_order(todo, _DecodeItems(self.protocol), self.workers, self.decode_timeout)
        try:
            for k, job in enumerate(jobs):
                faults.slow(self.world.rank)  # tests: processes that finish far apart
                if done[k] is not None:
                    if done[k].ok:
                        self._log(done[k].rows)
                    yield done[k]
                    continue
                if self.window:
                    _, spans, windows, error = next(stream)
                    items = [dict(window=i, start=round(s, 3), end=round(e, 3)) for i, (s, e, _, _) in enumerate(spans or [])]
                    clips = (views for views, _ in windows) if windows is not None else None
                else:
                    _, decoded, error = next(stream)
                    items, clips = (decoded[0], iter([decoded[1]])) if error is None else (None, None)
                try:
                    if error is not None:
                        raise HieraVideoError(error)
                    yield self._extract(job, items, clips)
                except OutputError:  # a full disk or a failing file system: every next video would fail too
                    raise
                except HieraVideoError as e:
                    yield Extracted(job.path, error=str(e))
                except OSError as e:
                    yield Extracted(job.path, error=f"cannot write features for '{job.path}': {e.strerror or e}")
        finally:
            stream.close()  # stops the decoding workers

    def _batches(self, clips: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        pending: list[torch.Tensor] = []
        count = 0
        for c in clips:
            for part in c.split(self.batch_size):
                pending.append(part)
                count += len(part)
                while count >= self.batch_size:
                    cat = torch.cat(pending)
                    yield cat[: self.batch_size]
                    rest = cat[self.batch_size :]
                    pending, count = ([rest] if len(rest) else []), len(rest)
        if count:
            yield torch.cat(pending)

    @torch.inference_mode()
    def _run(self, x: torch.Tensor) -> np.ndarray:
        out = run_model(lambda v: features(self.clf.model, v, self.level), x, self.clf.device, self.clf.dtype, self.clf.model)
        return out.float().cpu().numpy()

    def _extract(self, job: Job, items: list[dict], clips: Iterable[torch.Tensor]) -> Extracted:
        """Write the features of one video: ``items`` describe its items, ``clips`` yields
        their clip tensors in order (raising :class:`HieraVideoError` for a failed one)."""
        final = self.out_dir / job.output
        if not final.resolve().is_relative_to(self.out_dir.resolve()):
            raise HieraVideoError(f"refusing to write '{final}' outside --output {self.out_dir}")
        base = dict(
            path=job.path, output=job.output, model=self.clf.name, weights=self.clf.weights, level=self.level,
            dtype=self.store_dtype, feature_stride=level_stride(self.clf.model, self.level), **job.extra,
        )
        rows = [dict(base, item=i, **it) for i, it in enumerate(items)]
        extra = {}
        if self.window:
            extra["windows"] = np.array([[r["start"], r["end"]] for r in rows], dtype=np.float64)
        meta = dict(path=job.path, model=self.clf.name, weights=self.clf.weights, level=self.level,
                    mode="windows" if self.window else "views", views=json.dumps(list(self.views)),
                    feature_stride=json.dumps(base["feature_stride"]), protocol=json.dumps(self.protocol.to_dict()))
        writer = FeatureWriter(final, self.fmt, len(rows), STORE_DTYPES[self.store_dtype], meta, extra)
        try:
            for k, batch in enumerate(self._batches(clips)):
                feats = self._run(batch)
                if k == 0:  # the item shape is known now: complete the rows (and the file header)
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

    # ------------------------------------------------------------------ all videos
    def run(self, jobs: Sequence[Job], on_result: Callable[[Extracted], None] | None = None) -> list[Extracted]:
        """Extract this rank's shard of ``jobs`` (all of them in a single process), then merge
        the index. Returns every rank's results on rank 0, this rank's elsewhere.

        Under torchrun each process also appends its outcomes to its own result file
        (:mod:`~hiera_video.engine.shard_files`, :attr:`results`) and rank 0 merges those
        files, waiting for the others without a collective timeout; the caller ends the run
        with :func:`~hiera_video.engine.shard_files.finish_on_main` / ``wait_on_others``."""
        self._check_unique(jobs)
        if self.world.distributed:  # first: its lock keeps a second run out of the folder
            self.results = open_shard_files(self.out_dir, self.world, "extract", reuse=False,
                                            resume_hint="rerun the same command to continue (finished videos are skipped)")
        jobs = self.prepare(jobs)
        self._check_unique(jobs)
        results = []
        with guard(self.results):  # an error here ends every process with its message
            try:
                mine = distributed.shard(len(jobs), self.world)  # finished files are found by done_already
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
        # index.jsonl = earlier rows of files not touched now (if still there) + this run's rows
        # in input order; the journals are removed.
        with guard(self.results):
            write_index(self.out_dir, [(r.output, r.rows) for r in everything if r.ok], keep_previous=not self.overwrite)
        return everything

    @staticmethod
    def _check_unique(jobs: Sequence[Job]) -> None:
        seen: dict[str, str] = {}
        for j in jobs:
            if j.output in seen and seen[j.output] != j.path:
                raise HieraVideoError(f"'{j.path}' and '{seen[j.output]}' would both be written to {j.output}")
            seen[j.output] = j.path


class _DecodeItems:
    """Decoding task of views mode: path -> (item descriptions, all views ``[V, 3, T, S, S]``)."""

    def __init__(self, protocol: ClipSpec):
        self.protocol = protocol

    def __call__(self, path: str):
        with open_video(path, self.protocol.backend) as reader:
            views, infos = self.protocol.views(reader)
            fps = reader.fps or 0.0
        items = []
        for n, info in enumerate(infos):
            fr = info.frame_indices
            start = round(fr[0] / fps, 3) if fps else None
            end = round((fr[-1] + 1) / fps, 3) if fps else None
            items.append(dict(view=n, temporal_view=info.temporal_index, spatial_view=info.spatial_index, start=start, end=end))
        return items, views


def _same_file(a, b) -> bool:
    return isinstance(a, str) and os.path.abspath(a) == os.path.abspath(b)


def _show(v) -> str:
    """A setting in an error message (a sha256 shortened)."""
    if isinstance(v, str) and len(v) == 64:
        return f"sha256 {v[:12]}..."
    return repr(v)


def _norm(v):
    """Settings compared through JSON (tuples vs lists, int vs float)."""
    return json.loads(json.dumps(v))
