"""``eval``: multi-view classification of a dataset split, metrics, and everything needed to
reproduce the number (the protocol is recorded with it).

One dataset item = one video with all its views (decoded once, in a DataLoader worker so that
decoding overlaps the model). Under ``torchrun`` each rank takes every world_size-th video
(no video is duplicated or dropped). With ``--output`` every process appends each video's
result to its own file in ``OUT/.partial`` and rank 0 merges the files
(:mod:`~hiera_video.engine.shard_files`: no collective timeout while processes finish far
apart, nothing finished lost to a kill, ``--resume``); without it rank 0 gathers the results
in one collective at the end.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from hiera_video.data.clip_spec import MAX_SUBSTITUTED_FRACTION, ClipSpec
from hiera_video.data.datasets import VideoDataset, build_dataset, check_missing
from hiera_video.data.datasets.base import normalize_name, warn
from hiera_video.engine import distributed, faults
from hiera_video.engine.decoding import DEFAULT_DECODE_TIMEOUT, decode_in_order
from hiera_video.engine.inference import Classifier, load_classifier
from hiera_video.engine.shard_files import (ShardFiles, guard, list_fingerprint, open_shard_files,
                                            output_claim, weights_fingerprint)
from hiera_video import limits
from hiera_video.errors import HieraVideoError
from hiera_video.metrics.classification import aggregate_views, classification_metrics, save_predictions, write_metrics
from hiera_video.report import check_output, write_csv

log = logging.getLogger("hiera_video")

def _placeholder_names(names: list[str]) -> bool:
    """True for names that say nothing ("class 0", "class_1", ...: no labels file anywhere)."""
    return all(re.fullmatch(rf"class[ _]?{i}", str(n)) for i, n in enumerate(names))


def _few(names, n: int = 3) -> str:
    names = list(names)
    shown = ", ".join(f"'{x}'" for x in names[:n])
    return shown + (f" (+{len(names) - n} more)" if len(names) > n else "")


def align_classes(dataset: VideoDataset, model_classes: list[str]) -> str | None:
    """Make the dataset's class indices the model's, comparing class NAMES (not only counts).

    * the same names in the same order: nothing to do (None);
    * the same names in another order, or a subset of the model's classes: every label is
      mapped to the model's index of its name, the dataset takes the model's class list;
    * other names: :class:`HieraVideoError` listing the first differences;
    * no names on one side (placeholders ``class N``, e.g. a list without a labels file or a
      checkpoint without label names): indices are taken as they are and only the counts are
      checked.
    Returns the note to show (also added to ``dataset.warnings``).
    """
    model, data = list(model_classes), list(dataset.classes)
    if model == data:
        return None
    if _placeholder_names(data):
        if len(data) > len(model):
            raise HieraVideoError(
                f"the dataset has labels up to {len(data) - 1} but the model predicts {len(model)} classes; "
                "evaluate with weights trained on this label set"
            )
        dataset.classes = model
        if _placeholder_names(model):
            note = (f"neither the dataset nor the weights name their classes: only the class count could be checked "
                    f"({len(model)}); pass --labels to check the names")
        else:
            note = (f"the dataset has no class names (no --labels file): its label indices are taken as the model's "
                    f"classes, named from the weights ({_few(model)})")
        warn(dataset, note)
        return note
    if _placeholder_names(model):
        if len(data) != len(model):
            raise HieraVideoError(
                f"the dataset has {len(data)} classes but the model predicts {len(model)}; "
                "evaluate with weights trained on this label set"
            )
        note = (f"the weights carry no class names: only the number of classes ({len(model)}) could be checked "
                "against the dataset's names, not their order")
        warn(dataset, note)
        return note
    index = {name: i for i, name in enumerate(model)}
    mapping = [index.get(name) for name in data]
    if None in mapping:  # retry ignoring case, underscores and quotes
        loose: dict[str, int] = {}
        for i, name in enumerate(model):
            loose.setdefault(normalize_name(name), i)
        mapping = [index.get(name, loose.get(normalize_name(name))) for name in data]
    if None in mapping or len(set(mapping)) != len(mapping):
        unknown = [name for name, m in zip(data, mapping) if m is None]
        used = {m for m in mapping if m is not None}
        unused = [name for i, name in enumerate(model) if i not in used]
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} dataset classes are not among the model's: {_few(unknown)}")
        if unused:
            parts.append(f"{len(unused)} model classes are not in the dataset: {_few(unused)}")
        raise HieraVideoError(
            f"the dataset's classes ({len(data)}) are not the model's ({len(model)}): {'; '.join(parts) or 'names repeat'}; "
            "evaluate with weights trained on these classes, or fix the class-name file"
        )
    for item in dataset.items:
        if item.label is not None:
            item.label = mapping[item.label]
    dataset.classes = model
    if len(data) == len(model):
        note = f"the dataset lists the model's {len(model)} classes in another order: labels were mapped to the model's classes by name"
    else:
        note = (f"the dataset's {len(data)} classes are among the model's {len(model)}: labels were mapped by name and "
                f"scored against all {len(model)} classes")
    warn(dataset, note)
    return note


class _DecodeViews:
    """Task: a dataset index -> (all views of that video, (substituted, sampled) frames)."""

    def __init__(self, dataset: VideoDataset, protocol: ClipSpec):
        self.dataset, self.protocol = dataset, protocol

    def __call__(self, i: int):
        return self.protocol.decode(str(self.dataset.items[i].path))


def _views_in_order(dataset: VideoDataset, indices: list[int], protocol: ClipSpec, workers: int, decode_timeout: float | None):
    """``(index, views or None, error or None, (substituted, sampled))`` for every video of
    ``indices``, in order, decoded by :func:`~hiera_video.engine.decoding.decode_in_order`
    (in ``workers`` processes; a video taking longer than ``decode_timeout`` seconds to decode
    is stopped and reported as failed)."""
    stream = decode_in_order(indices, _DecodeViews(dataset, protocol), workers, decode_timeout,
                             describe=lambda i: dataset.items[i].path)
    try:
        for i, value, error in stream:
            yield (i, None, error, (0, 0)) if error is not None else (i, value[0], None, value[1])
    finally:
        stream.close()  # shuts the workers down also when the caller stops early


@dataclass
class EvalResult:
    metrics: dict | None  # None when no video had a label
    indices: list[int]  # dataset indices that were evaluated, in order
    probs: torch.Tensor  # [N, C]
    view_logits: torch.Tensor | None  # [N, V, C] with save_views
    failed: list[tuple[str, str]]  # (path, reason) of unreadable videos
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    substituted: list[tuple[str, int, int]] = field(default_factory=list)  # (path, substituted, sampled) of scored videos
    interrupted: bool = False  # stopped by SIGINT: the result covers the videos finished before it
    not_evaluated: int = 0  # videos not reached because of the interruption
    resumed: int = 0  # videos (scored or failed) whose results an earlier run left (--resume)
    resumed_scored: int = 0  # of those, the scored ones


def evaluate(
    clf: Classifier,
    protocol: ClipSpec,
    dataset: VideoDataset,
    batch_size: int = 8,
    workers: int = 2,
    strict: bool = False,
    save_views: bool = False,
    world: distributed.World = distributed.World(),
    progress=None,
    decode_timeout: float | None = DEFAULT_DECODE_TIMEOUT,
    stop: Callable[[], bool] | None = None,
    results: ShardFiles | None = None,
) -> EvalResult | None:
    """Evaluate ``dataset``; returns the merged result on rank 0 (None on other ranks).

    ``progress``: optional callable ``(done, total, failed)`` called after each video on this
    rank. Unreadable videos are skipped and reported (``strict`` turns them into an error), and
    so are videos whose decoding takes longer than ``decode_timeout`` seconds (with
    ``workers`` >= 1; None or 0 = no limit), and videos more than
    :data:`~hiera_video.data.clip_spec.MAX_SUBSTITUTED_FRACTION` of whose sampled frames
    cannot be decoded. The dataset's classes are matched to the model's by name first
    (:func:`align_classes`). ``stop`` makes the evaluation interruptible: it is asked after
    every video, and when it says True, or on SIGINT (KeyboardInterrupt), the loop ends and
    the result holds the videos finished before it, with ``interrupted`` set (a training
    run's validation passes its signal flag); without it, SIGINT propagates.

    ``results`` (``eval --output``): every video's result is also appended to this process's
    file (:mod:`~hiera_video.engine.shard_files`), the videos an earlier run did are skipped
    (taken from its files), and rank 0 merges the files, waiting for the other processes
    without a collective timeout; a SIGINT on any process stops them all. Without it, rank 0
    gathers the results in one collective at the end.
    """
    if len(dataset) == 0:
        raise HieraVideoError(f"nothing to evaluate: no videos of {dataset.name} were found under {dataset.root}")
    align_classes(dataset, clf.labels)
    indices = results.mine(len(dataset)) if results is not None else distributed.shard(len(dataset), world)
    t0 = time.perf_counter()
    with guard(results):  # an error here ends every process with its message
        done, failed, interrupted = _evaluate_shard(clf, protocol, dataset, indices, batch_size, workers, strict, save_views,
                                                    world, progress, decode_timeout, stop, results)
    seconds = time.perf_counter() - t0
    not_evaluated = len(indices) - len(done) - len(failed)
    if results is not None:
        results.finish(interrupted=interrupted, seconds=seconds)
        if not world.is_main:
            return None
        merged, states = results.collect()
        interrupted = any(s.get("interrupted") for s in states)
        seconds = max(float(s.get("seconds") or 0) for s in states)
        done, failed = {}, []
        for i, rec in merged.items():
            if rec.get("error") is not None:
                failed.append((str(dataset.items[i].path), rec["error"]))
            else:
                done[i] = (rec["probs"], rec.get("views"), tuple(rec["counts"]))
        earlier = set(results.earlier)
        resumed, resumed_scored = sum(i in earlier for i in merged), sum(i in earlier for i in done)
        not_evaluated = len(dataset) - len(done) - len(failed)
    else:
        parts = distributed.gather_to_main((done, failed, seconds, interrupted, not_evaluated), world)
        if not world.is_main:
            return None
        done, failed = {}, []
        for part_done, part_failed, *_ in parts:
            done.update(part_done)
            failed += part_failed
        seconds, interrupted = max(p[2] for p in parts), any(p[3] for p in parts)
        not_evaluated, resumed, resumed_scored = sum(p[4] for p in parts), 0, 0
    order = sorted(done)
    num_classes = len(clf.labels)
    probs = torch.stack([done[i][0] for i in order]) if order else torch.zeros(0, num_classes)
    view_logits = torch.stack([done[i][1] for i in order]) if save_views and order else None
    labels = torch.tensor([-1 if dataset.items[i].label is None else dataset.items[i].label for i in order], dtype=torch.long)
    metrics = classification_metrics(probs, labels, dataset.classes) if (labels >= 0).any() else None
    failed.sort()
    substituted = [(str(dataset.items[i].path), *done[i][2]) for i in order if done[i][2][0]]
    return EvalResult(metrics, order, probs, view_logits, failed, seconds, substituted=substituted,
                      interrupted=interrupted, not_evaluated=not_evaluated, resumed=resumed, resumed_scored=resumed_scored)


def _evaluate_shard(clf, protocol, dataset, indices, batch_size, workers, strict, save_views, world, progress,
                    decode_timeout, stop, results):
    """This process's videos: ``({index: (probs, view logits or None, (substituted, sampled))},
    [(path, reason)] of the failed ones, interrupted)``; each result also goes to ``results``."""
    loader = _views_in_order(dataset, indices, protocol, workers, decode_timeout)
    done: dict[int, tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]] = {}
    failed: list[tuple[str, str]] = []
    interrupted = False
    try:
        for n, (i, views, error, counts) in enumerate(loader, 1):
            faults.slow(world.rank)  # tests: processes that finish far apart
            if error is None:
                try:
                    logits = clf.logits(views, batch_size)  # [V, C]
                except HieraVideoError as e:  # e.g. NaN scores
                    error = f"'{dataset.items[i].path}': {e}"
                else:
                    done[i] = (aggregate_views(logits, "prob"), logits if save_views else None, counts)
            if error is not None:
                if strict:
                    raise HieraVideoError(f"{error} (--strict: stopping; drop --strict to skip unreadable videos)")
                failed.append((str(dataset.items[i].path), error))
            if results is not None:
                results.add(i, dict(error=error) if error is not None else
                            dict(probs=done[i][0], views=done[i][1], counts=list(counts)))
            if progress is not None:
                progress(n, len(indices), len(failed))
            if faults.active("sigint", world.rank, n):  # tests: a SIGINT after the n-th video
                os.kill(os.getpid(), signal.SIGINT)
            if results is not None and n < len(indices) and results.should_stop():
                raise KeyboardInterrupt  # a SIGINT stopped another process: stop here too
            if stop is not None and n < len(indices) and stop():
                raise KeyboardInterrupt  # e.g. a signal during a training run's validation
    except KeyboardInterrupt:  # keep what is finished; the caller writes it, marked partial
        if stop is None:
            raise
        interrupted = True
    finally:
        loader.close()
    return done, failed, interrupted


@dataclass
class EvalJob:
    """What ``hiera-video eval`` evaluates, inside its process group (:func:`eval_job`)."""

    world: distributed.World
    clf: Classifier
    dataset: VideoDataset
    missing: int  # annotated videos not on disk
    protocol: ClipSpec
    results: ShardFiles | None = None  # the per-process result files (with --output)


@contextmanager
def eval_job(dataset: str, root, annotations, split: str, labels, limit, strict: bool, output, model, weights,
             views: tuple[int, int] | None, sampling, stride, backend: str, device: str, dtype: str, allow_random: bool,
             resume: bool = False, save_views: bool = False):
    """The device and the process group first (one device per torchrun process), then the
    output check (rank 0, before any work), the model, the dataset and its clips
    (:meth:`Classifier.protocol`), and with ``output`` the result files
    (:func:`~hiera_video.engine.shard_files.open_shard_files`: earlier results are refused
    without ``resume``, continued with it when :func:`eval_protocol` matches); the process
    group ends with the block."""
    if resume and output is None:
        raise HieraVideoError("--resume needs --output: the folder of the run to continue")
    with distributed.session(device) as (world, dev):
        if world.is_main:
            check_output(output, "--output", "dir")
        with output_claim(output, world, "eval"):  # OUTPUT/.lock, held until the outputs are written
            named = labels if dataset in ("k400", "k600", "k700", "ssv2") else None  # list datasets' labels name the data
            clf = load_classifier(model, weights, named, dev, dtype, allow_random)
            ds = build_dataset(dataset, root, annotations, split, labels, limit)  # its class names meet the model's in evaluate
            missing = check_missing(ds, strict)
            protocol = clf.protocol(views, dataset, sampling=sampling, stride=stride, backend=backend)
            limits.check_views((protocol.temporal_views, protocol.spatial_views), protocol.num_frames, protocol.crop_size)
            results = None
            if output is not None:
                results = open_shard_files(output, world, "eval",
                                           eval_protocol(clf, protocol, ds, save_views) if world.is_main else None, resume)
            try:
                yield EvalJob(world, clf, ds, missing, protocol, results)
            finally:
                if results is not None:
                    results.close()


def eval_protocol(clf: Classifier, protocol: ClipSpec, dataset: VideoDataset, save_views: bool) -> dict:
    """What a video's result depends on, compared field by field by ``eval --resume``: the
    model, its weights' content (not their path), the precision, the clips, whether view logits
    are kept, and the dataset's videos and labels (the number of processes does not matter)."""
    clips = protocol.to_dict()
    views = f"{clips.pop('temporal_views')}x{clips.pop('spatial_views')}"
    root = str(dataset.root)
    videos = [(os.path.relpath(str(it.path), root), it.label) for it in dataset.items]
    return dict(model=clf.name, weights_sha256=weights_fingerprint(clf.model), dtype=clf.describe()["dtype"], views=views,
                **clips, save_views=bool(save_views), dataset=dataset.name, split=dataset.split,
                videos=f"{len(videos)} videos, sha256 {list_fingerprint(videos)[:16]}")


