"""``eval``: multi-view classification of a dataset split, with its metrics and recorded protocol.

Each video is decoded once with all its views. Under ``torchrun`` each rank takes every world_size-th
video; with ``--output`` each process appends to its own result file and rank 0 merges them
(:mod:`~hiera_video.engine.shard_files`, ``--resume``), otherwise rank 0 gathers them in one collective.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from hiera_video.data.clip_spec import MAX_SUBSTITUTED_FRACTION, ClipSpec, check_choices
from hiera_video.data.transforms import decode_views
from hiera_video.data.datasets import VideoDataset, build_dataset, check_missing, dataset_kind
from hiera_video.data.datasets.base import normalize_name, warn
from hiera_video.engine import distributed
from hiera_video.data.pool import count_decoders, decode_in_order
from hiera_video.engine.inference import Classifier, load_classifier, parse_views
from hiera_video.engine.output_lock import output_claim
from hiera_video.engine.shard_files import ShardFiles, guard, list_fingerprint, open_shard_files, weights_fingerprint
from hiera_video import limits
from hiera_video.errors import HieraVideoError
from hiera_video.metrics.classification import aggregate_views, classification_metrics, save_predictions, write_metrics
from hiera_video.options import Options
from hiera_video.report import check_output, write_csv, write_json


def _placeholder_names(names: list[str]) -> bool:
    """True for names that say nothing ("class 0", "class_1", ...)."""
    return all(re.fullmatch(rf"class[ _]?{i}", str(n)) for i, n in enumerate(names))


def _few(names: list, n: int = 3) -> str:
    return ", ".join(f"'{x}'" for x in names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def align_classes(dataset: VideoDataset, model_classes: list[str]) -> None:
    """Make the dataset's class indices the model's by class NAME: labels of the same names in another
    order, or of a subset, are mapped to the model's indices; other names are an error; placeholder
    names (``class N``) on one side check only the counts. Notes go to ``dataset.warnings``."""
    model, data = list(model_classes), list(dataset.classes)
    if model == data:
        return
    if _placeholder_names(data):
        if len(data) > len(model):
            raise HieraVideoError(f"the dataset has labels up to {len(data) - 1} but the model predicts {len(model)} classes; "
                                  "evaluate with weights trained on this label set")
        dataset.classes = model
        if _placeholder_names(model):
            return warn(dataset, f"neither the dataset nor the weights name their classes: only the class count could be "
                                 f"checked ({len(model)}); pass --labels to check the names")
        return warn(dataset, f"the dataset has no class names (no --labels file): its label indices are taken as the "
                             f"model's classes, named from the weights ({_few(model)})")
    if _placeholder_names(model):
        if len(data) != len(model):
            raise HieraVideoError(f"the dataset has {len(data)} classes but the model predicts {len(model)}; "
                                  "evaluate with weights trained on this label set")
        return warn(dataset, f"the weights carry no class names: only the number of classes ({len(model)}) could be "
                             "checked against the dataset's names, not their order")
    index = {name: i for i, name in enumerate(model)}
    mapping = [index.get(name) for name in data]
    if None in mapping:  # retry ignoring case, underscores and quotes
        loose = {normalize_name(name): i for i, name in reversed(list(enumerate(model)))}  # the first of equal names
        mapping = [index.get(name, loose.get(normalize_name(name))) for name in data]
    if None in mapping or len(set(mapping)) != len(mapping):
        unknown = [name for name, m in zip(data, mapping) if m is None]
        used = {m for m in mapping if m is not None}
        unused = [name for i, name in enumerate(model) if i not in used]
        parts = ([f"{len(unknown)} dataset classes are not among the model's: {_few(unknown)}"] if unknown else []) + \
                ([f"{len(unused)} model classes are not in the dataset: {_few(unused)}"] if unused else [])
        raise HieraVideoError(f"the dataset's classes ({len(data)}) are not the model's ({len(model)}): "
                              f"{'; '.join(parts) or 'names repeat'}; evaluate with weights trained on these classes, "
                              "or fix the class-name file")
    for item in dataset.items:
        if item.label is not None:
            item.label = mapping[item.label]
    dataset.classes = model
    if len(data) == len(model):
        return warn(dataset, f"the dataset lists the model's {len(model)} classes in another order: labels were mapped to "
                             "the model's classes by name")
    return warn(dataset, f"the dataset's {len(data)} classes are among the model's {len(model)}: labels were mapped by "
                         f"name and scored against all {len(model)} classes")


def _views_in_order(dataset: VideoDataset, indices: list[int], protocol: ClipSpec, workers: int, decode_timeout: float | None):
    """``(index, views, error, (substituted, sampled), decoder)`` of every video of ``indices``, in order
    (``workers`` processes; a decode past ``decode_timeout`` seconds fails that video)."""
    stream = decode_in_order([str(dataset.items[i].path) for i in indices], partial(decode_views, spec=protocol), workers,
                             decode_timeout)
    try:
        for i, (_, value, error) in zip(indices, stream):
            yield (i, None, error, (0, 0), "") if error is not None else (i, value[0], None, value[1], value[2])
    finally:
        stream.close()  # shuts the workers down also when the caller stops early


@dataclass
class EvalResult:
    metrics: dict | None  # None when no video had a label
    indices: list[int]  # dataset indices evaluated, in order
    probs: torch.Tensor  # [N, C]
    view_logits: torch.Tensor | None  # [N, V, C] with save_views
    failed: list[tuple[str, str]]  # (path, reason)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    substituted: list[tuple[str, int, int]] = field(default_factory=list)  # (path, substituted, sampled) frames
    interrupted: bool = False  # by SIGINT: covers the videos finished before it
    not_evaluated: int = 0
    resumed: int = 0  # videos (scored or failed) taken from an earlier run (--resume)
    resumed_scored: int = 0
    decoders: dict[str, int] = field(default_factory=dict)  # scored videos per decoder


def evaluate(clf: Classifier, protocol: ClipSpec, dataset: VideoDataset, batch_size: int = 8, workers: int = 2,
             strict: bool = False, save_views: bool = False, world: distributed.World = distributed.World(), progress=None,
             decode_timeout: float | None = limits.DEFAULT_DECODE_TIMEOUT, stop=None, results: ShardFiles | None = None) -> EvalResult | None:
    """Evaluate ``dataset``; the merged result on rank 0 (None elsewhere).

    Unreadable, timed-out or too-substituted videos are skipped and reported (``strict``: an error).
    ``progress(done, total, failed)`` runs after each video. ``stop()`` (asked after each video) or
    SIGINT ends the loop with ``interrupted`` set when ``stop`` is given; else SIGINT propagates.
    ``results`` (``eval --output``): per-process result files, earlier runs' videos skipped.
    """
    if len(dataset) == 0:
        raise HieraVideoError(f"nothing to evaluate: no videos of {dataset.name} were found under {dataset.root}")
    align_classes(dataset, clf.labels)
    indices = results.mine(len(dataset)) if results is not None else distributed.shard(len(dataset), world)
    t0 = time.perf_counter()
    loader = _views_in_order(dataset, indices, protocol, workers, decode_timeout)
    with guard(results):  # an error here ends every process with its message
        done, failed, interrupted = _evaluate_shard(clf, loader, dataset, indices, batch_size, strict, save_views, progress,
                                                    stop, results)
    seconds = time.perf_counter() - t0
    not_evaluated = len(indices) - len(done) - len(failed)
    if results is not None:
        results.finish(interrupted=interrupted, seconds=seconds)
        if not world.is_main:
            return None
        merged, states = results.collect()
        interrupted = any(s.get("interrupted") for s in states)
        seconds = max(float(s.get("seconds") or 0) for s in states)
        failed = [(str(dataset.items[i].path), rec["error"]) for i, rec in merged.items() if rec.get("error") is not None]
        done = {i: (rec["probs"], rec.get("views"), tuple(rec["counts"]), rec.get("decoder", ""))
                for i, rec in merged.items() if rec.get("error") is None}
        earlier = set(results.earlier)
        resumed, resumed_scored = sum(i in earlier for i in merged), sum(i in earlier for i in done)
        not_evaluated = len(dataset) - len(done) - len(failed)
    else:
        parts = distributed.gather_to_main((done, failed, seconds, interrupted, not_evaluated), world)
        if not world.is_main:
            return None
        done = {i: v for p in parts for i, v in p[0].items()}
        failed = [f for p in parts for f in p[1]]
        seconds, interrupted = max(p[2] for p in parts), any(p[3] for p in parts)
        not_evaluated, resumed, resumed_scored = sum(p[4] for p in parts), 0, 0
    order = sorted(done)
    probs = torch.stack([done[i][0] for i in order]) if order else torch.zeros(0, len(clf.labels))
    view_logits = torch.stack([done[i][1] for i in order]) if save_views and order else None
    labels = torch.tensor([-1 if dataset.items[i].label is None else dataset.items[i].label for i in order], dtype=torch.long)
    metrics = classification_metrics(probs, labels, dataset.classes) if (labels >= 0).any() else None
    substituted = [(str(dataset.items[i].path), *done[i][2]) for i in order if done[i][2][0]]
    return EvalResult(metrics, order, probs, view_logits, sorted(failed), seconds, substituted=substituted,
                      decoders=count_decoders(done[i][3] for i in order), interrupted=interrupted, not_evaluated=not_evaluated, resumed=resumed, resumed_scored=resumed_scored)


def _evaluate_shard(clf, loader, dataset, indices, batch_size, strict, save_views, progress, stop, results):
    """``({index: (probs, view logits, (substituted, sampled), decoder)}, [(path, reason)], interrupted)``."""
    done, failed, interrupted = {}, [], False
    try:
        for n, (i, views, error, counts, decoder) in enumerate(loader, 1):
            if error is None:
                try:
                    logits = clf.logits(views, batch_size)  # [V, C]
                except HieraVideoError as e:  # e.g. NaN scores
                    error = f"'{dataset.items[i].path}': {e}"
                else:
                    done[i] = (aggregate_views(logits, "prob"), logits if save_views else None, counts, decoder)
            if error is not None:
                if strict:
                    raise HieraVideoError(f"{error} (--strict: stopping; drop --strict to skip unreadable videos)")
                failed.append((str(dataset.items[i].path), error))
            if results is not None:
                results.add(i, dict(error=error) if error is not None else
                            dict(probs=done[i][0], views=done[i][1], counts=list(counts), decoder=decoder))
            if progress is not None:
                progress(n, len(indices), len(failed))
            if n < len(indices) and ((results is not None and results.should_stop()) or (stop is not None and stop())):
                raise KeyboardInterrupt  # SIGINT on another process, or a training run's signal
    except KeyboardInterrupt:  # keep what is finished; the caller writes it, marked partial
        if stop is None:
            raise
        interrupted = True
    finally:
        loader.close()
    return done, failed, interrupted


@dataclass
class EvalOptions(Options):
    """``hiera-video eval``'s options (a classification split), checked on construction."""

    dataset: str
    root: Path
    annotations: Path | None = None
    split: str = "val"
    labels: str | None = None
    model: str | None = None
    weights: str | None = None
    views: tuple[int, int] | None = None  # or "TxS"; None: the dataset preset
    sampling: str | None = None
    stride: int | None = None
    batch_size: int = 8
    workers: int = 2
    limit: int | None = None
    output: Path | None = None
    strict: bool = False
    decode_timeout: float | None = limits.DEFAULT_DECODE_TIMEOUT
    save_views: bool = False
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"
    allow_random_weights: bool = False
    resume: bool = False
    all_classes: bool = False  # display only
    as_json: bool = False  # display only
    decode_device: str = "cpu"  # cpu | cuda (torchcodec's NVDEC)

    def __post_init__(self):
        check_choices(sampling=self.sampling, backend=self.backend, decode_device=self.decode_device)
        self.dataset = dataset_kind(self.dataset)
        if isinstance(self.views, str):
            self.views = parse_views(self.views)


