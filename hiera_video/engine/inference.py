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
from hiera_video.runtime import autocast, casts_weights, pick_device, resolve_dtype

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

    def __post_init__(self):
        # Checked once here, so a bad option is a usage error instead of one failure per video.
        from hiera_video.data.decode import BACKENDS

        if self.backend not in BACKENDS:
            raise HieraVideoError(f"unknown --backend '{self.backend}'; use one of {', '.join(BACKENDS)}")
        if self.sampling not in ("dense", "segment"):
            raise HieraVideoError(f"unknown --sampling '{self.sampling}'; use dense or segment")

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

    def decode(self, source) -> tuple[torch.Tensor, tuple[int, int]]:
        """:meth:`views` plus ``(substituted, sampled)``: how many of the distinct frames
        decoded for the views could not be decoded and were replaced by the nearest decodable
        frame. Above :data:`MAX_SUBSTITUTED_FRACTION` of them the video is not scored: raises
        :class:`HieraVideoError` (the caller lists the video as failed)."""
        views, infos = self.views(source)
        sampled = max((getattr(i, "sampled", 0) for i in infos), default=0)
        substituted = max((getattr(i, "substituted", 0) for i in infos), default=0)
        check_substituted(getattr(source, "path", source), substituted, sampled)
        return views, (substituted, sampled)


#: A video whose clips need more than this fraction of copied frames (frames that could not be
#: decoded are replaced by the nearest decodable one) counts as failed, not scored.
MAX_SUBSTITUTED_FRACTION = 0.25


def check_substituted(path, substituted: int, sampled: int) -> None:
    """Raise when more than :data:`MAX_SUBSTITUTED_FRACTION` of ``sampled`` frames were substituted."""
    if sampled and substituted > MAX_SUBSTITUTED_FRACTION * sampled:
        raise HieraVideoError(
            f"cannot use video '{path}': {substituted} of the {sampled} frames its clips need could not be decoded "
            f"(more than {MAX_SUBSTITUTED_FRACTION:.0%}); the file is damaged: re-encode or re-download it"
        )


def substitution_warning(substituted: int, sampled: int) -> str | None:
    """The per-video warning for a few substituted frames (None when there are none)."""
    if not substituted:
        return None
    return (f"{substituted} of {sampled} sampled frames could not be decoded and were replaced by the nearest "
            "decodable frame")


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
        logits = torch.cat([run_model(self.model, chunk, self.device, self.dtype, self.model).float().cpu()
                            for chunk in views.split(max(1, batch_size))])
        if not bool(torch.isfinite(logits).all()):
            raise HieraVideoError(
                f"the model gave NaN or infinite scores (precision {str(self.dtype or torch.float32).replace('torch.', '')}); "
                "try --dtype fp32, or check the weights"
            )
        return logits

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
    require_head: bool = True,
) -> Classifier:
    """Resolve model + weights + labels, move to ``device`` in the inference precision.

    ``weights=None`` takes the model's default zoo weights (downloaded when missing);
    ``weights="none"`` means random initialisation and needs ``allow_random_weights``
    (evaluating an untrained classifier by accident is a classic trap). So do weights that
    leave the classifier head (or the final norm) untrained: an MAE checkpoint, a headless
    backbone, a head re-initialised for another number of classes; ``require_head=False``
    (features only, as ``extract``) accepts them. Weights holding NaN or infinite values are
    always refused. A path to this project's checkpoint needs no ``model``: the checkpoint
    names it.
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
    if weights is not None:
        check_finite(net, weights)
        untrained = untrained_head(net)
        if untrained and require_head:
            if not allow_random_weights:
                raise HieraVideoError(
                    f"refusing to classify with {weights}: {untrained}, so predictions would be random; "
                    "finetune it first (hiera-video finetune --weights ...), pass a classifier checkpoint, "
                    "or --allow-random-weights to run it anyway"
                )
            log.warning("%s: %s; predictions are meaningless", weights, untrained)
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


def untrained_head(net: nn.Module) -> str | None:
    """Why the classifier head of ``net`` was not loaded from its weights (None when it was):
    the load report of :func:`~hiera_video.models.factory.load_model` lists the tensors that
    kept their random initialisation."""
    report = getattr(net, "load_report", None)
    if report is None:
        return None
    if report.head_reset is not None:
        n, m = report.head_reset
        return f"its head has {m} classes, the model {n}, so the head was re-initialised"
    keys = [k for k in report.initialised if k.startswith(("head.", "norm."))]
    if not keys:
        return None
    if any(k.startswith("decoder") for k in report.dropped):
        return "it is an MAE checkpoint (encoder only): the final norm and the classifier head are untrained"
    return f"it has no trained classifier head ({', '.join(keys[:3])} not in the checkpoint)"


def check_finite(net: nn.Module, weights) -> None:
    """Refuse weights holding NaN or infinite values (a diverged run or a corrupt file): they
    would give NaN probabilities that look like a result."""
    bad = [k for k, t in net.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise HieraVideoError(
            f"weights {weights} hold NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}); "
            "the file is corrupt or comes from a diverged run: use an earlier checkpoint"
        )


def prepare_inference(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> nn.Module:
    """Eval mode on ``device``; the weights are cast to ``dtype`` only where
    :func:`~hiera_video.runtime.casts_weights` says so (CPU), else :func:`run_model` autocasts."""
    model = model.eval().to(device)
    return model.to(dtype) if casts_weights(device, dtype) else model


def run_model(fn, x: torch.Tensor, device: torch.device, dtype: torch.dtype | None, model: nn.Module) -> torch.Tensor:
    """``fn(x)`` on ``device`` in ``dtype``: inputs cast when ``model``'s weights are in
    ``dtype``, else under autocast (fp32 weights: norms and softmax stay fp32)."""
    x = x.to(device, non_blocking=True)
    if dtype is not None and next(model.parameters()).dtype == dtype:
        return fn(x.to(dtype))
    with autocast(device, dtype):
        return fn(x)


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
