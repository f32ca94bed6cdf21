"""``eval``: multi-view classification of a dataset split, metrics, and everything needed to
reproduce the number (the protocol is recorded with it).

One dataset item = one video with all its views (decoded once, in a DataLoader worker so that
decoding overlaps the model). Under ``torchrun`` each rank takes every world_size-th video and
rank 0 gathers the per-video results: no video is duplicated or dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from hiera_video.data.datasets import VideoDataset
from hiera_video.engine import distributed
from hiera_video.engine.inference import Classifier, Protocol
from hiera_video.errors import HieraVideoError
from hiera_video.metrics.classification import aggregate_views, classification_metrics, save_predictions, write_metrics
from hiera_video.report import write_csv

log = logging.getLogger("hiera_video")

# Dataset presets: the paper's test protocols (REFERENCE 2.2-2.4).
PRESETS = {
    "k400": dict(sampling="dense", stride=4, views=(5, 3)),
    "k600": dict(sampling="dense", stride=4, views=(5, 3)),
    "k700": dict(sampling="dense", stride=4, views=(5, 3)),
    "ssv2": dict(sampling="segment", stride=4, views=(1, 3)),
    "list": dict(sampling="dense", stride=4, views=(5, 3)),
    "folder": dict(sampling="dense", stride=4, views=(5, 3)),
}


class _VideoViews(Dataset):
    """Item ``j`` = (dataset index, all views of that video or None, error or None)."""

    def __init__(self, dataset: VideoDataset, indices: list[int], protocol: Protocol):
        self.dataset, self.indices, self.protocol = dataset, indices, protocol

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        try:
            views, _ = self.protocol.views(str(self.dataset.items[i].path))
            return i, views, None
        except HieraVideoError as e:
            return i, None, str(e)


def _views_in_order(views: _VideoViews, workers: int, decode_timeout: float | None):
    """``(index, views or None, error or None)`` for every video of ``views``, in order.

    With worker processes and a ``decode_timeout`` (seconds), a video whose decoding does not
    finish in time (a decoder stuck in native code cannot be interrupted from Python) is
    reported as failed: the worker processes are shut down (a stuck one is terminated) and
    fresh ones continue with the next video. Without workers, decoding runs in this process
    and cannot be timed out.
    """
    timeout = decode_timeout if workers > 0 and decode_timeout else 0
    start = 0
    while start < len(views.indices):
        rest = _VideoViews(views.dataset, views.indices[start:], views.protocol)
        loader = DataLoader(rest, batch_size=None, shuffle=False, num_workers=workers, timeout=timeout,
                            prefetch_factor=2 if workers > 0 else None, persistent_workers=False)
        it = iter(loader)
        try:
            for item in it:
                start += 1
                yield item
            return
        except RuntimeError as e:
            if not timeout or "timed out" not in str(e):
                raise
            i = views.indices[start]
            start += 1
            yield i, None, (f"cannot decode video '{views.dataset.items[i].path}': decoding took longer than "
                            f"{timeout:g} s and was stopped (a hanging decoder?); check the file with hiera-video check-videos")
        finally:
            del it  # shuts the workers down, terminating one that is stuck


@dataclass
class EvalResult:
    metrics: dict | None  # None when no video had a label
    indices: list[int]  # dataset indices that were evaluated, in order
    probs: torch.Tensor  # [N, C]
    view_logits: torch.Tensor | None  # [N, V, C] with save_views
    failed: list[tuple[str, str]]  # (path, reason) of unreadable videos
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def evaluate(
    clf: Classifier,
    protocol: Protocol,
    dataset: VideoDataset,
    batch_size: int = 8,
    workers: int = 2,
    strict: bool = False,
    save_views: bool = False,
    world: distributed.World = distributed.World(),
    progress=None,
    decode_timeout: float | None = 300.0,
) -> EvalResult | None:
    """Evaluate ``dataset``; returns the gathered result on rank 0 (None on other ranks).

    ``progress``: optional callable ``(done, total, failed)`` called after each video on this
    rank. Unreadable videos are skipped and reported (``strict`` turns them into an error), and
    so are videos whose decoding takes longer than ``decode_timeout`` seconds (with
    ``workers`` >= 1; None or 0 = no limit).
    """
    if len(dataset) == 0:
        raise HieraVideoError(f"nothing to evaluate: no videos of {dataset.name} were found under {dataset.root}")
    indices = distributed.shard(len(dataset), world)
    loader = _views_in_order(_VideoViews(dataset, indices, protocol), workers, decode_timeout)
    done: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    failed: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    for n, (i, views, error) in enumerate(loader, 1):
        if error is not None:
            if strict:
                raise HieraVideoError(f"{error} (--strict: stopping; drop --strict to skip unreadable videos)")
            failed.append((str(dataset.items[i].path), error))
        else:
            logits = clf.logits(views, batch_size)  # [V, C]
            done[i] = (aggregate_views(logits, "prob"), logits if save_views else None)
        if progress is not None:
            progress(n, len(indices), len(failed))
    seconds = time.perf_counter() - t0
    parts = distributed.gather_to_main((done, failed, seconds), world)
    if not world.is_main:
        return None
    merged: dict[int, tuple] = {}
    all_failed: list[tuple[str, str]] = []
    for part_done, part_failed, _ in parts:
        merged.update(part_done)
        all_failed += part_failed
    order = sorted(merged)
    num_classes = len(clf.labels)
    probs = torch.stack([merged[i][0] for i in order]) if order else torch.zeros(0, num_classes)
    view_logits = torch.stack([merged[i][1] for i in order]) if save_views and order else None
    labels = torch.tensor([-1 if dataset.items[i].label is None else dataset.items[i].label for i in order], dtype=torch.long)
    if dataset.num_classes != num_classes:
        raise HieraVideoError(
            f"the dataset has {dataset.num_classes} classes but the model predicts {num_classes}; "
            "evaluate with weights trained on this label set"
        )
    metrics = classification_metrics(probs, labels, dataset.classes) if (labels >= 0).any() else None
    all_failed.sort()
    return EvalResult(metrics, order, probs, view_logits, all_failed, max(p[2] for p in parts))


def decoder_versions() -> dict:
    """Versions of the decoders, recorded with every result."""
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
    return out


def write_outputs(
    output: Path, result: EvalResult, dataset: VideoDataset, clf: Classifier, protocol: Protocol, extra: dict
) -> dict[str, Path]:
    """metrics.json (+ per-class and confusion files), predictions, failed and missing lists."""
    output.mkdir(parents=True, exist_ok=True)
    record = dict(
        num_failed=len(result.failed), num_missing=len(dataset.missing),
        protocol=dict(**clf.describe(), **protocol.to_dict(), decoder=decoder_versions()),
        dataset=dataset.summary(), seconds=round(result.seconds, 3),
        videos_per_second=round(len(result.indices) / result.seconds, 3) if result.seconds else None,
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
    files["failed"] = output / "failed.csv"
    write_csv(files["failed"], ["path", "reason"], result.failed)
    files["missing"] = output / "missing.csv"
    write_csv(files["missing"], ["path", "reason"], dataset.missing)
    return files