@dataclass
class EvalJob:
    """What ``hiera-video eval`` evaluates, inside its process group."""

    options: EvalOptions
    world: distributed.World
    clf: Classifier
    dataset: VideoDataset
    missing: int  # annotated videos not on disk
    protocol: ClipSpec
    results: ShardFiles | None = None  # the per-process result files (with --output)


@contextmanager
def eval_job(o: EvalOptions):
    """Device and process group, output check (before any work), model, dataset, clips and with
    ``--output`` the result files (``--resume`` continues them when :func:`eval_protocol` matches)."""
    with distributed.session(o.device) as (world, dev):
        if world.is_main:
            check_output(o.output, "--output", "dir")
        with output_claim(o.output, world, "eval"):  # OUTPUT/.lock, held until the outputs are written
            named = o.labels if o.dataset not in ("list", "folder") else None  # list datasets' labels name the data
            clf = load_classifier(o.model, o.weights, named, dev, o.dtype, o.allow_random_weights)
            ds = build_dataset(o.dataset, o.root, o.annotations, o.split, o.labels, o.limit)  # names meet the model's in evaluate
            missing = check_missing(ds, o.strict)
            protocol = clf.protocol(o.views, o.dataset, sampling=o.sampling, stride=o.stride, backend=o.backend, decode_device=o.decode_device)
            limits.check_views((protocol.temporal_views, protocol.spatial_views), protocol.num_frames, protocol.crop_size)
            results = None if o.output is None else open_shard_files(
                o.output, world, "eval", eval_protocol(clf, protocol, ds, o.save_views) if world.is_main else None, o.resume)
            try:
                yield EvalJob(o, world, clf, ds, missing, protocol, results)
            finally:
                if results is not None:
                    results.close()