def substitution_record(result: EvalResult) -> dict:
    """What ``metrics.json`` says about frames that could not be decoded in scored videos."""
    return dict(
        num_videos=len(result.substituted), num_frames=sum(n for _, n, _ in result.substituted),
        fail_above_fraction=MAX_SUBSTITUTED_FRACTION,
        videos=[dict(path=p, substituted=n, sampled=m) for p, n, m in result.substituted],
    )


def decoder_versions(backend: str | None = None) -> dict:
    """Versions of the decoders, recorded with every result. torchcodec (and the system FFmpeg
    it loaded) is recorded when this process loaded it or ``backend`` may use it ("torchcodec",
    "auto"); it is not imported otherwise."""
    out = {}
    try:
        import av

        out["pyav"] = av.__version__
        out["ffmpeg"] = ".".join(str(x) for x in av.library_versions.get("libavcodec", ()))
    except Exception:  # pragma: no cover - PyAV is a dependency
        pass
    try:
        import decord

        out["decord"] = decord.__version__
    except Exception:
        pass
    import sys

    if "torchcodec" in sys.modules or backend in ("torchcodec", "auto"):
        from hiera_video.data.decode import torchcodec_status

        ffmpeg, problem = torchcodec_status()
        if problem is None:
            out["torchcodec"] = getattr(sys.modules["torchcodec"], "__version__", "?")
            out["torchcodec_ffmpeg"] = ffmpeg
    return out


