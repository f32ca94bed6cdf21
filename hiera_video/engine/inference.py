"""Multi-view classification of videos: the part shared by ``predict`` and ``eval``.

video --decode once--> all views [V, 3, T, S, S] --chunks of batch_size--> logits [V, C]
      --softmax, mean over views--> probabilities [C]
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from hiera_video.data import make_views
from hiera_video.data.labels import load_labels
from hiera_video.errors import HieraVideoError
from hiera_video.models import get_spec
from hiera_video.models.factory import create_model, load_model
from hiera_video.runtime import pick_device, resolve_dtype

log = logging.getLogger("hiera_video")

DEFAULT_MODEL = "hiera_base_16x224"


def parse_views(text: str) -> tuple[int, int]:
    """``"5x3"`` -> (5 temporal, 3 spatial)."""
    try:
        t, s = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise HieraVideoError(f"--views must look like TxS (temporal x spatial), e.g. 5x3; got '{text}'") from None
    if t < 1 or s < 1:
        raise HieraVideoError(f"--views needs at least 1 temporal and 1 spatial view; got '{text}'")
    return t, s


@dataclass
class Protocol:
    """How clips are cut from a video; recorded with every result so it can be reproduced."""

    sampling: str = "dense"  # dense (Kinetics) | segment (SSv2)
    num_frames: int = 16
    stride: int = 4  # dense: frame stride at target_fps
    target_fps: float = 30.0
    temporal_views: int = 1
    spatial_views: int = 1
    crop_size: int = 224
    short_side: int | None = None  # default: crop_size
    mean: Sequence[float] = (0.45, 0.45, 0.45)
    std: Sequence[float] = (0.225, 0.225, 0.225)
    backend: str = "auto"

    @property
    def num_views(self) -> int:
        return self.temporal_views * self.spatial_views

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def views(self, source) -> tuple[torch.Tensor, list]:
        """All views of one video (path or open reader), decoded once: ``[V, 3, T, S, S]``."""
        return make_views(
            source, self.temporal_views, self.spatial_views, self.sampling, self.crop_size, self.num_frames,
            self.stride, self.target_fps, self.short_side, self.mean, self.std, self.backend,
        )


@dataclass
class Classifier:
    """A video classifier ready for inference: model on its device and precision, labels,
    preprocessing, and where its weights came from."""

    model: nn.Module
    name: str
    weights: str | None
    labels: list[str]
    device: torch.device
    dtype: torch.dtype | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return self.model.input_size[0]

    @property
    def crop_size(self) -> int:
        return self.model.input_size[-1]

    def protocol(self, views: tuple[int, int] = (1, 1), **kw) -> Protocol:
        """The protocol for this model's input (frames, crop, normalisation)."""
        pre = self.meta.get("preprocessing", {}) if isinstance(self.meta.get("preprocessing"), dict) else {}
        base = dict(
            num_frames=self.num_frames, crop_size=self.crop_size, mean=self.mean, std=self.std,
            temporal_views=views[0], spatial_views=views[1],
        )
        for k in ("sampling", "stride", "target_fps"):
            if k in pre:
                base[k] = pre[k]
        base.update({k: v for k, v in kw.items() if v is not None})
        return Protocol(**base)

    @torch.inference_mode()
    def logits(self, views: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """``views: [V, 3, T, H, W]`` -> float32 logits ``[V, C]`` on the CPU, in chunks."""
        outs = []
        for chunk in views.split(max(1, batch_size)):
            x = chunk.to(self.device, non_blocking=True)
            if self.dtype is not None:
                x = x.to(self.dtype)
            outs.append(self.model(x).float().cpu())
        return torch.cat(outs)

    def describe(self) -> dict:
        return dict(
            model=self.name, weights=self.weights, num_classes=len(self.labels), device=str(self.device),
            dtype=str(self.dtype).replace("torch.", "") if self.dtype else "float32",
        )


def load_classifier(
    model: str | None = None,
    weights: str | None = None,
    labels: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    allow_random_weights: bool = False,
) -> Classifier:
    """Resolve model + weights + labels, move to ``device`` in the inference precision.

    ``weights=None`` takes the model's default zoo weights (downloaded when missing);
    ``weights="none"`` means random initialisation and needs ``allow_random_weights``
    (evaluating an untrained classifier by accident is a classic trap). A path to this
    project's checkpoint needs no ``model``: the checkpoint names it.
    """
    if weights is not None and str(weights).lower() == "none":
        if not allow_random_weights:
            raise HieraVideoError("refusing to run a classifier with random weights; pass trained --weights, or --allow-random-weights")
        name = model or DEFAULT_MODEL
        net = create_model(name)
        log.warning("using RANDOM weights for %s: predictions are meaningless", name)
        weights = None
    else:
        if model is None and (weights is None or not os.path.exists(os.path.expanduser(weights))):
            model = DEFAULT_MODEL  # zoo tags and URLs belong to a named model
        if weights is None:
            name = model
            weights = get_spec(name).default_weights
            if weights is None:
                raise HieraVideoError(
                    f"{name} has no official weights; pass --weights PATH (e.g. a finetuned checkpoint) "
                    "or --weights none --allow-random-weights"
                )
        net = load_model(weights, name=model)
        name = net.spec.name
    if net.spec.mae:
        raise HieraVideoError(f"{name} is an MAE model (no classifier); use the matching hiera_* model")
    if net.spec.kind != "video":
        raise HieraVideoError(f"{name} is an image model; video commands need a video model (hiera_*_16x224)")
    meta = getattr(net, "checkpoint_meta", {}) or {}
    class_names = _class_names(net, name, weights, labels, meta)
    spec = net.spec
    tag = spec.weights.get(weights) if isinstance(weights, str) else None
    pre = meta.get("preprocessing") if isinstance(meta.get("preprocessing"), dict) else {}
    mean = tuple(pre.get("mean", tag.mean if tag else spec.mean))
    std = tuple(pre.get("std", tag.std if tag else spec.std))
    dev = pick_device(device)
    low = resolve_dtype(dtype, dev)
    net = prepare_inference(net, dev, low)
    return Classifier(net, name, weights, class_names, dev, low, mean, std, meta)


def prepare_inference(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> nn.Module:
    """Eval mode on ``device``; with a low precision, weights and activations are cast to it
    (faster than autocast on CPU: no per-layer casts)."""
    model = model.eval().to(device)
    return model.to(dtype) if dtype is not None else model


def _class_names(net, name, weights, labels, meta) -> list[str]:
    n = net.num_classes
    if labels:
        names = load_labels(labels)
    elif isinstance(meta.get("labels"), list):
        names = [str(x) for x in meta["labels"]]
    elif isinstance(weights, str) and weights in net.spec.weights and net.spec.weights[weights].labels:
        names = load_labels(net.spec.weights[weights].labels)
    else:
        names = [f"class {i}" for i in range(n)]
    if len(names) != n:
        raise HieraVideoError(f"labels have {len(names)} classes but the model {name} predicts {n}; pass a matching --labels file")
    return names


def topk(probs: torch.Tensor, labels: Sequence[str], k: int) -> list[dict]:
    """Top-``k`` as ``[{"index", "label", "score"}]``, scores descending."""
    k = min(k, probs.numel())
    scores, idx = probs.topk(k)
    return [dict(index=int(i), label=labels[int(i)], score=float(s)) for s, i in zip(scores, idx)]