def eval_protocol(clf: Classifier, protocol: ClipSpec, dataset: VideoDataset, save_views: bool) -> dict:
    """What a video's result depends on (model, weights' content, precision, clips, view logits kept,
    videos and labels; not the process count), compared field by field by ``eval --resume``."""
    clips = protocol.to_dict()
    views = f"{clips.pop('temporal_views')}x{clips.pop('spatial_views')}"
    videos = [(os.path.relpath(str(it.path), str(dataset.root)), it.label) for it in dataset.items]
    return dict(model=clf.name, weights_sha256=weights_fingerprint(clf.model), dtype=clf.describe()["dtype"], views=views,
                **clips, save_views=bool(save_views), dataset=dataset.name, split=dataset.split,
                videos=f"{len(videos)} videos, sha256 {list_fingerprint(videos)[:16]}")


def decoder_versions(backend: str | None = None) -> dict:
    """Versions of the decoders recorded with every result (torchcodec only when loaded or ``backend`` may use it)."""
    import av

    out = dict(pyav=av.__version__, ffmpeg=".".join(str(x) for x in av.library_versions.get("libavcodec", ())))
    try:
        import decord

        out["decord"] = decord.__version__
    except Exception:
        pass
    if "torchcodec" in sys.modules or backend in ("torchcodec", "auto"):
        from hiera_video.data.decode import torchcodec_status

        ffmpeg, problem = torchcodec_status()
        if problem is None:
            out["torchcodec"] = getattr(sys.modules["torchcodec"], "__version__", "?")
            out["torchcodec_ffmpeg"] = ffmpeg
    return out