def write_outputs(
    output: Path, result: EvalResult, dataset: VideoDataset, clf: Classifier, protocol: ClipSpec, extra: dict
) -> dict[str, Path]:
    """metrics.json (+ per-class and confusion files), predictions, failed and missing lists."""
    output.mkdir(parents=True, exist_ok=True)
    record = dict(
        num_failed=len(result.failed), num_missing=len(dataset.missing),
        partial=result.interrupted, num_not_evaluated=result.not_evaluated,  # partial: stopped by SIGINT
        substituted_frames=substitution_record(result),
        protocol=dict(**clf.describe(), **protocol.to_dict(), decoder=decoder_versions(protocol.backend)),
        dataset=dataset.summary(), seconds=round(result.seconds, 3),
        videos_per_second=round((len(result.indices) - result.resumed_scored) / result.seconds, 3) if result.seconds else None,
        resumed=result.resumed,  # videos taken from an earlier run (--resume); 0 for a fresh run
        **provenance(clf),
        **extra,
    )
    files: dict[str, Path] = {}
    if result.metrics is not None:
        files.update(write_metrics(output, result.metrics, dataset.classes, extra=record))
    else:
        from hiera_video.report import write_json

        files["metrics"] = output / "metrics.json"
        write_json(files["metrics"], {**record, "num_videos": len(result.indices), "top1": None, "top5": None, "mean_class_accuracy": None})
    labels = torch.tensor([-1 if dataset.items[i].label is None else dataset.items[i].label for i in result.indices])
    files["predictions"] = output / "predictions.pt"
    save_predictions(
        files["predictions"], [str(dataset.items[i].path) for i in result.indices], labels, result.probs,
        dataset.classes, result.view_logits, meta=dict(protocol=record["protocol"], agg="prob"),
    )
    files["failed"], files["missing"] = write_failure_lists(output, result, dataset)
    from hiera_video.html_report import write_report_safely  # after every result file: a failure here is a warning

    report = write_report_safely(output)
    if report is not None:
        files["report"] = report
    return files


def provenance(clf: Classifier) -> dict:
    """When, by what command and with which versions and weights (content sha256) a result was made."""
    import datetime
    import platform
    import sys

    from hiera_video import __version__

    return dict(
        created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        versions=dict(hiera_video=__version__, torch=torch.__version__, python=platform.python_version()),
        weights_sha256=weights_fingerprint(clf.model),
    )


def write_failure_lists(output: Path, result: EvalResult, dataset: VideoDataset) -> tuple[Path, Path]:
    """``failed.csv`` (unreadable videos) and ``missing.csv`` (annotated, not on disk)."""
    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "failed.csv", ["path", "reason"], result.failed)
    write_csv(output / "missing.csv", ["path", "reason"], dataset.missing)
    return output / "failed.csv", output / "missing.csv"