def write_outputs(output: Path, result: EvalResult, dataset: VideoDataset, clf: Classifier, protocol: ClipSpec,
                  extra: dict) -> dict[str, Path]:
    """metrics.json (+ per-class and confusion files), predictions, failed and missing lists."""
    output.mkdir(parents=True, exist_ok=True)
    record = dict(num_failed=len(result.failed), num_missing=len(dataset.missing), partial=result.interrupted,
                  num_not_evaluated=result.not_evaluated, decoders=result.decoders,
                  substituted_frames=dict(num_videos=len(result.substituted), num_frames=sum(n for _, n, _ in result.substituted),
                                          fail_above_fraction=MAX_SUBSTITUTED_FRACTION,
                                          videos=[dict(path=p, substituted=n, sampled=m) for p, n, m in result.substituted]),
                  protocol=dict(**clf.describe(), **protocol.to_dict(), decoder=decoder_versions(protocol.backend)),
                  dataset=dataset.summary(), seconds=round(result.seconds, 3),
                  videos_per_second=round((len(result.indices) - result.resumed_scored) / result.seconds, 3) if result.seconds else None,
                  resumed=result.resumed, **provenance(clf), **extra)
    if result.metrics is not None:
        files = dict(write_metrics(output, result.metrics, dataset.classes, extra=record))
    else:
        files = dict(metrics=output / "metrics.json")
        write_json(files["metrics"], {**record, "num_videos": len(result.indices), "top1": None, "top5": None, "mean_class_accuracy": None})
    labels = torch.tensor([-1 if dataset.items[i].label is None else dataset.items[i].label for i in result.indices])
    files["predictions"] = output / "predictions.pt"
    save_predictions(files["predictions"], [str(dataset.items[i].path) for i in result.indices], labels, result.probs,
                     dataset.classes, result.view_logits, meta=dict(protocol=record["protocol"], agg="prob"))
    files["failed"], files["missing"] = write_failure_lists(output, result, dataset)
    from hiera_video.html_report import write_report_safely  # after every result file: a failure here is a warning

    if (report := write_report_safely(output)) is not None:
        files["report"] = report
    return files


def provenance(clf: Classifier) -> dict:
    """When, by what command and with which versions and weights (content sha256) a result was made."""
    from hiera_video import __version__

    return dict(created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
                versions=dict(hiera_video=__version__, torch=torch.__version__, python=platform.python_version()),
                weights_sha256=weights_fingerprint(clf.model))


def write_failure_lists(output: Path, result: EvalResult, dataset: VideoDataset) -> tuple[Path, Path]:
    """``failed.csv`` (unreadable videos) and ``missing.csv`` (annotated, not on disk)."""
    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "failed.csv", ["path", "reason"], result.failed)
    write_csv(output / "missing.csv", ["path", "reason"], dataset.missing)
    return output / "failed.csv", output / "missing.csv"
